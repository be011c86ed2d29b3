//! Announcements: written, previewed and tested on the admin page, sent to everyone confirmed,
//! each recipient exactly once with their own working unsubscribe link, paced, paused, resumed,
//! cancelled; nobody who is pending or has left gets one; a kill -9 mid-send loses nothing and
//! sends nothing twice but what a receiver can recognise; the API and the CLI do the same.

#[macro_use]
mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::smtp::{Captured, SmtpServer};
use common::{Backend, TestApp, Visitor, browser, form_token, spawn_app_with};
use reqwest::StatusCode;
use reqwest::header::LOCATION;
use serde_json::{Value, json};

// An upper bound for a loaded CI machine; a passing test returns as soon as the mail is in.
const WAIT: Duration = Duration::from_secs(420);

fn mail_args(smtp: &SmtpServer, rate: &str) -> Vec<String> {
    ["--smtp-url", &smtp.url(), "--mail-from", "News <news@example.com>", "--mail-rate", rate]
        .into_iter()
        .map(str::to_owned)
        .collect()
}

async fn spawn(backend: Backend, smtp: &SmtpServer, rate: &str, extra: &[&str]) -> TestApp {
    let mut args = mail_args(smtp, rate);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    spawn_app_with(backend, &args).await
}

async fn admin(app: &TestApp) -> Visitor {
    let admin = Visitor { address: app.address.clone(), client: browser() };
    admin.login_ok().await;
    admin
}

async fn add_subscribers(app: &TestApp, prefix: &str, n: u32, status: &str) {
    app.database.add_subscribers(prefix, n, status).await;
}

fn expected(prefix: &str, n: u32) -> HashSet<String> {
    (1..=n).map(|i| format!("{prefix}{i}@bulk.example")).collect()
}

/// Saves a draft on the admin page; returns its id.
async fn draft(admin: &Visitor, subject: &str, body: &str) -> i64 {
    let csrf = form_token(&admin.get_html("/admin/announcements").await).unwrap();
    let response = admin
        .post_form(
            "/admin/announcements",
            &[("csrf_token", &csrf), ("subject", subject), ("body", body)],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = response.headers()[LOCATION].to_str().unwrap().to_owned();
    location.trim_start_matches("/admin/announcements/").parse().expect("the new id")
}

async fn act(admin: &Visitor, id: i64, action: &str) {
    let csrf = form_token(&admin.get_html(&format!("/admin/announcements/{id}")).await).unwrap();
    let response = admin
        .post_form(&format!("/admin/announcements/{id}/{action}"), &[("csrf_token", &csrf)])
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "{action}");
}

async fn state(app: &TestApp, id: i64) -> String {
    app.database.strings(&format!("SELECT state FROM announcements WHERE id = {id}")).await[0]
        .clone()
}

