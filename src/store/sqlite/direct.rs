//! The writer's connection, and the writes of a visitor's signup run on SQLite's handle itself.
//!
//! sqlx runs each statement on its connection's own thread and passes the statement there and
//! every row back. A group commit of double opt-in signups is a dozen short statements one after
//! another, and on busy cores each of those hand-offs waits for a thread to be scheduled: with
//! mail and webhooks on, the writer spent more time handing statements over than in SQLite. So
//! while the writer holds the handle (`lock_handle`, one hand-off for a run of writes), these
//! writes run on the writer's own thread, with their prepared statements kept between batches.
//! A batch of nothing else (the common case under load) is committed on the handle too, under
//! the same lock; a batch with other writes has its `BEGIN` and `COMMIT` on sqlx's thread.

use std::collections::HashMap;

use anyhow::{Context, anyhow};
use rusqlite::{OptionalExtension, params};
use sqlx::SqliteConnection;

use super::ops::{QUEUE_MAIL, WriteOp, answer};
use crate::store::records::admit_request;

/// Rows affected by one write, or one of [`answer`].
pub(super) type Outcome = Result<u64, anyhow::Error>;

/// How a failed write on the handle is undone.
#[derive(Debug, Clone, Copy)]
pub(super) enum Undo {
    /// With the whole transaction: the writes run with no savepoint of their own, and the
    /// batch is run again with [`Undo::EachWrite`] if one of them fails. A savepoint per signup
    /// made SQLite copy every page the signup touched into a statement journal; such a write
    /// fails only on a full disk, an I/O error or a broken constraint.
    Transaction,
    /// Each write of several statements in a savepoint of its own: one that fails is undone
    /// alone, and the batch's others stay.
    EachWrite,
}

pub(super) struct Ran {
    pub(super) outcomes: Vec<Outcome>,
    /// A write failed under [`Undo::Transaction`]: the transaction must be rolled back.
    pub(super) undone_only_by_rollback: bool,
}

/// The rows the signups of a run added, counted in `subscriber_counts` with one statement per
/// status rather than by a trigger on each insert: a trigger makes SQLite keep a statement
/// journal for the insert. Every insert of a signup is in `run_compound`; imports count their
/// own rows.
#[derive(Default)]
struct AddedRows {
    confirmed: i64,
    pending: i64,
}

impl AddedRows {
    fn count(&self, c: &rusqlite::Connection) -> rusqlite::Result<()> {
        for (status, n) in [("confirmed", self.confirmed), ("pending", self.pending)] {
            if n > 0 {
                c.prepare_cached("UPDATE subscriber_counts SET n = n + ?1 WHERE status = ?2")?
                    .execute(params![n, status])?;
            }
        }
        Ok(())
    }
}

/// The row of each address a signup of this run on the handle wrote or found, so that the
/// session created right behind its signup names it without looking the address up twice
/// (whether its row exists, and its id). Nothing that runs on the handle removes a subscriber
/// ([`runs_direct`]), so an id learned here stays right until the run ends; a write undone by its
/// savepoint takes its id back with it.
#[derive(Default)]
struct RowsOfRun<'a> {
    ids: HashMap<&'a str, i64>,
}

impl<'a> RowsOfRun<'a> {
    fn learned(&mut self, key: &'a str, id: i64) {
        self.ids.insert(key, id);
    }

    fn of(&self, key: Option<&str>) -> Option<i64> {
        key.and_then(|key| self.ids.get(key).copied())
    }

    fn undone(&mut self, op: &WriteOp) {
        if let Some(key) = op.address_key() {
            self.ids.remove(key);
        }
    }
}

/// Enough for every statement below, with room to spare.
const STATEMENTS: usize = 20;

pub(super) struct WriteConnection {
    /// Only used while `sqlx`'s handle is locked. Declared first so that it is dropped first:
    /// its prepared statements are finalized before sqlx closes the handle they belong to.
    direct: Option<rusqlite::Connection>,
    sqlx: SqliteConnection,
}

impl WriteConnection {
    pub(super) fn new(sqlx: SqliteConnection) -> Self {
        Self { direct: None, sqlx }
    }

    /// For the writes (and the writer's own work) that go through sqlx.
    pub(super) fn sqlx(&mut self) -> &mut SqliteConnection {
        &mut self.sqlx
    }

