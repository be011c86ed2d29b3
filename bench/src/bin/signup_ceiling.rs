//! The ceiling for W3 on this machine: what a durable signup costs with nothing but its core.
//! axum reads the form, one thread writes the new subscriber (under a unique index on the
//! address) and a new session row to SQLite (WAL, `synchronous=FULL`), committing whatever has
//! queued up meanwhile in one transaction, and each request is answered `303` with its session
//! cookie once that commit is durable. No origin check, no evidence of consent, no counts,
//! search index, metrics, mail or signed cookie: every one of those only adds to the cost, so
//! enlist's W3 on this machine cannot beat this one's. SQLite runs as in enlist: on mimalloc,
//! without allocation statistics.

use std::sync::mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::{LOCATION, SET_COOKIE};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use clap::Parser;
use serde::Deserialize;
use tokio::sync::oneshot;

#[derive(Parser)]
struct Args {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:5018")]
    bind: String,
    /// The database file (created with its tables if missing).
    #[arg(long)]
    file: String,
}

#[derive(Deserialize)]
struct SignupForm {
    #[serde(default)]
    email: String,
}

/// An address to add, and where to say that its commit is durable (with its session's id).
type Signup = (String, oneshot::Sender<Result<i64, String>>);

/// At most this many signups in one commit.
const BATCH: usize = 256;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    // SAFETY: the first thing the process does, on its only thread, before SQLite is used.
    if let Err(code) = unsafe { enlist::store::use_global_allocator() } {
        anyhow::bail!("SQLite refused the allocator: {code}");
    }
    let args = Args::parse();
    let connection = open(&args.file)?;
    let (signups, queue) = mpsc::channel::<Signup>();
    std::thread::Builder::new().name("writer".into()).spawn(move || write(connection, queue))?;
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(async {
        let app = Router::new()
            .route("/signup", post(signup))
            .route("/healthz", get(|| async { "ok" }))
            .with_state(signups);
        let listener = tokio::net::TcpListener::bind(&args.bind).await?;
        axum::serve(listener, app).await?;
        Ok(())
    })
}

async fn signup(
    State(signups): State<mpsc::Sender<Signup>>,
    Form(form): Form<SignupForm>,
) -> Response {
    let email = form.email.trim();
    if email.is_empty() || !email.contains('@') {
        return (StatusCode::UNPROCESSABLE_ENTITY, "an email address, please").into_response();
    }
    let (done, durable) = oneshot::channel();
    if signups.send((email.to_owned(), done)).is_err() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    match durable.await {
        Ok(Ok(session)) => (
            StatusCode::SEE_OTHER,
            [
                (LOCATION, "/".to_owned()),
                (SET_COOKIE, format!("session={session}; Path=/; HttpOnly; SameSite=Lax")),
            ],
        )
            .into_response(),
        _ => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

fn open(file: &str) -> anyhow::Result<rusqlite::Connection> {
    let connection = rusqlite::Connection::open(file).with_context(|| format!("opening {file}"))?;
    connection.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         CREATE TABLE IF NOT EXISTS subscribers (
             id INTEGER PRIMARY KEY,
             email TEXT NOT NULL,
             email_key TEXT NOT NULL UNIQUE,
             created_at INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS sessions (
             id INTEGER PRIMARY KEY,
             subscriber_id INTEGER,
             expires_at INTEGER NOT NULL);",
    )?;
    Ok(connection)
}

/// The writer's loop: waits for a signup, takes every other one queued behind it (up to
/// [`BATCH`]), commits them together, then answers each.
fn write(connection: rusqlite::Connection, queue: mpsc::Receiver<Signup>) {
    let mut batch = Vec::with_capacity(BATCH);
    while let Ok(first) = queue.recv() {
        batch.push(first);
        while batch.len() < BATCH
            && let Ok(next) = queue.try_recv()
        {
            batch.push(next);
        }
        match commit(&connection, &batch) {
            Ok(sessions) => {
                for ((_, done), session) in batch.drain(..).zip(sessions) {
                    let _ = done.send(Ok(session));
                }
            }
            Err(e) => {
                let _ = connection.execute_batch("ROLLBACK");
                for (_, done) in batch.drain(..) {
                    let _ = done.send(Err(e.to_string()));
                }
            }
        }
    }
}

fn commit(connection: &rusqlite::Connection, batch: &[Signup]) -> rusqlite::Result<Vec<i64>> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    connection.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    let mut add = connection.prepare_cached(
        "INSERT INTO subscribers (email, email_key, created_at) VALUES (?1, lower(?1), ?2)
         ON CONFLICT (email_key) DO NOTHING",
    )?;
    let mut remember = connection.prepare_cached(
        "INSERT INTO sessions (subscriber_id, expires_at)
         VALUES ((SELECT id FROM subscribers WHERE email_key = lower(?1)), ?2)",
    )?;
    let mut sessions = Vec::with_capacity(batch.len());
    for (email, _) in batch {
        add.execute(rusqlite::params![email, now])?;
        remember.execute(rusqlite::params![email, now + 30 * 86_400])?;
        sessions.push(connection.last_insert_rowid());
    }
    connection.prepare_cached("COMMIT")?.execute([])?;
    Ok(sessions)
}
