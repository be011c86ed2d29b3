//! The flows a visitor and an admin go through, in a real headless Chromium driven over WebDriver,
//! with an axe-core accessibility check and a screenshot of every page on the way.
//!
//! Needs Debian's `chromium` and `chromium-driver` and `npm ci --prefix e2e` (for axe-core).
//! Without them the tests say they were skipped, unless `CI` is set: then a missing browser fails.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::webhook::Receiver;
use common::{ADMIN_PASSWORD, Backend, TestApp, spawn_app, spawn_app_with};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use tempfile::TempDir;

/// Browser tests run one at a time: two Chromiums on a 2-core machine only make both flaky.
static ONE_BROWSER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const WAIT: Duration = Duration::from_secs(15);

#[derive(Clone, Copy, Debug)]
enum Device {
    Desktop,
    /// The desktop with the system's dark theme, to check the dark palette's contrast too.
    DesktopDark,
    Phone,
}

impl Device {
    fn name(self) -> &'static str {
        match self {
            Device::Desktop => "desktop",
            Device::DesktopDark => "desktop-dark",
            Device::Phone => "phone",
        }
    }
}

struct Tools {
    chromium: PathBuf,
    chromedriver: PathBuf,
    axe_source: String,
}

/// The browser, its driver and axe-core, or `None` after explaining why the tests are skipped.
fn tools() -> Option<Tools> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let chromium = std::env::var_os("ENLIST_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    let chromedriver = std::env::var_os("ENLIST_CHROMEDRIVER")
        .map_or_else(|| PathBuf::from("/usr/bin/chromedriver"), PathBuf::from);
    let axe = manifest.join("e2e/node_modules/axe-core/axe.min.js");
    let missing: Vec<String> = [&chromium, &chromedriver, &axe]
        .into_iter()
        .filter(|path| !path.exists())
        .map(|path| path.display().to_string())
        .collect();
    if !missing.is_empty() {
        let reason = format!(
            "browser tests need {}; install them with `apt-get install chromium chromium-driver` \
             and `npm ci --prefix e2e`",
            missing.join(", ")
        );
        if std::env::var_os("CI").is_some() {
            panic!("CI is set, so a missing browser is a failure: {reason}");
        }
        // Straight to stderr: the test harness captures `eprintln!` of passing tests, and a skip
        // must be visible in a plain `cargo test` run.
        let _ = writeln!(std::io::stderr(), "SKIPPED browser tests: {reason}");
        return None;
    }
    let axe_source = std::fs::read_to_string(&axe).expect("read axe-core");
    Some(Tools { chromium, chromedriver, axe_source })
}

/// A running chromedriver, stopped on drop.
struct Driver {
    process: Child,
    url: String,
}

