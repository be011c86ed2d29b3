//! The black-box harness: a real server on port 0 with a fresh database (a SQLite file in a
//! temporary directory, or a freshly created PostgreSQL database that is dropped afterwards),
//! driven over HTTP by a client that keeps cookies and does not follow redirects, sending the
//! headers a browser sends on a same-origin form post.
//!
//! `on_both_backends!` turns one scenario into two tests, `…::sqlite` and `…::postgres`. The
//! PostgreSQL half runs when `ENLIST_TEST_DATABASE_URL` names a server (and then an unreachable
//! server is a failure); without it, it says it was skipped.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use enlist::Server;
use enlist::config::{Cli, Command, Settings};
use reqwest::header::{HeaderMap, HeaderValue, LOCATION, SET_COOKIE};
use reqwest::{Client, Response, StatusCode};
use sqlx::Connection;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub mod proxy;
pub mod smtp;
pub mod webhook;

pub const ADMIN_PASSWORD: &str = "correct horse battery staple";
/// Settings that turn every abuse limit off: tests sign up many addresses from one client (the
/// limit tests turn limits back on).
pub const LIMITS_OFF: [&str; 6] =
    ["--signup-limit-per-ip", "0", "--signup-limit-per-address", "0", "--login-limit", "0"];
pub const POSTGRES_ENV: &str = "ENLIST_TEST_DATABASE_URL";

/// Runs each scenario once per backend: `async fn name(backend: Backend) { ... }`.
#[macro_export]
macro_rules! on_both_backends {
    ($( $(#[$attr:meta])* async fn $name:ident($backend:ident: Backend) $body:block )+) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            $(#[$attr])*
            async fn scenario($backend: Backend) $body

            #[tokio::test]
            async fn sqlite() {
                scenario(Backend::Sqlite).await
            }

            #[tokio::test]
            async fn postgres() {
                if let Some(backend) = Backend::postgres() {
                    scenario(backend).await
                }
            }
        }
    )+};
}

#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    /// A server URL with rights to create databases (e.g. postgres://postgres@127.0.0.1/postgres).
    Postgres {
        server_url: String,
    },
}

impl Backend {
    /// The PostgreSQL server named by `ENLIST_TEST_DATABASE_URL`, or `None` after saying (once
    /// per test binary) that the PostgreSQL half is skipped.
    pub fn postgres() -> Option<Backend> {
        match std::env::var(POSTGRES_ENV) {
            Ok(server_url) if !server_url.is_empty() => Some(Backend::Postgres { server_url }),
            _ => {
                static SAID: std::sync::Once = std::sync::Once::new();
                SAID.call_once(|| {
                    // Past the harness's capture, so a plain `cargo test` shows it.
                    let _ = writeln!(
                        std::io::stderr(),
                        "SKIPPED PostgreSQL tests: set {POSTGRES_ENV} (e.g. \
                         postgres://postgres@127.0.0.1:5432/postgres) to run them"
                    );
                });
                None
            }
        }
    }
}

/// One database for one test, removed when the test ends.
pub struct TestDatabase {
    pub url: String,
    /// For PostgreSQL: the server URL and the database name, to drop it afterwards.
    postgres: Option<(String, String)>,
}

impl TestDatabase {
    /// Counts `n` rows of `status` put straight into the database. PostgreSQL's triggers count
    /// every row; on SQLite the server counts the rows it adds itself, with no trigger.
    pub async fn count_rows_added_by_hand(&self, status: &str, n: u32) {
        if !self.is_postgres() {
            self.execute(&format!(
                "UPDATE subscriber_counts SET n = n + {n} WHERE status = '{status}'"
            ))
            .await;
        }
    }

    /// `n` subscribers `{prefix}{i}@bulk.example` of `status`, signed up now, straight into the
    /// database, and counted.
    pub async fn add_subscribers(&self, prefix: &str, n: u32, status: &str) {
        let now = enlist::session::unix_now();
        let confirmed_at = if status == "confirmed" { now.to_string() } else { "NULL".into() };
        let rows = if self.is_postgres() {
            format!("FROM generate_series(1, {n}) AS i")
        } else {
            format!(
                "FROM (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) SELECT i FROM n)"
            )
        };
        self.execute(&format!(
            "INSERT INTO subscribers (email, email_key, created_at, status, confirmed_at)
             SELECT '{prefix}' || i || '@bulk.example', '{prefix}' || i || '@bulk.example', {now},
                    '{status}', {confirmed_at}
             {rows}"
        ))
        .await;
        self.count_rows_added_by_hand(status, n).await;
    }