    /// Runs `ops` in the order given by `order` (indexes into `ops`); each write's outcome, in
    /// the order of `ops`. Consecutive writes that run on the handle share one lock of it.
    /// With [`Undo::Transaction`], `Ran::undone_only_by_rollback` says a write on the handle
    /// failed and may have left part of itself behind.
    pub(super) async fn run(&mut self, ops: &[&WriteOp], order: &[usize], undo: Undo) -> Ran {
        let mut outcomes: Vec<Option<Outcome>> = ops.iter().map(|_| None).collect();
        let mut undone_only_by_rollback = false;
        let mut rest = order;
        while let Some(&first) = rest.first() {
            if !runs_direct(ops[first]) {
                outcomes[first] = Some(ops[first].run(&mut self.sqlx).await);
                rest = &rest[1..];
                continue;
            }
            let run_length = rest.iter().position(|&i| !runs_direct(ops[i])).unwrap_or(rest.len());
            let (run, after) = rest.split_at(run_length);
            let ran = self
                .with_handle(|direct| run_on_handle(direct, ops, run, undo, &mut outcomes))
                .await;
            match ran {
                Ok(failed) => undone_only_by_rollback |= failed,
                Err(e) => {
                    for &i in run {
                        outcomes[i] = Some(Err(anyhow!("{e:#}")));
                    }
                }
            }
            rest = after;
        }
        Ran { outcomes: every_outcome(outcomes), undone_only_by_rollback }
    }

    /// A batch whose every write runs on the handle ([`runs_direct`]), committed under one lock
    /// of it: `BEGIN`, the writes and `COMMIT` without a hand-off to sqlx's thread between
    /// them. Each write's outcome, in the order of `ops`; an error if nothing was committed.
    pub(super) async fn commit_on_handle(
        &mut self,
        ops: &[&WriteOp],
        order: &[usize],
    ) -> anyhow::Result<Vec<Outcome>> {
        self.with_handle(|direct| commit_direct(direct, ops, order)).await?
    }

    /// Finalizes the prepared statements while the handle is still open and locked: the
    /// writer's last act, before sqlx closes the connection (`Drop` does the same, blocking).
    pub(super) async fn close(mut self) {
        if self.direct.is_some()
            && let Ok(handle) = self.sqlx.lock_handle().await
        {
            self.direct = None;
            drop(handle);
        }
    }

    async fn with_handle<T>(
        &mut self,
        work: impl FnOnce(&rusqlite::Connection) -> T,
    ) -> anyhow::Result<T> {
        let mut handle =
            self.sqlx.lock_handle().await.context("taking SQLite's handle from its thread")?;
        let direct = match &mut self.direct {
            Some(direct) => direct,
            empty => {
                // SAFETY: the pointer is sqlx's open connection. `direct` is used only while
                // the handle is locked, so no other thread makes calls on it meanwhile, and it
                // is dropped before `sqlx` (field order, and `close`), so never after the handle
                // is closed. A connection made this way never closes the handle itself.
                let direct =
                    unsafe { rusqlite::Connection::from_handle(handle.as_raw_handle().as_ptr()) }
                        .context("using SQLite's handle")?;
                direct.set_prepared_statement_cache_capacity(STATEMENTS);
                empty.insert(direct)
            }
        };
        let result = work(direct);
        drop(handle);
        Ok(result)
    }
}

impl Drop for WriteConnection {
    /// A writer dropped without `close` (its runtime shutting down mid-await) may leave sqlx's
    /// thread in the middle of a statement on this connection: the statements are finalized
    /// under the lock all the same, waiting for that statement to finish.
    fn drop(&mut self) {
        let Some(direct) = self.direct.take() else { return };
        match futures_executor::block_on(self.sqlx.lock_handle()) {
            Ok(handle) => {
                drop(direct);
                drop(handle);
            }
            // sqlx's thread is gone and the handle may be closed: finalizing could touch freed
            // memory, so the statements are left as they are.
            Err(_) => std::mem::forget(direct),
        }
    }
}

