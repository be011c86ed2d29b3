//! A group commit is acknowledged only once the write-ahead log that holds it is on disk, and
//! that fsync runs beside the writer rather than inside its commit.
//!
//! With `synchronous = FULL`, SQLite's `COMMIT` writes the transaction's frames to the WAL and
//! then waits for their fsync, and the writer can start nothing else meanwhile: on a fast disk
//! that wait was a third of a busy writer's time, on a disk with a 2 ms fsync half of it. So the
//! writer's connection runs with `NORMAL` (its `COMMIT` writes the frames and returns) and hands
//! each committed batch here. This thread makes the WAL durable with one `fdatasync` for every
//! batch committed before that call began, then applies the batches' session-cache changes and
//! answers their callers, in commit order. The writer has started the next batch by then.
//!
//! The guarantee a caller is given is the one `FULL` gives: its writes are in frames that an
//! fsync finished with. The WAL is append-only until a checkpoint has copied every frame into
//! the database file and synced that file (SQLite does both under `NORMAL`), so frames an
//! fsync has not reached yet are either still in the log or already durable in the database. A
//! crash loses only frames no one was told about, and SQLite's recovery stops at the first
//! frame whose checksum does not follow.
//!
//! What `NORMAL` changes is visibility: SQLite's readers may see a commit up to one fsync's time
//! before it is durable. Nothing outside the process acts on such a read alone: mail, webhook and
//! announcement work is claimed by a write through the writer, whose answer waits for an fsync
//! that covers every earlier commit.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;

use anyhow::anyhow;

use super::direct::Outcome;
use super::session_cache::SessionCache;
use super::writer::Job;
use crate::store::StoreError;

/// Makes everything written to the WAL so far durable (an `fdatasync` of the file).
pub(super) type SyncWal = Box<dyn FnMut() -> io::Result<()> + Send>;

/// What every write is told once the disk has failed to keep a commit: the server must not go
/// on acknowledging writes whose predecessors may be lost.
const DURABILITY_LOST: &str =
    "the disk failed to keep an earlier commit; restart the server once the disk is fixed";

/// One transaction's jobs and how it ended, in the order the writer finished them.
pub(super) struct Settled {
    jobs: Vec<Job>,
    ended: Result<Vec<Outcome>, String>,
}

impl Settled {
    /// Committed: each job's outcome, in the order of `jobs`.
    pub(super) fn committed(jobs: Vec<Job>, outcomes: Vec<Outcome>) -> Self {
        Self { jobs, ended: Ok(outcomes) }
    }

    /// Nothing of it was committed.
    pub(super) fn failed(jobs: Vec<Job>, error: &anyhow::Error) -> Self {
        Self { jobs, ended: Err(format!("{error:#}")) }
    }
}

pub(super) struct Syncer {
    queue: mpsc::Sender<Settled>,
    lost: Arc<AtomicBool>,
    cache: Arc<SessionCache>,
}

impl Syncer {
    /// `syncs` counts the fsyncs made.
    pub(super) fn spawn(
        sync: SyncWal,
        cache: Arc<SessionCache>,
        syncs: Arc<AtomicU64>,
    ) -> io::Result<Self> {
        let (queue, settled) = mpsc::channel();
        let lost = Arc::new(AtomicBool::new(false));
        let state = SyncState { sync, cache: cache.clone(), syncs, lost: lost.clone() };
        std::thread::Builder::new()
            .name("enlist-wal-sync".into())
            .spawn(move || state.run(settled))?;
        Ok(Self { queue, lost, cache })
    }

    /// Hands a finished transaction over; its callers hear of it after the next fsync.
    pub(super) fn settle(&self, settled: Settled) {
        if let Err(mpsc::SendError(settled)) = self.queue.send(settled) {
            // The thread is gone (it panicked): nothing can be made durable any more.
            self.lost.store(true, Ordering::SeqCst);
            deliver(settled, &self.cache, Err(DURABILITY_LOST));
        }
    }

    /// The error for a batch the writer should not even start: an fsync has failed.
    pub(super) fn durability_lost(&self) -> Option<anyhow::Error> {
        self.lost.load(Ordering::SeqCst).then(|| anyhow!(DURABILITY_LOST))
    }
}

struct SyncState {
    sync: SyncWal,
    cache: Arc<SessionCache>,
    syncs: Arc<AtomicU64>,
    lost: Arc<AtomicBool>,
}

impl SyncState {
    /// Ends when the writer drops its [`Syncer`], after answering everything it was given.
    fn run(mut self, settled: mpsc::Receiver<Settled>) {
        while let Ok(first) = settled.recv() {
            // Everything committed before this fsync begins is covered by it.
            let mut group = vec![first];
            group.extend(settled.try_iter());
            let synced = self.sync_for(&group);
            for settled in group {
                deliver(settled, &self.cache, synced);
            }
        }
    }

