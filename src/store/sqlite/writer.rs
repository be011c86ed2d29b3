//! Group commit: one task owns SQLite's write connection. Every write waiting when it is free goes
//! into one `BEGIN IMMEDIATE … COMMIT` (one fsync for all of them), and each caller hears back only
//! after that commit, so nothing is acknowledged before it is durable.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::anyhow;
use sqlx::sqlite::SqliteArguments;
use sqlx::{Executor, Sqlite, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use super::batch;
use super::session_cache::SessionCache;
use crate::store::{SessionKey, StoreError, StoreResult};

/// Enough to amortise one fsync over many writes, small enough to keep a batch's latency low.
const MAX_BATCH: usize = 256;
const QUEUE: usize = 4096;

/// A single-statement write. Statements that fail alone (a constraint) are reported alone; an
/// error that aborts the transaction fails the whole batch at `COMMIT`. No `Debug`: it holds
/// addresses and session contents.
pub(super) enum WriteOp {
    AddSubscriber {
        email: String,
        key: String,
        now: i64,
    },
    RemoveSubscriber {
        key: String,
    },
    /// Stores a new admin hash if the stored one is still `expected` (`None`: none yet).
    SwapAdminHash {
        expected: Option<String>,
        phc: String,
        now: i64,
    },
    CreateSession {
        key: SessionKey,
        data: String,
        expires_at: i64,
    },
    SaveSession {
        key: SessionKey,
        data: String,
        expires_at: i64,
    },
    DeleteSession {
        key: SessionKey,
    },
    DeleteExpiredSessions {
        now: i64,
    },
    /// Writes nothing; answered once everything queued before it is committed.
    Flush,
}

type Query<'q> = sqlx::query::Query<'q, Sqlite, SqliteArguments>;

impl WriteOp {
    /// Keeps the session cache equal to what was just committed.
    fn committed(&self, rows: u64, cache: &SessionCache) {
        match self {
            Self::CreateSession { key, data, expires_at } if rows == 1 => {
                cache.stored(key, data, expires_at.to_owned())
            }
            Self::SaveSession { key, data, expires_at } if rows == 1 => {
                cache.stored(key, data, expires_at.to_owned())
            }
            // Saving a session that is gone (ended elsewhere) leaves it gone.
            Self::SaveSession { key, .. } | Self::DeleteSession { key } => cache.deleted(key),
            Self::DeleteExpiredSessions { now } => cache.expired(*now),
            _ => {}
        }
    }

    /// The transaction failed: whatever the cache knew about this session may be wrong.
    fn failed(&self, cache: &SessionCache) {
        match self {
            Self::CreateSession { key, .. }
            | Self::SaveSession { key, .. }
            | Self::DeleteSession { key } => cache.forget(key),
            _ => {}
        }
    }

    pub(super) fn query(&self) -> Query<'_> {
        match self {
            Self::AddSubscriber { email, key, now } => sqlx::query(
                "INSERT INTO subscribers (email, email_key, created_at) VALUES (?, ?, ?)
                 ON CONFLICT (email_key) DO NOTHING",
            )
            .bind(email.as_str())
            .bind(key.as_str())
            .bind(*now),
            Self::RemoveSubscriber { key } => {
                sqlx::query("DELETE FROM subscribers WHERE email_key = ?").bind(key.as_str())
            }
            Self::SwapAdminHash { expected: None, phc, now } => sqlx::query(
                "INSERT INTO admin_credential (id, password_hash, updated_at) VALUES (1, ?, ?)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(phc.as_str())
            .bind(*now),
            Self::SwapAdminHash { expected: Some(expected), phc, now } => sqlx::query(
                "UPDATE admin_credential SET password_hash = ?, updated_at = ?
                 WHERE id = 1 AND password_hash = ?",
            )
            .bind(phc.as_str())
            .bind(*now)
            .bind(expected.as_str()),
            Self::CreateSession { key, data, expires_at } => sqlx::query(
                "INSERT INTO sessions (key, data, expires_at) VALUES (?, ?, ?)
                 ON CONFLICT (key) DO NOTHING",
            )
            .bind(&key[..])
            .bind(data.as_str())
            .bind(*expires_at),
            Self::SaveSession { key, data, expires_at } => {
                sqlx::query("UPDATE sessions SET data = ?, expires_at = ? WHERE key = ?")
                    .bind(data.as_str())
                    .bind(*expires_at)
                    .bind(&key[..])
            }
            Self::DeleteSession { key } => {
                sqlx::query("DELETE FROM sessions WHERE key = ?").bind(&key[..])
            }
            Self::DeleteExpiredSessions { now } => {
                sqlx::query("DELETE FROM sessions WHERE expires_at <= ?").bind(*now)
            }
            Self::Flush => sqlx::query("SELECT 1"),
        }
    }
}

struct Job {
    op: WriteOp,
    /// Rows affected, sent only after the commit.
    reply: oneshot::Sender<StoreResult<u64>>,
}

#[derive(Debug, Clone)]
pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
    stats: Arc<WriterStats>,
}

