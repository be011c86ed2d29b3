//! Group commit: one thread owns SQLite's write connection. Every write waiting when it is free
//! goes into one `BEGIN IMMEDIATE … COMMIT`, and each caller hears back only after an fsync of the
//! log that holds that commit (`wal_sync`), so nothing is acknowledged before it is durable.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use anyhow::anyhow;
use sqlx::{Executor, SqliteConnection};

use super::direct::{Undo, WriteConnection, runs_direct};
use tokio::sync::{mpsc, oneshot};

pub(super) use super::ops::WriteOp;
use super::session_cache::SessionCache;
use super::wal_sync::{Settled, SyncWal, Syncer};
use super::{batch, search_index};
use crate::store::{StoreError, StoreResult};

/// Enough to amortise one fsync over many writes, small enough to keep a batch's latency low.
const MAX_BATCH: usize = 256;
const QUEUE: usize = 4096;

pub(super) struct Job {
    pub(super) op: WriteOp,
    /// Rows affected, sent only once the commit is durable.
    pub(super) reply: oneshot::Sender<StoreResult<u64>>,
}

#[derive(Debug, Clone)]
pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
    stats: Arc<WriterStats>,
    /// Set by `close`: from then on the writer still commits what it is sent, but starts no
    /// work of its own (the search index), so no transaction of its own outlives the close.
    closed: Arc<AtomicBool>,
}

/// How well group commit is working: writes per commit is the batching factor.
#[derive(Debug, Default)]
pub(super) struct WriterStats {
    pub(super) commits: AtomicU64,
    pub(super) writes: AtomicU64,
    /// One fsync covers every commit made before it began.
    pub(super) syncs: Arc<AtomicU64>,
}

impl Writer {
    /// `connection` must not wait for the disk at `COMMIT` (`synchronous = NORMAL`): `sync`
    /// makes its log durable before any caller is answered. `index_search`: keep the search
    /// index up in idle time (a server) or not (a tool).
    pub(super) fn spawn(
        connection: SqliteConnection,
        sync: SyncWal,
        cache: Arc<SessionCache>,
        index_search: bool,
    ) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let stats = Arc::new(WriterStats::default());
        let syncer = Syncer::spawn(sync, cache, stats.syncs.clone())?;
        let closed = Arc::new(AtomicBool::new(false));
        let idle_work = IdleWork { index_search, closed: closed.clone() };
        let connection = WriteConnection::new(connection);
        // Every write goes through this one loop, so it runs on a thread of its own: as a task
        // among the visitors' tasks, each of its hand-offs to SQLite's thread (`BEGIN`, the
        // handle, `COMMIT`) waited behind them for a worker to pick it up again.
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
        let work = write_loop(connection, queue, stats.clone(), syncer, idle_work);
        std::thread::Builder::new()
            .name("enlist-writer".into())
            .spawn(move || runtime.block_on(work))?;
        Ok(Self { jobs, stats, closed })
    }

    /// Commits everything sent so far; afterwards the writer starts nothing by itself. A
    /// caller that goes on to use the file from elsewhere (a tool, a test) never finds it
    /// locked by an index step begun after the close.
    pub(super) async fn close(&self) -> StoreResult<u64> {
        self.closed.store(true, Ordering::SeqCst);
        self.write(WriteOp::Flush).await
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

/// What the writer does when no write waits: index for search (a server, until closed).
struct IdleWork {
    index_search: bool,
    closed: Arc<AtomicBool>,
}

impl IdleWork {
    fn wanted(&self) -> bool {
        self.index_search && !self.closed.load(Ordering::SeqCst)
    }
}

async fn write_loop(
    mut connection: WriteConnection,
    mut queue: mpsc::Receiver<Job>,
    stats: Arc<WriterStats>,
    syncer: Syncer,
    idle_work: IdleWork,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // A previous run or an import may have left rows out of the search index.
    let mut unindexed = idle_work.wanted();
    let mut last_step = Instant::now();
    loop {
        let received = if unindexed {
            match tokio::time::timeout(search_index::IDLE, queue.recv_many(&mut batch, MAX_BATCH))
                .await
            {
                Ok(received) => received,
                Err(_idle) if !idle_work.wanted() => {
                    unindexed = false;
                    continue;
                }
                Err(_idle) => {
                    unindexed = index_step(connection.sqlx()).await;
                    last_step = Instant::now();
                    // A full step leaves more to do: carry on while nothing else waits.
                    while unindexed && queue.is_empty() && idle_work.wanted() {
                        unindexed = index_step(connection.sqlx()).await;
                    }
                    continue;
                }
            }
        } else {
            queue.recv_many(&mut batch, MAX_BATCH).await
        };
        // Ends when every sender is gone, after the last batch is committed and answered.
        if received == 0 {
            connection.close().await;
            return;
        }
        stats.writes.fetch_add(batch.len() as u64, Ordering::Relaxed);
        stats.commits.fetch_add(1, Ordering::Relaxed);
        commit(&mut connection, &mut batch, &syncer).await;
        unindexed = idle_work.wanted();
        if unindexed && last_step.elapsed() >= search_index::MAX_LAG {
            unindexed = index_step(connection.sqlx()).await;
            last_step = Instant::now();
        }
    }
}

/// One step of the search index; whether rows may remain. A failure is logged and retried after
/// the next write rather than in a loop.
async fn index_step(connection: &mut SqliteConnection) -> bool {
    match search_index::step(connection).await {
        Ok(indexed) => indexed == search_index::STEP,
        Err(e) => {
            tracing::warn!(error = format!("{e:#}"), "indexing for search failed");
            false
        }
    }
}

async fn commit(connection: &mut WriteConnection, batch: &mut Vec<Job>, syncer: &Syncer) {
    if let Some(lost) = syncer.durability_lost() {
        fail_all(batch, &lost, syncer);
        return;
    }
    let ops: Vec<&WriteOp> = batch.iter().map(|job| &job.op).collect();
    if ops.iter().all(|op| runs_direct(op)) {
        // The common batch under load, signups and sessions: no hand-off to sqlx's thread.
        match connection.commit_on_handle(&ops, &batch::order(&ops)).await {
            Ok(outcomes) => syncer.settle(Settled::committed(std::mem::take(batch), outcomes)),
            Err(e) => fail_all(batch, &e, syncer),
        }
        return;
    }
    if let Err(e) = connection.sqlx().execute("BEGIN IMMEDIATE").await {
        fail_all(batch, &anyhow!(e).context("starting a write transaction"), syncer);
        return;
    }
    let mut ran = batch::run(connection, &ops, Undo::Transaction).await;
    if ran.undone_only_by_rollback {
        // Rare (a full disk, an I/O error): the batch again, each write undone on its own.
        let _ = connection.sqlx().execute("ROLLBACK").await;
        if let Err(e) = connection.sqlx().execute("BEGIN IMMEDIATE").await {
            fail_all(batch, &anyhow!(e).context("starting a write transaction again"), syncer);
            return;
        }
        ran = batch::run(connection, &ops, Undo::EachWrite).await;
    }
    if let Err(e) = connection.sqlx().execute("COMMIT").await {
        // Whatever went wrong, nothing in this batch may be reported as written.
        let _ = connection.sqlx().execute("ROLLBACK").await;
        fail_all(batch, &anyhow!(e).context("committing a write transaction"), syncer);
        return;
    }
    syncer.settle(Settled::committed(std::mem::take(batch), ran.outcomes));
}

fn fail_all(batch: &mut Vec<Job>, error: &anyhow::Error, syncer: &Syncer) {
    syncer.settle(Settled::failed(std::mem::take(batch), error));
}
