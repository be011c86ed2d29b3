//! Several instances on one PostgreSQL database: any instance serves any request, and the
//! database going away is a bounded, generic 503 that heals by itself. A SQLite file belongs to
//! one instance, and a second one is turned away.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::proxy::{Mode, TcpProxy};
use common::{
    ADMIN_PASSWORD, Backend, TestApp, Visitor, assert_is_redirect_to, browser, prepare_app,
    spawn_app, spawn_app_through,
};
use reqwest::StatusCode;

/// The same browser, pointed at another instance. Cookies are per host, not per port, so it
/// carries its session across, as a browser behind a load balancer would.
fn same_browser_on(visitor: &Visitor, address: &str) -> Visitor {
    Visitor { address: address.to_owned(), client: visitor.client.clone() }
}

#[tokio::test]
async fn a_second_instance_on_one_sqlite_file_is_refused_clearly() {
    let app = common::spawn_app_with(Backend::Sqlite, &["--database-connect-timeout", "1s"]).await;
    let second = app.try_start_server().await;
    let Err(enlist::StartError::Setting(error)) = second else {
        panic!("a second instance started on the same SQLite file");
    };
    assert!(error.message.contains("another enlist process is using"), "{error}");
    assert!(error.message.contains("PostgreSQL"), "{error}");
    // The first instance is unaffected.
    assert_is_redirect_to(&app.signup("still@example.com").await, "/");
}

/// These scenarios need a database several processes can share.
macro_rules! on_postgres {
    ($( async fn $name:ident($backend:ident: Backend) $body:block )+) => {$(
        #[tokio::test]
        async fn $name() {
            let Some($backend) = Backend::postgres() else { return };
            $body
        }
    )+};
}

on_postgres! {
    async fn any_instance_serves_any_request(backend: Backend) {
        let app = spawn_app(backend).await;
        let second = app.start_server().await;
        let on_a = same_browser_on(&app, &app.address);
        let on_b = same_browser_on(&app, &second.address);

        // Signed up through A, thanked by B.
        assert_is_redirect_to(&on_a.signup("shared@example.com").await, "/");
        assert!(on_b.get_html("/").await.contains("Thanks for signing up, shared@example.com!"));

        // Logged in on A, logged in on B; a delete on A is gone on B.
        on_a.login_ok().await;
        assert!(on_b.get_html("/admin").await.contains("shared@example.com"));
        assert_is_redirect_to(&on_a.admin_delete("shared@example.com").await, "/admin");
        assert!(!on_b.get_html("/admin").await.contains("<td class=\"address\" data-label=\"Address\">shared@example.com"));
        assert_eq!(app.count_rows("subscribers").await, 0);

        // Logged out on B: the session is over on A too.
        assert_is_redirect_to(&on_b.logout().await, "/");
        assert_is_redirect_to(&on_a.get("/admin").await, "/admin/login");
        second.stop().await;
    }

    async fn one_address_signed_up_at_once_through_two_instances_is_one_row(backend: Backend) {
        let app = spawn_app(backend).await;
        let second = app.start_server().await;
        for round in 0..20 {
            let email = format!("race{round}@example.com");
            let via_a = Visitor { address: app.address.clone(), client: browser() };
            let via_b = Visitor { address: second.address.clone(), client: browser() };
            let shouted = email.to_uppercase();
            let (a, b) = tokio::join!(via_a.signup(&email), via_b.signup(&shouted));
            assert_is_redirect_to(&a, "/");
            assert_is_redirect_to(&b, "/");
            assert!(via_a.get_html("/").await.contains("Thanks for signing up"));
            assert!(via_b.get_html("/").await.contains("Thanks for signing up"));
        }
        assert_eq!(app.count_rows("subscribers").await, 20);
        second.stop().await;
    }

    async fn instances_starting_together_apply_migrations_once(backend: Backend) {
        let app = prepare_app(backend, &[], None).await;
        let (a, b, c) = tokio::join!(app.start_server(), app.start_server(), app.start_server());
        let applied = app
            .database
            .strings("SELECT CAST(version AS TEXT) FROM _sqlx_migrations WHERE success ORDER BY version")
            .await;
        let dir = if app.database.is_postgres() { "postgres" } else { "sqlite" };
        let expected = std::fs::read_dir(format!("{}/migrations/{dir}", env!("CARGO_MANIFEST_DIR")))
            .unwrap()
            .count();
        assert_eq!(applied.len(), expected, "each migration recorded once: {applied:?}");
        let visitor = Visitor { address: b.address.clone(), client: browser() };
        assert_is_redirect_to(&visitor.signup("after@example.com").await, "/");
        for server in [a, b, c] {
            server.stop().await;
        }
    }
}

