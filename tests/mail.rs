//! Double opt-in over real SMTP: a signup queues a confirmation mail, the link in it confirms
//! (on POST only), every mail carries a working one-click unsubscribe link, and the person can
//! download or erase their data from any device. The mail goes to a small SMTP server of the
//! tests' own, which can also refuse, stall, or answer 4xx and 5xx.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::smtp::{SmtpMode, SmtpServer, TestCa};
use common::{
    Backend, TestApp, Visitor, assert_is_redirect_to, bare_client, browser, form_token, spawn_app,
    spawn_app_with, unescape,
};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, LOCATION, USER_AGENT};

const FROM: &str = "News <news@example.org>";
const WAIT: Duration = Duration::from_secs(15);

/// Settings for mail to `smtp`, quick retries, and whatever else a test adds.
fn mail_args<'a>(smtp_url: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--smtp-url", smtp_url, "--mail-from", FROM, "--mail-retry-delay", "1s"];
    args.extend_from_slice(extra);
    args
}

async fn app_with_mail(backend: Backend, smtp: &SmtpServer, extra: &[&str]) -> TestApp {
    let url = smtp.url();
    spawn_app_with(backend, &mail_args(&url, extra)).await
}

/// A client with no cookies, sending what a browser sends on a same-origin form post.
fn stranger(app: &TestApp) -> Visitor {
    Visitor { address: app.address.clone(), client: browser() }
}

/// The path of a link in a mail (the mail's links point at this server).
fn path_of(app: &TestApp, link: &str) -> String {
    link.strip_prefix(&app.address)
        .unwrap_or_else(|| panic!("{link} is not on {}", app.address))
        .to_owned()
}

async fn status_of(app: &TestApp, email: &str) -> Option<String> {
    app.database
        .strings(&format!("SELECT status FROM subscribers WHERE email = '{email}'"))
        .await
        .into_iter()
        .next()
}

async fn id_of(app: &TestApp, email: &str) -> String {
    app.database
        .strings(&format!("SELECT CAST(id AS TEXT) FROM subscribers WHERE email = '{email}'"))
        .await
        .into_iter()
        .next()
        .expect("the subscriber is stored")
}

