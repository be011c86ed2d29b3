//! When the disk refuses writes, and when the server is asked to stop.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Backend, assert_is_redirect_to, spawn_app};
use reqwest::StatusCode;
use sqlx::Connection;

/// `chattr +i` / `-i`: an immutable file refuses writes even to root, like a failing disk.
fn set_immutable(path: &Path, on: bool) {
    let flag = if on { "+i" } else { "-i" };
    let status = Command::new("chattr").arg(flag).arg(path).status().expect("run chattr");
    assert!(
        status.success(),
        "chattr {flag} {} failed (needs root and ext4-like files)",
        path.display()
    );
}

#[tokio::test]
async fn a_disk_that_refuses_writes_is_a_503_for_writes_only_and_heals_without_restart() {
    let app = spawn_app(Backend::Sqlite).await;
    app.signup("before@example.com").await;
    let admin = app.other_visitor();
    admin.login_ok().await;
    let wal = app.dir.path().join("enlist.db-wal");
    assert!(wal.exists());

    set_immutable(&wal, true);
    let newcomer = app.other_visitor();
    let refused = newcomer.signup("during@example.com").await;
    let unregister = app.unregister().await;
    set_immutable(&wal, false);
    // Checked after undoing the damage, so a failing assertion cannot leave the file locked.
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.text().await.unwrap().contains("Temporarily unavailable"));
    assert_eq!(unregister.status(), StatusCode::SERVICE_UNAVAILABLE);

    // Reads carried on meanwhile and still do; the refused writes left nothing behind.
    assert!(app.get_html("/").await.contains("Thanks for signing up, before@example.com!"));
    assert!(admin.get_html("/admin").await.contains("before@example.com"));
    assert_eq!(app.subscriber_emails().await, ["before@example.com"]);

    // Healed without a restart.
    assert_is_redirect_to(&newcomer.signup("after@example.com").await, "/");
    assert_is_redirect_to(&app.unregister().await, "/");
    assert_eq!(app.subscriber_emails().await, ["after@example.com"]);
}

#[tokio::test]
async fn reads_go_on_while_writes_fail() {
    let app = spawn_app(Backend::Sqlite).await;
    app.signup("reader@example.com").await;
    let wal = app.dir.path().join("enlist.db-wal");
    set_immutable(&wal, true);
    let home = app.get("/").await;
    let health = app.get("/healthz").await;
    let stylesheet = app.get("/static/style.css").await;
    set_immutable(&wal, false);
    assert_eq!(home.status(), StatusCode::OK);
    assert_eq!(health.status(), StatusCode::OK, "the database still answers reads");
    assert_eq!(stylesheet.status(), StatusCode::OK);
}

/// Starts the binary on a free port and waits for it to answer.
fn start_binary(dir: &Path) -> (std::process::Child, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(env!("CARGO_BIN_EXE_enlist"))
        .current_dir(dir)
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .env("ENLIST_ADMIN_PASSWORD", common::ADMIN_PASSWORD)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, port)
}

fn sigterm(child: &std::process::Child) {
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
}

/// A signup whose body has not fully arrived yet: a request in flight.
fn half_sent_signup(port: u16, body: &str) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let head = format!(
        "POST /signup HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body.as_bytes()[..body.len() / 2]).unwrap();
    stream
}

#[tokio::test]
async fn sigterm_finishes_requests_in_flight_flushes_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, port) = start_binary(dir.path());
    let body = "email=in-flight%40example.com";
    let mut in_flight = half_sent_signup(port, body);
    std::thread::sleep(Duration::from_millis(200));
    sigterm(&child);
    std::thread::sleep(Duration::from_millis(300));
    // No new connections once stopping...
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "still accepting after SIGTERM");
    // ...but the request already in flight completes, and its write is committed.
    in_flight.write_all(&body.as_bytes()[body.len() / 2..]).unwrap();
    let mut answer = String::new();
    in_flight.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 303"), "{answer}");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let url = format!("sqlite://{}?mode=ro", dir.path().join("enlist.db").display());
    let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let emails: Vec<String> =
        sqlx::query_scalar("SELECT email FROM subscribers").fetch_all(&mut db).await.unwrap();
    assert_eq!(emails, ["in-flight@example.com"]);
}

#[test]
fn a_request_that_never_finishes_cannot_hold_up_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, port) = start_binary(dir.path());
    let _stalled = half_sent_signup(port, "email=never-finished%40example.com");
    std::thread::sleep(Duration::from_millis(200));
    let asked = Instant::now();
    sigterm(&child);
    let status = child.wait().unwrap();
    let took = asked.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(15), "shutdown took {took:?}");
}
