//! A visitor signs up, is remembered, and unregisters.

#[macro_use]
mod common;

use common::{
    Backend, assert_is_redirect_to, browser, cookie_pair, form_token, session_set_cookie, spawn_app,
};
use reqwest::StatusCode;

on_both_backends! {
    async fn a_first_visit_shows_the_form_and_stores_nothing(backend: Backend) {
        let app = spawn_app(backend).await;
        let response = app.get("/").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            session_set_cookie(&response).is_none(),
            "a plain visit sets no cookie"
        );
        let html = response.text().await.unwrap();
        assert!(html.contains(r#"<form method="post" action="/signup""#));
        assert!(html.contains(r#"name="email""#));
        assert!(
            !html.contains("Unregister"),
            "the button is shown only to a remembered visitor"
        );
        assert_eq!(app.count_rows("sessions").await, 0);
    }

    async fn signing_up_remembers_the_visitor_who_is_then_thanked(backend: Backend) {
        let app = spawn_app(backend).await;
        let response = app.signup("  Ada.Lovelace@Example.COM ").await;
        assert_is_redirect_to(&response, "/");

        let html = app.get_html("/").await;
        assert!(html.contains("Thanks for signing up, Ada.Lovelace@example.com!"));
        assert!(html.contains(r#"action="/unregister""#));
        assert!(html.contains("Unregister"));
        assert!(
            !html.contains(r#"action="/signup""#),
            "the thanks replaces the form"
        );
        assert_eq!(
            app.subscriber_emails().await,
            vec!["Ada.Lovelace@example.com"]
        );

        // Still thanked on every later visit.
        assert!(
            app.get_html("/")
                .await
                .contains("Thanks for signing up, Ada.Lovelace@example.com!")
        );
    }

    async fn pages_kept_as_rendered_follow_each_visitors_session(backend: Backend) {
        let app = spawn_app(backend).await;
        let other = app.other_visitor();
        app.signup("first@example.com").await;
        other.signup("second@example.com").await;
        let (mine, theirs) = (app.get_html("/").await, other.get_html("/").await);
        assert!(mine.contains("first@example.com") && !mine.contains("second@example.com"));
        assert!(theirs.contains("second@example.com") && !theirs.contains("first@example.com"));
        let my_token = form_token(&mine).expect("a token on the thanks page");
        assert_ne!(Some(&my_token), form_token(&theirs).as_ref(), "each session has its own token");
        assert_eq!(app.get_html("/").await, mine, "the same session, the same page");

        assert_is_redirect_to(&app.unregister().await, "/");
        let after = app.get_html("/").await;
        assert!(after.contains("We have removed first@example.com from the list!"));
        let again = app.get_html("/").await;
        assert!(!again.contains("We have removed") && !again.contains("first@example.com"));
        assert!(again.contains(r#"action="/signup""#) && !again.contains("Unregister"));

        app.signup("third@example.com").await;
        let back = app.get_html("/").await;
        assert!(back.contains("Thanks for signing up, third@example.com!"), "{back}");
        assert!(!back.contains("first@example.com"));
        let token = form_token(&back).expect("a token");
        assert_is_redirect_to(&app.post_form("/unregister", &[("csrf_token", &token)]).await, "/");
        assert_eq!(app.subscriber_emails().await, vec!["second@example.com"]);
        let newcomer = app.other_visitor().get("/").await;
        assert!(session_set_cookie(&newcomer).is_none());
        assert!(!newcomer.text().await.unwrap().contains("Unregister"));
    }

    async fn an_unreadable_session_record_is_forgotten_on_every_visit(backend: Backend) {
        let mut app = spawn_app(backend).await;
        let signed_up = app.signup("kept@example.com").await;
        let cookie = cookie_pair(&session_set_cookie(&signed_up).expect("a session cookie"));
        assert!(app.get_html("/").await.contains("kept@example.com"));
        app.stop().await;
        app.database.execute("UPDATE sessions SET data = 'not json'").await;
        app.restart().await;
        // Twice: the form shown for the unreadable record must not be kept under it.
        for visit in 1..=2 {
            let response = browser()
                .get(app.url("/"))
                .header("cookie", &cookie)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let cleared = session_set_cookie(&response).unwrap_or_default();
            assert!(cleared.contains("Max-Age=0"), "visit {visit}: {cleared:?}");
            let html = response.text().await.unwrap();
            assert!(html.contains(r#"action="/signup""#) && !html.contains("kept@example.com"));
        }
    }

    async fn the_address_is_never_shown_to_another_visitor(backend: Backend) {
        let app = spawn_app(backend).await;
        app.signup("private@example.com").await;
        let stranger = browser();
        let html = stranger
            .get(app.url("/"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!html.contains("private@example.com"));
        assert!(html.contains(r#"action="/signup""#));
    }

    async fn signing_up_twice_answers_the_same_and_stores_one_row(backend: Backend) {
        let app = spawn_app(backend).await;
        assert_is_redirect_to(&app.signup("twice@example.com").await, "/");

        // A different visitor, a different letter case: same answer, no second row.
        let other = app.other_visitor();
        let response = other.signup("TWICE@example.com").await;
        assert_is_redirect_to(&response, "/");
        assert!(
            other
                .get_html("/")
                .await
                .contains("Thanks for signing up, TWICE@example.com!")
        );
        assert_eq!(app.count_rows("subscribers").await, 1);
        assert_eq!(app.subscriber_emails().await, vec!["twice@example.com"]);
    }

    async fn an_invalid_address_shows_the_form_again_with_the_reason(backend: Backend) {
        let app = spawn_app(backend).await;
        let cases = [
            ("", "Please enter your email address."),
            ("not-an-address", "Please enter a complete address"),
            ("a@localhost", "Please enter a complete address"),
            ("a@-bad-.com", "Please enter a complete address"),
            ("line\nbreak@example.com", "characters that are not allowed"),
        ];
        for (input, message) in cases {
            let response = app.signup(input).await;
            assert_eq!(
                response.status(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "input {input:?}"
            );
            assert!(session_set_cookie(&response).is_none());
            let html = response.text().await.unwrap();
            assert!(html.contains(message), "input {input:?}: {html}");
            assert!(html.contains(r#"aria-invalid="true""#));
            assert!(html.contains(r#"aria-describedby="email-error""#));
        }
        let too_long = format!("{}@example.com", "a".repeat(250));
        assert_eq!(
            app.signup(&too_long).await.status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        let missing_field = app.post_form("/signup", &[("name", "x")]).await;
        assert_eq!(missing_field.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(app.count_rows("subscribers").await, 0);
        assert_eq!(app.count_rows("sessions").await, 0);
    }

    async fn the_typed_value_is_kept_and_escaped(backend: Backend) {
        let app = spawn_app(backend).await;
        let response = app.signup("<script>alert(1)</script>").await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let html = response.text().await.unwrap();
        assert!(!html.contains("<script>alert(1)</script>"));
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;")
                || html.contains("&lt;script&gt;")
        );
    }

    async fn unregistering_removes_the_row_and_forgets_the_visitor(backend: Backend) {
        let app = spawn_app(backend).await;
        app.signup("leaving@example.com").await;
        let response = app.unregister().await;
        assert_is_redirect_to(&response, "/");
        assert_eq!(app.count_rows("subscribers").await, 0);

        let html = app.get_html("/").await;
        assert!(html.contains("We have removed leaving@example.com from the list!"));
        assert!(html.contains(r#"action="/signup""#), "the form is back");
        assert!(!html.contains("Unregister"));

        // The message is shown once.
        let again = app.get_html("/").await;
        assert!(!again.contains("We have removed"));
    }

    async fn unregistering_without_an_address_says_so(backend: Backend) {
        let app = spawn_app(backend).await;
        let response = app.post_form("/unregister", &[("csrf_token", "")]).await;
        assert_is_redirect_to(&response, "/");
        assert!(
            app.get_html("/")
                .await
                .contains("You haven&#x27;t submitted an email!")
        );
        // The one-time message was the only thing stored; once shown, the session is gone.
        assert_eq!(app.count_rows("sessions").await, 0);
    }

    async fn a_removed_address_is_forgotten_by_every_browser(backend: Backend) {
        let app = spawn_app(backend).await;
        app.signup("gone@example.com").await;
        let token = form_token(&app.get_html("/").await).unwrap();
        // A second browser remembers the same address and is the admin's too.
        let admin = app.other_visitor();
        admin.signup("gone@example.com").await;
        admin.login_ok().await;
        assert_is_redirect_to(&admin.admin_delete("gone@example.com").await, "/admin");

        // Nobody is thanked for an address that is not on the list; the admin stays logged in.
        for html in [app.get_html("/").await, admin.get_html("/").await] {
            assert!(html.contains(r#"action="/signup""#), "the session forgot the address: {html}");
            assert!(!html.contains("gone@example.com"));
        }
        assert!(admin.get_html("/admin").await.contains("Log out"));
        // The session that held nothing but the address ended; the admin's stays.
        assert_eq!(app.count_rows("sessions").await, 1);

        // An Unregister from the page shown before the delete gets a plain answer.
        let response = app
            .post_form("/unregister", &[("csrf_token", &token)])
            .await;
        assert_is_redirect_to(&response, "/");
        let html = app.get_html("/").await;
        assert!(html.contains("You haven&#x27;t submitted an email!"), "{html}");
        assert_eq!(app.count_rows("subscribers").await, 0);
    }

    async fn visitors_signing_up_at_the_same_moment_are_each_remembered(backend: Backend) {
        let app = spawn_app(backend).await;
        let visitors: Vec<_> = (0..48).map(|_| app.other_visitor()).collect();
        // All at once, so signups and sessions from different visitors share commits.
        let signups = visitors
            .iter()
            .enumerate()
            .map(|(i, visitor)| async move { visitor.signup(&format!("crowd{i}@example.com")).await });
        for response in futures_util::future::join_all(signups).await {
            assert_is_redirect_to(&response, "/");
        }
        for (i, visitor) in visitors.iter().enumerate() {
            let html = visitor.get_html("/").await;
            assert!(html.contains(&format!("Thanks for signing up, crowd{i}@example.com!")), "{i}");
        }
        assert_eq!(app.count_rows("subscribers").await, 48);
    }

    async fn no_session_remembers_an_address_removed_at_the_same_moment(backend: Backend) {
        let app = spawn_app(backend).await;
        let admin = app.other_visitor();
        admin.login_ok().await;
        let admin_token = form_token(&admin.get_html("/admin").await).unwrap();
        for round in 0..20 {
            let email = format!("race{round}@example.com");
            app.signup(&email).await;
            let late = app.other_visitor();
            // The admin removes the address just as another browser signs it up again.
            let delete = [("csrf_token", admin_token.as_str()), ("email", email.as_str())];
            let (deleted, signed_up) =
                tokio::join!(admin.post_form("/admin/delete", &delete), late.signup(&email));
            assert_is_redirect_to(&deleted, "/admin");
            assert_is_redirect_to(&signed_up, "/");
            // Whichever came first, a browser is thanked only for an address on the list.
            let listed = app.subscriber_emails().await.contains(&email);
            let thanked = late.get_html("/").await.contains("Thanks for signing up");
            assert_eq!(thanked, listed, "round {round}");
            assert!(!app.get_html("/").await.contains("Thanks for signing up"), "round {round}");
        }
    }

    async fn a_visitor_can_only_remove_their_own_address(backend: Backend) {
        let app = spawn_app(backend).await;
        let victim = app.other_visitor();
        victim.signup("victim@example.com").await;
        app.signup("attacker@example.com").await;

        let token = form_token(&app.get_html("/").await).unwrap();
        let response = app
            .post_form(
                "/unregister",
                &[("csrf_token", &token), ("email", "victim@example.com")],
            )
            .await;
        assert_is_redirect_to(&response, "/");
        assert_eq!(app.subscriber_emails().await, vec!["victim@example.com"]);
    }

    async fn unregister_is_post_only(backend: Backend) {
        let app = spawn_app(backend).await;
        let response = app.get("/unregister").await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert!(response.headers().get("allow").is_some());
        let signup = app.get("/signup").await;
        assert_eq!(signup.status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    async fn signing_up_as_someone_else_replaces_the_remembered_address(backend: Backend) {
        let app = spawn_app(backend).await;
        app.signup("first@example.com").await;
        app.signup("second@example.com").await;
        let html = app.get_html("/").await;
        assert!(html.contains("Thanks for signing up, second@example.com!"));
        app.unregister().await;
        assert_eq!(app.subscriber_emails().await, vec!["first@example.com"]);
    }

    async fn internationalised_addresses_are_normalised(backend: Backend) {
        let app = spawn_app(backend).await;
        assert_is_redirect_to(&app.signup("Kim@BÜCHER.de").await, "/");
        assert!(
            app.get_html("/")
                .await
                .contains("Thanks for signing up, Kim@bücher.de!")
        );
        let other = app.other_visitor();
        other.signup("kim@xn--bcher-kva.de").await;
        assert_eq!(app.count_rows("subscribers").await, 1);
    }
}