    fn sync_for(&mut self, group: &[Settled]) -> Result<(), &'static str> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(DURABILITY_LOST);
        }
        if !group.iter().any(|settled| settled.ended.is_ok()) {
            return Ok(());
        }
        self.syncs.fetch_add(1, Ordering::Relaxed);
        (self.sync)().map_err(|e| {
            self.lost.store(true, Ordering::SeqCst);
            tracing::error!(
                error = %e,
                "could not make the SQLite log durable; every write fails from now on"
            );
            DURABILITY_LOST
        })
    }
}

/// Applies a transaction's session changes (the cache follows what the database holds, durable
/// or not) and answers its callers: with their outcomes if `synced`, with an error otherwise.
fn deliver(settled: Settled, cache: &SessionCache, synced: Result<(), &str>) {
    let Settled { jobs, ended } = settled;
    let outcomes = match ended {
        Err(error) => {
            for job in jobs {
                job.op.failed(cache);
                let _ = job.reply.send(Err(StoreError(anyhow!("{error}"))));
            }
            return;
        }
        Ok(outcomes) => outcomes,
    };
    let mut ended_sessions = false;
    for (job, outcome) in jobs.iter().zip(&outcomes) {
        if let Ok(rows) = outcome {
            job.op.committed(*rows, cache);
            ended_sessions |= job.op.ended_sessions(*rows);
        }
    }
    // After the batch's own session writes (one it created may have ended with its row), and
    // before anyone hears of the commit.
    if ended_sessions {
        cache.forget_all();
    }
    for (job, outcome) in jobs.into_iter().zip(outcomes) {
        let result = match (synced, outcome) {
            (Ok(()), outcome) => outcome.map_err(|e| StoreError(e.context(job.op.describe()))),
            (Err(lost), _) => Err(StoreError(anyhow!("{lost}").context(job.op.describe()))),
        };
        let _ = job.reply.send(result);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sqlx::{Connection, SqliteConnection};

    use super::super::ops::WriteOp;
    use super::super::writer::Writer;
    use super::*;

    fn signup(address: &str) -> WriteOp {
        WriteOp::test_signup(address, [address.len() as u8; 32])
    }

    async fn migrated(dir: &tempfile::TempDir) -> (SqliteConnection, String) {
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let mut connection = SqliteConnection::connect(&url).await.unwrap();
        sqlx::migrate!("migrations/sqlite").run(&mut connection).await.unwrap();
        (connection, url)
    }

    async fn stored(url: &str) -> Vec<String> {
        let mut reader = SqliteConnection::connect(url).await.unwrap();
        sqlx::query_scalar("SELECT email FROM subscribers ORDER BY id")
            .fetch_all(&mut reader)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_write_is_answered_only_after_the_fsync_that_follows_its_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (connection, url) = migrated(&dir).await;
        let (syncing, sync_started) = mpsc::channel();
        let (release, released) = mpsc::channel::<io::Result<()>>();
        let sync: SyncWal = Box::new(move || {
            let _ = syncing.send(());
            released.recv().unwrap_or(Ok(()))
        });
        let writer = Writer::spawn(connection, sync, Arc::default(), false).unwrap();
        let mut write = tokio::spawn({
            let writer = writer.clone();
            async move { writer.write(signup("a@example.com")).await }
        });
        tokio::task::spawn_blocking(move || sync_started.recv_timeout(Duration::from_secs(10)))
            .await
            .unwrap()
            .expect("the commit is followed by an fsync");
        assert_eq!(stored(&url).await, ["a@example.com"], "committed before the fsync");
        assert!(
            tokio::time::timeout(Duration::from_millis(300), &mut write).await.is_err(),
            "no answer while the fsync has not returned"
        );
        release.send(Ok(())).unwrap();
        assert_eq!(write.await.unwrap().unwrap(), 1);
    }

    #[tokio::test]
    async fn after_a_failed_fsync_no_write_is_acknowledged_or_even_made() {
        let dir = tempfile::tempdir().unwrap();
        let (connection, url) = migrated(&dir).await;
        let calls = Arc::new(AtomicU64::new(0));
        let sync: SyncWal = Box::new({
            let calls = calls.clone();
            move || {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(io::Error::other("the disk is gone"))
            }
        });
        let writer = Writer::spawn(connection, sync, Arc::default(), false).unwrap();
        let first = writer.write(signup("a@example.com")).await.unwrap_err();
        assert!(format!("{first:#}").contains("failed to keep an earlier commit"), "{first:#}");
        let second = writer.write(signup("bb@example.com")).await.unwrap_err();
        assert!(format!("{second:#}").contains("restart the server"), "{second:#}");
        assert_eq!(calls.load(Ordering::SeqCst), 1, "nothing more to make durable");
        // The first commit was made (readers may have seen it); nothing after the failure was.
        assert_eq!(stored(&url).await, ["a@example.com"]);
    }
}
