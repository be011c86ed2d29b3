//! The JSON API: tokens made on the admin page and the CLI, the list read and changed with
//! them, the public signup for custom front-ends, and a problem document for every error.

#[macro_use]
mod common;

use std::time::Duration;

use common::smtp::SmtpServer;
use common::{Backend, TestApp, bare_client, form_token, spawn_app, spawn_app_with};
use reqwest::header::{CONTENT_TYPE, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};

/// Logs in and creates a token on the admin page; returns it as the page shows it.
async fn token_from_admin_page(app: &TestApp, name: &str, read_only: bool) -> String {
    app.login_ok().await;
    let csrf = form_token(&app.get_html("/admin").await).unwrap();
    let mut form = vec![("csrf_token", csrf.as_str()), ("name", name)];
    if read_only {
        form.push(("read_only", "1"));
    }
    let response = app.post_form("/admin/tokens", &form).await;
    assert_eq!(response.status(), StatusCode::OK);
    let page = response.text().await.unwrap();
    let start = page.find("value=\"enl_").expect("the token on the page") + 7;
    page[start..start + page[start..].find('"').unwrap()].to_owned()
}

fn call(app: &TestApp, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
    let request = bare_client().request(method, app.url(path));
    match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
}

/// Checks the response is the problem document of `kind` with `status`; returns it.
async fn problem(response: Response, status: StatusCode, kind: &str) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()[CONTENT_TYPE], "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], format!("urn:enlist:problem:{kind}"), "{body}");
    assert_eq!(body["status"], status.as_u16());
    assert!(body["title"].is_string());
    body
}

