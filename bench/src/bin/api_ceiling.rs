//! The ceiling for the API's list on this machine: the newest page of 100 subscribers of a
//! SQLite file as the same JSON, with nothing else. Each tokio worker reads through a
//! connection of its own, on its own thread, and writes the rows' columns straight into the
//! answer. No token check, no parameters, no layers: each of those only adds cost, so enlist's
//! list of this page on this machine cannot run faster. It runs SQLite as enlist does (mimalloc under
//! it, no allocation statistics, plans that do not depend on bound values: without those it
//! ran slower than enlist's own list), and reads and writes each address with enlist's
//! `stored_text` and `write_string`.

use std::cell::RefCell;
use std::sync::OnceLock;

use axum::Router;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clap::Parser;
use enlist::domain::Rfc3339;
use enlist::store::stored_text;
use enlist::web::api::json::write_string;
use rusqlite::OpenFlags;
use rusqlite::config::DbConfig;
use rusqlite::types::Type;

#[derive(Parser)]
struct Args {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:5020")]
    bind: String,
    /// An enlist database file (read only).
    #[arg(long)]
    file: String,
}

const PAGE: usize = 100;

static FILE: OnceLock<String> = OnceLock::new();

thread_local! {
    static READER: RefCell<Option<rusqlite::Connection>> = const { RefCell::new(None) };
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    // SAFETY: the first thing the process does, on its only thread, before SQLite is used.
    if let Err(code) = unsafe { enlist::store::use_global_allocator() } {
        anyhow::bail!("SQLite refused the allocator: {code}");
    }
    let args = Args::parse();
    FILE.get_or_init(|| args.file.clone());
    page().map_err(|e| anyhow::anyhow!("reading {}: {e}", args.file))?;
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(async {
        let app = Router::new()
            .route("/api/v1/subscribers", get(list))
            .route("/healthz", get(|| async { "ok" }));
        let listener = tokio::net::TcpListener::bind(&args.bind).await?;
        axum::serve(listener, app).await?;
        Ok(())
    })
}

async fn list() -> Response {
    match page() {
        Ok(json) => ([(CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

/// The newest [`PAGE`] rows, as the API writes them.
fn page() -> rusqlite::Result<Vec<u8>> {
    READER.with(|reader| {
        let mut reader = reader.borrow_mut();
        let connection = match &mut *reader {
            Some(connection) => connection,
            empty => empty.insert(open()?),
        };
        let mut newest = connection.prepare_cached(
            "SELECT id, email, status, created_at FROM subscribers ORDER BY id DESC LIMIT ?",
        )?;
        let mut rows = newest.query([PAGE as i64 + 1])?;
        let mut out = Vec::with_capacity(64 + 128 * PAGE);
        let mut digits = itoa::Buffer::new();
        let mut next_before = None;
        let mut last = 0;
        let mut written = 0;
        out.extend_from_slice(br#"{"subscribers":["#);
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            if written == PAGE {
                next_before = Some(last);
                break;
            }
            if written > 0 {
                out.push(b',');
            }
            out.extend_from_slice(br#"{"id":"#);
            out.extend_from_slice(digits.format(id).as_bytes());
            out.extend_from_slice(br#","email":"#);
            let email = row.get_ref(1)?.as_bytes()?;
            write_string(&mut out, stored_text(email).map_err(|e| conversion_failure(1, e))?);
            out.extend_from_slice(br#","status":""#);
            out.extend_from_slice(row.get_ref(2)?.as_bytes()?);
            out.extend_from_slice(br#"","signed_up_at":""#);
            out.extend_from_slice(&Rfc3339(row.get(3)?).bytes());
            out.extend_from_slice(br#""}"#);
            last = id;
            written += 1;
        }
        out.extend_from_slice(br#"],"next_before":"#);
        match next_before {
            Some(id) => out.extend_from_slice(digits.format(id).as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
        out.push(b'}');
        Ok(out)
    })
}

fn open() -> rusqlite::Result<rusqlite::Connection> {
    let connection = rusqlite::Connection::open_with_flags(
        FILE.get().map_or("", String::as_str),
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // Once the database is analysed, a plan that depends on bound values is prepared again at
    // every step.
    connection.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(connection)
}

fn conversion_failure(column: usize, error: std::str::Utf8Error) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, Type::Text, Box::new(error))
}