    pub async fn create(backend: &Backend, dir: &std::path::Path) -> TestDatabase {
        match backend {
            Backend::Sqlite => TestDatabase {
                url: format!("sqlite://{}", dir.join("enlist.db").display()),
                postgres: None,
            },
            Backend::Postgres { server_url } => {
                let mut suffix = [0u8; 8];
                getrandom::fill(&mut suffix).expect("randomness");
                let name = format!(
                    "enlist_test_{}",
                    suffix.iter().map(|b| format!("{b:02x}")).collect::<String>()
                );
                let mut server =
                    sqlx::PgConnection::connect(server_url).await.unwrap_or_else(|e| {
                        panic!("{POSTGRES_ENV} is set but PostgreSQL is unreachable: {e}")
                    });
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut server)
                    .await
                    .expect("create a test database");
                let _ = server.close().await;
                let mut url = url::Url::parse(server_url).expect("a PostgreSQL URL");
                url.set_path(&name);
                TestDatabase { url: url.to_string(), postgres: Some((server_url.clone(), name)) }
            }
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.postgres.is_some()
    }

    /// Runs a query returning one text column, beside the server.
    pub async fn strings(&self, sql: &str) -> Vec<String> {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        if self.is_postgres() {
            let mut connection = sqlx::PgConnection::connect(&self.url).await.expect("connect");
            sqlx::query_scalar(sql).fetch_all(&mut connection).await.expect("query")
        } else {
            let mut connection = sqlx::SqliteConnection::connect(&format!("{}?mode=ro", self.url))
                .await
                .expect("open database");
            sqlx::query_scalar(sql).fetch_all(&mut connection).await.expect("query")
        }
    }

    /// Runs a statement beside the server (on SQLite, through a connection of its own).
    pub async fn execute(&self, sql: &str) {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        if self.is_postgres() {
            let mut connection = sqlx::PgConnection::connect(&self.url).await.expect("connect");
            sqlx::query(sql).execute(&mut connection).await.expect("statement");
        } else {
            let mut connection =
                sqlx::SqliteConnection::connect(&self.url).await.expect("open database");
            sqlx::query(sql).execute(&mut connection).await.expect("statement");
        }
    }

    pub async fn count(&self, table: &str) -> i64 {
        let counted = self.strings(&format!("SELECT CAST(count(*) AS TEXT) FROM {table}")).await;
        counted[0].parse().expect("a count")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((server_url, name)) = self.postgres.take() else {
            return;
        };
        // Drop is synchronous and may run inside a runtime: do the async work on a thread of
        // its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                let mut server = sqlx::PgConnection::connect(&server_url).await?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut server)
                .await?;
                Ok::<_, sqlx::Error>(())
            })?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            let _ = writeln!(std::io::stderr(), "could not drop test database: {dropped:?}");
        }
    }
}

pub struct TestApp {
    // Fields drop in order: the server stops before its database goes.
    running: Option<RunningServer>,
    /// The visitor most tests act as; `other_visitor()` makes more.
    pub visitor: Visitor,
    pub database: TestDatabase,
    pub dir: TempDir,
    /// The URL servers are given; differs from `database.url` when they go through a proxy.
    server_database_url: String,
    args: Vec<String>,
    admin_password: Option<String>,
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, &[]).await
}

/// Starts a server with extra command-line settings (e.g. `--admin-idle-timeout 2s`).
pub async fn spawn_app_with(backend: Backend, extra_args: &[&str]) -> TestApp {
    spawn_app_through(backend, extra_args, None).await
}

/// Like `spawn_app_with`, with the servers reaching PostgreSQL through a proxy on `proxy_port`.
pub async fn spawn_app_through(
    backend: Backend,
    extra_args: &[&str],
    proxy_port: Option<u16>,
) -> TestApp {
    let mut app = prepare_app(backend, extra_args, proxy_port).await;
    let server = app.start_server().await;
    app.visitor.address = server.address.clone();
    app.running = Some(server);
    app
}

