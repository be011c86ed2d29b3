//! The binary as an operator meets it: first start, restarts, bad settings, hash-password.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{Visitor, assert_is_redirect_to, browser};
use reqwest::StatusCode;

const BINARY: &str = env!("CARGO_BIN_EXE_enlist");

fn enlist(dir: &Path) -> Command {
    let mut command = Command::new(BINARY);
    command.current_dir(dir).env("RUST_LOG", "info");
    for (key, _) in std::env::vars() {
        if key.starts_with("ENLIST_") {
            command.env_remove(key);
        }
    }
    command
}

/// A running binary and every stderr line it printed up to "listening".
struct Running {
    child: Child,
    address: String,
    startup_lines: Vec<String>,
    /// Every later stderr line.
    log: mpsc::Receiver<String>,
}

fn start(mut command: Command) -> Running {
    let child = command
        .args(["--bind", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the binary");
    let (lines_tx, log) = mpsc::channel();
    let mut running = Running { child, address: String::new(), startup_lines: Vec::new(), log };
    let stderr = running.child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        // Keep draining after start-up: a server whose stderr closes would lose its log.
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    loop {
        let line = running
            .log
            .recv_timeout(Duration::from_secs(30))
            .expect("the server reports its address");
        running.startup_lines.push(line.clone());
        // Pretty logs say address=IP:PORT, JSON logs "address":"IP:PORT".
        let found = line.split("address=").nth(1).or_else(|| line.split(r#""address":""#).nth(1));
        if let Some(rest) = found {
            let address = rest.split([' ', '"']).next().unwrap_or_default();
            running.address = format!("http://{address}");
            return running;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Never leave a server behind when a test fails half-way.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Running {
    fn visitor(&self) -> Visitor {
        Visitor { address: self.address.clone(), client: browser() }
    }

    /// SIGTERM, then the exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        self.child.wait().expect("wait")
    }
}

fn generated_password(lines: &[String]) -> Option<String> {
    lines.iter().find_map(|line| {
        let rest = line.split("admin password: ").nth(1)?;
        Some(rest.split_whitespace().next()?.to_owned())
    })
}

#[tokio::test]
async fn the_first_start_generates_an_admin_password_once() {
    let dir = tempfile::tempdir().unwrap();
    let first = start(enlist(dir.path()));
    let password = generated_password(&first.startup_lines).expect("the password is printed");
    assert!(password.len() >= 20);
    let warning = first.startup_lines.iter().find(|l| l.contains("admin password:")).unwrap();
    assert!(warning.starts_with("WARNING"), "{warning}");
    assert!(dir.path().join("enlist.db").exists(), "default database in the working directory");
    assert!(dir.path().join("enlist.key").exists(), "key beside it");

    let admin = first.visitor();
    assert_is_redirect_to(&admin.login(&password).await, "/admin");
    assert!(first.terminate().success(), "SIGTERM is a clean exit");

    // The stored hash is reused: nothing printed, the same password works.
    let second = start(enlist(dir.path()));
    assert!(generated_password(&second.startup_lines).is_none());
    assert!(!second.startup_lines.iter().any(|l| l.contains(&password)));
    assert_is_redirect_to(&second.visitor().login(&password).await, "/admin");
    let stored: String = {
        let url = format!("sqlite://{}?mode=ro", dir.path().join("enlist.db").display());
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let hash = sqlx::query_scalar("SELECT password_hash FROM admin_credential")
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        hash
    };
    assert!(stored.starts_with("$argon2id$") && !stored.contains(&password));
    assert!(second.terminate().success());
}

#[tokio::test]
async fn hash_password_output_is_accepted_as_the_admin_credential() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = enlist(dir.path())
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"my long admin passphrase\n").unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let hash = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert!(hash.starts_with("$argon2id$"), "{hash}");

    let mut command = enlist(dir.path());
    command.env("ENLIST_ADMIN_PASSWORD_HASH", &hash);
    let running = start(command);
    assert!(generated_password(&running.startup_lines).is_none());
    let admin = running.visitor();
    assert_eq!(admin.login("not it").await.status(), StatusCode::UNAUTHORIZED);
    assert_is_redirect_to(&admin.login("my long admin passphrase").await, "/admin");
    assert!(running.terminate().success());
}

#[test]
fn hash_password_refuses_short_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = enlist(dir.path())
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"short\n").unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
}

/// Runs the binary expecting it to refuse to start; returns stderr.
fn refused(args: &[&str], env: &[(&str, &str)], dir: &Path) -> String {
    let mut command = enlist(dir);
    command.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
    if !args.contains(&"--bind") && !env.iter().any(|(key, _)| *key == "ENLIST_BIND") {
        command.args(["--bind", "127.0.0.1:0"]);
    }
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("args {args:?} env {env:?}: the server started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(2), "args {args:?} env {env:?}: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    stderr
}

#[test]
fn bad_settings_stop_the_server_with_exit_code_2_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("short.key"), b"too short").unwrap();
    std::fs::create_dir(d.join("a-directory")).unwrap();
    std::fs::create_dir(d.join("templates")).unwrap();
    std::fs::write(d.join("templates/home.html"), "{% if %}").unwrap();

    assert!(refused(&["--bind", "nowhere"], &[], d).contains("--bind"));
    assert!(refused(&["serve", "--bind", "nowhere"], &[], d).contains("--bind"));
    assert!(refused(&[], &[("ENLIST_BIND", "999.0.0.1:1")], d).contains("--bind"));
    assert!(refused(&["--database-url", "mysql://localhost/x"], &[], d).contains("--database-url"));
    let missing_dir = format!("sqlite://{}/no/such/dir/x.db", d.display());
    assert!(refused(&["--database-url", &missing_dir], &[], d).contains("--database-url"));
    assert!(refused(&["--public-url", "not a url"], &[], d).contains("--public-url"));
    for origin in [
        "shop.example",
        "https://shop.example/path",
        "ftp://shop.example",
        "https://u@shop.example",
    ] {
        assert!(
            refused(&["--allowed-origins", origin], &[], d).contains("--allowed-origins"),
            "{origin}"
        );
    }
    let listed = refused(&[], &[("ENLIST_ALLOWED_ORIGINS", "https://ok.example,nope")], d);
    assert!(listed.contains("--allowed-origins"), "{listed}");
    assert!(refused(&["--admin-idle-timeout", "forever"], &[], d).contains("--admin-idle-timeout"));
    let weak = refused(&[], &[("ENLIST_METRICS_TOKEN", "short")], d);
    assert!(weak.contains("--metrics-token") && !weak.contains("short\n"), "{weak}");
    assert!(refused(&["--metrics-bind", "nowhere"], &[], d).contains("--metrics-bind"));
    assert!(refused(&["--visitor-session-ttl", "0s"], &[], d).contains("--visitor-session-ttl"));

    let hash = refused(&["--admin-password-hash", "plaintext-oops"], &[], d);
    assert!(hash.contains("--admin-password-hash") && !hash.contains("plaintext-oops"), "{hash}");
    let short = refused(&[], &[("ENLIST_ADMIN_PASSWORD", "hunter2")], d);
    assert!(short.contains("ENLIST_ADMIN_PASSWORD") && !short.contains("hunter2"), "{short}");
    assert!(refused(&[], &[("ENLIST_ADMIN_PASSWORD", "")], d).contains("ENLIST_ADMIN_PASSWORD"));

    let key = d.join("short.key").display().to_string();
    assert!(refused(&["--secret-key-file", &key], &[], d).contains("--secret-key-file"));
    let unreadable = d.join("a-directory").display().to_string();
    assert!(refused(&["--secret-key-file", &unreadable], &[], d).contains("--secret-key-file"));
    let uncreatable = d.join("no/such/dir/enlist.key").display().to_string();
    assert!(refused(&["--secret-key-file", &uncreatable], &[], d).contains("--secret-key-file"));

    let templates = d.join("templates").display().to_string();
    assert!(refused(&["--templates-dir", &templates], &[], d).contains("--templates-dir"));
}

#[test]
fn bad_mail_settings_stop_the_server_with_exit_code_2_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("garbage.pem"), "not a certificate").unwrap();
    let from = ["--mail-from", "News <news@example.org>"];
    let with = |extra: &[&'static str]| {
        let mut args = vec!["--smtp-url", "smtp://127.0.0.1:2525"];
        args.extend_from_slice(extra);
        args
    };
    assert!(
        refused(&["--smtp-url", "ftp://mail.example.com", from[0], from[1]], &[], d)
            .contains("--smtp-url")
    );
    assert!(refused(&["--smtp-url", "not a url", from[0], from[1]], &[], d).contains("--smtp-url"));
    let secret = refused(
        &["--smtp-url", "smtp://user:hunter2hunter2@mail.example.com", from[0], from[1]],
        &[],
        d,
    );
    assert!(secret.contains("--smtp-url") && secret.contains("unencrypted"), "{secret}");
    assert!(!secret.contains("hunter2"), "the password is never printed: {secret}");
    assert!(refused(&with(&[]), &[], d).contains("--mail-from"));
    assert!(refused(&with(&["--mail-from", "not an address"]), &[], d).contains("--mail-from"));
    let missing = d.join("no-such.pem").display().to_string().leak();
    assert!(
        refused(&with(&[from[0], from[1], "--smtp-ca-file", missing]), &[], d)
            .contains("--smtp-ca-file")
    );
    let garbage = d.join("garbage.pem").display().to_string().leak();
    assert!(
        refused(&with(&[from[0], from[1], "--smtp-ca-file", garbage]), &[], d)
            .contains("--smtp-ca-file")
    );
    assert!(
        refused(&with(&[from[0], from[1], "--confirm-ttl", "0s"]), &[], d)
            .contains("--confirm-ttl")
    );
    assert!(
        refused(&with(&[from[0], from[1], "--pending-ttl", "soon"]), &[], d)
            .contains("--pending-ttl")
    );
    assert!(refused(&["--list-name", " "], &[], d).contains("--list-name"));
    assert!(
        refused(&[], &[("ENLIST_SMTP_URL", "gopher://x"), ("ENLIST_MAIL_FROM", "a@b.example")], d)
            .contains("--smtp-url")
    );
}