async fn wait_for_state(app: &TestApp, id: i64, wanted: &str) {
    let deadline = Instant::now() + WAIT;
    while state(app, id).await != wanted {
        assert!(Instant::now() < deadline, "announcement {id} never became {wanted}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn subject_of(message: &Captured) -> String {
    message.parsed().subject().unwrap_or_default().to_owned()
}

/// The messages with this subject, by recipient.
fn by_recipient(smtp: &SmtpServer, subject: &str) -> HashMap<String, Vec<Captured>> {
    let mut found: HashMap<String, Vec<Captured>> = HashMap::new();
    for message in smtp.messages().into_iter().filter(|m| subject_of(m) == subject) {
        for to in &message.to {
            found.entry(to.clone()).or_default().push(message.clone());
        }
    }
    found
}

async fn wait_for_count(smtp: &SmtpServer, subject: &str, count: usize) {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = by_recipient(smtp, subject).values().map(Vec::len).sum::<usize>();
        if got >= count {
            return;
        }
        assert!(Instant::now() < deadline, "{got} of {count} mails of {subject:?} arrived");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn sent_count(smtp: &SmtpServer, subject: &str) -> usize {
    by_recipient(smtp, subject).values().map(Vec::len).sum()
}

on_both_backends! {
    async fn everyone_confirmed_gets_exactly_one_with_their_own_working_unsubscribe_link(backend: Backend) {
        let smtp = SmtpServer::start().await;
        let app = spawn(backend, &smtp, "0", &[]).await;
        add_subscribers(&app, "n", 10_000, "confirmed").await;
        add_subscribers(&app, "p", 25, "pending").await;
        let admin = admin(&app).await;
        let (id, confirm) = admin.send_announcement("The big news", "# Hello\n\nSomething **new** for everyone.").await;
        assert!(confirm.contains("10,000 confirmed subscribers"), "{confirm}");

        // Someone signing up meanwhile gets their confirmation first, not after the list.
        wait_for_count(&smtp, "The big news", 200).await;
        let newcomer = Visitor { address: app.address.clone(), client: browser() };
        common::assert_is_redirect_to(&newcomer.signup("newcomer@example.org").await, "/");
        let deadline = Instant::now() + Duration::from_secs(30);
        while smtp.to("newcomer@example.org").is_empty() {
            assert!(Instant::now() < deadline, "the confirmation never came");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let by_then = sent_count(&smtp, "The big news");
        assert!(by_then < 9_000, "the confirmation waited behind the announcement: {by_then} sent first");

        wait_for_count(&smtp, "The big news", 10_000).await;
        wait_for_state(&app, id, "sent").await;
        let got = by_recipient(&smtp, "The big news");
        let recipients: HashSet<String> = got.keys().cloned().collect();
        assert_eq!(recipients, expected("n", 10_000), "every confirmed address, no pending one");
        assert!(got.values().all(|copies| copies.len() == 1), "nobody twice");

        let mut message_ids = HashSet::new();
        let mut links = HashSet::new();
        for (to, copies) in &got {
            let mail = &copies[0];
            assert_eq!(mail.header("Precedence").as_deref(), Some("bulk"));
            assert_eq!(mail.header("List-Unsubscribe-Post").as_deref(), Some("List-Unsubscribe=One-Click"));
            assert!(mail.header("List-Id").is_some_and(|id| id.contains("<our-list.127.0.0.1>")), "{:?}", mail.header("List-Id"));
            assert!(mail.header("Date").is_some());
            assert!(message_ids.insert(mail.header("Message-ID").expect("a Message-ID")));
            let unsubscribe = mail.header("List-Unsubscribe").expect("List-Unsubscribe");
            let link = unsubscribe.trim_matches(['<', '>']).to_owned();
            assert!(link.starts_with(&format!("{}/u/", app.address)), "{link}");
            assert!(mail.text().contains(&link), "the text part carries the same link");
            assert!(mail.text().contains(to.as_str()), "the text says whose copy it is");
            links.insert(link);
        }
        assert_eq!(links.len(), 10_000, "each recipient has their own link");
        let html = got["n7@bulk.example"][0].html().expect("an HTML part");
        assert!(html.contains("<h1>Hello</h1>") && html.contains("<strong>new</strong>"), "{html}");

        // Three recipients leave with one click (RFC 8058), straight from the header.
        let leaving = ["n1@bulk.example", "n5000@bulk.example", "n10000@bulk.example"];
        for email in leaving {
            let header = got[email][0].header("List-Unsubscribe").unwrap();
            let link = header.trim_matches(['<', '>']);
            let response = common::bare_client()
                .post(link)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body("List-Unsubscribe=One-Click")
                .send()
                .await
                .unwrap();
            assert!(response.status().is_success() || response.status() == StatusCode::SEE_OTHER, "{}", response.status());
        }
        assert_eq!(app.count_rows("subscribers").await, 10_025 + 1 - 3);

        let progress = admin.get_html(&format!("/admin/announcements/{id}")).await;
        assert!(progress.contains("<dt>Sent</dt><dd>10,000</dd>"), "{progress}");
        assert!(progress.contains("<dt>State</dt><dd>sent</dd>"));

        // The next announcement reaches everyone still confirmed, and nobody who left.
        let (second, _) = admin.send_announcement("Second news", "More.").await;
        wait_for_count(&smtp, "Second news", 9_997).await;
        wait_for_state(&app, second, "sent").await;
        let got = by_recipient(&smtp, "Second news");
        let mut still = expected("n", 10_000);
        for email in leaving {
            still.remove(email);
        }
        assert_eq!(got.keys().cloned().collect::<HashSet<_>>(), still);
        assert!(got.values().all(|copies| copies.len() == 1));
    }

    async fn pause_stops_within_a_second_resume_continues_and_cancel_stops_for_good(backend: Backend) {
        let smtp = SmtpServer::start().await;
        let app = spawn(backend, &smtp, "20", &[]).await;
        add_subscribers(&app, "s", 400, "confirmed").await;
        let admin = admin(&app).await;
        let started = Instant::now();
        let (id, _) = admin.send_announcement("Paced news", "At twenty a second.").await;
        wait_for_count(&smtp, "Paced news", 30).await;
        // At twenty a second, the 30th goes about a second and a half after the first.
        assert!(started.elapsed() >= Duration::from_millis(1300), "paced: {:?}", started.elapsed());

        act(&admin, id, "pause").await;
        assert_eq!(state(&app, id).await, "paused");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let at_pause = sent_count(&smtp, "Paced news");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(sent_count(&smtp, "Paced news"), at_pause, "nothing goes out while paused");
        let page = admin.get_html(&format!("/admin/announcements/{id}")).await;
        assert!(page.contains("http-equiv=\"refresh\"") && page.contains("/resume"), "{page}");

        act(&admin, id, "resume").await;
        wait_for_count(&smtp, "Paced news", at_pause + 20).await;

        act(&admin, id, "cancel").await;
        assert_eq!(state(&app, id).await, "cancelled");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let at_cancel = sent_count(&smtp, "Paced news");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(sent_count(&smtp, "Paced news"), at_cancel, "nothing after a cancel");
        assert!(at_cancel < 400);
        assert_eq!(
            app.database.strings(&format!("SELECT CAST(count(*) AS TEXT) FROM outbox WHERE announcement_id = {id} AND status = 'queued'")).await,
            ["0"],
            "nothing left queued"
        );
        // A cancelled announcement cannot be resumed or sent again.
        let csrf = form_token(&admin.get_html("/admin/announcements").await).unwrap();
        let again = admin.post_form(&format!("/admin/announcements/{id}/resume"), &[("csrf_token", &csrf)]).await;
        assert_eq!(again.status(), StatusCode::CONFLICT);
        let again = admin.post_form(&format!("/admin/announcements/{id}/send"), &[("csrf_token", &csrf)]).await;
        assert_eq!(again.status(), StatusCode::CONFLICT);
        let by = by_recipient(&smtp, "Paced news");
        assert!(by.values().all(|copies| copies.len() == 1), "nobody twice");
    }

    async fn someone_who_leaves_mid_send_gets_nothing_more(backend: Backend) {
        let smtp = SmtpServer::start().await;
        let app = spawn(backend, &smtp, "50", &[]).await;
        add_subscribers(&app, "u", 300, "confirmed").await;
        let admin = admin(&app).await;
        let (id, _) = admin.send_announcement("Mid-send", "Leaving is always possible.").await;
        wait_for_count(&smtp, "Mid-send", 5).await;
        // The last in line leaves through their own link before their turn comes.
        let last: i64 = app.database.strings("SELECT CAST(max(id) AS TEXT) FROM subscribers").await[0].parse().unwrap();
        let secret = enlist::security::SecretKey::load_or_create(&app.dir.path().join("enlist.key")).unwrap();
        let token = enlist::security::Links::new(secret).unsubscribe_token(last, "u300@bulk.example");
        let leave = common::bare_client()
            .post(app.url(&format!("/u/{token}")))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body("List-Unsubscribe=One-Click")
            .send()
            .await
            .unwrap();
        assert!(leave.status().is_success() || leave.status() == StatusCode::SEE_OTHER);
        assert!(sent_count(&smtp, "Mid-send") < 300);
        wait_for_state(&app, id, "sent").await;
        let got = by_recipient(&smtp, "Mid-send");
        assert!(!got.contains_key("u300@bulk.example"), "the one who left got it");
        let mut others = expected("u", 300);
        others.remove("u300@bulk.example");
        assert_eq!(got.keys().cloned().collect::<HashSet<_>>(), others);
    }

    async fn a_preview_and_a_test_show_the_mail_and_raw_html_arrives_as_text(backend: Backend) {
        let smtp = SmtpServer::start().await;
        let app = spawn(backend, &smtp, "0", &[]).await;
        add_subscribers(&app, "t", 5, "confirmed").await;
        let admin = admin(&app).await;
        let body = "Hi <script>alert(1)</script> and <img src=x onerror=alert(2)>\n\n[x](javascript:alert(3)) **bold**";
        let id = draft(&admin, "Careful <b>news</b>", body).await;
        let page = admin.get_html(&format!("/admin/announcements/{id}")).await;
        assert!(page.contains("Careful &lt;b&gt;news&lt;&#x2f;b&gt;"), "the subject is text: {page}");
        assert!(!page.contains("<script>alert(1)"), "{page}");
        assert!(page.contains("subscriber@example.com"), "the preview stands in a recipient");
        let preview = admin.get(&format!("/admin/announcements/{id}/preview")).await;
        assert_eq!(preview.status(), StatusCode::OK);
        let policy = preview.headers()["content-security-policy"].to_str().unwrap().to_owned();
        assert!(policy.contains("default-src 'none'") && !policy.contains("script-src"), "{policy}");
        let html = preview.text().await.unwrap();
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;") && !html.contains("<script"), "{html}");
        assert!(!html.contains("<img") && !html.contains("javascript:"), "{html}");
        assert!(html.contains("<strong>bold</strong>"));

        // A test goes to the one address typed, marked as a test, and to nobody on the list.
        let csrf = form_token(&page).unwrap();
        let tested = admin
            .post_form(&format!("/admin/announcements/{id}/test"), &[("csrf_token", &csrf), ("email", "Owner@Example.org")])
            .await;
        assert_eq!(tested.status(), StatusCode::SEE_OTHER);
        let arrived = smtp.wait_for(1, WAIT).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let all = smtp.messages();
        assert_eq!(all.len(), 1, "only the test: {:?}", all.iter().map(|m| m.to.clone()).collect::<Vec<_>>());
        assert_eq!(arrived[0].to, ["Owner@example.org"]);
        assert_eq!(subject_of(&arrived[0]), "[Test] Careful <b>news</b>");
        assert!(arrived[0].header("List-Unsubscribe").is_none(), "a test has no link to leave");
        let raw_html = arrived[0].parsed().body_html(0).unwrap().into_owned();
        assert!(raw_html.contains("&lt;script&gt;alert(1)&lt;/script&gt;") && !raw_html.contains("<script"), "{raw_html}");
        assert!(arrived[0].text().contains("<script>alert(1)</script>"), "the text part is the Markdown as written");
        assert_eq!(state(&app, id).await, "draft");

        // Bad input is refused with the reason, and changes nothing.
        let empty = admin.post_form("/admin/announcements", &[("csrf_token", &csrf), ("subject", " "), ("body", "x")]).await;
        assert_eq!(empty.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(empty.text().await.unwrap().contains("Please write a subject."));
        let bad_test = admin
            .post_form(&format!("/admin/announcements/{id}/test"), &[("csrf_token", &csrf), ("email", "nobody")])
            .await;
        assert_eq!(bad_test.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let no_token = admin.post_form(&format!("/admin/announcements/{id}/send"), &[("csrf_token", "forged")]).await;
        assert_eq!(no_token.status(), StatusCode::FORBIDDEN);
        assert_eq!(admin.get("/admin/announcements/999999").await.status(), StatusCode::NOT_FOUND);
        assert_eq!(admin.get(&format!("/admin/announcements/{id}/pause")).await.status(), StatusCode::METHOD_NOT_ALLOWED);
        let not_sending = admin.post_form(&format!("/admin/announcements/{id}/pause"), &[("csrf_token", &csrf)]).await;
        assert_eq!(not_sending.status(), StatusCode::CONFLICT);
        assert_eq!(app.count_rows("announcements").await, 1);

        // Logged out: the login page.
        let stranger = Visitor { address: app.address.clone(), client: browser() };
        let response = stranger.get("/admin/announcements").await;
        common::assert_is_redirect_to(&response, "/admin/login");
        assert_eq!(state(&app, id).await, "draft");
    }

    async fn with_mail_off_announcements_can_be_written_but_not_sent(backend: Backend) {
        let app = spawn_app_with(backend, &[]).await;
        let admin = admin(&app).await;
        let list = admin.get_html("/admin/announcements").await;
        assert!(list.contains("Mail is off"), "{list}");
        let id = draft(&admin, "Draft only", "Nothing to send with.").await;
        let page = admin.get_html(&format!("/admin/announcements/{id}")).await;
        assert!(page.contains("nothing to send this with") && !page.contains("Send a test"), "{page}");
        let send_page = admin.get(&format!("/admin/announcements/{id}/send")).await;
        assert_eq!(send_page.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(send_page.text().await.unwrap().contains("Mail is not configured"));
        assert_eq!(state(&app, id).await, "draft");
    }

    async fn the_api_sends_follows_pauses_resumes_and_cancels(backend: Backend) {
        let smtp = SmtpServer::start().await;
        let app = spawn(backend, &smtp, "10", &[]).await;
        add_subscribers(&app, "a", 200, "confirmed").await;
        let admin = admin(&app).await;
        let token = token_on_admin_page(&admin, "announcer", false).await;
        let read_only = token_on_admin_page(&admin, "reader", true).await;
        let api = |method: reqwest::Method, path: &str, token: &str| {
            common::bare_client().request(method, app.url(&format!("/api/v1{path}"))).bearer_auth(token)
        };

        // A test first: the announcement stays a draft.
        let tested = api(reqwest::Method::POST, "/announcements", &token)
            .json(&json!({"subject": "API news", "body": "From a script.", "test_to": "me@example.org"}))
            .send().await.unwrap();
        assert_eq!(tested.status(), StatusCode::CREATED);
        let draft: Value = tested.json().await.unwrap();
        assert_eq!(draft["state"], "draft");
        smtp.wait_for(1, WAIT).await;
        assert_eq!(smtp.messages()[0].to, ["me@example.org"]);

        let sent = api(reqwest::Method::POST, "/announcements", &token)
            .json(&json!({"subject": "API news", "body": "From a script."}))
            .send().await.unwrap();
        assert_eq!(sent.status(), StatusCode::CREATED);
        let location = sent.headers()[LOCATION].to_str().unwrap().to_owned();
        let body: Value = sent.json().await.unwrap();
        assert_eq!(body["state"], "sending");
        assert_eq!(body["audience"], 200);
        let id = body["id"].as_i64().unwrap();
        assert_eq!(location, format!("/api/v1/announcements/{id}"));

        wait_for_count(&smtp, "API news", 6).await;
        let paused = api(reqwest::Method::POST, &format!("/announcements/{id}/pause"), &token).send().await.unwrap();
        assert_eq!(paused.status(), StatusCode::OK);
        assert_eq!(paused.json::<Value>().await.unwrap()["state"], "paused");
        let twice = api(reqwest::Method::POST, &format!("/announcements/{id}/pause"), &token).send().await.unwrap();
        assert_eq!(twice.status(), StatusCode::CONFLICT);
        assert_eq!(twice.headers()["content-type"], "application/problem+json");
        let resumed = api(reqwest::Method::POST, &format!("/announcements/{id}/resume"), &token).send().await.unwrap();
        assert_eq!(resumed.json::<Value>().await.unwrap()["state"], "sending");
        let progress: Value = api(reqwest::Method::GET, &format!("/announcements/{id}"), &read_only).send().await.unwrap().json().await.unwrap();
        assert!(progress["sent"].as_i64().unwrap() >= 1, "{progress}");
        assert!(progress["remaining"].as_i64().unwrap() <= 200);
        let cancelled = api(reqwest::Method::POST, &format!("/announcements/{id}/cancel"), &token).send().await.unwrap();
        assert_eq!(cancelled.json::<Value>().await.unwrap()["state"], "cancelled");
        let list: Value = api(reqwest::Method::GET, "/announcements", &read_only).send().await.unwrap().json().await.unwrap();
        assert_eq!(list["announcements"].as_array().unwrap().len(), 2);

        // Sending the tested draft later.
        let draft_id = draft["id"].as_i64().unwrap();
        let later = api(reqwest::Method::POST, &format!("/announcements/{draft_id}/send"), &token).send().await.unwrap();
        assert_eq!(later.status(), StatusCode::OK);
        let again = api(reqwest::Method::POST, &format!("/announcements/{draft_id}/send"), &token).send().await.unwrap();
        assert_eq!(again.status(), StatusCode::CONFLICT);

        // Errors: each its own problem, nothing written.
        let before = app.count_rows("announcements").await;
        let refused = api(reqwest::Method::POST, "/announcements", &read_only).json(&json!({"subject": "s", "body": "b"})).send().await.unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        let no_token = common::bare_client().post(app.url("/api/v1/announcements")).json(&json!({"subject": "s", "body": "b"})).send().await.unwrap();
        assert_eq!(no_token.status(), StatusCode::UNAUTHORIZED);
        let empty = api(reqwest::Method::POST, "/announcements", &token).json(&json!({"subject": "", "body": "b"})).send().await.unwrap();
        assert_eq!(empty.status(), StatusCode::UNPROCESSABLE_ENTITY);
        // The document's bounds hold as written: over them is refused, though the request is
        // well inside 64 KiB and a trimmed subject would fit.
        let long_body = api(reqwest::Method::POST, "/announcements", &token).json(&json!({"subject": "s", "body": "0".repeat(60_001)})).send().await.unwrap();
        assert_eq!(long_body.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let padded_subject = format!(" {} ", "s".repeat(199));
        let long_subject = api(reqwest::Method::POST, "/announcements", &token).json(&json!({"subject": padded_subject, "body": "b"})).send().await.unwrap();
        assert_eq!(long_subject.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let unknown = api(reqwest::Method::POST, "/announcements", &token).json(&json!({"subject": "s", "body": "b", "to": "all"})).send().await.unwrap();
        assert_eq!(unknown.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let bad_test = api(reqwest::Method::POST, "/announcements", &token).json(&json!({"subject": "s", "body": "b", "test_to": "x"})).send().await.unwrap();
        assert_eq!(bad_test.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let form = api(reqwest::Method::POST, "/announcements", &token).body("subject=s").header("Content-Type", "application/x-www-form-urlencoded").send().await.unwrap();
        assert_eq!(form.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let missing = api(reqwest::Method::GET, "/announcements/424242", &token).send().await.unwrap();
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        let not_a_number = api(reqwest::Method::POST, "/announcements/x/pause", &token).send().await.unwrap();
        assert_eq!(not_a_number.status(), StatusCode::BAD_REQUEST);
        assert_eq!(app.count_rows("announcements").await, before);
    }
}

on_both_backends! {
    async fn the_cli_queues_an_announcement_or_its_test(backend: Backend) {
        let smtp = SmtpServer::start().await;
        let mut app = spawn(backend, &smtp, "0", &[]).await;
        add_subscribers(&app, "c", 40, "confirmed").await;
        let body = app.dir.path().join("news.md");
        std::fs::write(&body, "Hello from the **command line**.").unwrap();
        let body = body.display().to_string();
        let url = smtp.url();
        let mail = ["--smtp-url", url.as_str(), "--mail-from", "News <news@example.com>"];
        let announce = |extra: &[&str]| -> Vec<String> {
            let mut args: Vec<String> =
                ["announce", "--subject", "From the CLI", "--body-file", body.as_str()]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
            args.extend(extra.iter().map(|s| s.to_string()));
            args
        };
        let last_line = |output: &std::process::Output| {
            String::from_utf8_lossy(&output.stderr).trim().lines().last().unwrap_or_default().to_owned()
        };
        if !app.database.is_postgres() {
            // The running server owns the SQLite file: the CLI names the ways in.
            let refused = run_tool(&app, [announce(&["--yes"]), mail.iter().map(|s| s.to_string()).collect()].concat());
            assert_eq!(refused.status.code(), Some(1));
            let message = last_line(&refused);
            assert!(message.contains("admin page") && message.contains("POST /api/v1/announcements"), "{message}");
            app.stop().await;
        }
        let no_mail = run_tool(&app, announce(&["--yes"]));
        assert_eq!(no_mail.status.code(), Some(2), "{}", last_line(&no_mail));
        assert!(last_line(&no_mail).contains("--smtp-url"));
        let unasked = run_tool(&app, [announce(&[]), mail.iter().map(|s| s.to_string()).collect()].concat());
        assert_eq!(unasked.status.code(), Some(1));
        assert!(last_line(&unasked).contains("add --yes (40 confirmed subscribers"), "{}", last_line(&unasked));
        let bad_test = run_tool(&app, [announce(&["--test", "nobody"]), mail.iter().map(|s| s.to_string()).collect()].concat());
        assert_eq!(bad_test.status.code(), Some(1));
        assert_eq!(app.count_rows("announcements").await, 0, "refusals write nothing");

        let test = run_tool(&app, [announce(&["--test", "owner@example.org"]), mail.iter().map(|s| s.to_string()).collect()].concat());
        assert!(test.status.success(), "{}", last_line(&test));
        assert!(last_line(&test).contains("owner@example.org alone"));
        let sent = run_tool(&app, [announce(&["--yes"]), mail.iter().map(|s| s.to_string()).collect()].concat());
        assert!(sent.status.success(), "{}", last_line(&sent));
        assert!(last_line(&sent).contains("sending to 40 confirmed subscribers"), "{}", last_line(&sent));
        if !app.database.is_postgres() {
            app.restart().await;
        }
        wait_for_count(&smtp, "From the CLI", 40).await;
        let test_copies = by_recipient(&smtp, "[Test] From the CLI");
        assert_eq!(test_copies.keys().collect::<Vec<_>>(), ["owner@example.org"]);
        let got = by_recipient(&smtp, "From the CLI");
        assert_eq!(got.keys().cloned().collect::<HashSet<_>>(), expected("c", 40));
    }

    async fn the_public_archive_shows_what_was_sent_and_no_address(backend: Backend) {
        let smtp = SmtpServer::start().await;
        let app = spawn(backend, &smtp, "0", &["--public-archive"]).await;
        add_subscribers(&app, "r", 3, "confirmed").await;
        let admin = admin(&app).await;
        let (id, _) = admin.send_announcement("Published <news>", "Read *this* <script>x()</script>").await;
        let draft_id = draft(&admin, "Not sent yet", "Private draft.").await;
        wait_for_state(&app, id, "sent").await;
        let visitor = common::bare_client();
        let list = visitor.get(app.url("/archive")).send().await.unwrap();
        assert_eq!(list.status(), StatusCode::OK);
        let list = list.text().await.unwrap();
        assert!(list.contains("Published &lt;news&gt;") && !list.contains("Not sent yet"), "{list}");
        let one = visitor.get(app.url(&format!("/archive/{id}"))).send().await.unwrap().text().await.unwrap();
        assert!(one.contains("<em>this</em>") && one.contains("&lt;script&gt;") && !one.contains("<script"), "{one}");
        assert!(!one.contains("@bulk.example") && !list.contains("@bulk.example"), "no address");
        let draft = visitor.get(app.url(&format!("/archive/{draft_id}"))).send().await.unwrap();
        assert_eq!(draft.status(), StatusCode::NOT_FOUND);

        let closed = spawn(Backend::Sqlite, &smtp, "0", &[]).await;
        let response = visitor.get(closed.url("/archive")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "off unless --public-archive");
    }
}

fn run_tool(app: &TestApp, args: Vec<String>) -> std::process::Output {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    app.tool(&args)
}

/// Creates a token on the admin page; returns it as the page shows it.
async fn token_on_admin_page(admin: &Visitor, name: &str, read_only: bool) -> String {
    let csrf = form_token(&admin.get_html("/admin").await).unwrap();
    let mut form = vec![("csrf_token", csrf.as_str()), ("name", name)];
    if read_only {
        form.push(("read_only", "1"));
    }
    let page = admin.post_form("/admin/tokens", &form).await.text().await.unwrap();
    let start = page.find("value=\"enl_").expect("the token on the page") + 7;
    page[start..start + page[start..].find('"').unwrap()].to_owned()
}

#[tokio::test]
async fn two_instances_on_postgresql_share_one_send_and_nobody_gets_two() {
    let Some(backend) = Backend::postgres() else { return };
    let smtp = SmtpServer::start().await;
    let app = spawn(backend, &smtp, "0", &[]).await;
    let second = app.start_server().await;
    add_subscribers(&app, "two", 3_000, "confirmed").await;
    let admin = admin(&app).await;
    let other = Visitor { address: second.address.clone(), client: browser() };
    other.login_ok().await;
    for round in 0..3 {
        let subject = format!("Shared work {round}");
        // Sent from either instance; both step it, both send its mails.
        let sender = if round % 2 == 0 { &admin } else { &other };
        let (id, _) = sender.send_announcement(&subject, "Two instances, one send.").await;
        wait_for_state(&app, id, "sent").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let got = by_recipient(&smtp, &subject);
        assert_eq!(
            got.keys().cloned().collect::<HashSet<_>>(),
            expected("two", 3_000),
            "{subject}"
        );
        let twice: Vec<_> =
            got.iter().filter(|(_, copies)| copies.len() > 1).map(|(to, _)| to).collect();
        assert!(twice.is_empty(), "{subject}: sent twice: {twice:?}");
        let sent = format!("SELECT CAST(sent AS TEXT) FROM announcements WHERE id = {id}");
        assert_eq!(app.database.strings(&sent).await, ["3000"]);
    }
    second.stop().await;
}