/// How well group commit is working: writes per commit is the batching factor.
#[derive(Debug, Default)]
pub(super) struct WriterStats {
    pub(super) commits: AtomicU64,
    pub(super) writes: AtomicU64,
}

impl Writer {
    pub(super) fn spawn(connection: SqliteConnection, cache: Arc<SessionCache>) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let stats = Arc::new(WriterStats::default());
        tokio::spawn(write_loop(connection, queue, stats.clone(), cache));
        Self { jobs, stats }
    }

    pub(super) fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Runs `op` in the next group commit; returns the rows it affected once that is durable.
    pub(super) async fn write(&self, op: WriteOp) -> StoreResult<u64> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { op, reply })
            .await
            .map_err(|_| StoreError(anyhow!("the SQLite writer has stopped")))?;
        answer
            .await
            .map_err(|_| StoreError(anyhow!("the SQLite writer stopped before committing")))?
    }
}

async fn write_loop(
    mut connection: SqliteConnection,
    mut queue: mpsc::Receiver<Job>,
    stats: Arc<WriterStats>,
    cache: Arc<SessionCache>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // Ends when every sender is gone, after the last batch is committed and answered.
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        stats.writes.fetch_add(batch.len() as u64, Ordering::Relaxed);
        stats.commits.fetch_add(1, Ordering::Relaxed);
        commit(&mut connection, &mut batch, &cache).await;
    }
}

async fn commit(connection: &mut SqliteConnection, batch: &mut Vec<Job>, cache: &SessionCache) {
    if let Err(e) = connection.execute("BEGIN IMMEDIATE").await {
        fail_all(batch, &anyhow!(e).context("starting a write transaction"), cache);
        return;
    }
    let ops: Vec<&WriteOp> = batch.iter().map(|job| &job.op).collect();
    let outcomes = batch::run(connection, &ops).await;
    if let Err(e) = connection.execute("COMMIT").await {
        // Whatever went wrong, nothing in this batch may be reported as written.
        let _ = connection.execute("ROLLBACK").await;
        fail_all(batch, &anyhow!(e).context("committing a write transaction"), cache);
        return;
    }
    for (job, outcome) in batch.drain(..).zip(outcomes) {
        if let Ok(rows) = &outcome {
            job.op.committed(*rows, cache);
        }
        let result = outcome.map_err(|e| StoreError(e.context(format!("{:?}", Kind(&job.op)))));
        let _ = job.reply.send(result);
    }
}

fn fail_all(batch: &mut Vec<Job>, error: &anyhow::Error, cache: &SessionCache) {
    for job in batch.drain(..) {
        job.op.failed(cache);
        let _ = job.reply.send(Err(StoreError(anyhow!("{error:#}"))));
    }
}

/// The operation's name without its data (which may hold addresses or session contents).
struct Kind<'a>(&'a WriteOp);

impl std::fmt::Debug for Kind<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.0 {
            WriteOp::AddSubscriber { .. } => "adding a subscriber",
            WriteOp::RemoveSubscriber { .. } => "removing a subscriber",
            WriteOp::SwapAdminHash { .. } => "storing the admin credential",
            WriteOp::CreateSession { .. } => "creating a session",
            WriteOp::SaveSession { .. } => "saving a session",
            WriteOp::DeleteSession { .. } => "deleting a session",
            WriteOp::DeleteExpiredSessions { .. } => "deleting expired sessions",
            WriteOp::Flush => "flushing the writer",
        };
        f.write_str(name)
    }
}