#[tokio::test]
async fn mail_without_a_public_url_warns_where_links_will_point() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = enlist(dir.path());
    command.args(["--smtp-url", "smtp://127.0.0.1:9", "--mail-from", "news@example.org"]);
    let running = start(command);
    let warning = running.startup_lines.iter().find(|l| l.contains("--public-url is not set"));
    let warning = warning.expect("a warning about links in mail");
    assert!(warning.contains("links in mail will point at http://127.0.0.1:"), "{warning}");
    let visitor = running.visitor();
    assert_is_redirect_to(&visitor.signup("warned@example.com").await, "/");
    assert!(visitor.get_html("/").await.contains("We sent a confirmation link"));
    assert!(running.terminate().success());

    let mut quiet = enlist(dir.path());
    quiet.args(["--smtp-url", "smtp://127.0.0.1:9", "--mail-from", "news@example.org"]);
    quiet.args(["--public-url", "https://list.example.com"]);
    let running = start(quiet);
    assert!(!running.startup_lines.iter().any(|l| l.contains("--public-url is not set")));
}

#[tokio::test]
async fn template_and_stylesheet_overrides_replace_the_built_in_ones() {
    let dir = tempfile::tempdir().unwrap();
    let templates = dir.path().join("templates");
    std::fs::create_dir(&templates).unwrap();
    std::fs::write(templates.join("intro.html"), "<h1>The Gardening Club</h1><p>Monthly tips.</p>")
        .unwrap();
    std::fs::write(templates.join("style.css"), "body { background: hotpink; }").unwrap();
    let mut command = enlist(dir.path());
    command.args(["--templates-dir", &templates.display().to_string()]);
    command.env("ENLIST_ADMIN_PASSWORD", common::ADMIN_PASSWORD);
    let running = start(command);
    let visitor = running.visitor();
    let html = visitor.get_html("/").await;
    assert!(html.contains("<h1>The Gardening Club</h1><p>Monthly tips.</p>"));
    assert!(html.contains(r#"action="/signup""#), "the rest of the built-in page stays");

    let start =
        html.find(r#"href="/static/style."#).expect("a stylesheet link") + r#"href=""#.len();
    let path = &html[start..start + html[start..].find('"').unwrap()];
    let css = visitor.get(path).await;
    assert_eq!(css.status(), StatusCode::OK);
    assert!(css.headers()["cache-control"].to_str().unwrap().contains("immutable"));
    assert_eq!(css.text().await.unwrap(), "body { background: hotpink; }");
    assert_eq!(visitor.get("/static/other.css").await.status(), StatusCode::NOT_FOUND);
    assert!(running.terminate().success());
}

/// The request log line for `path`, as the server printed it.
fn request_log_line(running: &Running, path: &str) -> String {
    let wanted = format!(r#""path":"{path}""#);
    loop {
        let line = running.log.recv_timeout(Duration::from_secs(10)).expect("a request log line");
        if line.contains("finished processing request") && line.contains(&wanted) {
            return line;
        }
    }
}

/// The request log's layer is left out only where `RUST_LOG` would drop all it writes: with the
/// web module at `warn` no line comes; with the trace events' own target at `info` the answer's
/// line still does. (`enlist=info` keeps the line that names the listening address.)
#[tokio::test]
async fn request_lines_follow_the_log_filter() {
    for (filter, logged) in [
        ("warn,enlist=info,enlist::web=warn", false),
        ("warn,enlist=info,enlist::web=warn,tower_http::trace=info", true),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut command = enlist(dir.path());
        command.args(["--log-format", "json"]).env("ENLIST_ADMIN_PASSWORD", common::ADMIN_PASSWORD);
        command.env("RUST_LOG", filter);
        let running = start(command);
        for _ in 0..3 {
            let response =
                common::bare_client().get(format!("{}/healthz", running.address)).send().await;
            assert_eq!(response.unwrap().status(), StatusCode::OK);
        }
        let answered = std::iter::from_fn(|| running.log.recv_timeout(Duration::from_secs(2)).ok())
            .find(|line| line.contains("finished processing request"));
        assert_eq!(answered.is_some(), logged, "RUST_LOG={filter}: {answered:?}");
        assert!(running.terminate().success());
    }
}

#[tokio::test]
async fn forwarded_client_addresses_are_believed_only_from_trusted_proxies() {
    for (trusted, expected_client) in [(None, "127.0.0.1"), (Some("127.0.0.1"), "203.0.113.7")] {
        let dir = tempfile::tempdir().unwrap();
        let mut command = enlist(dir.path());
        command.args(["--log-format", "json"]).env("ENLIST_ADMIN_PASSWORD", common::ADMIN_PASSWORD);
        if let Some(proxy) = trusted {
            command.args(["--trusted-proxies", proxy]);
        }
        let running = start(command);
        let response = common::bare_client()
            .get(format!("{}/healthz", running.address))
            .header("x-forwarded-for", "203.0.113.7")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let line = request_log_line(&running, "/healthz");
        let record: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
        assert_eq!(record["span"]["client"], expected_client, "trusted {trusted:?}: {line}");
        assert_eq!(record["fields"]["status"], 200);
        assert!(running.terminate().success());
    }
}
