//! A form on the owner's site: `--allowed-origins` opens the two signup doors to those sites and
//! nothing else; a `redirect` goes back only to them; CORS answers only on the public API signup.

#[macro_use]
mod common;

use common::{Backend, TestApp, assert_is_redirect_to, bare_client, spawn_app_with, unescape};
use reqwest::StatusCode;
use reqwest::header::{
    ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_REQUEST_METHOD,
    LOCATION, ORIGIN,
};

const SHOP: &str = "https://shop.example";
const EVIL: &str = "https://evil.example";

/// A form post as a browser sends it from a page of `origin`.
async fn post_from(
    app: &TestApp,
    origin: &str,
    path: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    bare_client()
        .post(app.url(path))
        .header(ORIGIN, origin)
        .header("sec-fetch-site", "cross-site")
        .form(form)
        .send()
        .await
        .unwrap()
}

async fn shop_app(backend: Backend) -> TestApp {
    spawn_app_with(
        backend,
        &["--allowed-origins", "https://shop.example, https://other.example:8443"],
    )
    .await
}

on_both_backends! {
    async fn an_allowed_site_posts_the_form_and_gets_its_redirect(backend: Backend) {
        let app = shop_app(backend).await;
        let response = post_from(&app, SHOP, "/signup", &[
            ("email", "buyer@example.com"), ("redirect", "https://shop.example/thanks?from=footer"),
        ]).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(response.headers()[LOCATION], "https://shop.example/thanks?from=footer&status=ok");
        let invalid = post_from(&app, SHOP, "/signup", &[
            ("email", "nope"), ("redirect", "https://shop.example/thanks"),
        ]).await;
        assert_eq!(invalid.headers()[LOCATION], "https://shop.example/thanks?status=invalid");
        assert_eq!(app.subscriber_emails().await, vec!["buyer@example.com"]);

        // A redirect anywhere else is ignored: no open redirect.
        for elsewhere in ["https://evil.example/x", "//evil.example", "javascript:alert(1)", "/admin", "https://shop.example.evil.example/"] {
            let response = post_from(&app, SHOP, "/signup", &[
                ("email", "again@example.com"), ("redirect", elsewhere),
            ]).await;
            assert_is_redirect_to(&response, "/");
        }
    }

    async fn other_sites_and_other_routes_stay_closed(backend: Backend) {
        let app = shop_app(backend).await;
        let refused = post_from(&app, EVIL, "/signup", &[
            ("email", "victim@example.com"), ("redirect", "https://evil.example/"),
        ]).await;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        // The allowed site may not post anything but the signup.
        app.login_ok().await;
        for path in ["/admin/login", "/admin/delete", "/unregister", "/admin/add"] {
            let response = post_from(&app, SHOP, path, &[("email", "victim@example.com")]).await;
            assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
        }
        let api = bare_client()
            .post(app.url("/api/v1/subscribers"))
            .header(ORIGIN, SHOP)
            .header("sec-fetch-site", "cross-site")
            .bearer_auth("enl_whatever")
            .json(&serde_json::json!({"email": "victim@example.com"}))
            .send()
            .await
            .unwrap();
        assert_eq!(api.status(), StatusCode::FORBIDDEN, "token routes are not for browsers of other sites");
        assert_eq!(app.count_rows("subscribers").await, 0);
    }

    async fn cors_answers_only_on_the_public_api_signup(backend: Backend) {
        let app = shop_app(backend).await;
        let preflight = |origin: &'static str, path: &'static str| {
            bare_client()
                .request(reqwest::Method::OPTIONS, app.url(path))
                .header(ORIGIN, origin)
                .header(ACCESS_CONTROL_REQUEST_METHOD, "POST")
                .header("access-control-request-headers", "content-type")
                .send()
        };
        let allowed = preflight("https://other.example:8443", "/api/v1/signup").await.unwrap();
        assert_eq!(allowed.status(), StatusCode::NO_CONTENT);
        assert_eq!(allowed.headers()[ACCESS_CONTROL_ALLOW_ORIGIN], "https://other.example:8443");
        assert_eq!(allowed.headers()[ACCESS_CONTROL_ALLOW_METHODS], "POST");
        let other = preflight(EVIL, "/api/v1/signup").await.unwrap();
        assert!(!other.headers().contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
        let elsewhere = preflight(SHOP, "/api/v1/subscribers").await.unwrap();
        assert!(!elsewhere.headers().contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));

        let signup = |origin: &'static str| {
            bare_client()
                .post(app.url("/api/v1/signup"))
                .header(ORIGIN, origin)
                .header("sec-fetch-site", "cross-site")
                .json(&serde_json::json!({"email": format!("from@{}", origin.trim_start_matches("https://"))}))
                .send()
        };
        let ok = signup(SHOP).await.unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.headers()[ACCESS_CONTROL_ALLOW_ORIGIN], SHOP);
        let evil = signup(EVIL).await.unwrap();
        assert_eq!(evil.status(), StatusCode::FORBIDDEN);
        assert!(!evil.headers().contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
        assert_eq!(app.subscriber_emails().await, vec!["from@shop.example"]);
    }

    async fn the_admin_page_offers_the_form_to_paste(backend: Backend) {
        let app = shop_app(backend).await;
        app.login_ok().await;
        let html = unescape(&app.get_html("/admin").await);
        assert!(html.contains("<summary>Embed</summary>"));
        assert!(html.contains(&format!("<form method=\"post\" action=\"{}/signup\">", app.address)), "{html}");
        assert!(html.contains("https://shop.example/thanks"));
    }
}