/// Starts an app whose servers reach PostgreSQL through a proxy the test controls, with short
/// timeouts so that an outage shows quickly.
async fn app_behind_proxy() -> Option<(TestApp, TcpProxy)> {
    let backend = Backend::postgres()?;
    let Backend::Postgres { server_url } = &backend else { unreachable!() };
    let url = url::Url::parse(server_url).unwrap();
    let upstream = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432));
    let upstream = tokio::net::lookup_host(upstream).await.unwrap().next().unwrap();
    let proxy = TcpProxy::start(upstream).await;
    let settings = ["--database-connect-timeout", "1s", "--database-statement-timeout", "1s"];
    let app = spawn_app_through(backend, &settings, Some(proxy.port)).await;
    Some((app, proxy))
}

/// Sends `request` and checks it fails with the generic 503 within `bound`.
async fn assert_bounded_503(
    what: &str,
    bound: Duration,
    request: impl Future<Output = reqwest::Response>,
) {
    let started = Instant::now();
    let response = request.await;
    let took = started.elapsed();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{what}");
    assert!(took < bound, "{what} took {took:?}, more than {bound:?}");
    let body = response.text().await.unwrap();
    assert!(body.contains("Temporarily unavailable"), "{what}: {body}");
}

#[tokio::test]
async fn postgres_going_away_is_a_bounded_503_and_heals_by_itself() {
    let Some((app, proxy)) = app_behind_proxy().await else {
        return;
    };
    app.signup("before@example.com").await;
    app.other_visitor().signup("neighbour@example.com").await;
    let admin = app.other_visitor();
    admin.login_ok().await;

    for mode in [Mode::Down, Mode::Stalled] {
        proxy.set(mode);
        // connect + statement timeouts are 1 s each; allow generous slack on a busy machine.
        let bound = Duration::from_secs(6);
        assert_bounded_503(&format!("{mode:?}: health"), bound, app.get("/healthz")).await;
        assert_bounded_503(
            &format!("{mode:?}: signup"),
            bound,
            app.other_visitor().signup("during@example.com"),
        )
        .await;
        assert_bounded_503(&format!("{mode:?}: remembered visitor"), bound, app.get("/")).await;
        assert_bounded_503(&format!("{mode:?}: admin"), bound, admin.get("/admin")).await;

        proxy.set(Mode::Up);
        let deadline = Instant::now() + Duration::from_secs(15);
        while app.get("/healthz").await.status() != StatusCode::OK {
            assert!(Instant::now() < deadline, "{mode:?}: never recovered");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Back to normal, with nothing acknowledged lost and nothing unacknowledged kept.
        assert!(app.get_html("/").await.contains("Thanks for signing up, before@example.com!"));
        assert_eq!(admin.get("/admin").await.status(), StatusCode::OK);
        let emails = app.subscriber_emails().await;
        assert_eq!(emails, ["before@example.com", "neighbour@example.com"], "{mode:?}");
    }
    assert_is_redirect_to(&app.other_visitor().signup("after@example.com").await, "/");
    assert_eq!(app.login(ADMIN_PASSWORD).await.status(), StatusCode::SEE_OTHER);
}
