//! Hostile input: a table of known-bad requests against the real binary (checking statuses,
//! that nothing is stored, and that no secret reaches the log), and property tests that throw
//! generated bodies and cookies at the application in-process. The same in-process harness runs
//! the fuzzers' seed corpus (fuzz/corpus), so CI covers those inputs without a nightly compiler.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use enlist::Server;
use proptest::prelude::*;
use tower::ServiceExt;

const SECRET_PASSWORD: &str = "MARKER-the-admin-password-9f3a";
const SECRET_EMAIL_PART: &str = "marker-address-7c1e";

/// Sends raw bytes, returns the status code (or 0 when the server just closed the connection).
fn raw(port: u16, request: &[u8]) -> u16 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The server may answer and close before reading everything; that is fine.
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let head = String::from_utf8_lossy(&answer);
    head.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0)
}

fn post(port: u16, path: &str, extra_headers: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n{extra_headers}\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

struct Binary {
    child: Child,
    port: u16,
    log: mpsc::Receiver<String>,
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path) -> Binary {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_enlist"))
        .current_dir(dir)
        .args(["--bind", &format!("127.0.0.1:{port}"), "--log-format", "json"])
        .args(common::LIMITS_OFF)
        .env("ENLIST_ADMIN_PASSWORD", SECRET_PASSWORD)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines, log) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Binary { child, port, log }
}

#[tokio::test]
async fn the_hostile_input_table() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let port = server.port;
    let marker = format!("{SECRET_EMAIL_PART}%40example.com");
    let big_cookie = format!("Cookie: enlist_session={}\r\n", "A".repeat(100_000));
    let ten_thousand_fields = "a=1&".repeat(10_000);
    let oversized = format!("email={}", "x".repeat(17 * 1024));
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("oversized body", post(port, "/signup", "", oversized.as_bytes()), 413),
        ("10,000 fields", post(port, "/signup", "", ten_thousand_fields.as_bytes()), 413),
        ("bad percent-encoding", post(port, "/signup", "", b"email=%zz%G1%@example.com"), 400),
        ("invalid UTF-8", post(port, "/signup", "", b"email=%ff%fe%fd%40example.com"), 400),
        ("raw invalid UTF-8", post(port, "/signup", "", b"email=\xff\xfe@example.com"), 400),
        (
            "NUL in a field",
            post(port, "/signup", "", format!("email=a%00{marker}").as_bytes()),
            422,
        ),
        (
            "CR/LF in a field",
            post(port, "/signup", "", format!("email=a%0d%0aBcc:%20{marker}").as_bytes()),
            422,
        ),
        ("SQL in the address", post(port, "/signup", "", b"email='--"), 422),
        (
            "SQL in the address, 2",
            post(port, "/signup", "", b"email=x'%20OR%201=1--%40example.com"),
            422,
        ),
        (
            "script in the address",
            post(port, "/signup", "", b"email=%3Cscript%3Ealert(1)%3C/script%3E"),
            422,
        ),
        (
            "SQL as the password",
            post(port, "/admin/login", "", b"password='%20OR%20'1'='1'--"),
            401,
        ),
        ("script as the password", post(port, "/admin/login", "", b"password=%3Cscript%3E"), 401),
        ("NUL in a header", post(port, "/signup", "X-Test: a\0b\r\n", b"email=a@example.com"), 400),
        (
            "bare CR in a header",
            post(port, "/signup", "X-Test: a\rb\r\n", b"email=a@example.com"),
            400,
        ),
        ("enormous cookie", post(port, "/signup", &big_cookie, b"email=a@example.com"), 431),
        (
            "duplicate session cookies",
            post(
                port,
                "/signup",
                "Cookie: enlist_session=a; enlist_session=b\r\n",
                b"email=a@example.com",
            ),
            400,
        ),
        (
            "JSON instead of a form",
            {
                let mut r = post(port, "/signup", "", b"{\"email\":\"a@example.com\"}");
                let text = String::from_utf8(r.clone())
                    .unwrap()
                    .replace("application/x-www-form-urlencoded", "application/json");
                r = text.into_bytes();
                r
            },
            415,
        ),
    ];
    for (name, request, expected) in &cases {
        assert_eq!(raw(port, request), *expected, "{name}");
    }

    // With a session: a forged or scripted token on every session form.
    let visitor =
        common::Visitor { address: format!("http://127.0.0.1:{port}"), client: common::browser() };
    assert_eq!(visitor.signup("owner@example.com").await.status(), StatusCode::SEE_OTHER);
    for token in ["'--", "<script>alert(1)</script>", "' OR '1'='1"] {
        let response = visitor.post_form("/unregister", &[("csrf_token", token)]).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "token {token:?}");
    }

    // Nothing but the one honest signup and its session was stored.
    let url = format!("sqlite://{}?mode=ro", dir.path().join("enlist.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let emails: Vec<String> =
        sqlx::query_scalar("SELECT email FROM subscribers").fetch_all(&pool).await.unwrap();
    assert_eq!(emails, ["owner@example.com"]);
    let sessions: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sessions").fetch_one(&pool).await.unwrap();
    assert_eq!(sessions, 1);
    pool.close().await;

    // And the log, at debug level, holds no password and no submitted address.
    std::thread::sleep(Duration::from_millis(200));
    let log: Vec<String> = server.log.try_iter().collect();
    assert!(
        log.iter().any(|line| line.contains("finished processing request")),
        "the log was captured"
    );
    for line in &log {
        assert!(!line.contains(SECRET_PASSWORD), "password in the log: {line}");
        assert!(!line.contains(SECRET_EMAIL_PART), "address in the log: {line}");
        assert!(!line.contains("owner@example.com"), "address in the log: {line}");
    }
}

/// The application, in-process, on a throwaway database: fast enough for thousands of cases.
struct InProcess {
    runtime: tokio::runtime::Runtime,
    router: Mutex<Router>,
    /// Holds the database and its directory for as long as the router is used.
    _app: common::TestApp,
}

fn in_process(args: &[&str]) -> InProcess {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let app = runtime.block_on(common::prepare_app(common::Backend::Sqlite, args, None));
    let router = runtime.block_on(Server::build(app.settings())).unwrap().into_router();
    InProcess { runtime, router: Mutex::new(router), _app: app }
}

static APP: LazyLock<InProcess> = LazyLock::new(|| in_process(&[]));

/// The same with mail on (to a directory), so the double opt-in doors are in play too.
static MAIL_APP: LazyLock<InProcess> = LazyLock::new(|| {
    let dir = std::env::temp_dir().join(format!("enlist-hostile-mail-{}", std::process::id()));
    let url = format!("file://{}", dir.display());
    in_process(&["--smtp-url", &url, "--mail-from", "news@example.org"])
});

/// Runs one request through the whole stack and returns its status.
fn status_of(request: Request<Body>) -> StatusCode {
    status_in(&APP, request)
}

fn status_in(app: &InProcess, request: Request<Body>) -> StatusCode {
    let router = app.router.lock().unwrap().clone();
    app.runtime.block_on(async move { router.oneshot(request).await.unwrap().status() })
}

fn form_post(path: &str, body: Vec<u8>, cookie: Option<&str>) -> Request<Body> {
    let mut request = Request::post(path)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "same-origin");
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    request.body(Body::from(body)).unwrap()
}