/// The body of `WriteConnection::commit_on_handle`: the same steps as the writer's commit
/// through sqlx, on the handle.
fn commit_direct(
    c: &rusqlite::Connection,
    ops: &[&WriteOp],
    order: &[usize],
) -> anyhow::Result<Vec<Outcome>> {
    c.prepare_cached("BEGIN IMMEDIATE")?.execute([]).context("starting a write transaction")?;
    let mut outcomes: Vec<Option<Outcome>> = ops.iter().map(|_| None).collect();
    if run_on_handle(c, ops, order, Undo::Transaction, &mut outcomes) {
        // Rare (a full disk, an I/O error): the batch again, each write undone on its own.
        let _ = c.execute_batch("ROLLBACK");
        c.prepare_cached("BEGIN IMMEDIATE")?
            .execute([])
            .context("starting a write transaction again")?;
        outcomes.iter_mut().for_each(|o| *o = None);
        run_on_handle(c, ops, order, Undo::EachWrite, &mut outcomes);
    }
    if let Err(e) = c.prepare_cached("COMMIT").and_then(|mut commit| commit.execute([])) {
        // Whatever went wrong, nothing in this batch may be reported as written.
        let _ = c.execute_batch("ROLLBACK");
        return Err(anyhow!(e).context("committing a write transaction"));
    }
    Ok(every_outcome(outcomes))
}

/// Runs the writes `run` (indexes into `ops`) on the handle, filling in their outcomes; under
/// [`Undo::Transaction`], whether one failed and the transaction must be rolled back.
fn run_on_handle(
    c: &rusqlite::Connection,
    ops: &[&WriteOp],
    run: &[usize],
    undo: Undo,
    outcomes: &mut [Option<Outcome>],
) -> bool {
    let mut rows = RowsOfRun::default();
    match undo {
        Undo::Transaction => {
            let mut added = AddedRows::default();
            for &i in run {
                outcomes[i] = Some(run_direct(c, ops[i], &mut added, &mut rows));
            }
            let counted = added.count(c);
            let failed = run.iter().any(|&i| matches!(outcomes[i], Some(Err(_))));
            failed || counted.is_err()
        }
        Undo::EachWrite => {
            for &i in run {
                outcomes[i] = Some(run_direct_alone(c, ops[i], &mut rows));
            }
            false
        }
    }
}

fn every_outcome(outcomes: Vec<Option<Outcome>>) -> Vec<Outcome> {
    outcomes.into_iter().map(|o| o.unwrap_or_else(|| Err(anyhow!("write was not run")))).collect()
}

/// The writes of a visitor's signup and session, and the flush. None of them may remove a
/// subscriber: [`RowsOfRun`] keeps the ids a run has learned until the run ends.
pub(super) fn runs_direct(op: &WriteOp) -> bool {
    matches!(
        op,
        WriteOp::AddSubscriber { .. }
            | WriteOp::RequestConfirmation { .. }
            | WriteOp::CreateSession { .. }
            | WriteOp::SaveSession { .. }
            | WriteOp::DeleteSession { .. }
            | WriteOp::Flush
    )
}

const INSERT_SUBSCRIBER: &str =
    "INSERT INTO subscribers (email, email_key, created_at, status, source, signup_ip,
                              signup_agent, consent, confirmed_at, confirm_nonce,
                              confirm_expires_at)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (email_key) DO NOTHING";

/// A new session keeps the address it remembers only if that address has a row, and names
/// the row (see `Store::create_session`).
const INSERT_SESSION: &str = "INSERT INTO sessions (key, data, subscriber_id, expires_at) \
     VALUES (?1, CASE WHEN ?3 IS NULL OR EXISTS (SELECT 1 FROM subscribers WHERE email_key = ?3) \
                 THEN ?2 ELSE json_remove(?2, '$.visitor_email', '$.awaiting_confirmation') END, \
             (SELECT id FROM subscribers WHERE email_key = ?3), ?4) \
     ON CONFLICT (key) DO NOTHING";

/// The same, for a session whose address's row this run has just written or found.
const INSERT_SESSION_OF_ROW: &str = "INSERT INTO sessions (key, data, subscriber_id, expires_at) \
     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (key) DO NOTHING";

/// `op` with its own savepoint if it is several statements, its added rows counted in it.
fn run_direct_alone<'a>(
    c: &rusqlite::Connection,
    op: &'a WriteOp,
    rows: &mut RowsOfRun<'a>,
) -> Outcome {
    if !op.adds_a_row() {
        return run_direct(c, op, &mut AddedRows::default(), rows);
    }
    c.prepare_cached("SAVEPOINT write_op")?.execute([])?;
    let mut added = AddedRows::default();
    let outcome = run_direct(c, op, &mut added, rows).and_then(|affected| {
        added.count(c)?;
        Ok(affected)
    });
    if outcome.is_err() {
        rows.undone(op);
        c.prepare_cached("ROLLBACK TO write_op")?.execute([])?;
    }
    c.prepare_cached("RELEASE write_op")?.execute([])?;
    outcome
}