/// A fresh database, key location and settings, with no server started yet.
pub async fn prepare_app(
    backend: Backend,
    extra_args: &[&str],
    proxy_port: Option<u16>,
) -> TestApp {
    let dir = tempfile::tempdir().expect("temporary directory");
    let database = TestDatabase::create(&backend, dir.path()).await;
    let mut server_database_url = database.url.clone();
    if let Some(port) = proxy_port {
        let mut url = url::Url::parse(&database.url).expect("database URL");
        url.set_port(Some(port)).expect("a URL with a host");
        server_database_url = url.to_string();
    }
    TestApp {
        visitor: Visitor { address: String::new(), client: browser() },
        dir,
        database,
        server_database_url,
        args: extra_args.iter().map(|s| s.to_string()).collect(),
        admin_password: Some(ADMIN_PASSWORD.to_owned()),
        running: None,
    }
}

/// A server running in this process, stopped on drop.
pub struct RunningServer {
    pub address: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl RunningServer {
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task ends cleanly");
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// reqwest's TLS is rustls with the provider the server uses (ring), installed once.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client that behaves like one browser profile: keeps cookies, never follows redirects.
pub fn browser() -> Client {
    install_tls_provider();
    Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client")
}

/// A client with no cookie store, for sending exactly the cookies a test chooses.
pub fn bare_client() -> Client {
    install_tls_provider();
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client")
}

impl TestApp {
    /// The binary with this app's database and key, and nothing from the environment.
    pub fn tool_command(&self, args: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_enlist"));
        for (key, _) in std::env::vars() {
            if key.starts_with("ENLIST_") {
                command.env_remove(key);
            }
        }
        command
            .args(args)
            .args(["--database-url", &self.database.url])
            .args(["--secret-key-file", &self.dir.path().join("enlist.key").display().to_string()])
            .env("RUST_LOG", "warn");
        command
    }

    /// Runs the binary as a command-line tool on this app's database, to the end.
    pub fn tool(&self, args: &[&str]) -> std::process::Output {
        self.tool_command(args).output().expect("run the binary")
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("enlist.db")
    }

    pub fn settings(&self) -> Settings {
        self.settings_with_password(self.admin_password.clone())
    }

    fn settings_with_password(&self, admin_password: Option<String>) -> Settings {
        let key = self.dir.path().join("enlist.key").display().to_string();
        let mut argv = vec![
            "enlist",
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--database-url",
            &self.server_database_url,
            "--secret-key-file",
            &key,
        ];
        argv.extend(LIMITS_OFF);
        argv.extend(self.args.iter().map(String::as_str));
        let Some(Command::Serve(args)) =
            Cli::try_parse_from(argv).expect("test settings parse").command
        else {
            unreachable!("the serve subcommand was given");
        };
        Settings::from_args(*args, admin_password).expect("test settings are valid")
    }

    /// Starts a server on this app's database and key: the first one, or another instance.
    pub async fn start_server(&self) -> RunningServer {
        self.try_start_server().await.expect("server starts")
    }

    pub async fn try_start_server(&self) -> Result<RunningServer, enlist::StartError> {
        Self::run_server(self.settings()).await
    }

    /// Starts another instance configured with a different admin password.
    pub async fn start_server_with_password(&self, password: &str) -> RunningServer {
        Self::run_server(self.settings_with_password(Some(password.to_owned())))
            .await
            .expect("server starts")
    }

    async fn run_server(settings: Settings) -> Result<RunningServer, enlist::StartError> {
        let server = Server::build(settings).await?;
        let address = format!("http://{}", server.local_addr());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .expect("server runs");
        });
        Ok(RunningServer { address, stop: Some(stop), task: Some(task) })
    }

    pub async fn stop(&mut self) {
        if let Some(server) = self.running.take() {
            server.stop().await;
        }
    }

    /// Stops the server and starts a new one on the same database, key file and settings.
    pub async fn restart(&mut self) {
        self.stop().await;
        let server = self.start_server().await;
        self.visitor.address = server.address.clone();
        self.running = Some(server);
    }

    /// Restarts with a different admin password (or none configured).
    pub async fn restart_with_admin_password(&mut self, password: Option<&str>) {
        self.admin_password = password.map(str::to_owned);
        self.restart().await;
    }