impl Driver {
    async fn start(tools: &Tools) -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let process = Command::new(&tools.chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = Driver { process, url: format!("http://127.0.0.1:{port}") };
        let probe = common::bare_client();
        for _ in 0..100 {
            if probe.get(format!("{}/status", driver.url)).send().await.is_ok() {
                return driver;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not come up on port {port}");
    }

    /// A browser session on `profile` (a user-data-dir that outlives the session).
    async fn session(&self, tools: &Tools, profile: &Path, device: Device) -> Client {
        let mut args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-features=Translate,OptimizationHints,MediaRouter".to_owned(),
            format!("--user-data-dir={}", profile.display()),
        ];
        let mut options = json!({ "binary": tools.chromium, "args": [] });
        match device {
            Device::Desktop => args.push("--window-size=1280,900".to_owned()),
            Device::DesktopDark => {
                args.push("--window-size=1280,900".to_owned());
                args.push("--force-dark-mode".to_owned());
            }
            Device::Phone => {
                options["mobileEmulation"] = json!({
                    "deviceMetrics": { "width": 390, "height": 844, "pixelRatio": 1, "touch": true },
                    "userAgent": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 \
                                  (KHTML, like Gecko) Chrome/156.0 Mobile Safari/537.36"
                });
            }
        }
        options["args"] = json!(args);
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert("goog:chromeOptions".into(), options);
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("open a browser session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// One page seen by the browser: checked with axe-core and photographed.
async fn check_page(browser: &Client, tools: &Tools, device: Device, name: &str) {
    browser.execute(&tools.axe_source, vec![]).await.expect("inject axe-core");
    let report = browser
        .execute_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document, { resultTypes: ['violations'] })
               .then(r => done(r.violations.map(v => ({
                   id: v.id, impact: v.impact, help: v.help,
                   targets: v.nodes.map(n => n.target.join(' ')) }))))
               .catch(e => done({ error: String(e) }));",
            vec![],
        )
        .await
        .expect("run axe-core");
    let violations = report.as_array().unwrap_or_else(|| panic!("axe failed on {name}: {report}"));
    let serious: Vec<&Value> = violations
        .iter()
        .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
        .collect();
    for minor in violations.iter().filter(|v| !serious.contains(v)) {
        eprintln!("axe ({name}, {}): {minor}", device.name());
    }
    assert!(
        serious.is_empty(),
        "axe found serious problems on {name} ({}): {serious:#?}",
        device.name()
    );

    let png = browser.screenshot().await.expect("screenshot");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    std::fs::write(dir.join(format!("{name}-{}.png", device.name())), png)
        .expect("save screenshot");
}

async fn text_of(browser: &Client, css: &str) -> String {
    let element = browser.wait().at_most(WAIT).for_element(Locator::Css(css)).await;
    element.unwrap_or_else(|e| panic!("no {css}: {e}")).text().await.expect("element text")
}

/// Waits until an element matching `css` has text that passes `accept` (pages change under us
/// after every form post and its redirect).
async fn wait_for_text(browser: &Client, css: &str, accept: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = match browser.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.ok(),
            Err(_) => None,
        };
        if let Some(text) = text.filter(|t| accept(t)) {
            return text;
        }
        if tokio::time::Instant::now() > deadline {
            let source = browser.source().await.unwrap_or_default();
            panic!("{css} never showed the expected text; the page was:\n{source}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for_heading(browser: &Client, expected: &str) {
    wait_for_text(browser, "h1", |t| t.contains(expected)).await;
}

async fn fill(browser: &Client, css: &str, value: &str) {
    let field = browser.wait().at_most(WAIT).for_element(Locator::Css(css)).await.expect("field");
    field.clear().await.expect("clear field");
    field.send_keys(value).await.expect("type");
}

async fn click(browser: &Client, css: &str) {
    let element =
        browser.wait().at_most(WAIT).for_element(Locator::Css(css)).await.expect("clickable");
    element.click().await.unwrap_or_else(|e| panic!("click {css}: {e}"));
}

async fn visitor_flow(app: &TestApp, tools: &Tools, device: Device) {
    let driver = Driver::start(tools).await;
    let profile = TempDir::new().unwrap();
    let browser = driver.session(tools, profile.path(), device).await;
    let address = format!("ada.{}@example.com", device.name());

    browser.goto(&app.url("/")).await.unwrap();
    wait_for_heading(&browser, "Join our list").await;
    let dark = browser
        .execute("return matchMedia('(prefers-color-scheme: dark)').matches", vec![])
        .await
        .unwrap();
    assert_eq!(dark, json!(matches!(device, Device::DesktopDark)), "colour scheme of {device:?}");
    let field = browser.find(Locator::Css("input#email")).await.unwrap();
    assert_eq!(field.attr("type").await.unwrap().as_deref(), Some("email"));
    assert_eq!(field.attr("autocomplete").await.unwrap().as_deref(), Some("email"));
    assert!(field.attr("required").await.unwrap().is_some());
    check_page(&browser, tools, device, "home").await;

    // An invalid address: the reason sits beside the field, the typed value stays.
    fill(&browser, "input#email", "not-an-address").await;
    click(&browser, "form[action='/signup'] button").await;
    let error = text_of(&browser, "#email-error").await;
    assert!(error.contains("Please enter a complete address"), "{error}");
    let field = browser.find(Locator::Css("input#email")).await.unwrap();
    assert_eq!(field.attr("aria-invalid").await.unwrap().as_deref(), Some("true"));
    assert_eq!(field.attr("aria-describedby").await.unwrap().as_deref(), Some("email-error"));
    assert_eq!(field.prop("value").await.unwrap().as_deref(), Some("not-an-address"));
    check_page(&browser, tools, device, "home-invalid-address").await;

    // Sign up, be thanked, reload: still thanked.
    fill(&browser, "input#email", &address).await;
    click(&browser, "form[action='/signup'] button").await;
    wait_for_heading(&browser, &format!("Thanks for signing up, {address}!")).await;
    check_page(&browser, tools, device, "home-thanks").await;
    browser.refresh().await.unwrap();
    wait_for_heading(&browser, "Thanks for signing up").await;

    // Close the browser and open it again on the same profile: still remembered.
    browser.close().await.expect("close the browser");
    let browser = driver.session(tools, profile.path(), device).await;
    browser.goto(&app.url("/")).await.unwrap();
    wait_for_heading(&browser, &format!("Thanks for signing up, {address}!")).await;

    // Unregister: the form is back, with the one-time message.
    click(&browser, "form[action='/unregister'] button").await;
    wait_for_heading(&browser, "Join our list").await;
    let notice = text_of(&browser, "[role=status]").await;
    assert_eq!(notice, format!("We have removed {address} from the list!"));
    check_page(&browser, tools, device, "home-unregistered").await;
    assert!(!app.subscriber_emails().await.contains(&address));

    browser.goto(&app.url("/no/such/page")).await.unwrap();
    wait_for_heading(&browser, "Page not found").await;
    check_page(&browser, tools, device, "error-404").await;
    browser.close().await.unwrap();
}

async fn admin_flow(app: &TestApp, tools: &Tools, device: Device) {
    let seeded = ["alice@example.com", "alicia@example.org", "bob@example.net"];
    for email in seeded {
        app.other_visitor().signup(email).await;
    }
    let driver = Driver::start(tools).await;
    let profile = TempDir::new().unwrap();
    let browser = driver.session(tools, profile.path(), device).await;

    browser.goto(&app.url("/admin")).await.unwrap();
    wait_for_heading(&browser, "Admin login").await;
    assert_eq!(browser.current_url().await.unwrap().path(), "/admin/login");
    check_page(&browser, tools, device, "admin-login").await;

    fill(&browser, "input#password", "not the password").await;
    click(&browser, "form[action='/admin/login'] button").await;
    let error = text_of(&browser, "#password-error").await;
    assert_eq!(error, "That password is not right.");
    check_page(&browser, tools, device, "admin-login-failed").await;

    fill(&browser, "input#password", ADMIN_PASSWORD).await;
    click(&browser, "form[action='/admin/login'] button").await;
    wait_for_heading(&browser, "Subscribers").await;
    check_page(&browser, tools, device, "admin-list").await;

    fill(&browser, "input#q", "ALIC").await;
    click(&browser, "form[role=search] button").await;
    wait_for_text(&browser, ".counts", |t| t.contains("2 matches of 3")).await;
    let table = text_of(&browser, "table").await;
    assert!(table.contains("alice@example.com") && table.contains("alicia@example.org"));
    assert!(!table.contains("bob@example.net"));

    // Delete asks first: the confirm button is hidden until Delete is opened.
    let row = "tr:has(td.address) details";
    let confirm = format!("{row} button.danger");
    let hidden = browser.find(Locator::Css(&confirm)).await.unwrap();
    assert!(!hidden.is_displayed().await.unwrap(), "confirmation is hidden at first");
    click(&browser, &format!("{row} summary")).await;
    assert!(browser.find(Locator::Css(&confirm)).await.unwrap().is_displayed().await.unwrap());
    check_page(&browser, tools, device, "admin-confirm-delete").await;
    let victim = text_of(&browser, "tr td.address").await;
    click(&browser, &confirm).await;
    let removed = format!("We have removed {victim} from the list.");
    wait_for_text(&browser, "[role=status].notice", |t| t == removed).await;
    assert!(!app.subscriber_emails().await.contains(&victim));

    // A webhook endpoint: added (its secret shown once), pinged, its attempts listed.
    let receiver = Receiver::start().await;
    click(&browser, "details.tools:has(form[action='/admin/webhooks']) summary").await;
    fill(&browser, "input#webhook-url", &receiver.url).await;
    click(&browser, "form[action='/admin/webhooks'] button").await;
    wait_for_heading(&browser, "Webhook endpoint added").await;
    let secret = browser.find(Locator::Css("input#secret")).await.unwrap();
    assert!(secret.prop("value").await.unwrap().unwrap_or_default().starts_with("whsec_"));
    check_page(&browser, tools, device, "admin-webhook-created").await;
    click(&browser, "a[href^='/admin/webhooks/']").await;
    wait_for_text(&browser, "dl.evidence", |t| t.contains("active")).await;
    click(&browser, "form[action$='/ping'] button").await;
    wait_for_text(&browser, "[role=status].notice", |t| t.contains("webhook.ping")).await;
    receiver.wait_for(1, Duration::from_secs(20)).await;
    // The attempt is recorded once the answer is in; the page shows it on the next load.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        browser.refresh().await.unwrap();
        if text_of(&browser, "main").await.contains("delivered") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the ping's attempt was not listed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    check_page(&browser, tools, device, "admin-webhook").await;
    browser.goto(&app.url("/admin")).await.unwrap();
    wait_for_heading(&browser, "Subscribers").await;

    // Log out, then press Back: the list must not come back from any cache.
    click(&browser, "form[action='/admin/logout'] button").await;
    wait_for_heading(&browser, "Join our list").await;
    browser.back().await.unwrap();
    wait_for_heading(&browser, "Admin login").await;
    let source = browser.source().await.unwrap();
    for email in seeded {
        assert!(!source.contains(email), "{email} visible after logout and Back");
    }
    browser.close().await.unwrap();
}

#[tokio::test]
async fn a_visitor_signs_up_is_remembered_and_unregisters_in_chromium() {
    let Some(tools) = tools() else { return };
    let _one = ONE_BROWSER_AT_A_TIME.lock().await;
    let app = spawn_app(Backend::Sqlite).await;
    visitor_flow(&app, &tools, Device::Desktop).await;
    visitor_flow(&app, &tools, Device::DesktopDark).await;
    visitor_flow(&app, &tools, Device::Phone).await;
}

#[tokio::test]
async fn an_admin_logs_in_searches_deletes_and_logs_out_in_chromium() {
    let Some(tools) = tools() else { return };
    let _one = ONE_BROWSER_AT_A_TIME.lock().await;
    // The webhook step's receiver is on loopback, over plain http.
    let hooks = ["--webhooks-allow-private", "--webhooks-allow-http"];
    let desktop = spawn_app_with(Backend::Sqlite, &hooks).await;
    admin_flow(&desktop, &tools, Device::Desktop).await;
    let phone = spawn_app_with(Backend::Sqlite, &hooks).await;
    admin_flow(&phone, &tools, Device::Phone).await;
}

/// An announcement from the admin page: written, previewed, tested, sent after the page that
/// says how many, watched to the end; every page axe-checked.
async fn announcement_flow(tools: &Tools, device: Device) {
    let smtp = common::smtp::SmtpServer::start().await;
    let url = smtp.url();
    let mail =
        ["--smtp-url", url.as_str(), "--mail-from", "News <news@example.com>", "--mail-rate", "0"];
    let app = spawn_app_with(Backend::Sqlite, &mail).await;
    app.database.add_subscribers("reader", 25, "confirmed").await;
    let driver = Driver::start(tools).await;
    let profile = TempDir::new().unwrap();
    let browser = driver.session(tools, profile.path(), device).await;
    browser.goto(&app.url("/admin/login")).await.unwrap();
    fill(&browser, "input#password", ADMIN_PASSWORD).await;
    click(&browser, "form[action='/admin/login'] button").await;
    wait_for_heading(&browser, "Subscribers").await;

    click(&browser, "details.tools:has(a[href='/admin/announcements']) summary").await;
    click(&browser, "a[href='/admin/announcements']").await;
    wait_for_heading(&browser, "Announcements").await;
    check_page(&browser, tools, device, "admin-announcements").await;
    fill(&browser, "input#subject", "Summer news").await;
    fill(&browser, "textarea#body", "# Summer\n\nWe meet on **Friday**. <b>Raw</b> stays text.")
        .await;
    click(&browser, "form[action='/admin/announcements'] button").await;
    wait_for_heading(&browser, "Summer news").await;
    let preview = text_of(&browser, "pre.mail-text").await;
    assert!(
        preview.contains("We meet on **Friday**") && preview.contains("subscriber@example.com"),
        "{preview}"
    );
    check_page(&browser, tools, device, "admin-announcement-draft").await;

    fill(&browser, "input#test-email", "owner@example.org").await;
    click(&browser, "form[action$='/test'] button").await;
    wait_for_text(&browser, "[role=status].notice", |t| t.contains("owner@example.org")).await;
    smtp.wait_for(1, Duration::from_secs(20)).await;

    click(&browser, "a[href$='/send']").await;
    wait_for_heading(&browser, "Send to the list").await;
    assert!(text_of(&browser, "main").await.contains("25 confirmed subscribers"));
    check_page(&browser, tools, device, "admin-announcement-send").await;
    click(&browser, "form[action$='/send'] button").await;
    wait_for_heading(&browser, "Summer news").await;
    // The page follows the send by itself until it is over.
    let figures = wait_for_text(&browser, "dl.evidence", |t| {
        t.split_whitespace().collect::<Vec<_>>().windows(2).any(|w| w == ["State", "sent"])
    })
    .await;
    assert!(figures.contains("25") && figures.contains("none"), "{figures}");
    check_page(&browser, tools, device, "admin-announcement-sent").await;
    smtp.wait_for(26, Duration::from_secs(30)).await;
    browser.close().await.unwrap();
}

#[tokio::test]
async fn an_admin_writes_tests_and_sends_an_announcement_in_chromium() {
    let Some(tools) = tools() else { return };
    let _one = ONE_BROWSER_AT_A_TIME.lock().await;
    announcement_flow(&tools, Device::Desktop).await;
    announcement_flow(&tools, Device::Phone).await;
}

/// Another site on loopback (another port is another origin)/// Another site on loopback (another port is another origin): a page with the embedded form, a
/// page that calls the public API with `fetch()`, and the page the form sends people back to.
async fn owner_site(enlist: std::sync::Arc<std::sync::OnceLock<String>>) -> String {
    use axum::extract::{Query, State};
    use axum::response::Html;
    use axum::routing::get;
    type Site = State<std::sync::Arc<std::sync::OnceLock<String>>>;
    type Params = Query<std::collections::HashMap<String, String>>;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let own = origin.clone();
    let form = move |State(enlist): Site| {
        let own = own.clone();
        async move {
            let enlist = enlist.get().cloned().unwrap_or_default();
            Html(format!(
                r#"<!doctype html><title>Shop</title><h1>Our shop</h1>
                <form method="post" action="{enlist}/signup">
                  <label>Email <input type="email" name="email" id="email" required></label>
                  <input type="text" name="website" tabindex="-1" style="display:none">
                  <input type="hidden" name="redirect" value="{own}/thanks">
                  <button type="submit" id="join">Sign up</button>
                </form>"#
            ))
        }
    };
    let fetch_page = |State(enlist): Site, Query(params): Params| async move {
        let enlist = enlist.get().cloned().unwrap_or_default();
        let email = params.get("email").cloned().unwrap_or_default();
        Html(format!(
            r#"<!doctype html><title>Fetch</title><h1>Fetch</h1><p id="out">waiting</p>
            <script>
            fetch("{enlist}/api/v1/signup", {{method: "POST",
                headers: {{"Content-Type": "application/json"}},
                body: JSON.stringify({{email: "{email}"}})}})
              .then(r => r.json())
              .then(j => document.getElementById("out").textContent = "answer:" + j.status)
              .catch(() => document.getElementById("out").textContent = "blocked");
            </script>"#
        ))
    };
    let thanks = |Query(params): Params| async move {
        let status = params.get("status").cloned().unwrap_or_default();
        Html(format!("<!doctype html><title>Thanks</title><h1>Back at the shop: {status}</h1>"))
    };
    let router = axum::Router::new()
        .route("/form", get(form))
        .route("/fetch", get(fetch_page))
        .route("/thanks", get(thanks))
        .with_state(enlist);
    tokio::spawn(async move { axum::serve(listener, router).await });
    origin
}

#[tokio::test]
async fn a_form_and_a_fetch_on_an_allowed_site_work_and_other_sites_are_refused_in_chromium() {
    let Some(tools) = tools() else { return };
    let _one = ONE_BROWSER_AT_A_TIME.lock().await;
    let enlist = std::sync::Arc::new(std::sync::OnceLock::new());
    let shop = owner_site(enlist.clone()).await;
    let stranger = owner_site(enlist.clone()).await;
    let app = common::spawn_app_with(Backend::Sqlite, &["--allowed-origins", &shop]).await;
    enlist.set(app.address.clone()).unwrap();

    let driver = Driver::start(&tools).await;
    let profile = TempDir::new().unwrap();
    let browser = driver.session(&tools, profile.path(), Device::Desktop).await;

    // The embedded form on the allowed site: the person lands back on that site.
    browser.goto(&format!("{shop}/form")).await.unwrap();
    fill(&browser, "#email", "shopper@example.com").await;
    click(&browser, "#join").await;
    wait_for_heading(&browser, "Back at the shop: ok").await;
    assert!(browser.current_url().await.unwrap().as_str().starts_with(&shop));
    assert_eq!(app.subscriber_emails().await, vec!["shopper@example.com"]);

    // The same form on a site that is not allowed: refused, nothing stored.
    browser.goto(&format!("{stranger}/form")).await.unwrap();
    fill(&browser, "#email", "stranger@example.com").await;
    click(&browser, "#join").await;
    wait_for_heading(&browser, "Request refused").await;
    assert_eq!(app.subscriber_emails().await, vec!["shopper@example.com"]);

    // fetch() to the public API: answered for the allowed site, blocked by the browser for the
    // other (its preflight gets no CORS headers, so the POST is never sent).
    browser.goto(&format!("{shop}/fetch?email=fetched@example.com")).await.unwrap();
    wait_for_text(&browser, "#out", |t| t != "waiting").await;
    assert_eq!(text_of(&browser, "#out").await, "answer:confirmed");
    browser.goto(&format!("{stranger}/fetch?email=blocked@example.com")).await.unwrap();
    wait_for_text(&browser, "#out", |t| t != "waiting").await;
    assert_eq!(text_of(&browser, "#out").await, "blocked");
    let mut stored = app.subscriber_emails().await;
    stored.sort();
    assert_eq!(stored, vec!["fetched@example.com", "shopper@example.com"]);
    browser.close().await.unwrap();
}