/// Signs `email` up and returns the confirmation link from the mail that arrives.
async fn sign_up_and_get_link(
    app: &TestApp,
    visitor: &Visitor,
    smtp: &SmtpServer,
    email: &str,
) -> String {
    let before = smtp.to(email).len();
    assert_is_redirect_to(&visitor.signup(email).await, "/");
    let deadline = Instant::now() + WAIT;
    loop {
        let mails = smtp.to(email);
        if mails.len() > before {
            let link = mails[before].link(&format!("{}/confirm/", app.address));
            return link.expect("a confirmation link in the mail");
        }
        assert!(Instant::now() < deadline, "no confirmation mail for {email}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `check` holds (at most `WAIT`), polling.
async fn eventually<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

on_both_backends! {
    async fn a_person_signs_up_confirms_from_the_mail_and_is_on_the_list(backend: Backend) {
        let smtp = SmtpServer::start().await;
        let app = app_with_mail(backend, &smtp, &["--list-name", "The Gardening Club"]).await;
        let email = "grace@example.com";
        // The browser's own signup, with the user agent a browser sends.
        let signup = app
            .client
            .post(app.url("/signup"))
            .headers(app.same_origin())
            .header(USER_AGENT, "Mozilla/5.0 (TestBrowser)")
            .form(&[("email", email)])
            .send()
            .await
            .unwrap();
        assert_is_redirect_to(&signup, "/");
        let mails = smtp.wait_for(1, WAIT).await;
        let link = mails[0].link(&format!("{}/confirm/", app.address)).expect("a confirmation link");

        // The page says what happened and offers the next steps.
        let home = app.get_html("/").await;
        assert!(home.contains(&format!("Thanks for signing up, {email}!")));
        assert!(home.contains(&format!("We sent a confirmation link to <strong>{email}</strong>")));
        assert!(home.contains(r#"action="/resend""#) && home.contains(r#"action="/unregister""#));
        assert_eq!(status_of(&app, email).await.as_deref(), Some("pending"));

        // The mail: from the list, to the person, with everything a list mail carries.
        let mail = &smtp.to(email)[0];
        assert_eq!(mail.from, "news@example.org");
        let parsed = mail.parsed();
        assert!(parsed.subject().unwrap().contains("The Gardening Club"));
        assert!(parsed.date().is_some());
        let message_id = mail.header("Message-ID").expect("a Message-ID");
        assert!(message_id.ends_with("@127.0.0.1>"), "{message_id}");
        let unsubscribe = mail.header("List-Unsubscribe").expect("List-Unsubscribe");
        assert!(unsubscribe.starts_with(&format!("<{}/u/", app.address)), "{unsubscribe}");
        assert_eq!(mail.header("List-Unsubscribe-Post").as_deref(), Some("List-Unsubscribe=One-Click"));
        assert!(mail.header("List-Id").unwrap().contains("the-gardening-club.127.0.0.1"));
        let html = mail.html().expect("an HTML part");
        assert!(html.contains(&link), "the HTML part links to the same page");
        assert!(mail.text().contains(&link));

        // A link scanner fetches the page: nothing is confirmed.
        let scanner = bare_client();
        let page = scanner.get(&link).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        let page = page.text().await.unwrap();
        assert!(page.contains("Confirm your subscription") && page.contains(email));
        assert_eq!(status_of(&app, email).await.as_deref(), Some("pending"));

        // The person presses Confirm, in this browser.
        let path = path_of(&app, &link);
        assert_is_redirect_to(&app.post_form(&path, &[]).await, &path);
        assert!(app.get_html(&path).await.contains("You're on the list"));
        assert_eq!(status_of(&app, email).await.as_deref(), Some("confirmed"));
        let home = app.get_html("/").await;
        assert!(home.contains("You're on the list.") && !home.contains(r#"action="/resend""#));
        let evidence = app
            .database
            .strings(&format!(
                "SELECT source || '|' || signup_ip || '|' || coalesce(signup_agent, '') || '|' || consent \
                 || '|' || confirm_ip || '|' || CAST(confirmed_at AS TEXT) FROM subscribers \
                 WHERE email = '{email}'"
            ))
            .await;
        let fields: Vec<&str> = evidence[0].split('|').collect();
        assert_eq!(&fields[..3], ["form", "127.0.0.0/24", "Mozilla/5.0 (TestBrowser)"]);
        assert_eq!(fields[3].len(), 16, "a version of the consent text: {fields:?}");
        assert_eq!(fields[4], "127.0.0.0/24");

        // Confirming twice is not an error.
        assert_is_redirect_to(&stranger(&app).post_form(&path, &[]).await, &path);
        assert!(stranger(&app).get_html(&path).await.contains("You're on the list"));
        assert_eq!(smtp.to(email).len(), 1, "no second mail, and no welcome without welcome.txt");
    }

    async fn confirmation_links_expire_and_forged_ones_do_not_work(backend: Backend) {
        let smtp = SmtpServer::start().await;
        let app = app_with_mail(backend, &smtp, &["--confirm-ttl", "1s"]).await;
        let link = sign_up_and_get_link(&app, &app.visitor, &smtp, "late@example.com").await;
        let path = path_of(&app, &link);
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let expired = app.get(&path).await;
        assert_eq!(expired.status(), StatusCode::GONE);
        let page = expired.text().await.unwrap();
        assert!(page.contains("This link has expired") && page.contains("Sign up again"));
        assert_eq!(app.post_form(&path, &[]).await.status(), StatusCode::GONE);
        assert_eq!(status_of(&app, "late@example.com").await.as_deref(), Some("pending"));

        // One character changed, a made-up token, junk: "this link doesn't work".
        let token = path.trim_start_matches("/confirm/");
        let mut forged = token.chars().collect::<Vec<_>>();
        let last = forged.len() - 1;
        forged[last] = if forged[last] == 'A' { 'B' } else { 'A' };
        let forged: String = forged.into_iter().collect();
        for bad in [forged.as_str(), "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "nonsense", "%00"] {
            let response = app.get(&format!("/confirm/{bad}")).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{bad}");
            assert!(response.text().await.unwrap().contains("This link doesn't work"));
            assert_eq!(app.post_form(&format!("/confirm/{bad}"), &[]).await.status(), StatusCode::NOT_FOUND);
        }
        // A new signup of a pending address sends a fresh link.
        let fresh = sign_up_and_get_link(&app, &stranger(&app), &smtp, "late@example.com").await;
        assert_ne!(fresh, link);
    }

    async fn at_most_three_confirmation_mails_a_day_whoever_asks(backend: Backend) {
        let smtp = SmtpServer::start().await;
        let app = app_with_mail(backend, &smtp, &[]).await;
        let email = "popular@example.com";
        sign_up_and_get_link(&app, &app.visitor, &smtp, email).await;
        let resend = |visitor: &Visitor| {
            let visitor = Visitor { address: visitor.address.clone(), client: visitor.client.clone() };
            async move {
                let token = form_token(&visitor.get_html("/").await).expect("a form token");
                let response = visitor.post_form("/resend", &[("csrf_token", &token)]).await;
                assert_is_redirect_to(&response, "/");
                visitor.get_html("/").await
            }
        };
        let page = resend(&app.visitor).await;
        assert!(page.contains(&format!("If {email} still needs confirming, a new link is on its way.")));
        smtp.wait_for(2, WAIT).await;
        resend(&app.visitor).await;
        smtp.wait_for(3, WAIT).await;
        // A fourth ask, from here or from anyone else, sends nothing, and says the same.
        let page = resend(&app.visitor).await;
        assert!(page.contains("a new link is on its way"));
        let other = stranger(&app);
        assert_is_redirect_to(&other.signup(email).await, "/");
        assert!(other.get_html("/").await.contains(&format!("Thanks for signing up, {email}!")));
        // Unregistering and signing up again does not reset the count either.
        let token = form_token(&other.get_html("/").await).unwrap();
        assert_is_redirect_to(&other.post_form("/unregister", &[("csrf_token", &token)]).await, "/");
        assert_eq!(status_of(&app, email).await, None);
        assert_is_redirect_to(&other.signup(email).await, "/");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(smtp.to(email).len(), 3);
        // A confirmed address gets no confirmation mail at all, and the answer is the same.
        let known = sign_up_and_get_link(&app, &stranger(&app), &smtp, "known@example.com").await;
        let path = path_of(&app, &known);
        assert_is_redirect_to(&app.post_form(&path, &[]).await, &path);
        let prober = stranger(&app);
        assert_is_redirect_to(&prober.signup("known@example.com").await, "/");
        assert!(prober.get_html("/").await.contains("We sent a confirmation link to"));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(smtp.to("known@example.com").len(), 1);
    }

    async fn browsers_asking_at_the_same_moment_get_one_row_and_at_most_three_mails(backend: Backend) {
        let smtp = SmtpServer::start().await;
        let app = app_with_mail(backend, &smtp, &[]).await;
        const SHARED: usize = 6;
        const OWN: usize = 6;
        const ROUNDS: usize = 5;
        for round in 0..ROUNDS {
            // In each round six browsers ask for one address while six others each sign up
            // their own, all released at once: the same address meets itself in one commit,
            // and different addresses share commits.
            let start = std::sync::Arc::new(tokio::sync::Barrier::new(SHARED + OWN));
            let mut asks = tokio::task::JoinSet::new();
            for i in 0..SHARED + OWN {
                let (visitor, start) = (stranger(&app), start.clone());
                let email = if i < SHARED {
                    format!("crowd{round}@example.com")
                } else {
                    format!("own{round}-{i}@example.com")
                };
                asks.spawn(async move {
                    start.wait().await;
                    let response = visitor.signup(&email).await;
                    assert_is_redirect_to(&response, "/");
                    let page = visitor.get_html("/").await;
                    assert!(
                        page.contains(&format!("We sent a confirmation link to <strong>{email}</strong>")),
                        "{email}: {page}"
                    );
                });
            }
            while let Some(asked) = asks.join_next().await {
                asked.unwrap();
            }
            smtp.wait_for((round + 1) * (3 + OWN), WAIT).await;
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(smtp.messages().len(), ROUNDS * (3 + OWN), "no mail beyond the limit");
        for round in 0..ROUNDS {
            assert_eq!(smtp.to(&format!("crowd{round}@example.com")).len(), 3, "round {round}");
            for i in SHARED..SHARED + OWN {
                assert_eq!(smtp.to(&format!("own{round}-{i}@example.com")).len(), 1, "round {round}");
            }
        }
        assert_eq!(app.count_rows("subscribers").await, (ROUNDS * (1 + OWN)) as i64);
    }

    async fn a_relay_that_is_down_gets_the_mail_once_it_is_back(backend: Backend) {
        let smtp = SmtpServer::start().await;
        smtp.set_mode(SmtpMode::Refuse);
        let app = app_with_mail(backend, &smtp, &[]).await;
        assert_is_redirect_to(&app.signup("patient@example.com").await, "/");
        eventually("a few refused attempts", || async { smtp.connections() >= 2 }).await;
        assert!(smtp.messages().is_empty());
        let attempts = app.database.strings("SELECT CAST(attempts AS TEXT) FROM outbox").await;
        assert!(attempts[0].parse::<i64>().unwrap() >= 1);
        smtp.set_mode(SmtpMode::Accept);
        smtp.wait_for(1, Duration::from_secs(20)).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(smtp.to("patient@example.com").len(), 1, "delivered exactly once");
        let status = app.database.strings("SELECT status FROM outbox").await;
        assert_eq!(status, ["sent"]);

        // A relay that answers 4xx is retried the same way.
        smtp.set_mode(SmtpMode::Transient);
        assert_is_redirect_to(&stranger(&app).signup("later@example.com").await, "/");
        eventually("a 451", || async { smtp.connections() >= 4 }).await;
        smtp.set_mode(SmtpMode::Accept);
        smtp.wait_for(2, Duration::from_secs(20)).await;
        assert_eq!(smtp.to("later@example.com").len(), 1);
    }

    async fn a_permanent_refusal_is_marked_failed_and_not_retried(backend: Backend) {
        let smtp = SmtpServer::start().await;
        smtp.set_mode(SmtpMode::Permanent);
        let app = app_with_mail(backend, &smtp, &[]).await;
        assert_is_redirect_to(&app.signup("nobody@example.com").await, "/");
        eventually("the mail marked failed", || async {
            app.database.strings("SELECT status FROM outbox").await == ["failed"]
        })
        .await;
        let seen = smtp.connections();
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(smtp.connections(), seen, "not retried");
        // The admin sees it, with the server's answer.
        let admin = stranger(&app);
        admin.login_ok().await;
        let id = id_of(&app, "nobody@example.com").await;
        let page = unescape(&admin.get_html(&format!("/admin/subscribers/{id}")).await);
        assert!(page.contains("failed") && page.contains("no such mailbox here"), "{page}");
    }

    async fn one_click_unsubscribe_works_from_a_mail_provider_with_no_origin(backend: Backend) {
        let smtp = SmtpServer::start().await;
        let app = app_with_mail(backend, &smtp, &[]).await;
        let email = "leaver@example.com";
        let link = sign_up_and_get_link(&app, &app.visitor, &smtp, email).await;
        let path = path_of(&app, &link);
        assert_is_redirect_to(&app.post_form(&path, &[]).await, &path);
        let mail = &smtp.to(email)[0];
        let unsubscribe = mail.header("List-Unsubscribe").unwrap();
        let unsubscribe = unsubscribe.trim_start_matches('<').trim_end_matches('>');
        // What Gmail's servers send: a bare POST, no Origin, no Sec-Fetch-Site, no cookies.
        let response = bare_client()
            .post(unsubscribe)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body("List-Unsubscribe=One-Click")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.text().await.unwrap().is_empty());
        assert_eq!(status_of(&app, email).await, None, "off the list");
        assert_eq!(app.count_rows("suppressions").await, 1);
        assert_eq!(app.count_rows("outbox").await, 0);
        // The browser that signed up is not thanked any more: its session ended.
        assert!(app.get_html("/").await.contains(r#"action="/signup""#));
        // Again: still 200, nothing more to do. Multipart works too.
        let again = bare_client()
            .post(unsubscribe)
            .header(CONTENT_TYPE, "multipart/form-data; boundary=XyZ")
            .body("--XyZ\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n--XyZ--\r\n")
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::OK);
        // The admin counts who left.
        let admin = stranger(&app);
        admin.login_ok().await;
        let list = admin.get_html("/admin").await;
        assert!(list.contains("0 confirmed · 0 pending · 1 left"), "{list}");
    }

    async fn a_person_leaves_from_a_second_device_with_no_cookies(backend: Backend) {
        let smtp = SmtpServer::start().await;
        let app = app_with_mail(backend, &smtp, &[]).await;
        let email = "phone@example.com";
        sign_up_and_get_link(&app, &app.visitor, &smtp, email).await;
        let unsubscribe = smtp.to(email)[0].link(&format!("{}/u/", app.address)).expect("an unsubscribe link");
        let phone = stranger(&app);
        let path = path_of(&app, &unsubscribe);
        let page = phone.get_html(&path).await;
        assert!(page.contains(email) && page.contains("Unsubscribe"));
        assert!(status_of(&app, email).await.is_some(), "looking is not leaving");
        assert_is_redirect_to(&phone.post_form(&path, &[]).await, "/left");
        assert!(phone.get_html("/left").await.contains("You have left"));
        assert_eq!(status_of(&app, email).await, None);
        let gone = phone.get(&path).await;
        assert_eq!(gone.status(), StatusCode::NOT_FOUND);
        assert!(gone.text().await.unwrap().contains("This link doesn't work"));
        // A cross-site form cannot do it for them.
        let cross = bare_client()
            .post(app.url(&path))
            .header("origin", "https://evil.example")
            .header("sec-fetch-site", "cross-site")
            .form(&[("x", "y")])
            .send()
            .await
            .unwrap();
        assert_eq!(cross.status(), StatusCode::FORBIDDEN);
        // Signing up again on the form is new consent: pending, a new mail, and once confirmed
        // the suppression is lifted.
        let link = sign_up_and_get_link(&app, &phone, &smtp, email).await;
        assert_eq!(app.count_rows("suppressions").await, 1);
        let path = path_of(&app, &link);
        assert_is_redirect_to(&phone.post_form(&path, &[]).await, &path);
        assert_eq!(app.count_rows("suppressions").await, 0);
        assert_eq!(status_of(&app, email).await.as_deref(), Some("confirmed"));
    }

    async fn a_person_downloads_their_data(backend: Backend) {
        let smtp = SmtpServer::start().await;
        let app = app_with_mail(backend, &smtp, &[]).await;
        let email = "curious@example.com";
        let link = sign_up_and_get_link(&app, &app.visitor, &smtp, email).await;
        let path = path_of(&app, &link);
        assert_is_redirect_to(&app.post_form(&path, &[]).await, &path);
        eventually("the mail recorded as sent", || async {
            app.database.strings("SELECT status FROM outbox").await == ["sent"]
        })
        .await;
        let unsubscribe = smtp.to(email)[0].link(&format!("{}/u/", app.address)).unwrap();
        let phone = stranger(&app);
        let data = phone.post_form(&format!("{}/data", path_of(&app, &unsubscribe)), &[]).await;
        assert_eq!(data.status(), StatusCode::OK);
        assert_eq!(data.headers()[CONTENT_TYPE], "application/json");
        assert!(data.headers()["content-disposition"].to_str().unwrap().starts_with("attachment"));
        let json: serde_json::Value = serde_json::from_str(&data.text().await.unwrap()).unwrap();
        assert_eq!(json["address"], email);
        assert_eq!(json["status"], "confirmed");
        assert_eq!(json["evidence"]["source"], "form");
        assert_eq!(json["evidence"]["signup_network"], "127.0.0.0/24");
        assert!(json["confirmed_at"].as_str().unwrap().ends_with('Z'));
        assert_eq!(json["mails"][0]["purpose"], "confirm");
        assert_eq!(json["mails"][0]["status"], "sent");
        // A GET downloads nothing: the data leaves only on a button press.
        let get = phone.get(&format!("{}/data", path_of(&app, &unsubscribe))).await;
        assert_eq!(get.status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    async fn erasing_leaves_nothing_that_names_the_address(backend: Backend) {
        let smtp = SmtpServer::start().await;
        let app = app_with_mail(backend, &smtp, &[]).await;
        let email = "Forget.Me@example.com";
        sign_up_and_get_link(&app, &app.visitor, &smtp, email).await;
        let keep = sign_up_and_get_link(&app, &stranger(&app), &smtp, "keep@example.com").await;
        assert!(!keep.is_empty());
        let unsubscribe = smtp.to("Forget.Me@example.com")[0].link(&format!("{}/u/", app.address)).unwrap();
        let phone = stranger(&app);
        let erase = phone.post_form(&format!("{}/erase", path_of(&app, &unsubscribe)), &[]).await;
        assert_is_redirect_to(&erase, "/erased");
        assert!(phone.get_html("/erased").await.contains("Your data is erased"));
        assert!(app.get_html("/").await.contains(r#"action="/signup""#), "its sessions ended");

        // Every text and binary column of every table, read back as text.
        let tables = if app.database.is_postgres() {
            app.database
                .strings("SELECT table_name::TEXT FROM information_schema.tables WHERE table_schema = 'public'")
                .await
        } else {
            app.database
                .strings("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'subscribers_search%'")
                .await
        };
        let needles = ["forget.me", "Forget.Me"];
        for table in tables {
            let rows = if app.database.is_postgres() {
                app.database.strings(&format!("SELECT CAST(t AS TEXT) FROM {table} AS t")).await
            } else {
                let columns = app.database.strings(&format!("SELECT name FROM pragma_table_info('{table}')")).await;
                let joined = columns.iter().map(|c| format!("quote({c})")).collect::<Vec<_>>().join(" || '|' || ");
                app.database.strings(&format!("SELECT {joined} FROM {table}")).await
            };
            for row in rows {
                for needle in needles {
                    assert!(!row.contains(needle), "{table} still names the address: {row}");
                }
            }
        }
        assert_eq!(app.count_rows("suppressions").await, 1);
        assert_eq!(status_of(&app, "keep@example.com").await.as_deref(), Some("pending"));
        if !app.database.is_postgres() {
            let found = app.database.strings("SELECT CAST(count(*) AS TEXT) FROM subscribers_search WHERE subscribers_search MATCH '\"forget\"'").await;
            assert_eq!(found, ["0"], "the search index forgot it too");
        }
    }

    async fn unconfirmed_signups_are_purged_after_the_pending_ttl(backend: Backend) {
        let smtp = SmtpServer::start().await;
        let app = app_with_mail(backend, &smtp, &["--pending-ttl", "2s"]).await;
        sign_up_and_get_link(&app, &app.visitor, &smtp, "fickle@example.com").await;
        let confirmed = sign_up_and_get_link(&app, &stranger(&app), &smtp, "steady@example.com").await;
        let path = path_of(&app, &confirmed);
        assert_is_redirect_to(&app.post_form(&path, &[]).await, &path);
        eventually("the stale signup purged", || async {
            status_of(&app, "fickle@example.com").await.is_none()
        })
        .await;
        assert_eq!(status_of(&app, "steady@example.com").await.as_deref(), Some("confirmed"));
        let kinds = app.database.strings("SELECT purpose FROM outbox").await;
        assert_eq!(kinds, ["confirm"], "the purged signup's mail went with it");
    }

    async fn a_welcome_mail_follows_confirmation_when_the_templates_hold_one(backend: Backend) {
        let smtp = SmtpServer::start().await;
        let templates = tempfile::tempdir().unwrap();
        std::fs::write(
            templates.path().join("welcome.txt"),
            "Subject: Welcome to {{ list_name }}\n\nHello {{ email }}, you are in.\nLeave: {{ unsubscribe_url }}\n",
        )
        .unwrap();
        let dir = templates.path().display().to_string();
        let app = app_with_mail(backend, &smtp, &["--templates-dir", &dir]).await;
        let link = sign_up_and_get_link(&app, &app.visitor, &smtp, "new@example.com").await;
        let path = path_of(&app, &link);
        assert_is_redirect_to(&app.post_form(&path, &[]).await, &path);
        let mails = smtp.wait_for(2, WAIT).await;
        let welcome = &mails[1];
        assert_eq!(welcome.parsed().subject(), Some("Welcome to our list"));
        assert!(welcome.text().contains("Hello new@example.com, you are in."));
        assert!(welcome.html().is_none() || !welcome.text().is_empty());
        assert!(welcome.header("List-Unsubscribe").is_some());
        assert_ne!(welcome.header("Message-ID"), mails[0].header("Message-ID"));
        // Confirming again sends no second welcome.
        assert_is_redirect_to(&app.post_form(&path, &[]).await, &path);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(smtp.messages().len(), 2);
    }

    async fn the_admin_sees_statuses_counts_evidence_and_can_resend(backend: Backend) {
        let smtp = SmtpServer::start().await;
        let app = app_with_mail(backend, &smtp, &[]).await;
        let link = sign_up_and_get_link(&app, &app.visitor, &smtp, "yes@example.com").await;
        let path = path_of(&app, &link);
        assert_is_redirect_to(&app.post_form(&path, &[]).await, &path);
        sign_up_and_get_link(&app, &stranger(&app), &smtp, "maybe@example.com").await;
        let admin = stranger(&app);
        admin.login_ok().await;
        let all = admin.get_html("/admin").await;
        assert!(all.contains("1 confirmed · 1 pending · 0 left"), "{all}");
        assert!(all.contains("2 subscribers."));
        let pending = admin.get_html("/admin?status=pending").await;
        assert!(pending.contains(">maybe@example.com<") && !pending.contains(">yes@example.com<"));
        assert!(pending.contains("1 subscriber."));
        let confirmed = admin.get_html("/admin?status=confirmed&q=exa").await;
        assert!(confirmed.contains(">yes@example.com<") && !confirmed.contains(">maybe@example.com<"));
        assert!(confirmed.contains("1 match of 1 subscriber."));
        let short = admin.get_html("/admin?status=pending&q=y").await;
        assert!(short.contains(">maybe@example.com<") && !short.contains(">yes@example.com<"));
        assert_eq!(admin.get("/admin?status=left").await.status(), StatusCode::BAD_REQUEST);

        let id = id_of(&app, "maybe@example.com").await;
        let page = unescape(&admin.get_html(&format!("/admin/subscribers/{id}")).await);
        assert!(page.contains("maybe@example.com") && page.contains("pending"));
        assert!(page.contains("127.0.0.0/24") && page.contains("confirmation"));
        let token = form_token(&page).unwrap();
        let resend = admin.post_form("/admin/resend", &[("csrf_token", &token), ("id", &id)]).await;
        assert_is_redirect_to(&resend, &format!("/admin/subscribers/{id}"));
        assert!(admin.get_html(&format!("/admin/subscribers/{id}")).await.contains("A new confirmation link to maybe@example.com is queued."));
        let mails = smtp.wait_for(3, WAIT).await;
        assert_eq!(mails.iter().filter(|m| m.to == ["maybe@example.com"]).count(), 2);
        let yes = id_of(&app, "yes@example.com").await;
        let page = admin.get_html(&format!("/admin/subscribers/{yes}")).await;
        assert!(page.contains("confirmed") && !page.contains(r#"action="/admin/resend""#));
        assert_eq!(admin.get("/admin/subscribers/999999").await.status(), StatusCode::NOT_FOUND);
        assert_eq!(admin.get("/admin/subscribers/abc").await.status(), StatusCode::BAD_REQUEST);
        assert_is_redirect_to(&stranger(&app).get(&format!("/admin/subscribers/{id}")).await, "/admin/login");
    }

    async fn unregister_from_a_waiting_browser_removes_only_an_unconfirmed_signup(backend: Backend) {
        let smtp = SmtpServer::start().await;
        let app = app_with_mail(backend, &smtp, &[]).await;
        // Someone types another person's address; the owner confirms from their own mail.
        let typist = stranger(&app);
        let link = sign_up_and_get_link(&app, &typist, &smtp, "owner@example.com").await;
        let path = path_of(&app, &link);
        assert_is_redirect_to(&stranger(&app).post_form(&path, &[]).await, &path);
        // The typist's Unregister cannot take the confirmed owner off the list.
        let token = form_token(&typist.get_html("/").await).unwrap();
        assert_is_redirect_to(&typist.post_form("/unregister", &[("csrf_token", &token)]).await, "/");
        assert!(typist.get_html("/").await.contains("isn&#x27;t waiting for confirmation any more"));
        assert_eq!(status_of(&app, "owner@example.com").await.as_deref(), Some("confirmed"));
        // An unconfirmed one goes, with its queued mail.
        smtp.set_mode(SmtpMode::Refuse);
        assert_is_redirect_to(&app.signup("oops@example.com").await, "/");
        let token = form_token(&app.get_html("/").await).unwrap();
        assert_is_redirect_to(&app.post_form("/unregister", &[("csrf_token", &token)]).await, "/");
        assert!(app.get_html("/").await.contains("We have removed oops@example.com from the list!"));
        assert_eq!(status_of(&app, "oops@example.com").await, None);
        smtp.set_mode(SmtpMode::Accept);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(smtp.to("oops@example.com").is_empty(), "its mail was not sent");
    }

    async fn mail_to_a_directory_writes_one_eml_file_per_message(backend: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().join("outbox").display());
        let app = spawn_app_with(backend, &["--smtp-url", &url, "--mail-from", FROM]).await;
        assert_is_redirect_to(&app.signup("local@example.com").await, "/");
        let mut files = Vec::new();
        let deadline = Instant::now() + WAIT;
        while files.is_empty() {
            assert!(Instant::now() < deadline, "no .eml file");
            tokio::time::sleep(Duration::from_millis(100)).await;
            files = std::fs::read_dir(dir.path().join("outbox"))
                .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "eml")).collect())
                .unwrap_or_default();
        }
        assert_eq!(files.len(), 1);
        let bytes = std::fs::read(&files[0]).unwrap();
        let parsed = mail_parser::MessageParser::default().parse(&bytes).unwrap();
        let text = parsed.body_text(0).unwrap();
        let start = text.find("/confirm/").expect("a confirmation link");
        let token: String = text[start + 9..].chars().take_while(|c| !c.is_whitespace()).collect();
        let path = format!("/confirm/{token}");
        assert_is_redirect_to(&app.post_form(&path, &[]).await, &path);
        assert_eq!(status_of(&app, "local@example.com").await.as_deref(), Some("confirmed"));
    }
}

#[tokio::test]
async fn without_mail_signups_are_single_opt_in_as_before() {
    let app = spawn_app(Backend::Sqlite).await;
    assert_is_redirect_to(&app.signup("direct@example.com").await, "/");
    let home = app.get_html("/").await;
    assert!(home.contains("You're on the list.") && !home.contains("/resend"));
    assert_eq!(status_of(&app, "direct@example.com").await.as_deref(), Some("confirmed"));
    assert_eq!(app.count_rows("outbox").await, 0);
}

#[tokio::test]
async fn starttls_to_a_relay_with_a_private_ca() {
    let ca = TestCa::new();
    let smtp = SmtpServer::start_tls(&ca).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.ca_pem).unwrap();
    let url = format!("smtp+starttls://localhost:{}", smtp.port);
    let ca_file = ca_file.display().to_string();
    let app =
        spawn_app_with(Backend::Sqlite, &mail_args(&url, &["--smtp-ca-file", &ca_file])).await;
    assert_is_redirect_to(&app.signup("secret@example.com").await, "/");
    let mails = smtp.wait_for(1, WAIT).await;
    assert!(mails[0].over_tls, "the mail crossed an encrypted connection");

    // Without the CA the certificate is not trusted, and nothing is sent in the clear.
    let untrusting_smtp = SmtpServer::start_tls(&ca).await;
    let url = format!("smtp+starttls://localhost:{}", untrusting_smtp.port);
    let app = spawn_app_with(Backend::Sqlite, &mail_args(&url, &[])).await;
    assert_is_redirect_to(&app.signup("secret@example.com").await, "/");
    eventually("a refused certificate recorded", || async {
        app.database
            .strings("SELECT coalesce(last_error, '') FROM outbox")
            .await
            .first()
            .is_some_and(|e| !e.is_empty())
    })
    .await;
    assert!(untrusting_smtp.messages().is_empty());
    let error = app.database.strings("SELECT last_error FROM outbox").await;
    assert!(error[0].to_lowercase().contains("certificate"), "{error:?}");
}

#[tokio::test]
async fn two_instances_on_postgres_send_each_of_200_mails_once() {
    let Some(backend) = Backend::postgres() else { return };
    let smtp = SmtpServer::start().await;
    let app = app_with_mail(backend, &smtp, &[]).await;
    let second = app.start_server().await;
    let addresses = [app.address.clone(), second.address.clone()];
    let mut signups = tokio::task::JoinSet::new();
    for i in 0..200 {
        let address = addresses[i % 2].clone();
        signups.spawn(async move {
            let visitor = Visitor { address, client: browser() };
            let response = visitor.signup(&format!("many{i}@example.com")).await;
            assert_eq!(response.status(), StatusCode::SEE_OTHER);
            assert_eq!(response.headers()[LOCATION], "/");
        });
    }
    while let Some(done) = signups.join_next().await {
        done.unwrap();
    }
    smtp.wait_for(200, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mails = smtp.messages();
    assert_eq!(mails.len(), 200, "none twice");
    let mut recipients: Vec<String> = mails.iter().map(|m| m.to[0].clone()).collect();
    recipients.sort();
    recipients.dedup();
    assert_eq!(recipients.len(), 200, "each recipient exactly once");
    let sent = app
        .database
        .strings("SELECT CAST(count(*) AS TEXT) FROM outbox WHERE status = 'sent'")
        .await;
    assert_eq!(sent, ["200"]);
    // And five signups of one address through both at once still mean at most three mails.
    let both = (0..6).map(|i| {
        let address = addresses[i % 2].clone();
        async move { Visitor { address, client: browser() }.signup("shared@example.com").await }
    });
    let mut joined = tokio::task::JoinSet::new();
    for signup in both {
        joined.spawn(signup);
    }
    while let Some(done) = joined.join_next().await {
        assert_eq!(done.unwrap().status(), StatusCode::SEE_OTHER);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(smtp.to("shared@example.com").len(), 3);
    second.stop().await;
}

on_both_backends! {
    async fn a_claim_that_is_never_recorded_is_released_by_its_lease(backend: Backend) {
        use enlist::config::DatabaseUrl;
        use enlist::domain::{ClientEvidence, Door, Evidence, SubscriberEmail};
        use enlist::store::{ConfirmationQueued, ConfirmationRequest, NewSubscriber, PoolLimits};

        let dir = tempfile::tempdir().unwrap();
        let database = common::TestDatabase::create(&backend, dir.path()).await;
        let limits = PoolLimits {
            pool_size: 2,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
        };
        let store = enlist::store::open(&DatabaseUrl::parse(&database.url).unwrap(), limits, enlist::store::Role::Tool).await.unwrap();
        let evidence = Evidence {
            door: Door::Form,
            client: ClientEvidence::new([127, 0, 0, 1].into(), None, false),
            consent: "v".into(),
        };
        let now = enlist::session::unix_now();
        for i in 0..3 {
            let email = SubscriberEmail::parse(&format!("lease{i}@example.com")).unwrap();
            let request = ConfirmationRequest {
                subscriber: NewSubscriber { email: &email, evidence: &evidence, address_hash: [i; 32], now },
                nonce: [i; 16],
                expires_at: now + 3600,
                limit: 3,
                window_start: now - 86400,
            };
            assert_eq!(store.request_confirmation(request).await.unwrap(), ConfirmationQueued::Queued);
        }
        // A claim takes no more than it asks for.
        let two = store.claim_mail(now, now + 1, 11, 2).await.unwrap();
        assert_eq!(two.len(), 2);
        // A worker claims everything with a one-second lease, then dies without a word.
        let one = store.claim_mail(now, now + 1, 11, 10).await.unwrap();
        assert_eq!(one.len(), 1, "the other two are leased");
        let first: Vec<_> = two.into_iter().chain(one).collect();
        assert!(store.claim_mail(now, now + 60, 22, 10).await.unwrap().is_empty(), "leased");
        // Once the lease is over, another worker takes them.
        let later = now + 2;
        let second = store.claim_mail(later, later + 60, 22, 10).await.unwrap();
        let mut ids: Vec<i64> = second.iter().map(|m| m.id).collect();
        ids.sort_unstable();
        let mut expected: Vec<i64> = first.iter().map(|m| m.id).collect();
        expected.sort_unstable();
        assert_eq!(ids, expected);
        store.close().await;
    }
}