on_both_backends! {
    async fn a_token_from_the_admin_page_reads_and_changes_the_list(backend: Backend) {
        let app = spawn_app(backend).await;
        let token = token_from_admin_page(&app, "crm-sync", false).await;
        assert_eq!(token.len(), 47);
        let admin = app.get_html("/admin").await;
        assert!(admin.contains("crm-sync") && admin.contains("never"), "listed, unused");
        assert!(!admin.contains(&token), "shown once, on the page that created it");

        let created = call(&app, Method::POST, "/api/v1/subscribers", Some(&token))
            .json(&json!({"email": "Ada@Example.com"}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), StatusCode::CREATED);
        let location = created.headers()[LOCATION].to_str().unwrap().to_owned();
        let body: Value = created.json().await.unwrap();
        assert_eq!(body["email"], "Ada@example.com");
        assert_eq!(body["status"], "confirmed");
        assert_eq!(body["source"], "api");
        assert_eq!(location, format!("/api/v1/subscribers/{}", body["id"]));
        let fetched: Value =
            call(&app, Method::GET, &location, Some(&token)).send().await.unwrap().json().await.unwrap();
        assert_eq!(fetched, body);
        assert!(fetched["signed_up_at"].as_str().unwrap().ends_with('Z'));

        // The same address again, in another case: a conflict, nothing changes.
        let again = call(&app, Method::POST, "/api/v1/subscribers", Some(&token))
            .json(&json!({"email": "ada@example.com", "status": "confirmed"}))
            .send()
            .await
            .unwrap();
        problem(again, StatusCode::CONFLICT, "already-subscribed").await;
        // Pending needs mail.
        let pending = call(&app, Method::POST, "/api/v1/subscribers", Some(&token))
            .json(&json!({"email": "later@example.com", "status": "pending"}))
            .send()
            .await
            .unwrap();
        problem(pending, StatusCode::UNPROCESSABLE_ENTITY, "mail-not-configured").await;
        let invalid = call(&app, Method::POST, "/api/v1/subscribers", Some(&token))
            .json(&json!({"email": "not an address"}))
            .send()
            .await
            .unwrap();
        let body = problem(invalid, StatusCode::UNPROCESSABLE_ENTITY, "invalid-email").await;
        assert!(body["detail"].as_str().unwrap().len() > 5);

        let stats: Value = call(&app, Method::GET, "/api/v1/stats", Some(&token))
            .send().await.unwrap().json().await.unwrap();
        assert_eq!(stats, json!({"pending": 0, "confirmed": 1, "left": 0}));

        let deleted = call(&app, Method::DELETE, &location, Some(&token)).send().await.unwrap();
        assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
        let gone = call(&app, Method::GET, &location, Some(&token)).send().await.unwrap();
        problem(gone, StatusCode::NOT_FOUND, "not-found").await;
        let twice = call(&app, Method::DELETE, &location, Some(&token)).send().await.unwrap();
        problem(twice, StatusCode::NOT_FOUND, "not-found").await;

        // Its use is on the admin page, and revoking it ends it at once.
        let admin = app.get_html("/admin").await;
        assert!(!admin.contains("<td>never</td>"), "the last use is shown");
        let csrf = form_token(&admin).unwrap();
        let revoke = app
            .post_form("/admin/tokens/revoke", &[("csrf_token", &csrf), ("name", "crm-sync")])
            .await;
        assert_eq!(revoke.status(), StatusCode::SEE_OTHER);
        assert!(app.get_html("/admin").await.contains("The token crm-sync is revoked"));
        let after = call(&app, Method::GET, "/api/v1/stats", Some(&token)).send().await.unwrap();
        problem(after, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }

    async fn no_request_after_a_revoke_is_let_in_even_with_reads_racing_it(backend: Backend) {
        let app = spawn_app(backend).await;
        for round in 0..20 {
            let name = format!("racer{round}");
            let token = token_from_admin_page(&app, &name, true).await;
            let csrf = form_token(&app.get_html("/admin").await).unwrap();
            // Readers start together with the revoke, so some of their checks began before it.
            let start = std::sync::Arc::new(tokio::sync::Barrier::new(9));
            let readers: Vec<_> = (0..8)
                .map(|_| {
                    let (start, request) =
                        (start.clone(), call(&app, Method::GET, "/api/v1/stats", Some(&token)));
                    tokio::spawn(async move {
                        start.wait().await;
                        request.send().await.unwrap().status()
                    })
                })
                .collect();
            start.wait().await;
            let revoke = app
                .post_form("/admin/tokens/revoke", &[("csrf_token", &csrf), ("name", &name)])
                .await;
            assert_eq!(revoke.status(), StatusCode::SEE_OTHER);
            for reader in readers {
                let status = reader.await.unwrap();
                assert!(matches!(status, StatusCode::OK | StatusCode::UNAUTHORIZED), "{status}");
            }
            for _ in 0..3 {
                let after = call(&app, Method::GET, "/api/v1/stats", Some(&token)).send().await;
                problem(after.unwrap(), StatusCode::UNAUTHORIZED, "unauthorized").await;
            }
        }
    }

    async fn the_counts_follow_people_leaving_and_coming_back(backend: Backend) {
        let app = spawn_app(backend).await;
        let token = token_from_admin_page(&app, "counter", true).await;
        let stats = || async {
            let response = call(&app, Method::GET, "/api/v1/stats", Some(&token)).send().await;
            response.unwrap().json::<Value>().await.unwrap()
        };
        let (ann, bob) = (app.other_visitor(), app.other_visitor());
        ann.signup("ann@example.com").await;
        bob.signup("bob@example.com").await;
        assert_eq!(stats().await, json!({"pending": 0, "confirmed": 2, "left": 0}));
        assert_eq!(ann.unregister().await.status(), StatusCode::SEE_OTHER);
        assert_eq!(stats().await, json!({"pending": 0, "confirmed": 1, "left": 1}));
        // Signing up again lifts the suppression: the one who left is counted back in.
        ann.signup("ann@example.com").await;
        assert_eq!(stats().await, json!({"pending": 0, "confirmed": 2, "left": 0}));
        // Signups that lift nothing leave the count of those who left alone.
        bob.unregister().await;
        app.other_visitor().signup("cy@example.com").await;
        assert_eq!(stats().await, json!({"pending": 0, "confirmed": 2, "left": 1}));
    }

    async fn listing_searches_filters_and_pages_like_the_admin_page(backend: Backend) {
        let app = spawn_app(backend).await;
        let token = token_from_admin_page(&app, "reader", true).await;
        for n in 0..24 {
            app.other_visitor().signup(&format!("user{n:02}@example.com")).await;
        }
        // Not ASCII: read and written through the slower of the two paths.
        app.other_visitor().signup("kim@bücher.example").await;
        app.other_visitor().signup("zed@other.example").await;
        let page = |query: &str| {
            let url = format!("/api/v1/subscribers{query}");
            let request = call(&app, Method::GET, &url, Some(&token));
            async move {
                let response = request.send().await.unwrap();
                assert_eq!(response.status(), StatusCode::OK, "{url}");
                response.json::<Value>().await.unwrap()
            }
        };
        let first = page("?limit=10").await;
        let rows = first["subscribers"].as_array().unwrap();
        assert_eq!(rows.len(), 10);
        assert_eq!(rows[0]["email"], "zed@other.example", "newest first");
        assert_eq!(rows[1]["email"], "kim@bücher.example");
        let mut seen: Vec<String> =
            rows.iter().map(|r| r["email"].as_str().unwrap().to_owned()).collect();
        let mut before = first["next_before"].as_i64().unwrap();
        loop {
            let next = page(&format!("?limit=10&before={before}")).await;
            seen.extend(next["subscribers"].as_array().unwrap().iter()
                .map(|r| r["email"].as_str().unwrap().to_owned()));
            match next["next_before"].as_i64() {
                Some(b) => before = b,
                None => break,
            }
        }
        assert_eq!(seen.len(), 26);
        seen.dedup();
        assert_eq!(seen.len(), 26, "no row twice");

        let search = page("?q=OTHER").await;
        assert_eq!(search["subscribers"].as_array().unwrap().len(), 1);
        let short = page("?q=z").await;
        assert_eq!(short["subscribers"][0]["email"], "zed@other.example", "one letter works");
        let confirmed = page("?status=confirmed&limit=500").await;
        assert_eq!(confirmed["subscribers"].as_array().unwrap().len(), 26);
        assert!(page("?status=pending").await["subscribers"].as_array().unwrap().is_empty());

        for bad in ["?limit=0", "?limit=501", "?limit=x", "?before=0", "?status=gone"] {
            let response = call(&app, Method::GET, &format!("/api/v1/subscribers{bad}"), Some(&token))
                .send().await.unwrap();
            problem(response, StatusCode::BAD_REQUEST, "bad-request").await;
        }
        let bad_id = call(&app, Method::GET, "/api/v1/subscribers/abc", Some(&token)).send().await.unwrap();
        problem(bad_id, StatusCode::BAD_REQUEST, "bad-request").await;

        // A read-only token writes nothing.
        let write = call(&app, Method::POST, "/api/v1/subscribers", Some(&token))
            .json(&json!({"email": "new@example.com"})).send().await.unwrap();
        problem(write, StatusCode::FORBIDDEN, "read-only-token").await;
        let id = first["subscribers"][0]["id"].as_i64().unwrap();
        let delete = call(&app, Method::DELETE, &format!("/api/v1/subscribers/{id}"), Some(&token))
            .send().await.unwrap();
        problem(delete, StatusCode::FORBIDDEN, "read-only-token").await;
        assert_eq!(app.count_rows("subscribers").await, 26);
    }

    async fn bad_requests_get_problem_documents_and_token_guessing_is_throttled(backend: Backend) {
        let app = spawn_app_with(backend, &["--login-limit", "5/15m"]).await;
        let token = token_from_admin_page(&app, "writer", false).await;
        let missing = call(&app, Method::GET, "/api/v1/stats", None).send().await.unwrap();
        assert_eq!(missing.headers()[WWW_AUTHENTICATE], "Bearer");
        problem(missing, StatusCode::UNAUTHORIZED, "unauthorized").await;

        let post = |body: &'static str, content_type: &'static str| {
            call(&app, Method::POST, "/api/v1/subscribers", Some(&token))
                .header(CONTENT_TYPE, content_type)
                .body(body)
                .send()
        };
        problem(post("email=a%40example.com", "application/x-www-form-urlencoded").await.unwrap(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type").await;
        problem(post("{\"email\":", "application/json").await.unwrap(),
            StatusCode::BAD_REQUEST, "malformed-json").await;
        problem(post("{\"email\":\"a@example.com\",\"admin\":true}", "application/json").await.unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY, "invalid-body").await;
        problem(post("{\"email\":\"a@example.com\",\"status\":\"vip\"}", "application/json").await.unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY, "invalid-body").await;
        let huge = format!("{{\"email\":\"{}@example.com\"}}", "a".repeat(70 * 1024));
        let too_large = call(&app, Method::POST, "/api/v1/subscribers", Some(&token))
            .header(CONTENT_TYPE, "application/json").body(huge).send().await.unwrap();
        problem(too_large, StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large").await;
        let nowhere = call(&app, Method::GET, "/api/v1/nowhere", Some(&token)).send().await.unwrap();
        problem(nowhere, StatusCode::NOT_FOUND, "not-found").await;
        let method = call(&app, Method::PUT, "/api/v1/stats", Some(&token)).send().await.unwrap();
        assert_eq!(method.headers()["allow"], "GET,HEAD");
        problem(method, StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed").await;
        assert_eq!(app.count_rows("subscribers").await, 0, "nothing half-written");

        // Wrong tokens count like wrong passwords: past five, a wait, even for the right one.
        for _ in 0..6 {
            let wrong = call(&app, Method::GET, "/api/v1/stats", Some("enl_guess")).send().await.unwrap();
            problem(wrong, StatusCode::UNAUTHORIZED, "unauthorized").await;
        }
        let throttled = call(&app, Method::GET, "/api/v1/stats", Some(&token)).send().await.unwrap();
        assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(throttled.headers()[RETRY_AFTER].to_str().unwrap().parse::<u64>().unwrap() >= 1);
        problem(throttled, StatusCode::TOO_MANY_REQUESTS, "rate-limited").await;
    }

    async fn the_public_signup_goes_through_every_guard_of_the_form(backend: Backend) {
        let app = spawn_app_with(backend, &["--signup-limit-per-ip", "6/1m"]).await;
        let signup = |body: Value| {
            bare_client().post(app.url("/api/v1/signup")).json(&body).send()
        };
        let ok = signup(json!({"email": "Person@Example.com"})).await.unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.json::<Value>().await.unwrap(), json!({"status": "confirmed"}));
        let stored = app.database.strings("SELECT email || ' ' || source FROM subscribers").await;
        assert_eq!(stored, vec!["Person@example.com api"]);
        // A bot that fills in the honeypot: the same answer, nothing stored.
        let bot = signup(json!({"email": "bot@example.com", "website": "http://spam"})).await.unwrap();
        assert_eq!(bot.json::<Value>().await.unwrap(), json!({"status": "confirmed"}));
        assert_eq!(app.count_rows("subscribers").await, 1);
        let invalid = signup(json!({"email": "nope"})).await.unwrap();
        problem(invalid, StatusCode::UNPROCESSABLE_ENTITY, "invalid-email").await;
        let unknown = signup(json!({"email": "x@example.com", "name": "X"})).await.unwrap();
        problem(unknown, StatusCode::UNPROCESSABLE_ENTITY, "invalid-body").await;
        // The per-client limit counts the API like the form.
        let limited = signup(json!({"email": "five@example.com"})).await.unwrap();
        assert!(limited.headers().contains_key(RETRY_AFTER));
        problem(limited, StatusCode::TOO_MANY_REQUESTS, "rate-limited").await;
        assert_eq!(app.count_rows("subscribers").await, 1);
    }

    async fn tokens_from_the_command_line(backend: Backend) {
        let mut app = spawn_app(backend).await;
        let sqlite = !app.database.is_postgres();
        if sqlite {
            // SQLite belongs to the running server: the tool says where to go instead.
            let refused = app.tool(&["token", "list"]);
            let message = String::from_utf8_lossy(&refused.stderr);
            assert_eq!(refused.status.code(), Some(1), "{message}");
            assert!(message.contains("admin page"), "{message}");
            app.stop().await;
        }
        // On PostgreSQL the tool runs beside the server.
        let created = app.tool(&["token", "create", "nightly", "--read-only"]);
        assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
        let token = String::from_utf8_lossy(&created.stdout).trim().to_owned();
        assert!(token.starts_with("enl_") && token.len() == 47);
        assert_eq!(app.tool(&["token", "create", "nightly"]).status.code(), Some(1));
        assert_eq!(app.tool(&["token", "create", "no spaces"]).status.code(), Some(1));
        let listed = String::from_utf8_lossy(&app.tool(&["token", "list"]).stdout).into_owned();
        assert!(listed.contains("nightly\tread-only\t") && listed.contains("never"), "{listed}");

        if sqlite {
            app.restart().await;
        }
        let works = call(&app, Method::GET, "/api/v1/stats", Some(&token)).send().await.unwrap();
        assert_eq!(works.status(), StatusCode::OK);
        if sqlite {
            app.stop().await;
        }
        let revoked = app.tool(&["token", "revoke", "nightly"]);
        assert!(revoked.status.success(), "{}", String::from_utf8_lossy(&revoked.stderr));
        assert_eq!(app.tool(&["token", "revoke", "nightly"]).status.code(), Some(1));
        if sqlite {
            app.restart().await;
        }
        let after = call(&app, Method::GET, "/api/v1/stats", Some(&token)).send().await.unwrap();
        problem(after, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }

    async fn a_pending_api_add_and_the_public_signup_mail_a_confirmation(backend: Backend) {
        let smtp = SmtpServer::start().await;
        let url = smtp.url();
        let app = spawn_app_with(
            backend,
            &["--smtp-url", &url, "--mail-from", "News <news@example.org>"],
        )
        .await;
        let token = token_from_admin_page(&app, "shop", false).await;
        let created = call(&app, Method::POST, "/api/v1/subscribers", Some(&token))
            .json(&json!({"email": "asked@example.com", "status": "pending"}))
            .send().await.unwrap();
        assert_eq!(created.status(), StatusCode::CREATED);
        assert_eq!(created.json::<Value>().await.unwrap()["status"], "pending");
        let answer = bare_client().post(app.url("/api/v1/signup"))
            .json(&json!({"email": "front@example.com"})).send().await.unwrap();
        assert_eq!(answer.json::<Value>().await.unwrap(), json!({"status": "pending"}));
        let mails = smtp.wait_for(2, Duration::from_secs(15)).await;
        let mut to: Vec<&str> = mails.iter().map(|m| m.to[0].as_str()).collect();
        to.sort();
        assert_eq!(to, vec!["asked@example.com", "front@example.com"]);
        assert!(mails.iter().all(|m| m.link(&format!("{}/confirm/", app.address)).is_some()));
    }
}

#[tokio::test]
async fn the_committed_openapi_document_matches_the_handlers() {
    let generated = enlist::web::api::openapi_json();
    let committed = include_str!("../openapi.json");
    assert_eq!(
        committed.trim_end(),
        generated.trim_end(),
        "openapi.json is stale: run `cargo run -- openapi > openapi.json`"
    );
    let app = spawn_app(Backend::Sqlite).await;
    let served = app.get("/api/v1/openapi.json").await;
    assert_eq!(served.headers()[CONTENT_TYPE], "application/json");
    let served: Value = served.json().await.unwrap();
    assert_eq!(served, serde_json::from_str::<Value>(&generated).unwrap());
    assert_eq!(served["openapi"], "3.1.0");
    for path in ["/subscribers", "/subscribers/{id}", "/stats", "/signup"] {
        assert!(served["paths"][path].is_object(), "{path} is described");
    }
}
