//! Reads that answer in tens of microseconds, run on the calling thread.
//!
//! sqlx gives each SQLite connection a thread of its own and passes the statement there and every
//! row back over channels: a page of 100 rows cost more in thread switches than in SQLite (a
//! quarter of all CPU time in the API's profile). These reads are bounded by their `LIMIT` and an
//! index, so they run where the request is, on a read-only connection kept with its prepared
//! statements. WAL readers never wait for the writer, so nothing here blocks on a lock.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use rusqlite::config::DbConfig;
use rusqlite::types::{Type, ValueRef};
use rusqlite::{Connection, OpenFlags};

use crate::domain::SubscriberStatus;
use crate::store::{StoreResult, Subscriber, SubscriberRow, stored_text};

/// Connections kept between uses; more only exist while more threads read at once.
const KEEP: usize = 8;

pub(super) struct QuickReads {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl QuickReads {
    pub(super) fn new(path: &Path) -> Self {
        Self { path: path.to_path_buf(), idle: Mutex::new(Vec::new()) }
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Connection>> {
        // A connection is pushed or popped whole: a panic elsewhere cannot leave one half-kept.
        self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let connection = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // Only a WAL restart by the writer can make a reader wait, and only briefly.
        connection.busy_timeout(Duration::from_secs(1))?;
        connection.set_prepared_statement_cache_capacity(8);
        // Plans that do not depend on the values bound: otherwise, once the database has been
        // analysed, binding a new `id < ?` re-prepared the cached statement on every call (15%
        // of a page of the API's list went to SQLite's parser).
        connection.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
        // A page of the list touches a few dozen pages, and the OS caches the file anyway: a
        // small cache keeps each of these connections from growing to SQLite's default 2 MB.
        connection.pragma_update(None, "cache_size", -512)?;
        Ok(connection)
    }

    fn with<T>(
        &self,
        what: &'static str,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> StoreResult<T> {
        let taken = self.idle().pop();
        let connection = match taken {
            Some(connection) => connection,
            None => self.open().context("opening a SQLite read connection")?,
        };
        let result = read(&connection).context(what);
        let mut idle = self.idle();
        if idle.len() < KEEP {
            idle.push(connection);
        }
        Ok(result?)
    }

    /// The newest rows below `before`, of one status or all.
    pub(super) fn page(
        &self,
        status: Option<SubscriberStatus>,
        before: i64,
        limit: u32,
    ) -> StoreResult<Vec<Subscriber>> {
        let mut rows = Vec::with_capacity(limit.min(1_000) as usize);
        self.each(status, before, limit, &mut |row| rows.push(row.to_owned()))?;
        Ok(rows)
    }

    /// The rows of [`Self::page`], handed to `each` as SQLite steps to them.
    pub(super) fn each(
        &self,
        status: Option<SubscriberStatus>,
        before: i64,
        limit: u32,
        each: &mut dyn FnMut(SubscriberRow<'_>),
    ) -> StoreResult<()> {
        // One of two fixed words, written into the statement so that SQLite sees `pending` and
        // uses the partial index of pending rows.
        let sql = match status {
            None => {
                "SELECT id, email, created_at, status FROM subscribers
                     WHERE id < ?1 ORDER BY id DESC LIMIT ?2"
            }
            Some(SubscriberStatus::Pending) => {
                "SELECT id, email, created_at, status FROM subscribers
                     WHERE status = 'pending' AND id < ?1 ORDER BY id DESC LIMIT ?2"
            }
            Some(SubscriberStatus::Confirmed) => {
                "SELECT id, email, created_at, status FROM subscribers
                     WHERE status = 'confirmed' AND id < ?1 ORDER BY id DESC LIMIT ?2"
            }
        };
        self.with("listing subscribers", |connection| {
            let mut statement = connection.prepare_cached(sql)?;
            let mut rows = statement.query((before, limit))?;
            while let Some(row) = rows.next()? {
                each(subscriber_row(row)?);
            }
            Ok(())
        })
    }
}

/// A row of `id, email, created_at, status`, read in place.
fn subscriber_row<'r>(row: &'r rusqlite::Row<'_>) -> rusqlite::Result<SubscriberRow<'r>> {
    let bytes = |column: usize| match row.get_ref(column)? {
        ValueRef::Text(bytes) => Ok(bytes),
        other => Err(conversion_failure(
            column,
            format!("{} where text belongs", other.data_type()).into(),
        )),
    };
    let status = bytes(3)?;
    Ok(SubscriberRow {
        id: row.get(0)?,
        email: stored_text(bytes(1)?).map_err(|e| conversion_failure(1, Box::new(e)))?,
        created_at: row.get(2)?,
        status: SubscriberStatus::from_bytes(status).ok_or_else(|| {
            let status = String::from_utf8_lossy(status);
            conversion_failure(3, format!("unknown subscriber status {status:?}").into())
        })?,
    })
}

fn conversion_failure(
    column: usize,
    error: Box<dyn std::error::Error + Send + Sync>,
) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, Type::Text, error)
}
