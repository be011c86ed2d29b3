//! The admin by hand: add one address (honouring suppression), delete the selected rows, and
//! delete every row a search matches after a page that says how many.

#[macro_use]
mod common;

use std::time::Duration;

use common::smtp::SmtpServer;
use common::{Backend, TestApp, assert_is_redirect_to, form_token, spawn_app, spawn_app_with};
use reqwest::StatusCode;

async fn admin_token(app: &TestApp) -> String {
    form_token(&app.get_html("/admin").await).expect("a form token on the admin page")
}

async fn add(app: &TestApp, email: &str, add_as: &str) -> reqwest::Response {
    let token = admin_token(app).await;
    app.post_form("/admin/add", &[("csrf_token", &token), ("email", email), ("as", add_as)]).await
}

async fn ids_of(app: &TestApp, emails: &[&str]) -> Vec<String> {
    let list = emails.iter().map(|e| format!("'{e}'")).collect::<Vec<_>>().join(", ");
    app.database
        .strings(&format!(
            "SELECT CAST(id AS TEXT) FROM subscribers WHERE email IN ({list}) ORDER BY id"
        ))
        .await
}

on_both_backends! {
    async fn the_admin_adds_one_address_as_confirmed(backend: Backend) {
        let app = spawn_app(backend).await;
        app.login_ok().await;
        assert_is_redirect_to(&add(&app, "New.Person@Example.com", "confirmed").await, "/admin");
        assert!(app.get_html("/admin").await.contains("New.Person@example.com is added to the list."));
        let stored = app
            .database
            .strings("SELECT status || ' ' || source FROM subscribers")
            .await;
        assert_eq!(stored, vec!["confirmed admin"]);

        // Again, in another case: already there, nothing changes.
        assert_is_redirect_to(&add(&app, "new.person@example.com", "").await, "/admin");
        assert!(app.get_html("/admin").await.contains("is already on the list."));
        assert_eq!(app.count_rows("subscribers").await, 1);

        // Not an address: the reason, nothing stored.
        let invalid = add(&app, "not an address", "confirmed").await;
        assert_eq!(invalid.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let odd = add(&app, "x@example.com", "sometimes").await;
        assert_eq!(odd.status(), StatusCode::UNPROCESSABLE_ENTITY);
        // Pending needs mail, and there is none here.
        assert_is_redirect_to(&add(&app, "later@example.com", "pending").await, "/admin");
        assert!(app.get_html("/admin").await.contains("Mail is not configured"));
        assert_eq!(app.count_rows("subscribers").await, 1);

        // Without the form token: refused.
        let forged = app
            .post_form("/admin/add", &[("email", "forged@example.com")])
            .await;
        assert_eq!(forged.status(), StatusCode::FORBIDDEN);
        assert_eq!(app.count_rows("subscribers").await, 1);
    }

    async fn an_address_that_left_cannot_be_added_back_by_the_admin(backend: Backend) {
        let app = spawn_app(backend).await;
        let person = app.other_visitor();
        person.signup("gone@example.com").await;
        assert_is_redirect_to(&person.unregister().await, "/");
        app.login_ok().await;
        assert_is_redirect_to(&add(&app, "GONE@example.com", "confirmed").await, "/admin");
        assert!(app.get_html("/admin").await.contains("left the list, so it cannot be added back"));
        assert_eq!(app.count_rows("subscribers").await, 0);
        // The person can come back themselves.
        person.signup("gone@example.com").await;
        assert_eq!(app.subscriber_emails().await, vec!["gone@example.com"]);
    }

    async fn the_admin_deletes_the_selected_rows_together(backend: Backend) {
        let app = spawn_app(backend).await;
        let emails = ["a@example.com", "b@example.com", "c@example.com", "d@example.com"];
        for email in emails {
            app.other_visitor().signup(email).await;
        }
        app.login_ok().await;
        let html = app.get_html("/admin").await;
        assert!(html.contains(r#"form="selected""#), "each row has a checkbox");
        let ids = ids_of(&app, &["a@example.com", "c@example.com"]).await;
        let token = admin_token(&app).await;
        let mut form = vec![("csrf_token", token.as_str()), ("q", "example"), ("status", "")];
        form.extend(ids.iter().map(|id| ("id", id.as_str())));
        let response = app.post_form("/admin/delete-selected", &form).await;
        assert_is_redirect_to(&response, "/admin?q=example&status=");
        assert!(app.get_html("/admin").await.contains("We have removed 2 addresses from the list."));
        let mut left = app.subscriber_emails().await;
        left.sort();
        assert_eq!(left, vec!["b@example.com", "d@example.com"]);

        // Again: those rows are gone, so nothing more goes.
        let response = app.post_form("/admin/delete-selected", &form).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert!(app.get_html("/admin").await.contains("None of those addresses"));
        // Nothing chosen, junk ids, no token.
        let token = admin_token(&app).await;
        let none = app.post_form("/admin/delete-selected", &[("csrf_token", &token)]).await;
        assert_eq!(none.status(), StatusCode::SEE_OTHER);
        assert!(app.get_html("/admin").await.contains("No addresses were selected."));
        let token = admin_token(&app).await;
        let junk = app
            .post_form("/admin/delete-selected", &[("csrf_token", &token), ("id", "x")])
            .await;
        assert_eq!(junk.status(), StatusCode::BAD_REQUEST);
        let forged = app.post_form("/admin/delete-selected", &[("id", "1")]).await;
        assert_eq!(forged.status(), StatusCode::FORBIDDEN);
        assert_eq!(app.count_rows("subscribers").await, 2);
    }

    async fn deleting_every_match_says_how_many_and_spares_later_rows(backend: Backend) {
        let app = spawn_app(backend).await;
        for n in 0..30 {
            app.other_visitor().signup(&format!("spam{n}@junk.example")).await;
        }
        for n in 0..5 {
            app.other_visitor().signup(&format!("friend{n}@example.org")).await;
        }
        app.login_ok().await;
        let list = app.get_html("/admin?q=junk").await;
        assert!(list.contains("/admin/delete-matching?q=junk"), "a way to delete every match");
        assert!(!app.get_html("/admin").await.contains("Delete all matching"), "only when searching");

        let page = app.get_html("/admin/delete-matching?q=junk&status=").await;
        assert!(page.contains("This deletes <strong>30 addresses</strong> matching “junk”"), "{page}");
        let token = form_token(&page).unwrap();
        let up_to = {
            let start = page.find(r#"name="up_to_id" value=""#).unwrap() + 23;
            page[start..start + page[start..].find('"').unwrap()].to_owned()
        };
        // One more arrives after the page was shown: it is kept.
        app.other_visitor().signup("late@junk.example").await;
        let response = app
            .post_form(
                "/admin/delete-matching",
                &[("csrf_token", &token), ("q", "junk"), ("status", ""), ("up_to_id", &up_to)],
            )
            .await;
        assert_is_redirect_to(&response, "/admin");
        assert!(app.get_html("/admin").await.contains("We have removed 30 addresses from the list."));
        let mut left = app.subscriber_emails().await;
        left.sort();
        assert_eq!(left[0], "friend0@example.org");
        assert_eq!(left.len(), 6);
        assert!(left.contains(&"late@junk.example".to_owned()));

        // A one-letter search counts every match too, not only a stretch of the list.
        let page = app.get_html("/admin/delete-matching?q=d0").await;
        assert!(page.contains("<strong>1 address</strong>"), "{page}");
        let none = app.get_html("/admin/delete-matching?q=nothing-like-this").await;
        assert!(none.contains("No addresses match"));
        // A bad filter or a missing confirmation is refused; nothing goes.
        assert_eq!(
            app.get("/admin/delete-matching?status=gone").await.status(),
            StatusCode::BAD_REQUEST
        );
        let token = admin_token(&app).await;
        let unconfirmed = app
            .post_form("/admin/delete-matching", &[("csrf_token", &token), ("q", "example")])
            .await;
        assert_eq!(unconfirmed.status(), StatusCode::BAD_REQUEST);
        let forged = app
            .post_form("/admin/delete-matching", &[("q", ""), ("up_to_id", "999999")])
            .await;
        assert_eq!(forged.status(), StatusCode::FORBIDDEN);
        assert_eq!(app.count_rows("subscribers").await, 6);
        // Logged out, the confirmation page is not shown.
        app.logout().await;
        assert_is_redirect_to(&app.get("/admin/delete-matching?q=x").await, "/admin/login");
    }

    async fn deleting_a_large_selection_takes_every_row_in_steps(backend: Backend) {
        let app = spawn_app(backend).await;
        app.other_visitor().signup("keep@example.org").await;
        let insert = if app.database.is_postgres() {
            "INSERT INTO subscribers (email, email_key, created_at) SELECT 'bulk' || i || '@spam.example', 'bulk' || i || '@spam.example', i FROM generate_series(1, 12345) AS i"
        } else {
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 12345) INSERT INTO subscribers (email, email_key, created_at) SELECT 'bulk' || i || '@spam.example', 'bulk' || i || '@spam.example', i FROM n"
        };
        app.database.execute(insert).await;
        app.database.count_rows_added_by_hand("confirmed", 12345).await;
        app.other_visitor().signup("also-keep@example.org").await;
        app.login_ok().await;
        let page = app.get_html("/admin/delete-matching?q=spam.example").await;
        assert!(page.contains("<strong>12,345 addresses</strong>"), "{page}");
        let token = form_token(&page).unwrap();
        let up_to = {
            let start = page.find(r#"name="up_to_id" value=""#).unwrap() + 23;
            page[start..start + page[start..].find('"').unwrap()].to_owned()
        };
        let response = app
            .post_form(
                "/admin/delete-matching",
                &[("csrf_token", &token), ("q", "spam.example"), ("status", ""), ("up_to_id", &up_to)],
            )
            .await;
        assert_is_redirect_to(&response, "/admin");
        assert!(app.get_html("/admin").await.contains("We have removed 12345 addresses"));
        let mut left = app.subscriber_emails().await;
        left.sort();
        assert_eq!(left, vec!["also-keep@example.org", "keep@example.org"]);
        let counts = app.get_html("/admin").await;
        assert!(counts.contains("2 confirmed"), "the counters follow the steps");
    }

    async fn a_pending_add_sends_a_confirmation_mail(backend: Backend) {
        let smtp = SmtpServer::start().await;
        let url = smtp.url();
        let app = spawn_app_with(
            backend,
            &["--smtp-url", &url, "--mail-from", "News <news@example.org>"],
        )
        .await;
        app.login_ok().await;
        assert_is_redirect_to(&add(&app, "asked@example.com", "pending").await, "/admin");
        assert!(app.get_html("/admin").await.contains("added as pending"));
        let mails = smtp.wait_for(1, Duration::from_secs(15)).await;
        assert_eq!(mails[0].to, vec!["asked@example.com"]);
        assert!(mails[0].link(&format!("{}/confirm/", app.address)).is_some());
        let stored = app
            .database
            .strings("SELECT status || ' ' || source FROM subscribers")
            .await;
        assert_eq!(stored, vec!["pending admin"]);
    }
}
