//! The admin logs in, lists, searches, pages, deletes and logs out; sessions end when they must.

#[macro_use]
mod common;

use std::time::Duration;

use common::{
    ADMIN_PASSWORD, Backend, assert_is_redirect_to, bare_client, cookie_pair, form_token,
    session_set_cookie, spawn_app, spawn_app_with,
};
use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, COOKIE};

fn older_link(html: &str) -> Option<String> {
    let start = html.find(r#"<a href="/admin?before="#)? + r#"<a href=""#.len();
    let end = html[start..].find('"')? + start;
    Some(html[start..end].replace("&amp;", "&"))
}

on_both_backends! {
    async fn admin_pages_need_a_login(backend: Backend) {
        let app = spawn_app(backend).await;
        assert_is_redirect_to(&app.get("/admin").await, "/admin/login");
        assert_is_redirect_to(&app.get("/admin?q=x").await, "/admin/login");
        let delete = app
            .post_form("/admin/delete", &[("email", "a@example.com")])
            .await;
        assert_is_redirect_to(&delete, "/admin/login");
        let logout = app.post_form("/admin/logout", &[]).await;
        assert_is_redirect_to(&logout, "/admin/login");

        let login = app.get("/admin/login").await;
        assert_eq!(login.status(), StatusCode::OK);
        let html = login.text().await.unwrap();
        assert!(html.contains(r#"action="/admin/login""#));
        assert!(html.contains(r#"type="password""#));
    }

    async fn a_wrong_password_gets_one_generic_answer(backend: Backend) {
        let app = spawn_app(backend).await;
        let long = "x".repeat(1025);
        for attempt in ["", "wrong", "correct horse battery stapl", long.as_str()] {
            let response = app.login(attempt).await;
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "attempt of {} chars",
                attempt.len()
            );
            assert!(session_set_cookie(&response).is_none());
            let html = response.text().await.unwrap();
            assert!(html.contains("That password is not right."));
            assert!(html.contains(r#"action="/admin/login""#));
        }
        let missing_field = app.post_form("/admin/login", &[("user", "admin")]).await;
        assert_eq!(missing_field.status(), StatusCode::UNAUTHORIZED);
        assert_is_redirect_to(&app.get("/admin").await, "/admin/login");
    }

    async fn logging_in_rotates_the_session_id(backend: Backend) {
        let app = spawn_app(backend).await;
        // A session that exists before login (the visitor signed up)...
        let before =
            session_set_cookie(&app.signup("visitor@example.com").await).expect("session cookie");
        let login = app.login(ADMIN_PASSWORD).await;
        assert_is_redirect_to(&login, "/admin");
        let after = session_set_cookie(&login).expect("login sets a new cookie");
        assert_ne!(cookie_pair(&before), cookie_pair(&after));

        // ...is worthless afterwards: the pre-login id is not an admin, and not anything.
        let replay = bare_client()
            .get(app.url("/admin"))
            .header(COOKIE, cookie_pair(&before))
            .send()
            .await
            .unwrap();
        assert_is_redirect_to(&replay, "/admin/login");
        let home = bare_client()
            .get(app.url("/"))
            .header(COOKIE, cookie_pair(&before))
            .send()
            .await
            .unwrap();
        assert!(!home.text().await.unwrap().contains("visitor@example.com"));

        // The admin keeps what the visitor's session held.
        assert!(
            app.get_html("/")
                .await
                .contains("Thanks for signing up, visitor@example.com!")
        );
    }

    async fn the_list_is_newest_first_with_signup_times_and_counts(backend: Backend) {
        let app = spawn_app(backend).await;
        for i in 0..3 {
            app.other_visitor()
                .signup(&format!("person{i}@example.com"))
                .await;
        }
        app.login_ok().await;
        let response = app.get("/admin").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers().get(CACHE_CONTROL).unwrap(), "no-store");
        let html = response.text().await.unwrap();
        let positions: Vec<usize> = (0..3)
            .map(|i| {
                html.find(&format!("person{i}@example.com"))
                    .expect("listed")
            })
            .collect();
        assert!(
            positions[2] < positions[1] && positions[1] < positions[0],
            "newest first"
        );
        assert!(html.contains("3 subscribers."));
        assert!(html.contains(r#"<time datetime="20"#), "signup time shown");
        assert!(html.contains(" UTC</time>"));
    }

    async fn pages_hold_fifty_and_link_to_older_ones(backend: Backend) {
        let app = spawn_app(backend).await;
        for i in 0..120 {
            app.other_visitor()
                .signup(&format!("user{i:03}@example.com"))
                .await;
        }
        app.login_ok().await;
        let first = app.get_html("/admin").await;
        assert_eq!(first.matches(r#"action="/admin/delete""#).count(), 50);
        assert!(first.contains("user119@example.com") && first.contains("user070@example.com"));
        assert!(!first.contains("user069@example.com"));
        assert!(first.contains("120 subscribers."));

        let next = older_link(&first).expect("a link to older addresses");
        let second = app.get_html(&next).await;
        assert_eq!(second.matches(r#"action="/admin/delete""#).count(), 50);
        assert!(second.contains("user069@example.com") && second.contains("user020@example.com"));
        assert!(!second.contains("user070@example.com"));

        let third = app
            .get_html(&older_link(&second).expect("third page"))
            .await;
        assert_eq!(third.matches(r#"action="/admin/delete""#).count(), 20);
        assert!(third.contains("user000@example.com"));
        assert!(older_link(&third).is_none(), "no page after the last");

        let junk = app.get("/admin?before=abc").await;
        assert_eq!(junk.status(), StatusCode::BAD_REQUEST);
    }

    async fn search_finds_substrings_case_insensitively(backend: Backend) {
        let app = spawn_app(backend).await;
        for email in [
            "alice@example.com",
            "bob@example.org",
            "Alicia@Sample.net",
            "carol_x@example.com",
        ] {
            app.other_visitor().signup(email).await;
        }
        app.login_ok().await;
        let html = app.get_html("/admin?q=ALIC").await;
        assert!(html.contains("alice@example.com") && html.contains("Alicia@sample.net"));
        assert!(!html.contains("bob@example.org"));
        assert!(html.contains("2 matches of 4 subscribers."));

        // LIKE wildcards in the search are plain characters.
        let underscore = app.get_html("/admin?q=l_x").await;
        assert!(underscore.contains("carol_x@example.com"));
        assert!(underscore.contains("1 match of 4 subscribers."));
        let percent = app.get_html("/admin?q=e%25x").await;
        assert!(percent.contains("0 matches of 4 subscribers."));

        // Two characters search like any other term.
        let short = app.get_html("/admin?q=AL").await;
        assert!(short.contains("alice@example.com") && short.contains("Alicia@sample.net"));
        assert!(short.contains("2 matches of 4 subscribers."));

        let too_long = app.get(&format!("/admin?q={}", "a".repeat(300))).await;
        assert_eq!(too_long.status(), StatusCode::BAD_REQUEST);
    }

    async fn searches_find_the_same_rows_before_and_after_the_index_catches_up(backend: Backend) {
        let app = spawn_app(backend).await;
        for email in ["alice@example.com", "Alicia@Sample.net", "kim@bücher.de", "bob@example.org"] {
            assert_is_redirect_to(&app.other_visitor().signup(email).await, "/");
        }
        app.login_ok().await;
        let searches = [
            ("ALIC", "2 matches of 4", vec!["alice@example.com", "Alicia@sample.net"]),
            ("xn--bcher", "1 match of 4", vec!["kim@bücher.de"]),
            ("b%C3%BCcher", "1 match of 4", vec!["kim@bücher.de"]),
            ("example", "2 matches of 4", vec!["alice@example.com", "bob@example.org"]),
        ];
        let check = |phase: &'static str| {
            let (app, searches) = (&app, &searches);
            async move {
                for (q, count, found) in searches {
                    let html = common::unescape(&app.get_html(&format!("/admin?q={q}")).await);
                    assert!(html.contains(count), "{phase}, q={q}: {html}");
                    for email in found {
                        assert!(html.contains(email), "{phase}, q={q} finds {email}");
                    }
                }
            }
        };
        // Newly added rows are found before the background index holds them...
        check("new rows").await;
        let unindexed = if app.database.is_postgres() {
            "SELECT CAST(count(*) AS TEXT) FROM search_backlog"
        } else {
            "SELECT CAST(count(*) AS TEXT) FROM subscribers
             WHERE id > (SELECT indexed_up_to FROM search_progress)"
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while app.database.strings(unindexed).await != ["0"] {
            assert!(std::time::Instant::now() < deadline, "the index never caught up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // ...and after, through the index, the same ones.
        check("indexed rows").await;
        if app.database.is_postgres() {
            assert_eq!(app.database.count("subscriber_search").await, 4);
        }
        // A deleted row leaves the index with it.
        app.admin_delete("kim@bücher.de").await;
        assert!(app.get_html("/admin?q=xn--bcher").await.contains("0 matches of 3"));
        if app.database.is_postgres() {
            assert_eq!(app.database.count("subscriber_search").await, 3);
        }
    }

    async fn search_handles_short_terms_quotes_unicode_and_paging(backend: Backend) {
        let app = spawn_app(backend).await;
        for email in ["o'neil@example.com", "kim@bücher.de", "xy@example.com", "quote@example.com"] {
            assert_is_redirect_to(&app.other_visitor().signup(email).await, "/");
        }
        for i in 0..60 {
            app.other_visitor().signup(&format!("bulk{i:02}@many.example")).await;
        }
        app.login_ok().await;
        assert!(app.get_html("/admin?q=xy%40").await.contains("1 match of 64"));
        // Quotes are plain characters, not query syntax, inside and outside the index.
        assert!(app.get_html("/admin?q=o%27neil").await.contains("1 match of 64"));
        assert!(app.get_html("/admin?q=%22uote").await.contains("0 matches of 64"));
        assert!(app.get_html("/admin?q=uote%22%20OR%20%22a").await.contains("0 matches of 64"));
        assert!(app.get_html("/admin?q=quote").await.contains("1 match of 64"));
        // The Unicode form of a domain and its ASCII key both find the address.
        assert!(app.get_html("/admin?q=B%C3%BCcher").await.contains("kim@bücher.de"));
        assert!(app.get_html("/admin?q=xn--bcher").await.contains("kim@bücher.de"));
        // A search result pages like the full list.
        let first = app.get_html("/admin?q=many.example").await;
        assert!(first.contains("60 matches of 64"));
        assert_eq!(first.matches(r#"action="/admin/delete""#).count(), 50);
        let second = app.get_html(&older_link(&first).expect("a second page of matches")).await;
        assert_eq!(second.matches(r#"action="/admin/delete""#).count(), 10);
        assert!(second.contains("bulk00@many.example") && !second.contains("kim@"));
        // Deletes keep the maintained count right.
        app.admin_delete("xy@example.com").await;
        assert!(app.get_html("/admin").await.contains("63 subscribers."));
    }

    async fn one_and_two_character_searches_match_like_longer_ones(backend: Backend) {
        let app = spawn_app(backend).await;
        for email in [
            "alice@example.com",
            "Bob@Example.org",
            "carol_x@example.com",
            "dan%50@example.net",
            "o'neil@example.com",
            "Ünal@Bücher.de",
        ] {
            assert_is_redirect_to(&app.other_visitor().signup(email).await, "/");
        }
        app.login_ok().await;
        let search = |q: &'static str| {
            let app = &app;
            async move {
                let response = app.get(&format!("/admin?q={q}")).await;
                assert_eq!(response.status(), StatusCode::OK, "q={q}");
                let html = response.text().await.unwrap();
                assert!(!html.contains("Searched the newest"), "q={q}: the whole list was searched");
                html
            }
        };
        let shown = |html: &str| -> Vec<&str> {
            ["alice@", "Bob@", "carol_x@", "dan%50@", "o&#x27;neil@", "Ünal@"]
                .into_iter()
                .filter(|needle| html.contains(&format!(">{needle}")))
                .collect()
        };
        let b = search("B").await;
        assert_eq!(shown(&b), ["Bob@", "Ünal@"], "case-insensitive, local part as typed");
        assert!(b.contains("2 matches of 6 subscribers."));
        assert_eq!(shown(&search("bO").await), ["Bob@"]);
        let underscore = search("_").await;
        assert_eq!(shown(&underscore), ["carol_x@"], "_ is a plain character");
        let percent = search("%25").await;
        assert_eq!(shown(&percent), ["dan%50@"], "% is a plain character");
        let quote_backslash = search("%27%5C").await;
        assert_eq!(shown(&quote_backslash), Vec::<&str>::new());
        assert!(quote_backslash.contains("0 matches of 6 subscribers."));
        assert_eq!(shown(&search("%27").await), ["o&#x27;neil@"]);
        // Unicode letters in either case, in the local part and the domain.
        assert_eq!(shown(&search("%C3%9C").await), ["Ünal@"]);
        assert_eq!(shown(&search("%C3%BC").await), ["Ünal@"]);
        assert_eq!(shown(&search("c%C3%BC").await), Vec::<&str>::new());
        assert_eq!(shown(&search("%C3%BCc").await), ["Ünal@"]);
        assert_eq!(shown(&search("xn").await), ["Ünal@"], "the ASCII form of the domain");
        let e = search("e").await;
        assert_eq!(shown(&e), ["alice@", "Bob@", "carol_x@", "dan%50@", "o&#x27;neil@", "Ünal@"]);
        assert!(e.contains("6 matches of 6 subscribers."));
        assert!(!search("q").await.contains("<td class=\"address\""));
    }

    async fn a_short_search_walks_a_bounded_stretch_and_says_so(backend: Backend) {
        let app = spawn_app(backend).await;
        assert_is_redirect_to(&app.other_visitor().signup("needle-zq@old.example").await, "/");
        // More rows than one page of a short search walks, straight into the database.
        let filler = 100_050;
        if app.database.is_postgres() {
            for batch in 0..(filler / 5_000 + 1) {
                let from = batch * 5_000;
                let to = (from + 5_000).min(filler);
                app.database
                    .execute(&format!(
                        "INSERT INTO subscribers (email, email_key, created_at)
                         SELECT 'fill' || i || '@walk.example', 'fill' || i || '@walk.example', 0
                         FROM generate_series({from}, {to} - 1) AS i"
                    ))
                    .await;
            }
        } else {
            app.database
                .execute(&format!(
                    "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {filler} - 1)
                     INSERT INTO subscribers (email, email_key, created_at)
                     SELECT 'fill' || i || '@walk.example', 'fill' || i || '@walk.example', 0 FROM n"
                ))
                .await;
        }
        app.database.count_rows_added_by_hand("confirmed", filler).await;
        assert_is_redirect_to(&app.other_visitor().signup("fresh-zq@new.example").await, "/");
        app.login_ok().await;

        for q in ["zq", "z"] {
            let first = app.get_html(&format!("/admin?q={q}")).await;
            assert!(first.contains(">fresh-zq@new.example<"), "q={q}");
            assert!(!first.contains("needle-zq"), "q={q}: beyond the first stretch");
            assert!(
                first.contains("Searched the newest 100,000 addresses; refine the search to look further."),
                "q={q}"
            );
            assert!(first.contains("1 match in the newest 100,000 of 100,052 subscribers."), "q={q}");
            let further = older_link(&first).expect("a link to look further");
            let second = app.get_html(&further).await;
            assert!(second.contains(">needle-zq@old.example<"), "q={q}");
            assert!(!second.contains("fresh-zq"), "q={q}");
            assert!(!second.contains("Searched the newest"), "q={q}: walked to the end");
            assert!(older_link(&second).is_none(), "q={q}");
        }
        // Three characters go through the index, over the whole list.
        let indexed = app.get_html("/admin?q=-zq").await;
        assert!(indexed.contains("2 matches of 100,052 subscribers."));
        assert!(!indexed.contains("Searched the newest"));
    }

    async fn counts_agree_with_their_numbers(backend: Backend) {
        let app = spawn_app(backend).await;
        app.login_ok().await;
        assert!(app.get_html("/admin").await.contains("0 subscribers."));
        app.other_visitor().signup("only@example.com").await;
        let one = app.get_html("/admin").await;
        assert!(one.contains("1 subscriber."), "{one}");
        assert!(!one.contains("1 subscribers"));
        assert!(app.get_html("/admin?q=only").await.contains("1 match of 1 subscriber."));
        assert!(app.get_html("/admin?q=o").await.contains("1 match of 1 subscriber."));
        assert!(app.get_html("/admin?q=nobody").await.contains("0 matches of 1 subscriber."));
        app.other_visitor().signup("second@example.com").await;
        assert!(app.get_html("/admin").await.contains("2 subscribers."));
        assert!(app.get_html("/admin?q=example").await.contains("2 matches of 2 subscribers."));
    }

    async fn methods_a_route_does_not_serve_are_405_with_allow(backend: Backend) {
        let app = spawn_app(backend).await;
        let admin = app.other_visitor();
        admin.login_ok().await;
        let cases: &[(&str, &str, &[&str])] = &[
            ("OPTIONS", "/admin/delete", &["POST"]),
            ("PUT", "/admin/delete", &["POST"]),
            ("DELETE", "/admin/delete", &["POST"]),
            ("GET", "/admin/delete", &["POST"]),
            ("GET", "/admin/logout", &["POST"]),
            ("PATCH", "/admin/logout", &["POST"]),
            ("POST", "/admin", &["GET", "HEAD"]),
            ("OPTIONS", "/admin", &["GET", "HEAD"]),
            ("DELETE", "/admin/login", &["GET", "HEAD", "POST"]),
            ("PUT", "/", &["GET", "HEAD"]),
            ("OPTIONS", "/signup", &["POST"]),
            ("GET", "/unregister", &["POST"]),
            ("POST", "/healthz", &["GET", "HEAD"]),
            ("POST", "/static/style.css", &["GET", "HEAD"]),
        ];
        for (who, visitor) in [("logged out", &app.visitor), ("logged in", &admin)] {
            for (method, path, allowed) in cases {
                let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
                let response = visitor
                    .client
                    .request(method.clone(), visitor.url(path))
                    .headers(visitor.same_origin())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "{who}: {method} {path}");
                let allow = response.headers().get("allow").and_then(|v| v.to_str().ok());
                let mut listed: Vec<&str> =
                    allow.unwrap_or_default().split(',').map(str::trim).collect();
                listed.sort_unstable();
                assert_eq!(&listed, allowed, "{who}: {method} {path}");
                assert!(response.text().await.unwrap().contains("Not allowed"));
            }
        }
        // The admin session survived all of that.
        assert_eq!(admin.get("/admin").await.status(), StatusCode::OK);
    }

    async fn deleting_removes_the_address_with_a_message(backend: Backend) {
        let app = spawn_app(backend).await;
        app.other_visitor().signup("spam@example.com").await;
        app.other_visitor().signup("keep@example.com").await;
        app.login_ok().await;

        let response = app.admin_delete("SPAM@example.com").await;
        assert_is_redirect_to(&response, "/admin");
        assert_eq!(app.subscriber_emails().await, vec!["keep@example.com"]);
        let html = app.get_html("/admin").await;
        assert!(html.contains("We have removed SPAM@example.com from the list."));
        assert!(
            !app.get_html("/admin").await.contains("We have removed"),
            "shown once"
        );

        assert_is_redirect_to(&app.admin_delete("spam@example.com").await, "/admin");
        assert!(
            app.get_html("/admin")
                .await
                .contains("spam@example.com isn&#x27;t on the list.")
        );

        let token = form_token(&app.get_html("/admin").await).unwrap();
        let invalid = app
            .post_form(
                "/admin/delete",
                &[("csrf_token", &token), ("email", "nonsense")],
            )
            .await;
        assert_eq!(invalid.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(app.subscriber_emails().await, vec!["keep@example.com"]);
    }

    async fn admin_forms_need_the_session_token(backend: Backend) {
        let app = spawn_app(backend).await;
        app.other_visitor().signup("target@example.com").await;
        app.login_ok().await;
        for token in [
            "",
            "not-a-token",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            let delete = app
                .post_form(
                    "/admin/delete",
                    &[("csrf_token", token), ("email", "target@example.com")],
                )
                .await;
            assert_eq!(delete.status(), StatusCode::FORBIDDEN);
            let logout = app
                .post_form("/admin/logout", &[("csrf_token", token)])
                .await;
            assert_eq!(logout.status(), StatusCode::FORBIDDEN);
        }
        let no_field = app
            .post_form("/admin/delete", &[("email", "target@example.com")])
            .await;
        assert_eq!(no_field.status(), StatusCode::FORBIDDEN);
        assert_eq!(app.count_rows("subscribers").await, 1);
        assert_eq!(
            app.get("/admin").await.status(),
            StatusCode::OK,
            "still logged in"
        );
    }

    async fn logging_out_ends_the_session_on_the_server(backend: Backend) {
        let app = spawn_app(backend).await;
        let login = app.login(ADMIN_PASSWORD).await;
        let admin_cookie = cookie_pair(&session_set_cookie(&login).unwrap());
        assert_eq!(app.count_rows("sessions").await, 1);

        let logout = app.logout().await;
        assert_is_redirect_to(&logout, "/");
        let cleared = session_set_cookie(&logout).expect("the cookie is cleared");
        assert!(cleared.contains("Max-Age=0"));
        assert_eq!(
            app.count_rows("sessions").await,
            0,
            "the server record is gone"
        );

        // Replaying the old cookie gets nowhere.
        let replay = bare_client()
            .get(app.url("/admin"))
            .header(COOKIE, &admin_cookie)
            .send()
            .await
            .unwrap();
        assert_is_redirect_to(&replay, "/admin/login");
        assert_is_redirect_to(&app.get("/admin").await, "/admin/login");
    }

    async fn an_idle_admin_session_ends(backend: Backend) {
        let app = spawn_app_with(backend, &[
            "--admin-idle-timeout",
            "2s",
            "--admin-absolute-timeout",
            "1h",
        ])
        .await;
        app.login_ok().await;
        // Activity keeps it alive past the idle timeout...
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(700)).await;
            assert_eq!(app.get("/admin").await.status(), StatusCode::OK);
        }
        // ...inactivity ends it.
        tokio::time::sleep(Duration::from_millis(2600)).await;
        assert_is_redirect_to(&app.get("/admin").await, "/admin/login");
        assert!(
            app.get_html("/admin/login")
                .await
                .contains("Your admin session has ended")
        );
        assert_is_redirect_to(&app.get("/admin").await, "/admin/login");
    }

    async fn an_admin_session_ends_at_the_absolute_timeout_however_active(backend: Backend) {
        let app = spawn_app_with(backend, &[
            "--admin-idle-timeout",
            "2s",
            "--admin-absolute-timeout",
            "3s",
        ])
        .await;
        app.login_ok().await;
        for _ in 0..4 {
            assert_eq!(app.get("/admin").await.status(), StatusCode::OK);
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_is_redirect_to(&app.get("/admin").await, "/admin/login");
        // Logging in again works.
        app.login_ok().await;
        assert_eq!(app.get("/admin").await.status(), StatusCode::OK);
    }

    async fn a_new_admin_password_ends_every_admin_session(backend: Backend) {
        let mut app = spawn_app(backend).await;
        app.login_ok().await;
        app.restart().await;
        assert_eq!(
            app.get("/admin").await.status(),
            StatusCode::OK,
            "a restart alone keeps the admin in"
        );

        app.restart_with_admin_password(Some("a completely different password"))
            .await;
        assert_is_redirect_to(&app.get("/admin").await, "/admin/login");
        assert_eq!(
            app.login(ADMIN_PASSWORD).await.status(),
            StatusCode::UNAUTHORIZED
        );
        assert_is_redirect_to(
            &app.login("a completely different password").await,
            "/admin",
        );
    }

    async fn the_login_page_sends_a_logged_in_admin_to_the_list(backend: Backend) {
        let app = spawn_app(backend).await;
        app.login_ok().await;
        assert_is_redirect_to(&app.get("/admin/login").await, "/admin");
    }
}