fn run_direct<'a>(
    c: &rusqlite::Connection,
    op: &'a WriteOp,
    added: &mut AddedRows,
    rows: &mut RowsOfRun<'a>,
) -> Outcome {
    let affected = match op {
        WriteOp::CreateSession { key, data, remembers, expires_at } => {
            match rows.of(remembers.as_deref()) {
                Some(id) => c
                    .prepare_cached(INSERT_SESSION_OF_ROW)?
                    .execute(params![&key[..], data, id, expires_at])?,
                None => c
                    .prepare_cached(INSERT_SESSION)?
                    .execute(params![&key[..], data, remembers, expires_at])?,
            }
        }
        // A session from before `subscriber_id` moves over to it here (`owner` emptied).
        WriteOp::SaveSession { key, data, remembers, expires_at } => c
            .prepare_cached(
                "UPDATE sessions SET owner = NULL, expires_at = ?3, \
                 data = CASE WHEN ?2 IS NULL OR EXISTS (SELECT 1 FROM subscribers WHERE email_key = ?2) \
                 THEN ?1 ELSE json_remove(?1, '$.visitor_email', '$.awaiting_confirmation') END, \
                 subscriber_id = (SELECT id FROM subscribers WHERE email_key = ?2) WHERE key = ?4",
            )?
            .execute(params![data, remembers, expires_at, &key[..]])?,
        WriteOp::DeleteSession { key } => {
            c.prepare_cached("DELETE FROM sessions WHERE key = ?")?.execute([&key[..]])?
        }
        WriteOp::Flush => 0,
        compound => return run_compound(c, compound, added, rows),
    };
    Ok(affected as u64)
}

