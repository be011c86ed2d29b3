//! Outgoing webhooks: every event arrives, signed so that the `standardwebhooks` library
//! accepts it; failures are retried, `410` disables, a silent receiver is cut off, private
//! addresses are refused, and no delivery is lost across a restart or sent twice by two
//! instances.

#[macro_use]
mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::smtp::SmtpServer;
use common::webhook::{
    Delivery, Receiver, Reply, signature_is_valid, verified_by_standardwebhooks,
};
use common::{
    Backend, TestApp, Visitor, assert_is_redirect_to, browser, form_token, spawn_app_with,
};
use enlist::store::ATTEMPTS_KEPT;
use reqwest::StatusCode;

const WAIT: Duration = Duration::from_secs(20);
/// Receivers here are on loopback and speak plain http; quick retries keep the tests short.
const RECEIVER_ARGS: [&str; 4] =
    ["--webhooks-allow-private", "--webhooks-allow-http", "--webhook-retry-delay", "1s"];

fn args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = RECEIVER_ARGS.to_vec();
    args.extend_from_slice(extra);
    args
}

/// Adds an endpoint on the admin page (logging in first); returns its id and secret.
async fn add_endpoint(app: &TestApp, url: &str, events: &[&str]) -> (i64, String) {
    let admin = Visitor { address: app.address.clone(), client: browser() };
    admin.login_ok().await;
    let csrf = form_token(&admin.get_html("/admin").await).unwrap();
    let mut form = vec![("csrf_token", csrf.as_str()), ("url", url)];
    form.extend(events.iter().map(|e| (*e, "1")));
    let response = admin.post_form("/admin/webhooks", &form).await;
    assert_eq!(response.status(), StatusCode::OK);
    let page = response.text().await.unwrap();
    let start = page.find("value=\"whsec_").expect("the secret on the page") + 7;
    let secret = common::unescape(&page[start..start + page[start..].find('"').unwrap()]);
    let id_at = page.find("/admin/webhooks/").unwrap() + "/admin/webhooks/".len();
    let id = page[id_at..].split('"').next().unwrap().parse().unwrap();
    (id, secret)
}

/// Uploads `file` on the admin page's import form; returns the result page.
async fn import_file(admin: &Visitor, file: &str) -> String {
    let token = form_token(&admin.get_html("/admin").await).expect("a form token");
    let part = reqwest::multipart::Part::bytes(file.as_bytes().to_vec())
        .file_name("people.csv")
        .mime_str("text/csv")
        .unwrap();
    let form = reqwest::multipart::Form::new().text("csrf_token", token).part("file", part);
    let response = admin
        .client
        .post(admin.url("/admin/import"))
        .headers(admin.same_origin())
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.unwrap()
}

fn stranger(app: &TestApp) -> Visitor {
    Visitor { address: app.address.clone(), client: browser() }
}

fn of_type<'a>(deliveries: &'a [Delivery], event: &str) -> Vec<&'a Delivery> {
    deliveries.iter().filter(|d| d.event() == event).collect()
}