fn acceptable(status: StatusCode) -> bool {
    !status.is_server_error()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn any_signup_body_gets_a_non_5xx_answer(body in proptest::collection::vec(any::<u8>(), 0..600)) {
        let status = status_of(form_post("/signup", body, None));
        prop_assert!(acceptable(status), "{status}");
    }

    #[test]
    fn any_form_shaped_body_gets_a_non_5xx_answer(
        fields in proptest::collection::vec(("[a-z_]{0,12}", "[\\PC]{0,40}"), 0..8),
        path in prop::sample::select(vec!["/signup", "/unregister", "/admin/login", "/admin/delete"]),
    ) {
        let body = fields
            .iter()
            .map(|(k, v)| format!("{k}={}", url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()))
            .collect::<Vec<_>>()
            .join("&");
        let status = status_of(form_post(path, body.into_bytes(), None));
        prop_assert!(acceptable(status), "{path}: {status}");
    }

    #[test]
    fn any_form_shaped_body_on_the_mail_doors_gets_a_non_5xx_answer(
        fields in proptest::collection::vec(("[a-zA-Z_-]{0,16}", "[\\PC]{0,40}"), 0..6),
        path in prop::sample::select(vec![
            "/signup", "/resend", "/unregister", "/admin/resend",
            "/confirm/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "/confirm/x",
            "/u/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "/u/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/data",
            "/u/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/erase", "/u/%FF%FE",
        ]),
    ) {
        let body = fields
            .iter()
            .map(|(k, v)| format!("{k}={}", url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()))
            .collect::<Vec<_>>()
            .join("&");
        let status = status_in(&MAIL_APP, form_post(path, body.into_bytes(), None));
        prop_assert!(acceptable(status), "{path}: {status}");
        let get = Request::get(path).body(Body::empty()).unwrap();
        let status = status_in(&MAIL_APP, get);
        prop_assert!(acceptable(status), "GET {path}: {status}");
    }

    #[test]
    fn any_cookie_header_gets_a_non_5xx_answer(cookie in "[ -~]{0,300}") {
        let Ok(request) = Request::get("/").header("cookie", cookie.as_str()).body(Body::empty()) else {
            return Ok(());
        };
        prop_assert!(acceptable(status_of(request)));
        prop_assert!(acceptable(status_of(form_post("/unregister", b"csrf_token=x".to_vec(), Some(&cookie)))));
    }
}

/// The fuzzers' seed inputs, replayed through the same harness on every `cargo test`.
#[test]
fn the_fuzz_corpus_gets_non_5xx_answers() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut replayed = 0;
    for (target, path) in [("form_body", "/signup"), ("cookie_header", "/"), ("address", "/signup")]
    {
        let Ok(entries) = std::fs::read_dir(corpus.join(target)) else { continue };
        for entry in entries {
            let input = std::fs::read(entry.unwrap().path()).unwrap();
            let status = match target {
                "cookie_header" => {
                    match Request::get(path).header("cookie", input.as_slice()).body(Body::empty())
                    {
                        Ok(request) => status_of(request),
                        Err(_) => continue,
                    }
                }
                "address" => {
                    let mut body = b"email=".to_vec();
                    body.extend(
                        url::form_urlencoded::byte_serialize(&input)
                            .flat_map(|s| s.bytes().collect::<Vec<_>>()),
                    );
                    status_of(form_post(path, body, None))
                }
                _ => status_of(form_post(path, input, None)),
            };
            assert!(acceptable(status), "{target} input {replayed}: {status}");
            replayed += 1;
        }
    }
    assert!(replayed >= 20, "the corpus is missing ({replayed} inputs)");
}