fn run_compound<'a>(
    c: &rusqlite::Connection,
    op: &'a WriteOp,
    added: &mut AddedRows,
    rows: &mut RowsOfRun<'a>,
) -> Outcome {
    match op {
        WriteOp::AddSubscriber { email, key, now, evidence, address_hash } => {
            let added_rows = c.prepare_cached(INSERT_SUBSCRIBER)?.execute(params![
                email,
                key,
                now,
                "confirmed",
                evidence.source,
                evidence.ip,
                evidence.agent,
                evidence.consent,
                now,
                None::<&[u8]>,
                None::<i64>,
            ])?;
            added.confirmed += added_rows as i64;
            if added_rows == 1 {
                rows.learned(key, c.last_insert_rowid());
            }
            // A signup on the form is new consent: a suppression of the address is lifted.
            c.prepare_cached("DELETE FROM suppressions WHERE address_hash = ?")?
                .execute([&address_hash[..]])?;
            Ok(added_rows as u64)
        }
        WriteOp::RequestConfirmation {
            email,
            key,
            now,
            evidence,
            address_hash,
            nonce,
            expires_at,
            limit,
            window_start,
        } => {
            let inserted_rows = c.prepare_cached(INSERT_SUBSCRIBER)?.execute(params![
                email,
                key,
                now,
                "pending",
                evidence.source,
                evidence.ip,
                evidence.agent,
                evidence.consent,
                None::<i64>,
                &nonce[..],
                expires_at,
            ])?;
            // The new row's id. (`RETURNING` would collect the one id in a temporary table
            // opened and closed for each signup.)
            let inserted = (inserted_rows == 1).then(|| c.last_insert_rowid());
            added.pending += inserted_rows as i64;
            let (id, sent): (i64, Option<String>) = match inserted {
                // A new row (ids are never reused): no mail is queued for it yet, so only an
                // earlier row's carried count can limit it.
                Some(id) => {
                    let carried = c
                        .prepare_cached(
                            "SELECT times FROM confirmation_limits WHERE address_hash = ?",
                        )?
                        .query_row([&address_hash[..]], |row| row.get(0))
                        .optional()?;
                    (id, carried)
                }
                None => {
                    let (id, confirmed) = c
                        .prepare_cached(
                            "SELECT id, status = 'confirmed' FROM subscribers WHERE email_key = ?",
                        )?
                        .query_row([key], |row| {
                            Ok((row.get::<_, i64>(0)?, row.get::<_, bool>(1)?))
                        })?;
                    if confirmed {
                        rows.learned(key, id);
                        return Ok(answer::ALREADY);
                    }
                    // See `ops::carry_mail_limit`: the outbox holds the count while the row
                    // exists, and the row itself holds its first mail until that is queued.
                    let sent = c
                        .prepare_cached(
                            "SELECT coalesce((SELECT times FROM confirmation_limits
                                              WHERE address_hash = ?1), '')
                                    || ' ' || coalesce((SELECT group_concat(created_at, ' ')
                                                        FROM outbox
                                                        WHERE subscriber_id = ?2
                                                          AND purpose = 'confirm'), '')
                                    || ' ' || coalesce((SELECT created_at
                                                        FROM confirmations_unqueued
                                                        WHERE id = ?2), '')",
                        )?
                        .query_row(params![&address_hash[..], id], |row| row.get(0))?;
                    (id, sent)
                }
            };
            rows.learned(key, id);
            if admit_request(sent.as_deref(), *window_start, *limit, *now).is_none() {
                if inserted.is_some() {
                    // The row stays, as a refused request's row always has, but no mail.
                    c.prepare_cached(
                        "UPDATE subscribers SET confirm_nonce = NULL, confirm_expires_at = NULL
                         WHERE id = ?",
                    )?
                    .execute([id])?;
                }
                return Ok(answer::REFUSED);
            }
            // A new row's mail is queued from the row itself, by the next mail lease
            // (`ops::queue_confirmations`), in a commit of its own.
            if inserted.is_none() {
                c.prepare_cached(QUEUE_MAIL)?.execute(params![
                    "confirm",
                    id,
                    &nonce[..],
                    expires_at,
                    now,
                    now
                ])?;
            }
            Ok(answer::DONE)
        }
        other => Err(anyhow!("{} is not a write of a signup", other.describe())),
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant};

    use sqlx::Connection;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};

    use super::WriteConnection;

    async fn open(path: &Path) -> sqlx::SqliteConnection {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let mut connection = sqlx::SqliteConnection::connect_with(&options).await.expect("open");
        sqlx::query("CREATE TABLE t (v INTEGER)").execute(&mut connection).await.expect("table");
        connection
    }

    /// A connection with a statement prepared and kept on its handle, as the writer leaves it.
    async fn with_kept_statement(path: &Path) -> WriteConnection {
        let mut connection = WriteConnection::new(open(path).await);
        connection
            .with_handle(|direct| direct.prepare_cached("INSERT INTO t VALUES (1)")?.execute([]))
            .await
            .expect("handle")
            .expect("insert");
        connection
    }

    /// SQLite removes the WAL file when the last connection to the database closes; sqlx's
    /// thread closes it after the connection is dropped, and cannot while a statement of it is
    /// left unfinalized (its close panics on that thread and the handle stays open).
    fn wait_until_closed(database: &Path) -> bool {
        let wal = PathBuf::from(format!("{}-wal", database.display()));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !wal.exists() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn rows(database: &Path) -> i64 {
        let reader = rusqlite::Connection::open(database).expect("reopen");
        reader.query_row("SELECT count(*) FROM t", [], |row| row.get(0)).expect("count")
    }

    #[tokio::test]
    async fn close_finalizes_the_kept_statements_so_the_handle_really_closes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let database = dir.path().join("close.db");
        with_kept_statement(&database).await.close().await;
        assert!(wait_until_closed(&database), "the database is still open after close");
        assert_eq!(rows(&database), 1);
    }

    #[tokio::test]
    async fn a_drop_without_close_still_finalizes_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let database = dir.path().join("drop.db");
        drop(with_kept_statement(&database).await);
        assert!(wait_until_closed(&database), "the database is still open after the drop");
        assert_eq!(rows(&database), 1);
    }

    /// What `Drop` is for: the runtime shuts down while the writer waits, and drops it there.
    #[test]
    fn a_runtime_shut_down_mid_await_drops_it_cleanly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let database = dir.path().join("shutdown.db");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (ready, prepared) = std::sync::mpsc::channel();
        let path = database.clone();
        runtime.spawn(async move {
            let connection = with_kept_statement(&path).await;
            let _ = ready.send(());
            std::future::pending::<()>().await;
            drop(connection);
        });
        prepared.recv_timeout(Duration::from_secs(10)).expect("the task prepared its statement");
        drop(runtime);
        assert!(wait_until_closed(&database), "the database is still open after the shutdown");
        assert_eq!(rows(&database), 1);
    }
}