    /// A second browser profile on the same server.
    pub fn other_visitor(&self) -> Visitor {
        Visitor { address: self.visitor.address.clone(), client: browser() }
    }

    pub async fn count_rows(&self, table: &str) -> i64 {
        self.database.count(table).await
    }

    pub async fn subscriber_emails(&self) -> Vec<String> {
        self.database.strings("SELECT email FROM subscribers ORDER BY id").await
    }
}

impl std::ops::Deref for TestApp {
    type Target = Visitor;

    fn deref(&self) -> &Visitor {
        &self.visitor
    }
}

/// One browser profile: its own cookies, the site's address.
pub struct Visitor {
    pub address: String,
    pub client: Client,
}

impl Visitor {
    /// As a logged-in admin: writes an announcement and sends it to the list (after its
    /// confirmation page, whose text is returned); returns its id and that page.
    pub async fn send_announcement(&self, subject: &str, body: &str) -> (i64, String) {
        let csrf = form_token(&self.get_html("/admin/announcements").await).expect("a form token");
        let form = [("csrf_token", csrf.as_str()), ("subject", subject), ("body", body)];
        let response = self.post_form("/admin/announcements", &form).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        let id: i64 =
            location.trim_start_matches("/admin/announcements/").parse().expect("the new id");
        let page = self.get_html(&format!("/admin/announcements/{id}/send")).await;
        let csrf = form_token(&page).expect("a form token");
        let response = self
            .post_form(&format!("/admin/announcements/{id}/send"), &[("csrf_token", &csrf)])
            .await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        (id, unescape(&page))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// The headers a browser adds to a form post from one of this site's pages.
    pub fn same_origin(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("origin", HeaderValue::from_str(&self.address).expect("origin"));
        headers.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        headers
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client.get(self.url(path)).send().await.expect("GET")
    }

    pub async fn get_html(&self, path: &str) -> String {
        let response = self.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.text().await.expect("body")
    }

    pub async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> Response {
        self.client
            .post(self.url(path))
            .headers(self.same_origin())
            .form(form)
            .send()
            .await
            .expect("POST")
    }

    pub async fn signup(&self, email: &str) -> Response {
        self.post_form("/signup", &[("email", email)]).await
    }

    /// Presses the Unregister button on the page the visitor sees.
    pub async fn unregister(&self) -> Response {
        let token = form_token(&self.get_html("/").await).unwrap_or_default();
        self.post_form("/unregister", &[("csrf_token", &token)]).await
    }

    pub async fn login(&self, password: &str) -> Response {
        self.post_form("/admin/login", &[("password", password)]).await
    }

    pub async fn login_ok(&self) {
        assert_is_redirect_to(&self.login(ADMIN_PASSWORD).await, "/admin");
    }

    /// Presses Delete on the admin page for this address.
    pub async fn admin_delete(&self, email: &str) -> Response {
        let token =
            form_token(&self.get_html("/admin").await).expect("admin page has a form token");
        self.post_form("/admin/delete", &[("csrf_token", &token), ("email", email)]).await
    }

    pub async fn logout(&self) -> Response {
        let token =
            form_token(&self.get_html("/admin").await).expect("admin page has a form token");
        self.post_form("/admin/logout", &[("csrf_token", &token)]).await
    }
}

pub fn assert_is_redirect_to(response: &Response, location: &str) {
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "expected a 303 to {location}");
    assert_eq!(response.headers().get(LOCATION).and_then(|v| v.to_str().ok()), Some(location));
}

/// The value of the first `csrf_token` field on a page.
pub fn form_token(html: &str) -> Option<String> {
    let marker = r#"name="csrf_token" value=""#;
    let start = html.find(marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(html[start..end].to_owned()).filter(|t| !t.is_empty())
}

/// The `Set-Cookie` header for our session cookie, if the response has one.
pub fn session_set_cookie(response: &Response) -> Option<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("enlist_session=") || v.starts_with("__Host-enlist_session="))
        .map(str::to_owned)
}

/// `name=value` of a `Set-Cookie` header, ready to send back in a `Cookie` header.
pub fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap_or_default().to_owned()
}

/// Page text with the entities minijinja writes turned back into characters.
pub fn unescape(html: &str) -> String {
    html.replace("&#x2f;", "/")
        .replace("&#x27;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}
