//! Abuse limits and the honeypot, through the real server. Clients are told apart by
//! X-Forwarded-For from a trusted proxy (the test itself, on 127.0.0.1).

#[macro_use]
mod common;

use std::time::Duration;

use common::{
    ADMIN_PASSWORD, Backend, assert_is_redirect_to, browser, session_set_cookie, spawn_app_with,
};
use reqwest::StatusCode;
use reqwest::header::RETRY_AFTER;

/// A visitor at client address `ip`.
async fn post_as(
    app: &common::TestApp,
    ip: &str,
    path: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .headers(app.same_origin())
        .header("x-forwarded-for", ip)
        .form(form)
        .send()
        .await
        .unwrap()
}

fn retry_after(response: &reqwest::Response) -> u64 {
    response.headers().get(RETRY_AFTER).expect("Retry-After").to_str().unwrap().parse().unwrap()
}

on_both_backends! {
    async fn signups_per_client_are_limited(backend: Backend) {
        let app = spawn_app_with(backend, &["--trusted-proxies", "127.0.0.1", "--signup-limit-per-ip", "4/1m"]).await;
        // 4 a minute: a burst of 2, then one every 15 s.
        for i in 0..2 {
            let email = format!("burst{i}@example.com");
            assert_is_redirect_to(&post_as(&app, "198.51.100.1", "/signup", &[("email", &email)]).await, "/");
        }
        let refused = post_as(&app, "198.51.100.1", "/signup", &[("email", "third@example.com")]).await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        let wait = retry_after(&refused);
        assert!((1..=15).contains(&wait), "Retry-After {wait}");
        assert!(session_set_cookie(&refused).is_none());
        let html = refused.text().await.unwrap();
        assert!(html.contains("Too many signups from your network. Please try again in"));
        assert!(html.contains(r#"value="third@example.com""#), "the typed address is kept");
        // Invalid input counts too, and is refused the same way.
        let junk = post_as(&app, "198.51.100.1", "/signup", &[("email", "junk")]).await;
        assert_eq!(junk.status(), StatusCode::TOO_MANY_REQUESTS);
        // Another client is not affected.
        let other = post_as(&app, "198.51.100.2", "/signup", &[("email", "other@example.com")]).await;
        assert_is_redirect_to(&other, "/");
        assert_eq!(app.count_rows("subscribers").await, 3);
    }

    async fn signups_of_one_address_are_limited_whoever_sends_them(backend: Backend) {
        let app = spawn_app_with(
            backend,
            &["--trusted-proxies", "127.0.0.1", "--signup-limit-per-ip", "0", "--signup-limit-per-address", "2/1h"],
        )
        .await;
        for (i, spelling) in ["target@example.com", "TARGET@example.com"].iter().enumerate() {
            let response = post_as(&app, &format!("203.0.113.{i}"), "/signup", &[("email", spelling)]).await;
            assert_is_redirect_to(&response, "/");
        }
        let third = post_as(&app, "203.0.113.9", "/signup", &[("email", "Target@Example.com")]).await;
        assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(retry_after(&third) > 3000, "about an hour");
        assert!(third.text().await.unwrap().contains("This address was signed up several times recently."));
        assert_is_redirect_to(&post_as(&app, "203.0.113.9", "/signup", &[("email", "other@example.com")]).await, "/");
        assert_eq!(app.count_rows("subscribers").await, 2);
    }

    async fn failed_logins_back_off_and_the_right_password_works_after_the_wait(backend: Backend) {
        let app = spawn_app_with(backend, &["--trusted-proxies", "127.0.0.1", "--login-limit", "2/15m"]).await;
        let guess = async |password: &str| {
            post_as(&app, "192.0.2.7", "/admin/login", &[("password", password)]).await
        };
        for _ in 0..3 {
            assert_eq!(guess("wrong").await.status(), StatusCode::UNAUTHORIZED);
        }
        // Three failures with an allowance of two: the next try waits 2 s, right password or not.
        let throttled = guess(ADMIN_PASSWORD).await;
        assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(retry_after(&throttled), 2);
        assert!(throttled.text().await.unwrap().contains("Too many failed logins. Please wait"));
        // Someone else is not slowed down.
        let other = post_as(&app, "192.0.2.8", "/admin/login", &[("password", ADMIN_PASSWORD)]).await;
        assert_is_redirect_to(&other, "/admin");
        // After the wait, another failure doubles it...
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert_eq!(guess("still wrong").await.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(retry_after(&guess(ADMIN_PASSWORD).await), 4);
        // ...and once it is over, the right password gets in: no lockout.
        tokio::time::sleep(Duration::from_millis(4100)).await;
        assert_is_redirect_to(&guess(ADMIN_PASSWORD).await, "/admin");
    }

    async fn the_honeypot_answers_like_a_signup_and_stores_nothing(backend: Backend) {
        let app = spawn_app_with(backend, &[]).await;
        let html = app.get_html("/").await;
        assert!(html.contains(r#"name="website""#) && html.contains(r#"class="hp""#));
        let bot = app.post_form("/signup", &[("email", "bot@example.com"), ("website", "http://spam.example")]).await;
        assert_is_redirect_to(&bot, "/");
        assert_eq!(app.count_rows("subscribers").await, 0);
        assert_eq!(app.count_rows("sessions").await, 0);
        assert!(app.get_html("/").await.contains(r#"action="/signup""#));
        // People leave it empty.
        let person = browser();
        let response = person
            .post(app.url("/signup"))
            .headers(app.same_origin())
            .form(&[("email", "person@example.com"), ("website", "")])
            .send()
            .await
            .unwrap();
        assert_is_redirect_to(&response, "/");
        assert_eq!(app.subscriber_emails().await, ["person@example.com"]);
    }
}
