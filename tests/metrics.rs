//! `/metrics`: what it counts, that no label names an address or a raw path, who may read it,
//! and that a real Prometheus parser (the `prometheus-client` package from PyPI) reads it.

#[macro_use]
mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{Backend, assert_is_redirect_to, spawn_app_with};
use reqwest::StatusCode;

const TOKEN: &str = "metrics-token-for-tests-0123456789";

async fn post_as(app: &common::TestApp, ip: &str, email: &str) -> reqwest::Response {
    app.client
        .post(app.url("/signup"))
        .headers(app.same_origin())
        .header("x-forwarded-for", ip)
        .form(&[("email", email)])
        .send()
        .await
        .unwrap()
}

async fn scrape(app: &common::TestApp) -> String {
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    response.text().await.unwrap()
}

/// The value of the one sample written exactly as `series`.
fn value(text: &str, series: &str) -> f64 {
    let found: Vec<&str> =
        text.lines().filter_map(|line| line.strip_prefix(series)?.strip_prefix(' ')).collect();
    assert_eq!(found.len(), 1, "{series} in:\n{text}");
    found[0].parse().unwrap()
}

/// Reads the exposition with the Prometheus project's own Python parser, as a scraper would.
fn parsed_by_prometheus_client(text: &str) {
    let script = "import sys\n\
        from prometheus_client.parser import text_string_to_metric_families\n\
        families = list(text_string_to_metric_families(sys.stdin.read()))\n\
        print(len(families), sum(len(f.samples) for f in families))";
    let Ok(mut child) = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        panic!("python3 is needed to check /metrics with prometheus-client");
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("No module named 'prometheus_client'") && std::env::var_os("CI").is_none() {
        eprintln!(
            "SKIPPED the prometheus-client parse: pip install prometheus-client (.ci/run does)"
        );
        return;
    }
    assert!(output.status.success(), "prometheus-client refused /metrics: {stderr}");
    let counts = String::from_utf8_lossy(&output.stdout);
    let families: usize = counts.split_whitespace().next().unwrap().parse().unwrap();
    assert!(families >= 10, "{counts}");
}

on_both_backends! {
    async fn metrics_count_by_route_template_and_never_name_an_address(backend: Backend) {
        let app = spawn_app_with(
            backend,
            &["--trusted-proxies", "127.0.0.1", "--signup-limit-per-ip", "2/1m"],
        )
        .await;
        assert_is_redirect_to(&post_as(&app, "198.51.100.1", "metered@example.com").await, "/");
        let invalid = post_as(&app, "198.51.100.2", "not an address").await;
        assert_eq!(invalid.status(), StatusCode::UNPROCESSABLE_ENTITY);
        // 2 a minute from one client: a burst of one, then the limit.
        assert_is_redirect_to(&post_as(&app, "198.51.100.9", "second@example.com").await, "/");
        let limited = post_as(&app, "198.51.100.9", "third@example.com").await;
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(app.get("/confirm/secret-looking-token").await.status(), StatusCode::NOT_FOUND);
        assert_eq!(app.get("/no/such/page").await.status(), StatusCode::NOT_FOUND);
        assert_is_redirect_to(&app.unregister().await, "/");

        let text = scrape(&app).await;
        let requests = |route: &str, method: &str, status: u16| {
            value(
                &text,
                &format!(
                    "http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}}"
                ),
            )
        };
        assert_eq!(requests("/signup", "POST", 303), 2.0);
        assert_eq!(requests("/signup", "POST", 422), 1.0);
        assert_eq!(requests("/signup", "POST", 429), 1.0);
        assert_eq!(requests("/unregister", "POST", 303), 1.0);
        assert!(requests("/confirm/{token}", "GET", 404) >= 1.0);
        assert_eq!(requests("unmatched", "GET", 404), 1.0);
        let bucket = "http_request_duration_seconds_bucket{route=\"/signup\",le=\"+Inf\"}";
        assert_eq!(value(&text, bucket), 4.0);
        assert_eq!(value(&text, "enlist_signups_total{outcome=\"listed\"}"), 2.0);
        assert_eq!(value(&text, "enlist_signups_total{outcome=\"invalid\"}"), 1.0);
        assert_eq!(value(&text, "enlist_signups_total{outcome=\"limited\"}"), 1.0);
        assert_eq!(value(&text, "enlist_rate_limited_total{rule=\"signup_per_client\"}"), 1.0);
        assert_eq!(value(&text, "enlist_unsubscribes_total{door=\"unregister\"}"), 1.0);
        assert_eq!(value(&text, "enlist_subscribers{status=\"confirmed\"}"), 1.0);
        assert_eq!(value(&text, "enlist_subscribers{status=\"pending\"}"), 0.0);
        assert!(value(&text, "enlist_db_connections{state=\"idle\"}") >= 0.0);
        let version = format!("enlist_build_info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"));
        assert_eq!(value(&text, &version), 1.0);
        for private in ["metered", "second@", "example.com", "secret-looking-token", "/no/such"] {
            assert!(!text.contains(private), "{private} in /metrics");
        }
        parsed_by_prometheus_client(&text);

        // Not from elsewhere: the client as the trusted proxy names it.
        let remote = app
            .client
            .get(app.url("/metrics"))
            .header("x-forwarded-for", "203.0.113.5")
            .send()
            .await
            .unwrap();
        assert_eq!(remote.status(), StatusCode::FORBIDDEN);
        assert!(remote.text().await.unwrap().contains("--metrics-token"));
    }
}

#[tokio::test]
async fn with_a_token_metrics_answer_whoever_sends_it_and_no_one_else() {
    let app = spawn_app_with(
        Backend::Sqlite,
        &["--trusted-proxies", "127.0.0.1", "--metrics-token", TOKEN],
    )
    .await;
    let get = |auth: Option<String>| {
        let mut request =
            app.client.get(app.url("/metrics")).header("x-forwarded-for", "203.0.113.5");
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        request.send()
    };
    let none = get(None).await.unwrap();
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(none.headers()["www-authenticate"], "Bearer");
    let wrong = get(Some(format!("Bearer {TOKEN}x"))).await.unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    // Even loopback needs the token once there is one.
    assert_eq!(app.get("/metrics").await.status(), StatusCode::UNAUTHORIZED);
    let right = get(Some(format!("Bearer {TOKEN}"))).await.unwrap();
    assert_eq!(right.status(), StatusCode::OK);
    assert!(right.text().await.unwrap().contains("# TYPE http_requests_total counter"));
}

#[tokio::test]
async fn metrics_bind_serves_them_on_their_own_listener_only() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let bind = format!("127.0.0.1:{port}");
    let app = spawn_app_with(Backend::Sqlite, &["--metrics-bind", &bind]).await;
    assert_is_redirect_to(&app.signup("counted@example.com").await, "/");
    assert_eq!(app.get("/metrics").await.status(), StatusCode::NOT_FOUND);
    let own = app.client.get(format!("http://{bind}/metrics")).send().await.unwrap();
    assert_eq!(own.status(), StatusCode::OK);
    let text = own.text().await.unwrap();
    let signups = "http_requests_total{route=\"/signup\",method=\"POST\",status=\"303\"}";
    assert_eq!(value(&text, signups), 1.0);
    assert_eq!(value(&text, "enlist_subscribers{status=\"confirmed\"}"), 1.0);
    // The main listener's refusal above is counted too.
    assert_eq!(
        value(&text, "http_requests_total{route=\"/metrics\",method=\"GET\",status=\"404\"}"),
        1.0
    );
}