/// Waits for a mail to `email` and returns its link starting with `prefix` (a path).
async fn link_in_mail(app: &TestApp, smtp: &SmtpServer, email: &str, prefix: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(link) =
            smtp.to(email).first().and_then(|m| m.link(&format!("{}{prefix}", app.address)))
        {
            return link.strip_prefix(&app.address).unwrap().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no mail to {email}: {:?}",
            smtp.messages().iter().map(|m| m.to.clone()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn admin_page(app: &TestApp, path: &str) -> String {
    let admin = stranger(app);
    admin.login_ok().await;
    admin.get_html(path).await
}

on_both_backends! {
    async fn every_event_arrives_signed_and_verifies_with_standardwebhooks(backend: Backend) {
        let receiver = Receiver::start().await;
        let smtp = SmtpServer::start().await;
        let smtp_url = smtp.url();
        let mail = ["--smtp-url", smtp_url.as_str(), "--mail-from", "List <list@example.com>"];
        let app = spawn_app_with(backend, &args(&mail)).await;
        let (_, secret) = add_endpoint(&app, &receiver.url, &[]).await;

        // created (pending), then confirmed from the mail's link.
        let stays = stranger(&app);
        assert_is_redirect_to(&stays.signup("Stays@example.com").await, "/");
        let confirm = link_in_mail(&app, &smtp, "Stays@example.com", "/confirm/").await;
        assert_is_redirect_to(&stays.post_form(&confirm, &[]).await, &confirm);
        // unsubscribed through the mail's link.
        let leaves = stranger(&app);
        assert_is_redirect_to(&leaves.signup("leaves@example.com").await, "/");
        let unsubscribe = link_in_mail(&app, &smtp, "leaves@example.com", "/u/").await;
        let left = leaves.post_form(&unsubscribe, &[]).await;
        assert_eq!(left.status(), StatusCode::SEE_OTHER);
        // erased: the event carries the id only.
        let forgets = stranger(&app);
        assert_is_redirect_to(&forgets.signup("forget.me@example.com").await, "/");
        let erase = link_in_mail(&app, &smtp, "forget.me@example.com", "/u/").await;
        // Delivered before the erase (one still queued then would be dropped with the address).
        let deadline = Instant::now() + WAIT;
        while !receiver.received().iter().any(|d| d.body.contains("forget.me@")) {
            assert!(Instant::now() < deadline, "the signup's event never arrived");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_is_redirect_to(&forgets.post_form(&format!("{erase}/erase"), &[]).await, "/erased");
        // deleted by the admin.
        assert_is_redirect_to(&stranger(&app).signup("deleted@example.com").await, "/");
        let admin = stranger(&app);
        admin.login_ok().await;
        assert_is_redirect_to(&admin.admin_delete("deleted@example.com").await, "/admin");

        // 4 created, 1 confirmed, 1 unsubscribed, 1 erased, 1 deleted.
        receiver.wait_for(8, WAIT).await;
        // Time for a stray repeat, had there been one.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let got = receiver.received();
        assert_eq!(got.len(), 8, "{got:#?}");
        for delivery in &got {
            assert!(signature_is_valid(&secret, delivery), "bad signature: {delivery:?}");
            assert!(delivery.id.starts_with("msg_"));
            let sent_at: i64 = delivery.timestamp.parse().unwrap();
            assert!((sent_at - enlist::session::unix_now()).abs() < 60);
            assert!(delivery.json["timestamp"].as_str().unwrap().ends_with('Z'));
        }
        verified_by_standardwebhooks(&secret, &got);
        let ids: HashSet<_> = got.iter().map(|d| d.id.clone()).collect();
        assert_eq!(ids.len(), got.len(), "every delivery has its own webhook-id");

        let created = of_type(&got, "subscriber.created");
        let emails: HashSet<_> = created.iter().map(|d| d.json["data"]["email"].as_str().unwrap()).collect();
        assert_eq!(emails, HashSet::from(["Stays@example.com", "leaves@example.com", "forget.me@example.com", "deleted@example.com"]));
        assert!(created.iter().all(|d| d.json["data"]["status"] == "pending" && d.json["data"]["source"] == "form"));
        let confirmed = of_type(&got, "subscriber.confirmed");
        assert_eq!(confirmed.len(), 1);
        assert_eq!(confirmed[0].json["data"]["email"], "Stays@example.com");
        assert_eq!(confirmed[0].json["data"]["status"], "confirmed");
        assert!(confirmed[0].json["data"]["confirmed_at"].as_str().unwrap().ends_with('Z'));
        let unsubscribed = of_type(&got, "subscriber.unsubscribed");
        assert_eq!(unsubscribed.len(), 1);
        assert_eq!(unsubscribed[0].json["data"]["email"], "leaves@example.com");
        let deleted = of_type(&got, "subscriber.deleted");
        assert_eq!(deleted.len(), 1);
        assert_eq!(deleted[0].json["data"]["email"], "deleted@example.com");
        let erased = of_type(&got, "subscriber.erased");
        assert_eq!(erased.len(), 1);
        assert!(!erased[0].body.contains('@'), "the erased event names no address: {}", erased[0].body);
        assert_eq!(erased[0].json["data"].as_object().unwrap().len(), 1);
        let forgotten_id = created.iter().find(|d| d.json["data"]["email"] == "forget.me@example.com").unwrap().json["data"]["id"].clone();
        assert_eq!(erased[0].json["data"]["id"], forgotten_id);

        // The admin page lists the attempts; nothing is left queued.
        let page = common::unescape(&admin.get_html("/admin").await);
        assert!(page.contains(&receiver.url) && page.contains("active"), "{page}");
        assert_eq!(app.count_rows("webhook_deliveries").await, 0);
        assert_eq!(app.count_rows("webhook_attempts").await, 8);
    }

    async fn an_import_sends_created_and_confirmed_for_each_new_row_only(backend: Backend) {
        let receiver = Receiver::start().await;
        let app = spawn_app_with(backend, &args(&[])).await;
        let (_, secret) = add_endpoint(&app, &receiver.url, &[]).await;
        assert_is_redirect_to(&stranger(&app).signup("already@example.com").await, "/");
        receiver.wait_for(2, WAIT).await;

        let admin = stranger(&app);
        admin.login_ok().await;
        let file = "email\nnew.one@example.com\nALREADY@example.com\nNew.Two@Bücher.example\n";
        let page = common::unescape(&import_file(&admin, file).await);
        assert!(page.contains("<dt>Added</dt><dd>2</dd>"), "{page}");

        let got = receiver.wait_for(6, WAIT).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let got = if receiver.received().len() > got.len() { receiver.received() } else { got };
        assert_eq!(got.len(), 6, "two for the signup, two for each new row: {got:#?}");
        verified_by_standardwebhooks(&secret, &got);
        let mut events: HashMap<(String, String), usize> = HashMap::new();
        for delivery in &got {
            let data = &delivery.json["data"];
            let key = (data["email"].as_str().unwrap().to_owned(), delivery.event().to_owned());
            *events.entry(key).or_default() += 1;
            if data["email"] != "already@example.com" {
                assert_eq!(data["source"], "import");
                assert_eq!(data["status"], "confirmed");
            }
        }
        for email in ["already@example.com", "new.one@example.com", "New.Two@bücher.example"] {
            for event in ["subscriber.created", "subscriber.confirmed"] {
                assert_eq!(events.get(&(email.to_owned(), event.to_owned())), Some(&1), "{email} {event}: {events:?}");
            }
        }
    }

    /// More deliveries than one claim takes, some failing first: each arrives, and the
    /// batches of outcomes are recorded row by row, with only the newest attempts kept.
    async fn a_backlog_larger_than_a_claim_drains_once_each(backend: Backend) {
        let receiver = Receiver::start().await;
        receiver.reply_next(&[Reply::Status(500), Reply::Status(200), Reply::Status(503)]);
        let app = spawn_app_with(backend, &args(&[])).await;
        let (id, secret) = add_endpoint(&app, &receiver.url, &[]).await;
        let admin = stranger(&app);
        admin.login_ok().await;
        let rows: Vec<String> = (0..200).map(|i| format!("backlog{i}@example.com")).collect();
        let page = common::unescape(&import_file(&admin, &format!("email\n{}\n", rows.join("\n"))).await);
        assert!(page.contains("<dt>Added</dt><dd>200</dd>"), "{page}");

        // 400 events, and the two answered with an error go once more.
        let got = receiver.wait_for(402, Duration::from_secs(60)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let got = if receiver.received().len() > got.len() { receiver.received() } else { got };
        assert_eq!(got.len(), 402, "each once, and the two failures twice");
        verified_by_standardwebhooks(&secret, &got);
        let mut by_id: HashMap<&str, Vec<&Delivery>> = HashMap::new();
        for delivery in &got {
            by_id.entry(delivery.id.as_str()).or_default().push(delivery);
        }
        assert_eq!(by_id.len(), 400, "one webhook-id per event");
        let twice: Vec<_> = by_id.values().filter(|d| d.len() == 2).collect();
        assert_eq!(twice.len(), 2);
        for pair in twice {
            assert!(matches!(pair[0].answered, Reply::Status(500 | 503)));
            assert_eq!(pair[0].body, pair[1].body, "a retry sends the same event");
        }
        for email in &rows {
            for event in ["subscriber.created", "subscriber.confirmed"] {
                let n = got.iter().filter(|d| d.json["data"]["email"] == email.as_str() && d.event() == event);
                assert!(n.count() >= 1, "{email} {event}");
            }
        }

        assert_eq!(app.count_rows("webhook_deliveries").await, 0, "nothing left queued");
        assert_eq!(app.count_rows("webhook_attempts").await, ATTEMPTS_KEPT);
        let kept = app.database.strings(&format!(
            "SELECT outcome || ' ' || coalesce(CAST(http_status AS TEXT), '-') FROM webhook_attempts \
             WHERE endpoint_id = {id}"
        )).await;
        assert!(kept.iter().all(|k| k == "delivered 200" || k == "retry 500" || k == "retry 503"), "{kept:?}");
        assert!(kept.iter().filter(|k| *k == "delivered 200").count() >= ATTEMPTS_KEPT as usize - 2);
    }

    async fn a_delivery_that_fails_is_retried_once_more_not_twice(backend: Backend) {
        let receiver = Receiver::start().await;
        receiver.reply_next(&[Reply::Status(500)]);
        let app = spawn_app_with(backend, &args(&[])).await;
        let (id, secret) = add_endpoint(&app, &receiver.url, &["subscriber.created"]).await;
        assert_is_redirect_to(&stranger(&app).signup("retry@example.com").await, "/");

        receiver.wait_for(2, WAIT).await;
        // Time for a third attempt, had there been one.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let got = receiver.received();
        assert_eq!(got.len(), 2, "{got:#?}");
        assert_eq!(got[0].id, got[1].id, "a retry keeps its webhook-id");
        assert_eq!(got[0].body, got[1].body, "and its body");
        assert!(got.iter().all(|d| signature_is_valid(&secret, d)));
        verified_by_standardwebhooks(&secret, &got);

        let page = admin_page(&app, &format!("/admin/webhooks/{id}")).await;
        assert!(page.contains("retry: HTTP 500"), "{page}");
        assert!(page.contains("<td data-label=\"Status\">200</td>"), "{page}");
        assert_eq!(app.count_rows("webhook_deliveries").await, 0);
        let metrics = app.get_html("/metrics").await;
        assert!(metrics.contains("enlist_webhook_deliveries_total{result=\"retry\"} 1"), "{metrics}");
        assert!(metrics.contains("enlist_webhook_deliveries_total{result=\"delivered\"} 1"), "{metrics}");
    }

    async fn gone_disables_the_endpoint(backend: Backend) {
        let receiver = Receiver::start().await;
        receiver.reply_always(Reply::Status(410));
        let app = spawn_app_with(backend, &args(&[])).await;
        let (id, _) = add_endpoint(&app, &receiver.url, &["subscriber.created"]).await;
        assert_is_redirect_to(&stranger(&app).signup("first@example.com").await, "/");
        receiver.wait_for(1, WAIT).await;
        let deadline = Instant::now() + WAIT;
        while !admin_page(&app, &format!("/admin/webhooks/{id}")).await.contains("410 Gone") {
            assert!(Instant::now() < deadline, "the endpoint was not disabled");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Later changes queue nothing for it, and nothing more is sent.
        assert_is_redirect_to(&stranger(&app).signup("second@example.com").await, "/");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(receiver.received().len(), 1);
        assert_eq!(app.count_rows("webhook_deliveries").await, 0);
        let list = admin_page(&app, "/admin").await;
        assert!(list.contains("disabled"), "{list}");
        // A ping to a disabled endpoint says so.
        let admin = stranger(&app);
        admin.login_ok().await;
        let csrf = form_token(&admin.get_html("/admin").await).unwrap();
        let ping = admin.post_form(&format!("/admin/webhooks/{id}/ping"), &[("csrf_token", &csrf)]).await;
        assert_is_redirect_to(&ping, &format!("/admin/webhooks/{id}"));
        assert!(admin.get_html(&format!("/admin/webhooks/{id}")).await.contains("This endpoint is disabled"));
    }

    async fn deliveries_queued_at_a_restart_all_arrive_once(backend: Backend) {
        let receiver = Receiver::start().await;
        receiver.reply_always(Reply::Status(503));
        let mut app = spawn_app_with(backend, &args(&["--webhook-retry-delay", "1h"])).await;
        let (_, secret) = add_endpoint(&app, &receiver.url, &[]).await;
        for n in 0..5 {
            assert_is_redirect_to(&stranger(&app).signup(&format!("r{n}@example.com")).await, "/");
        }
        // Each delivery failed once and waits an hour for its retry; the server stops.
        receiver.wait_for(10, WAIT).await;
        app.stop().await;
        assert_eq!(app.count_rows("webhook_deliveries").await, 10);
        // The retry comes due while the server is down.
        app.database.execute("UPDATE webhook_deliveries SET next_attempt_at = 0").await;
        receiver.reply_always(Reply::Status(204));
        app.restart().await;
        let deadline = Instant::now() + WAIT;
        while app.count_rows("webhook_deliveries").await > 0 {
            assert!(Instant::now() < deadline, "deliveries still queued after the restart");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let delivered: Vec<Delivery> =
            receiver.received().into_iter().filter(|d| matches!(d.answered, Reply::Status(204))).collect();
        assert_eq!(delivered.len(), 10, "{delivered:#?}");
        let ids: HashSet<_> = delivered.iter().map(|d| d.id.clone()).collect();
        assert_eq!(ids.len(), 10, "each once");
        let events: HashMap<&str, usize> = delivered.iter().fold(HashMap::new(), |mut seen, d| {
            *seen.entry(d.event()).or_default() += 1;
            seen
        });
        assert_eq!(events, HashMap::from([("subscriber.created", 5), ("subscriber.confirmed", 5)]));
        verified_by_standardwebhooks(&secret, &delivered);
    }

    async fn erasing_drops_queued_deliveries_that_name_the_address(backend: Backend) {
        let receiver = Receiver::start().await;
        receiver.reply_always(Reply::Status(503));
        let smtp = SmtpServer::start().await;
        let smtp_url = smtp.url();
        let extra = ["--webhook-retry-delay", "1h", "--smtp-url", smtp_url.as_str(), "--mail-from", "list@example.com"];
        let app = spawn_app_with(backend, &args(&extra)).await;
        add_endpoint(&app, &receiver.url, &[]).await;
        let visitor = stranger(&app);
        assert_is_redirect_to(&visitor.signup("erase.queue@example.com").await, "/");
        receiver.wait_for(1, WAIT).await;
        // The created event failed and waits for its retry when the person erases themselves.
        let erase = link_in_mail(&app, &smtp, "erase.queue@example.com", "/u/").await;
        assert_is_redirect_to(&visitor.post_form(&format!("{erase}/erase"), &[]).await, "/erased");
        let left = app.database.strings("SELECT event || ':' || coalesce(email, '-') FROM webhook_deliveries").await;
        assert_eq!(left, ["subscriber.erased:-"], "only the erased event is queued");
    }

    async fn urls_that_could_reach_inside_are_refused(backend: Backend) {
        let receiver = Receiver::start().await;
        // No --webhooks-allow-private: loopback receivers are refused.
        let app = spawn_app_with(backend, &["--webhooks-allow-http"]).await;
        let admin = stranger(&app);
        admin.login_ok().await;
        let csrf = form_token(&admin.get_html("/admin").await).unwrap();
        for (url, says) in [
            (receiver.url.as_str(), "not a public address"),
            ("http://localhost:9/", "not a public address"),
            ("http://169.254.169.254/latest/meta-data/", "not a public address"),
            ("http://[::ffff:10.0.0.1]/", "not a public address"),
            ("http://0x7f000001/", "not a public address"),
            ("ftp://example.com/", "must use https"),
            ("https://user:secret@example.com/", "user name or password"),
            ("not a url", "not a URL"),
        ] {
            let response = admin.post_form("/admin/webhooks", &[("csrf_token", &csrf), ("url", url)]).await;
            assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{url}");
            let page = response.text().await.unwrap();
            assert!(page.contains(says), "{url}: {page}");
        }
        assert_eq!(app.count_rows("webhook_endpoints").await, 0);
        // Without the form token: refused, nothing stored.
        let forged = admin.post_form("/admin/webhooks", &[("url", "https://example.com/")]).await;
        assert_eq!(forged.status(), StatusCode::FORBIDDEN);
        assert_eq!(app.count_rows("webhook_endpoints").await, 0);
        // Unknown endpoints are 404 everywhere.
        assert_eq!(admin.get("/admin/webhooks/999").await.status(), StatusCode::NOT_FOUND);
        let ping = admin.post_form("/admin/webhooks/999/ping", &[("csrf_token", &csrf)]).await;
        assert_eq!(ping.status(), StatusCode::NOT_FOUND);
        let remove = admin.post_form("/admin/webhooks/999/remove", &[("csrf_token", &csrf)]).await;
        assert_eq!(remove.status(), StatusCode::NOT_FOUND);
        // Not logged in: the login page.
        assert_is_redirect_to(&stranger(&app).get("/admin/webhooks/1").await, "/admin/login");
    }

    async fn a_name_that_resolves_inside_is_refused_at_send_time(backend: Backend) {
        let receiver = Receiver::start().await;
        let mut app = spawn_app_with(backend, &args(&[])).await;
        // Added while private addresses were allowed, then the operator takes that back.
        add_endpoint(&app, &receiver.url.replace("127.0.0.1", "localhost"), &["subscriber.created"]).await;
        app.stop().await;
        let server = {
            let mut settings = app.settings();
            settings.webhooks.allow_private = false;
            enlist::Server::build(settings).await.unwrap()
        };
        let address = format!("http://{}", server.local_addr());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async { let _ = stopped.await; }));
        let visitor = Visitor { address: address.clone(), client: browser() };
        assert_is_redirect_to(&visitor.signup("inside@example.com").await, "/");
        let deadline = Instant::now() + WAIT;
        loop {
            let errors = app.database.strings("SELECT coalesce(error, '') FROM webhook_attempts").await;
            if let Some(error) = errors.first() {
                assert!(error.contains("not a public address"), "{error}");
                break;
            }
            assert!(Instant::now() < deadline, "no attempt recorded");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(receiver.received().is_empty(), "nothing reached the private address");
        let _ = stop.send(());
        task.await.unwrap().unwrap();
    }

    async fn a_ping_from_the_admin_page_arrives(backend: Backend) {
        let receiver = Receiver::start().await;
        let app = spawn_app_with(backend, &args(&[])).await;
        let (id, secret) = add_endpoint(&app, &receiver.url, &["subscriber.erased"]).await;
        let admin = stranger(&app);
        admin.login_ok().await;
        let page = admin.get_html(&format!("/admin/webhooks/{id}")).await;
        assert!(page.contains("subscriber.erased") && page.contains("Nothing sent yet"), "{page}");
        let csrf = form_token(&page).unwrap();
        let ping = admin.post_form(&format!("/admin/webhooks/{id}/ping"), &[("csrf_token", &csrf)]).await;
        assert_is_redirect_to(&ping, &format!("/admin/webhooks/{id}"));
        let got = receiver.wait_for(1, WAIT).await;
        assert_eq!(got[0].event(), "webhook.ping");
        assert_eq!(got[0].json["data"]["endpoint_id"], id);
        verified_by_standardwebhooks(&secret, &got);
        // Removing it removes its history too.
        let remove = admin.post_form(&format!("/admin/webhooks/{id}/remove"), &[("csrf_token", &csrf)]).await;
        assert_is_redirect_to(&remove, "/admin");
        assert!(admin.get_html("/admin").await.contains("The webhook endpoint is removed"));
        assert_eq!(app.count_rows("webhook_endpoints").await, 0);
        assert_eq!(app.count_rows("webhook_attempts").await, 0);
    }
}

#[tokio::test]
async fn a_receiver_that_never_answers_is_cut_off_at_ten_seconds() {
    let receiver = Receiver::start().await;
    receiver.reply_next(&[Reply::Hang(Duration::from_secs(60))]);
    let app = spawn_app_with(Backend::Sqlite, &args(&[])).await;
    let (id, _) = add_endpoint(&app, &receiver.url, &["subscriber.created"]).await;
    let started = Instant::now();
    assert_is_redirect_to(&stranger(&app).signup("slow@example.com").await, "/");
    let deadline = started + Duration::from_secs(30);
    let durations = loop {
        let found = app.database.strings("SELECT CAST(duration_ms AS TEXT) || ' ' || coalesce(error, '') FROM webhook_attempts").await;
        if !found.is_empty() {
            break found;
        }
        assert!(Instant::now() < deadline, "the attempt was never cut off");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (ms, error) = durations[0].split_once(' ').unwrap();
    let ms: u64 = ms.parse().unwrap();
    assert!((9_500..13_000).contains(&ms), "cut after {ms} ms");
    assert!(error.contains("no answer within 10 seconds"), "{error}");
    // The retry (a second later) is answered at once.
    let got = receiver.wait_for(2, WAIT).await;
    assert_eq!(got[0].id, got[1].id);
    let page = admin_page(&app, &format!("/admin/webhooks/{id}")).await;
    assert!(page.contains("no answer within 10 seconds"), "{page}");
}

#[tokio::test]
async fn the_cli_adds_lists_and_removes_endpoints() {
    let receiver = Receiver::start().await;
    let mut app = common::prepare_app(Backend::Sqlite, &args(&[]), None).await;
    let flags = ["--webhooks-allow-private", "--webhooks-allow-http"];
    let mut add = vec![
        "webhook",
        "add",
        receiver.url.as_str(),
        "--events",
        "subscriber.created,subscriber.deleted",
    ];
    add.extend(flags);
    let added = app.tool(&add);
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    let printed = String::from_utf8_lossy(&added.stdout).to_string();
    assert!(
        printed.starts_with("added endpoint 1 for subscriber.created,subscriber.deleted"),
        "{printed}"
    );
    let secret = printed.split_whitespace().find(|w| w.starts_with("whsec_")).unwrap().to_owned();

    let listed = app.tool(&["webhook", "list"]);
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(listed.contains(&receiver.url) && listed.contains("active"), "{listed}");
    assert!(!listed.contains(&secret), "the secret is shown once only");

    // Refused: a private address without the flag, an unknown event, an unknown id.
    let private = app.tool(&["webhook", "add", &receiver.url, "--webhooks-allow-http"]);
    assert_eq!(private.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&private.stderr).contains("not a public address"));
    let typo =
        app.tool(&["webhook", "add", "https://example.com/", "--events", "subscriber.exploded"]);
    assert!(!typo.status.success());
    assert!(String::from_utf8_lossy(&typo.stderr).contains("unknown event"));
    let missing = app.tool(&["webhook", "remove", "42"]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no webhook endpoint 42"));

    // The server sends to what the CLI added; while it runs, the CLI points at the admin page.
    let server = app.start_server().await;
    app.visitor.address = server.address.clone();
    assert_is_redirect_to(&app.signup("cli@example.com").await, "/");
    let got = receiver.wait_for(1, WAIT).await;
    assert_eq!(got[0].event(), "subscriber.created");
    assert!(signature_is_valid(&secret, &got[0]));
    let busy = app.tool(&["webhook", "list"]);
    assert!(String::from_utf8_lossy(&busy.stderr).contains("manage webhooks on the admin page"));
    server.stop().await;
    app.stop().await;

    let removed = app.tool(&["webhook", "remove", "1"]);
    assert_eq!(String::from_utf8_lossy(&removed.stdout).trim(), "removed endpoint 1");
    assert_eq!(app.count_rows("webhook_endpoints").await, 0);
}

/// Two instances share one PostgreSQL database: each delivery is made by exactly one of them.
#[tokio::test]
async fn two_instances_send_each_delivery_once() {
    let Some(backend) = Backend::postgres() else { return };
    let receiver = Receiver::start().await;
    let app = spawn_app_with(backend, &args(&[])).await;
    let second = app.start_server().await;
    let (_, secret) = add_endpoint(&app, &receiver.url, &["subscriber.created"]).await;
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(40));
    let mut signups = tokio::task::JoinSet::new();
    for n in 0..40 {
        let address = if n % 2 == 0 { app.address.clone() } else { second.address.clone() };
        let barrier = barrier.clone();
        signups.spawn(async move {
            let visitor = Visitor { address, client: browser() };
            barrier.wait().await;
            visitor.signup(&format!("both{n}@example.com")).await.status()
        });
    }
    while let Some(status) = signups.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::SEE_OTHER);
    }
    receiver.wait_for(40, WAIT).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = receiver.received();
    let ids: HashSet<_> = got.iter().map(|d| d.id.clone()).collect();
    assert_eq!((got.len(), ids.len()), (40, 40), "each delivery exactly once");
    verified_by_standardwebhooks(&secret, &got);
    second.stop().await;
}
