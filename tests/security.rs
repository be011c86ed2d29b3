//! Cross-origin checks, form tokens, cookies, limits and headers.

#[macro_use]
mod common;

use common::{
    Backend, TestApp, Visitor, assert_is_redirect_to, bare_client, cookie_pair, form_token,
    session_set_cookie, spawn_app, spawn_app_with,
};
use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE, COOKIE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Posts a signup with exactly these fetch-metadata / origin headers.
async fn signup_with(app: &TestApp, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = app.client.post(app.url("/signup")).form(&[("email", "csrf@example.com")]);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

async fn raw_post_chunked(address: &str, path: &str, body: &str) -> String {
    let host = address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    for chunk in body.as_bytes().chunks(4096) {
        request.push_str(&format!("{:x}\r\n{}\r\n", chunk.len(), String::from_utf8_lossy(chunk)));
    }
    request.push_str("0\r\n\r\n");
    // The server may answer and close before reading everything; that is fine.
    let _ = stream.write_all(request.as_bytes()).await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response).into_owned()
}

on_both_backends! {
    async fn the_cross_origin_matrix(backend: Backend) {
        let app = spawn_app(backend).await;
        let own = app.address.clone();
        let refused: &[&[(&str, &str)]] = &[
            &[("sec-fetch-site", "cross-site")],
            &[("sec-fetch-site", "same-site")],
            &[("origin", "https://evil.example")],
            &[("origin", "null")],
            &[("origin", "http://127.0.0.1:1")],
        ];
        for headers in refused {
            let response = signup_with(&app, headers).await;
            assert_eq!(response.status(), StatusCode::FORBIDDEN, "{headers:?}");
            assert!(session_set_cookie(&response).is_none());
            assert!(response.text().await.unwrap().contains("Request refused"));
        }
        assert_eq!(
            app.count_rows("subscribers").await,
            0,
            "refused requests change nothing"
        );
        assert_eq!(app.count_rows("sessions").await, 0);

        let accepted: &[&[(&str, &str)]] = &[
            &[("sec-fetch-site", "same-origin")],
            &[("sec-fetch-site", "none")],
            &[("sec-fetch-site", "same-origin"), ("origin", &own)],
            &[("origin", &own)],
            // Neither header: not a browser, so no ambient cookies to abuse (as in Go's design).
            &[],
        ];
        for headers in accepted {
            assert_is_redirect_to(&signup_with(&app, headers).await, "/");
        }
        assert_eq!(app.count_rows("subscribers").await, 1);
    }

    async fn cross_origin_checks_cover_every_unsafe_route(backend: Backend) {
        let app = spawn_app(backend).await;
        for path in [
            "/unregister",
            "/admin/login",
            "/admin/delete",
            "/admin/logout",
            "/nowhere",
        ] {
            let response = app
                .client
                .post(app.url(path))
                .header("sec-fetch-site", "cross-site")
                .form(&[("password", common::ADMIN_PASSWORD)])
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
        }
    }

    async fn unregister_needs_the_session_token(backend: Backend) {
        let app = spawn_app(backend).await;
        app.signup("stay@example.com").await;
        let good = form_token(&app.get_html("/").await).unwrap();
        let other_session = app.other_visitor();
        other_session.signup("someone@example.com").await;
        let foreign = form_token(&other_session.get_html("/").await).unwrap();

        for token in ["", "garbage", foreign.as_str(), &good[..good.len() - 1]] {
            let response = app.post_form("/unregister", &[("csrf_token", token)]).await;
            assert_eq!(response.status(), StatusCode::FORBIDDEN, "token {token:?}");
        }
        let without_field = app.post_form("/unregister", &[]).await;
        assert_eq!(without_field.status(), StatusCode::FORBIDDEN);
        assert_eq!(app.count_rows("subscribers").await, 2, "nothing removed");
        assert!(
            app.get_html("/")
                .await
                .contains("Thanks for signing up, stay@example.com!")
        );

        assert_is_redirect_to(
            &app.post_form("/unregister", &[("csrf_token", &good)]).await,
            "/",
        );
        assert_eq!(app.subscriber_emails().await, vec!["someone@example.com"]);
    }

    async fn the_session_cookie_is_opaque_and_locked_down(backend: Backend) {
        let app = spawn_app(backend).await;
        let response = app.signup("cookie@example.com").await;
        let cookie = session_set_cookie(&response).expect("signup sets the session cookie");
        let value = cookie_pair(&cookie)
            .trim_start_matches("enlist_session=")
            .to_owned();
        assert_eq!(value.len(), 44, "a time stamp and 200 random bits, base64url");
        assert!(!cookie.contains("cookie@example.com") && !cookie.contains("cookie%40"));
        for attribute in ["Path=/", "HttpOnly", "SameSite=Lax", "Max-Age=31536000"] {
            assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
        }
        assert!(
            !cookie.contains("Secure"),
            "plain http cannot carry a Secure cookie"
        );
        assert_eq!(response.headers().get(CACHE_CONTROL).unwrap(), "no-store");
    }

    async fn https_deployments_get_a_secure_host_only_cookie(backend: Backend) {
        let app = spawn_app_with(backend, &["--public-url", "https://list.example.com"]).await;
        let response = app.signup("secure@example.com").await;
        let cookie = session_set_cookie(&response).expect("session cookie");
        assert!(cookie.starts_with("__Host-enlist_session="), "{cookie}");
        assert!(cookie.contains("; Secure"));
        assert!(cookie.contains("Path=/"));
        assert!(!cookie.contains("Domain="));
        let again = bare_client()
            .get(app.url("/"))
            .header(COOKIE, cookie_pair(&cookie))
            .send()
            .await
            .unwrap();
        assert!(
            again
                .text()
                .await
                .unwrap()
                .contains("Thanks for signing up, secure@example.com!")
        );

        // The public origin itself is trusted, for proxies that rewrite Host.
        let proxied = bare_client()
            .post(app.url("/signup"))
            .header("origin", "https://list.example.com")
            .form(&[("email", "proxied@example.com")])
            .send()
            .await
            .unwrap();
        assert_is_redirect_to(&proxied, "/");
    }

    async fn unknown_or_malformed_session_ids_are_no_session(backend: Backend) {
        let app = spawn_app(backend).await;
        app.signup("real@example.com").await;
        let unknown = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        let unknown_legacy = &unknown[1..];
        for cookie in [
            format!("enlist_session={unknown}"),
            format!("enlist_session={unknown_legacy}"),
            "enlist_session=../../etc/passwd".into(),
            "enlist_session=".into(),
            format!("enlist_session={}", "x".repeat(4000)),
            "enlist_session=%00%ff; theme=dark".into(),
        ] {
            let response = bare_client()
                .get(app.url("/"))
                .header(COOKIE, cookie.as_str())
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{cookie:.40}");
            let html = response.text().await.unwrap();
            assert!(html.contains(r#"action="/signup""#));
            assert!(!html.contains("real@example.com"));
        }
        // A well-formed but unknown id is told to go away.
        let stale = bare_client()
            .get(app.url("/"))
            .header(COOKIE, format!("enlist_session={unknown}"))
            .send()
            .await
            .unwrap();
        assert!(session_set_cookie(&stale).unwrap().contains("Max-Age=0"));

        // Signing up with a bogus id starts a fresh session rather than adopting the id.
        let adopted = bare_client()
            .post(app.url("/signup"))
            .header(COOKIE, format!("enlist_session={unknown}"))
            .form(&[("email", "fixation@example.com")])
            .send()
            .await
            .unwrap();
        let fresh = session_set_cookie(&adopted).unwrap();
        assert!(!fresh.contains(unknown));
    }

    async fn sessions_issued_with_the_earlier_ids_still_work(backend: Backend) {
        use sha2::{Digest, Sha256};
        let app = spawn_app(backend).await;
        app.signup("earlier@example.com").await;
        // An id as the earlier releases issued it (32 random bytes, stored as its SHA-256).
        let id = [0x5au8; 32];
        let key: String = Sha256::digest(id).iter().map(|b| format!("{b:02x}")).collect();
        let key = if app.database.is_postgres() {
            format!("decode('{key}', 'hex')")
        } else {
            format!("X'{key}'")
        };
        app.database
            .execute(&format!(
                "INSERT INTO sessions (key, data, expires_at) VALUES ({key}, \
                 '{{\"visitor_email\":\"earlier@example.com\"}}', 4102444800)"
            ))
            .await;
        let cookie = format!("enlist_session={}", base64_url(&id));
        let response = bare_client()
            .get(app.url("/"))
            .header(COOKIE, cookie.as_str())
            .send()
            .await
            .unwrap();
        assert!(session_set_cookie(&response).is_none(), "the id is kept");
        let html = response.text().await.unwrap();
        assert!(html.contains("Thanks for signing up, earlier@example.com!"), "{html}");

        // Such a session names its address by a hash the database cannot match to a row, so
        // it still remembers an address the admin removed, and Unregister says so plainly.
        let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
        jar.add_cookie_str(&cookie, &app.url("/").parse().unwrap());
        let earlier = Visitor {
            address: app.address.clone(),
            client: reqwest::Client::builder()
                .cookie_provider(jar)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        };
        let token = form_token(&earlier.get_html("/").await).unwrap();
        let admin = app.other_visitor();
        admin.login_ok().await;
        assert_is_redirect_to(&admin.admin_delete("earlier@example.com").await, "/admin");
        assert!(earlier.get_html("/").await.contains("Thanks for signing up"));
        let response = earlier.post_form("/unregister", &[("csrf_token", &token)]).await;
        assert_is_redirect_to(&response, "/");
        let html = earlier.get_html("/").await;
        assert!(html.contains("That address isn&#x27;t on our list"), "{html}");
        assert!(html.contains(r#"action="/signup""#), "the session forgot the address");
    }

    async fn a_visitor_is_forgotten_when_their_session_expires(backend: Backend) {
        let app = spawn_app_with(backend, &["--visitor-session-ttl", "2s"]).await;
        let response = app.signup("brief@example.com").await;
        assert!(session_set_cookie(&response).unwrap().contains("Max-Age=2"));
        assert!(app.get_html("/").await.contains("Thanks for signing up"));
        tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
        // The browser would have dropped the cookie; the server does not trust it to.
        let cookie = cookie_pair(&session_set_cookie(&response).unwrap());
        let late = bare_client()
            .get(app.url("/"))
            .header(COOKIE, cookie)
            .send()
            .await
            .unwrap();
        assert!(late.text().await.unwrap().contains(r#"action="/signup""#));
        assert_eq!(
            app.subscriber_emails().await,
            vec!["brief@example.com"],
            "the signup itself stays"
        );
    }

    async fn every_response_carries_the_security_headers(backend: Backend) {
        let app = spawn_app(backend).await;
        let responses = vec![
            app.get("/").await,
            app.get("/healthz").await,
            app.get("/static/style.css").await,
            app.get("/missing").await,
            app.get("/unregister").await,
            app.signup("headers@example.com").await,
            app.signup("bad").await,
            signup_with(&app, &[("sec-fetch-site", "cross-site")]).await,
            app.get("/admin").await,
            app.get("/admin/login").await,
        ];
        let mut ids = std::collections::HashSet::new();
        for response in responses {
            let status = response.status();
            let headers = response.headers();
            let id = headers.get("x-request-id").unwrap().to_str().unwrap().to_owned();
            assert!(ids.insert(id), "{status}: each answer its own request id");
            assert_eq!(headers.get("x-frame-options").unwrap(), "DENY", "{status}");
            let content_type = headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            assert!(
                content_type.contains("charset=utf-8"),
                "{status}: {content_type}"
            );
            assert_eq!(
                headers.get("x-content-type-options").unwrap(),
                "nosniff",
                "{status}"
            );
            assert_eq!(
                headers.get("referrer-policy").unwrap(),
                "same-origin",
                "{status}"
            );
            let csp = headers
                .get("content-security-policy")
                .unwrap()
                .to_str()
                .unwrap();
            for directive in [
                "default-src 'self'",
                "frame-ancestors 'none'",
                "base-uri 'none'",
                "object-src 'none'",
            ] {
                assert!(csp.contains(directive), "{status}: {csp}");
            }
        }
        let admin_login = app.get("/admin/login").await;
        assert_eq!(
            admin_login.headers().get(CACHE_CONTROL).unwrap(),
            "no-store"
        );
        // An id a proxy already gave the request is kept, so one request has one id throughout.
        let relayed = bare_client()
            .get(app.url("/healthz"))
            .header("x-request-id", "edge-42")
            .send()
            .await
            .unwrap();
        assert_eq!(relayed.headers().get("x-request-id").unwrap(), "edge-42");
        let css = app.get("/static/style.css").await;
        assert!(
            css.headers()
                .get(CACHE_CONTROL)
                .unwrap()
                .to_str()
                .unwrap()
                .contains("max-age")
        );
        assert!(
            css.headers()
                .get(CONTENT_TYPE)
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("text/css")
        );
    }

    async fn wrong_paths_methods_and_media_types(backend: Backend) {
        let app = spawn_app(backend).await;
        let missing = app.get("/no/such/page").await;
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        assert!(missing.text().await.unwrap().contains("Page not found"));

        let delete = app
            .client
            .delete(app.url("/"))
            .headers(app.same_origin())
            .send()
            .await
            .unwrap();
        assert_eq!(delete.status(), StatusCode::METHOD_NOT_ALLOWED);

        let json = app
            .client
            .post(app.url("/signup"))
            .headers(app.same_origin())
            .header(CONTENT_TYPE, "application/json")
            .body(r#"{"email":"json@example.com"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(json.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let none = app
            .client
            .post(app.url("/signup"))
            .headers(app.same_origin())
            .body("email=plain@example.com")
            .send()
            .await
            .unwrap();
        assert_eq!(none.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let multipart = app
            .client
            .post(app.url("/signup"))
            .headers(app.same_origin())
            .header(CONTENT_TYPE, "multipart/form-data; boundary=x")
            .body("--x\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\nm@example.com\r\n--x--\r\n")
            .send()
            .await
            .unwrap();
        assert_eq!(multipart.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(app.count_rows("subscribers").await, 0);
    }

    async fn oversized_bodies_are_refused(backend: Backend) {
        let app = spawn_app(backend).await;
        let big = format!("{}@example.com", "a".repeat(17 * 1024));
        let declared = app.signup(&big).await;
        assert_eq!(declared.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(declared.text().await.unwrap().contains("Too large"));

        // The same without a Content-Length: chunked, as a streaming client sends it.
        let body = format!("email={}", "a".repeat(20 * 1024));
        let chunked = raw_post_chunked(&app.address, "/signup", &body).await;
        assert!(
            chunked.starts_with("HTTP/1.1 413"),
            "{}",
            &chunked[..chunked.len().min(200)]
        );

        // An oversized body is refused even where the handler would not read it.
        let unregister = app
            .post_form("/unregister", &[("csrf_token", &"t".repeat(17 * 1024))])
            .await;
        assert_eq!(unregister.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(app.count_rows("subscribers").await, 0);
        assert_eq!(app.count_rows("sessions").await, 0);
    }

    async fn undecodable_forms_are_bad_requests(backend: Backend) {
        let app = spawn_app(backend).await;
        let duplicate = app
            .client
            .post(app.url("/signup"))
            .headers(app.same_origin())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body("email=a@example.com&email=b@example.com")
            .send()
            .await
            .unwrap();
        assert_eq!(duplicate.status(), StatusCode::BAD_REQUEST);
        let invalid_utf8 = app
            .client
            .post(app.url("/signup"))
            .headers(app.same_origin())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body("email=%ff%fe@example.com")
            .send()
            .await
            .unwrap();
        assert_eq!(invalid_utf8.status(), StatusCode::BAD_REQUEST);
        assert_eq!(app.count_rows("subscribers").await, 0);
    }
}
