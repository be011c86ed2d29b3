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
        assert!(!on_b.get_html("/admin").await.contains(">shared@example.com<"));
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

    async fn instances_started_together_agree_on_the_admin_password(backend: Backend) {
        // Rounds run a few at a time; within each, three instances start at the same moment on
        // a new database, which is when they used to disagree.
        for wave in 0..5 {
            let round = |i: usize| password_round(backend.clone(), wave * 4 + i);
            tokio::join!(round(0), round(1), round(2), round(3));
        }
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

const NEW_PASSWORD: &str = "a brand new admin password";

/// Polls `GET /admin` with this browser until it is sent to the login page.
async fn wait_until_refused(admin: &Visitor, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = admin.get("/admin").await;
        if response.status() == StatusCode::SEE_OTHER {
            assert_is_redirect_to(&response, "/admin/login");
            return;
        }
        assert_eq!(response.status(), StatusCode::OK, "{what}");
        assert!(Instant::now() < deadline, "{what}: still logged in after 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Logs in with `password` until it works (at most 10 s).
async fn wait_until_login_works(admin: &Visitor, password: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = admin.login(password).await;
        if response.status() == StatusCode::SEE_OTHER {
            assert_is_redirect_to(&response, "/admin");
            return;
        }
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
        assert!(Instant::now() < deadline, "{what}: the password still fails after 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn password_round(backend: Backend, round: usize) {
    let app = prepare_app(backend, &[], None).await;
    let (a, b, c) = tokio::join!(app.start_server(), app.start_server(), app.start_server());
    let mut servers = vec![a, b, c];
    let addresses: Vec<String> = servers.iter().map(|s| s.address.clone()).collect();

    // A login on any instance is valid on every other.
    let first = round % 3;
    let admin = Visitor { address: addresses[first].clone(), client: browser() };
    admin.login_ok().await;
    for (i, address) in addresses.iter().enumerate() {
        let response = same_browser_on(&admin, address).get("/admin").await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "round {round}: login on {first}, /admin on {i}"
        );
    }
    // One session per instance, opened under the first password.
    let mut old = Vec::new();
    for address in &addresses {
        let session = Visitor { address: address.clone(), client: browser() };
        session.login_ok().await;
        old.push(session);
    }

    // One instance restarts with a new password; the other two keep running.
    let restarted = (round + 1) % 3;
    servers.remove(restarted).stop().await;
    let replacement = app.start_server_with_password(NEW_PASSWORD).await;
    let mut addresses = addresses;
    addresses[restarted] = replacement.address.clone();
    old[restarted].address = replacement.address.clone();
    servers.insert(restarted, replacement);

    // Within seconds, every old session is refused by the instance it is checked on (the ones
    // that did not restart first, since a refused session is ended everywhere).
    for i in (0..3).filter(|&i| i != restarted).chain([restarted]) {
        wait_until_refused(&old[i], &format!("round {round}: old session on {i}")).await;
    }
    // The new password works on all three, the old one on none, and sessions made with it are
    // valid everywhere.
    for (i, address) in addresses.iter().enumerate() {
        let admin = Visitor { address: address.clone(), client: browser() };
        wait_until_login_works(
            &admin,
            NEW_PASSWORD,
            &format!("round {round}: new password on {i}"),
        )
        .await;
        for (j, other) in addresses.iter().enumerate() {
            let response = same_browser_on(&admin, other).get("/admin").await;
            assert_eq!(
                response.status(),
                StatusCode::OK,
                "round {round}: new login on {i}, /admin on {j}"
            );
        }
        let stale = Visitor { address: address.clone(), client: browser() };
        assert_eq!(
            stale.login(ADMIN_PASSWORD).await.status(),
            StatusCode::UNAUTHORIZED,
            "round {round}: old password on {i}"
        );
    }
    for server in servers {
        server.stop().await;
    }
}
