use std::fs::{File, TryLockError};
use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod allocator;
mod announcements;
mod backup;
mod batch;
mod direct;
mod import_batch;
mod ops;
mod owner;
mod queries;
mod quick_reads;
mod search_index;
mod session_cache;
mod token_cache;
mod wal_sync;
mod webhooks;
mod writer;

use anyhow::Context;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, SqlitePool};

pub use self::allocator::use_global_allocator;
pub use self::backup::copy_database;
use self::quick_reads::QuickReads;
use self::session_cache::SessionCache;
use self::token_cache::TokenCache;
use self::writer::Writer;
use super::{PoolLimits, Role};

/// SQLite allows one writer at a time: one task owns the write connection and commits whatever is
/// waiting in one transaction (see `writer`). Reads use their own pool and run beside it (WAL).
///
/// One process owns the file (an exclusive lock held for the store's life): that is what makes
/// the in-process session and token caches exact. Several instances need PostgreSQL.
#[derive(Clone)]
pub struct SqliteStore {
    writer: Writer,
    readers: SqlitePool,
    quick: Arc<QuickReads>,
    sessions: Arc<SessionCache>,
    tokens: Arc<TokenCache>,
    _owner: Arc<File>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if missing) and migrates the database.
    pub async fn open(
        options: SqliteConnectOptions,
        limits: PoolLimits,
        role: Role,
    ) -> anyhow::Result<Self> {
        create_private_file(options.get_filename())?;
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit is on disk before we acknowledge it, even across power loss. The
            // writer's group commits keep that promise with their own fsync (`wal_sync`).
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            // Erasing an address overwrites it in the file rather than leaving it in free pages.
            .pragma("secure_delete", "ON")
            // Waiting for the write lock is SQLite's form of a slow statement.
            .busy_timeout(limits.statement_timeout);
        // Before anything else touches the file, so migrations never race either.
        let owner = take_ownership(options.get_filename(), limits.connect_timeout).await?;
        let mut writer = options.connect().await.context("opening the SQLite database")?;
        prepare_writer(&mut writer).await?;
        sqlx::migrate!("migrations/sqlite")
            .run(&mut writer)
            .await
            .context("applying SQLite migrations")?;
        // This process owns the file, so any lease on queued mail belongs to one that died:
        // send those mails now rather than after their lease runs out.
        sqlx::query(
            "UPDATE outbox SET lease_until = 0 WHERE status = 'queued' AND lease_until > 0",
        )
        .execute(&mut writer)
        .await
        .context("releasing leases of a previous run")?;
        let sync = hand_fsyncs_to_syncer(&mut writer, options.get_filename()).await?;
        let quick = Arc::new(QuickReads::new(options.get_filename()));
        let readers = SqlitePoolOptions::new()
            .max_connections(limits.pool_size)
            .acquire_timeout(limits.connect_timeout)
            .connect_with(options.read_only(true))
            .await
            .context("opening SQLite read connections")?;
        let sessions = Arc::new(SessionCache::default());
        let writer = Writer::spawn(writer, sync, sessions.clone(), role == Role::Server)
            .context("starting the SQLite writer")?;
        Ok(Self {
            writer,
            readers,
            quick,
            sessions,
            tokens: Arc::default(),
            _owner: Arc::new(owner),
        })
    }
}

/// The write connection's own settings. Most writes in a group commit can be undone alone (a
/// savepoint, or an import's statement of many rows), so SQLite keeps a statement journal for
/// them (a signup's writes are the exception, `direct::Undo`); past 64 KiB it spills to a new temporary file, created, written, closed and deleted again
/// in nearly every commit under load. In memory instead: W3 about 20% faster when measured, a
/// third fewer write calls per signup. Only this connection: the readers' sorts stay bounded on
/// disk.
async fn prepare_writer(writer: &mut sqlx::SqliteConnection) -> anyhow::Result<()> {
    sqlx::query("PRAGMA temp_store = MEMORY")
        .execute(writer)
        .await
        .context("keeping the writer's statement journals in memory")?;
    Ok(())
}

/// Turns the writer's commits into ones that do not wait for the disk, and returns what makes
/// them durable instead: an `fdatasync` of the database's write-ahead log (`wal_sync`). SQLite
/// keeps that file (the same inode) while any connection is open, and this process holds its
/// writer's connection for as long as it uses the file; the file exists once the migrations
/// have run, and is created the way SQLite would create it otherwise.
async fn hand_fsyncs_to_syncer(
    writer: &mut sqlx::SqliteConnection,
    database: &Path,
) -> anyhow::Result<wal_sync::SyncWal> {
    let mut path = database.as_os_str().to_owned();
    path.push("-wal");
    let wal = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("opening {}", Path::new(&path).display()))?;
    sqlx::query("PRAGMA synchronous = NORMAL")
        .execute(writer)
        .await
        .context("leaving the writer's fsyncs to its syncer")?;
    Ok(Box::new(move || wal.sync_data()))
}

/// Takes the exclusive lock (`flock`, independent of SQLite's own `fcntl` locks) that makes this
/// process the file's only user, waiting up to `patience` for a previous process to finish.
async fn take_ownership(path: &Path, patience: Duration) -> anyhow::Result<File> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let deadline = Instant::now() + patience;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(TryLockError::WouldBlock) => {
                return Err(DatabaseInUse(path.to_path_buf()).into());
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        }
    }
}

/// Another process (a running server) owns the SQLite file.
#[derive(Debug, thiserror::Error)]
#[error(
    "another enlist process is using {}; a SQLite database serves one instance (use PostgreSQL \
     to run several)",
    .0.display()
)]
pub struct DatabaseInUse(pub std::path::PathBuf);

/// The list is personal data: a new database file is readable by its owner only, and SQLite
/// gives its -wal and -shm files the same mode.
fn create_private_file(path: &Path) -> anyhow::Result<()> {
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

#[cfg(test)]
mod tests;
