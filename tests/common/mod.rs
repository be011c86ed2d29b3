//! The black-box harness: a real server on port 0 with a fresh database in a temporary
//! directory, driven over HTTP by a client that keeps cookies and does not follow redirects,
//! sending the headers a browser sends on a same-origin form post.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use enlist::Server;
use enlist::config::{Cli, Command, Settings};
use reqwest::header::{HeaderMap, HeaderValue, LOCATION, SET_COOKIE};
use reqwest::{Client, Response, StatusCode};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const ADMIN_PASSWORD: &str = "correct horse battery staple";

pub struct TestApp {
    /// The visitor most tests act as; `other_visitor()` makes more.
    pub visitor: Visitor,
    pub dir: TempDir,
    args: Vec<String>,
    admin_password: Option<String>,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Starts a server with extra command-line settings (e.g. `--admin-idle-timeout 2s`).
pub async fn spawn_app_with(extra_args: &[&str]) -> TestApp {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut app = TestApp {
        visitor: Visitor {
            address: String::new(),
            client: browser(),
        },
        dir,
        args: extra_args.iter().map(|s| s.to_string()).collect(),
        admin_password: Some(ADMIN_PASSWORD.to_owned()),
        running: None,
    };
    app.start().await;
    app
}

/// A client that behaves like one browser profile: keeps cookies, never follows redirects.
pub fn browser() -> Client {
    Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client")
}

/// A client with no cookie store, for sending exactly the cookies a test chooses.
pub fn bare_client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client")
}

impl TestApp {
    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("enlist.db")
    }

    fn settings(&self) -> Settings {
        let db = format!("sqlite://{}", self.db_path().display());
        let mut argv = vec![
            "enlist",
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--database-url",
            &db,
        ];
        argv.extend(self.args.iter().map(String::as_str));
        let Some(Command::Serve(args)) = Cli::try_parse_from(argv)
            .expect("test settings parse")
            .command
        else {
            unreachable!("the serve subcommand was given");
        };
        Settings::from_args(*args, self.admin_password.clone()).expect("test settings are valid")
    }

    pub async fn start(&mut self) {
        let server = Server::build(self.settings()).await.expect("server starts");
        self.visitor.address = format!("http://{}", server.local_addr());
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            server
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .expect("server runs");
        });
        self.running = Some((stop, handle));
    }

    pub async fn stop(&mut self) {
        if let Some((stop, handle)) = self.running.take() {
            let _ = stop.send(());
            handle.await.expect("server task ends cleanly");
        }
    }

    /// Stops the server and starts a new one on the same database, key file and settings.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start().await;
    }

    /// Restarts with a different admin password (or none configured).
    pub async fn restart_with_admin_password(&mut self, password: Option<&str>) {
        self.admin_password = password.map(str::to_owned);
        self.restart().await;
    }

    /// A second browser profile on the same server.
    pub fn other_visitor(&self) -> Visitor {
        Visitor {
            address: self.visitor.address.clone(),
            client: browser(),
        }
    }

    /// Runs one query against the database file, beside the server.
    pub async fn count_rows(&self, table: &str) -> i64 {
        let url = format!("sqlite://{}?mode=ro", self.db_path().display());
        let pool = sqlx::SqlitePool::connect(&url)
            .await
            .expect("open database");
        let count: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&pool)
                .await
                .expect("count");
        pool.close().await;
        count
    }

    pub async fn subscriber_emails(&self) -> Vec<String> {
        let url = format!("sqlite://{}?mode=ro", self.db_path().display());
        let pool = sqlx::SqlitePool::connect(&url)
            .await
            .expect("open database");
        let emails = sqlx::query_scalar("SELECT email FROM subscribers ORDER BY id")
            .fetch_all(&pool)
            .await
            .expect("select");
        pool.close().await;
        emails
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
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// The headers a browser adds to a form post from one of this site's pages.
    pub fn same_origin(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            "origin",
            HeaderValue::from_str(&self.address).expect("origin"),
        );
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
        self.post_form("/unregister", &[("csrf_token", &token)])
            .await
    }

    pub async fn login(&self, password: &str) -> Response {
        self.post_form("/admin/login", &[("password", password)])
            .await
    }

    pub async fn login_ok(&self) {
        assert_is_redirect_to(&self.login(ADMIN_PASSWORD).await, "/admin");
    }

    /// Presses Delete on the admin page for this address.
    pub async fn admin_delete(&self, email: &str) -> Response {
        let token =
            form_token(&self.get_html("/admin").await).expect("admin page has a form token");
        self.post_form("/admin/delete", &[("csrf_token", &token), ("email", email)])
            .await
    }

    pub async fn logout(&self) -> Response {
        let token =
            form_token(&self.get_html("/admin").await).expect("admin page has a form token");
        self.post_form("/admin/logout", &[("csrf_token", &token)])
            .await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some((stop, _)) = self.running.take() {
            let _ = stop.send(());
        }
    }
}

pub fn assert_is_redirect_to(response: &Response, location: &str) {
    assert_eq!(
        response.status(),
        StatusCode::SEE_OTHER,
        "expected a 303 to {location}"
    );
    assert_eq!(
        response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok()),
        Some(location)
    );
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
