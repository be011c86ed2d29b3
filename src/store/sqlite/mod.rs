use std::fs::{File, TryLockError};
use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

mod batch;
mod session_cache;
mod writer;

use anyhow::Context;
use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, SqlitePool};

use self::session_cache::{Lookup, SessionCache};
use self::writer::{WriteOp, Writer};
use super::{PoolLimits, SessionKey, Store, StoreResult, Subscriber, Walk};
use crate::domain::{SearchTerm, SubscriberEmail};

/// SQLite allows one writer at a time: one task owns the write connection and commits whatever is
/// waiting in one transaction (see `writer`). Reads use their own pool and run beside it (WAL).
///
/// One process owns the file (an exclusive lock held for the store's life): that is what makes
/// the in-process session cache exact. Several instances need PostgreSQL.
#[derive(Clone)]
pub struct SqliteStore {
    writer: Writer,
    readers: SqlitePool,
    sessions: Arc<SessionCache>,
    _owner: Arc<File>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if missing) and migrates the database.
    pub async fn open(options: SqliteConnectOptions, limits: PoolLimits) -> anyhow::Result<Self> {
        create_private_file(options.get_filename())?;
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit is on disk before we acknowledge it, even across power loss.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            // Waiting for the write lock is SQLite's form of a slow statement.
            .busy_timeout(limits.statement_timeout);
        // Before anything else touches the file, so migrations never race either.
        let owner = take_ownership(options.get_filename(), limits.connect_timeout).await?;
        let mut writer = options.connect().await.context("opening the SQLite database")?;
        sqlx::migrate!("migrations/sqlite")
            .run(&mut writer)
            .await
            .context("applying SQLite migrations")?;
        let readers = SqlitePoolOptions::new()
            .max_connections(limits.pool_size)
            .acquire_timeout(limits.connect_timeout)
            .connect_with(options.read_only(true))
            .await
            .context("opening SQLite read connections")?;
        let sessions = Arc::new(SessionCache::default());
        Ok(Self {
            writer: Writer::spawn(writer, sessions.clone()),
            readers,
            sessions,
            _owner: Arc::new(owner),
        })
    }
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
            Err(TryLockError::WouldBlock) => anyhow::bail!(
                "another enlist process is using {}; a SQLite database serves one instance \
                 (use PostgreSQL to run several)",
                path.display()
            ),
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        }
    }
}

/// The list is personal data: a new database file is readable by its owner only, and SQLite
/// gives its -wal and -shm files the same mode.
fn create_private_file(path: &Path) -> anyhow::Result<()> {
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

/// The FTS5 query for a search term: a phrase (the term in double quotes, inner quotes doubled),
/// which the trigram tokenizer matches as a substring, case-insensitively.
fn trigram_phrase(term: &SearchTerm) -> String {
    format!("\"{}\"", term.as_str().replace('"', "\"\""))
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.readers).await.context("pinging SQLite")?;
        Ok(())
    }

    async fn add_subscriber(&self, email: &SubscriberEmail, now: i64) -> StoreResult<()> {
        let op = WriteOp::AddSubscriber {
            email: email.as_str().to_owned(),
            key: email.key().to_owned(),
            now,
        };
        self.writer.write(op).await?;
        Ok(())
    }

    async fn remove_subscriber(&self, email: &SubscriberEmail) -> StoreResult<bool> {
        let op = WriteOp::RemoveSubscriber { key: email.key().to_owned() };
        Ok(self.writer.write(op).await? > 0)
    }

    async fn list_subscribers(
        &self,
        search: Option<&SearchTerm>,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<Subscriber>> {
        let before = before.unwrap_or(i64::MAX);
        let rows: Vec<Subscriber> = match search {
            None => {
                sqlx::query_as(
                    "SELECT id, email, created_at FROM subscribers
                     WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
                )
                .bind(before)
                .bind(limit)
                .fetch_all(&self.readers)
                .await
            }
            // The trigram index hands out matches newest first; stop at the page's end.
            Some(term) => {
                sqlx::query_as(
                    "SELECT s.id, s.email, s.created_at
                     FROM (SELECT rowid AS id FROM subscribers_search
                           WHERE subscribers_search MATCH ?1 AND rowid < ?2
                           ORDER BY rowid DESC LIMIT ?3) AS hit
                     JOIN subscribers AS s ON s.id = hit.id
                     ORDER BY s.id DESC",
                )
                .bind(trigram_phrase(term))
                .bind(before)
                .bind(limit)
                .fetch_all(&self.readers)
                .await
            }
        }
        .context("listing subscribers")?;
        Ok(rows)
    }

    async fn walk_matching(
        &self,
        term: &SearchTerm,
        before: Option<i64>,
        window: u32,
        limit: u32,
    ) -> StoreResult<Walk> {
        let before = before.unwrap_or(i64::MAX);
        let stopped_at: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM subscribers WHERE id < ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2",
        )
        .bind(before)
        .bind(window)
        .fetch_optional(&self.readers)
        .await
        .context("finding where a search walk ends")?;
        // The key holds the local part lower-cased and the domain as ASCII, the address the
        // domain in Unicode (already lower-case): between them every case-insensitive match.
        let rows = sqlx::query_as(
            "SELECT id, email, created_at FROM subscribers
             WHERE id < ?1 AND id > ?2 AND (instr(email_key, ?3) > 0 OR instr(email, ?3) > 0)
             ORDER BY id DESC LIMIT ?4",
        )
        .bind(before)
        .bind(stopped_at.unwrap_or(i64::MIN))
        .bind(term.as_str())
        .bind(limit)
        .fetch_all(&self.readers)
        .await
        .context("walking the list for a search")?;
        Ok(Walk { rows, stopped_at })
    }

    async fn count_subscribers(&self) -> StoreResult<u64> {
        let count: i64 = sqlx::query_scalar("SELECT n FROM subscriber_count WHERE id = 1")
            .fetch_one(&self.readers)
            .await
            .context("reading the subscriber count")?;
        Ok(u64::try_from(count).unwrap_or_default())
    }

    async fn count_matching(&self, search: &SearchTerm, cap: u64) -> StoreResult<u64> {
        let cap = i64::try_from(cap).unwrap_or(i64::MAX);
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT 1 FROM subscribers_search
                                   WHERE subscribers_search MATCH ?1 LIMIT ?2)",
        )
        .bind(trigram_phrase(search))
        .bind(cap)
        .fetch_one(&self.readers)
        .await
        .context("counting matching subscribers")?;
        Ok(u64::try_from(count).unwrap_or_default())
    }

    async fn admin_password_hash(&self) -> StoreResult<Option<String>> {
        let hash = sqlx::query_scalar("SELECT password_hash FROM admin_credential WHERE id = 1")
            .fetch_optional(&self.readers)
            .await
            .context("reading the admin credential")?;
        Ok(hash)
    }

    async fn swap_admin_password_hash(
        &self,
        expected: Option<&str>,
        phc: &str,
        now: i64,
    ) -> StoreResult<bool> {
        let op = WriteOp::SwapAdminHash {
            expected: expected.map(str::to_owned),
            phc: phc.to_owned(),
            now,
        };
        Ok(self.writer.write(op).await? == 1)
    }

    async fn close(&self) {
        if let Err(e) = self.writer.write(WriteOp::Flush).await {
            tracing::warn!(error = format!("{e:#}"), "could not flush the SQLite writer");
        }
        let stats = self.writer.stats();
        let writes = stats.writes.load(Ordering::Relaxed);
        let commits = stats.commits.load(Ordering::Relaxed).max(1);
        // Writes per commit is how much group commit saved in fsyncs.
        tracing::info!(
            writes,
            commits,
            per_commit = writes as f64 / commits as f64,
            "SQLite writer flushed"
        );
    }

    async fn load_session(&self, key: &SessionKey, now: i64) -> StoreResult<Option<String>> {
        let ticket = match self.sessions.lookup(key, now) {
            Lookup::Hit(data) => return Ok(data.map(|d| d.to_string())),
            Lookup::Miss(ticket) => ticket,
        };
        let row: Option<(String, i64)> = sqlx::query_as(
            "SELECT data, expires_at FROM sessions WHERE key = ? AND expires_at > ?",
        )
        .bind(&key[..])
        .bind(now)
        .fetch_optional(&self.readers)
        .await
        .context("loading a session")?;
        let found = row.as_ref().map(|(data, expires)| (Arc::from(data.as_str()), *expires));
        self.sessions.fill(key, found, ticket);
        Ok(row.map(|(data, _)| data))
    }

    async fn create_session(
        &self,
        key: &SessionKey,
        data: &str,
        expires_at: i64,
    ) -> StoreResult<bool> {
        let op = WriteOp::CreateSession { key: *key, data: data.to_owned(), expires_at };
        Ok(self.writer.write(op).await? == 1)
    }

    async fn save_session(&self, key: &SessionKey, data: &str, expires_at: i64) -> StoreResult<()> {
        let op = WriteOp::SaveSession { key: *key, data: data.to_owned(), expires_at };
        self.writer.write(op).await?;
        Ok(())
    }

    async fn delete_session(&self, key: &SessionKey) -> StoreResult<()> {
        self.writer.write(WriteOp::DeleteSession { key: *key }).await?;
        Ok(())
    }

    async fn delete_expired_sessions(&self, now: i64) -> StoreResult<u64> {
        self.writer.write(WriteOp::DeleteExpiredSessions { now }).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use super::*;

    fn limits() -> PoolLimits {
        PoolLimits {
            pool_size: 2,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_share_commits_and_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteConnectOptions::new().filename(dir.path().join("t.db"));
        let store = SqliteStore::open(options, limits()).await.unwrap();
        let writes: Vec<_> = (0..500)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let email = SubscriberEmail::parse(&format!("user{i}@example.com")).unwrap();
                    store.add_subscriber(&email, 0).await
                })
            })
            .collect();
        for write in writes {
            write.await.unwrap().unwrap();
        }
        assert_eq!(store.count_subscribers().await.unwrap(), 500);
        let stats = store.writer.stats();
        let (commits, writes) =
            (stats.commits.load(Ordering::Relaxed), stats.writes.load(Ordering::Relaxed));
        assert!(writes >= 500);
        assert!(commits < writes / 2, "{writes} writes in {commits} commits: no batching");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_statement_fails_alone_and_the_batch_still_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store =
            SqliteStore::open(SqliteConnectOptions::new().filename(&path), limits()).await.unwrap();
        // Make one kind of write fail at statement level, as a constraint would.
        let mut side = SqliteConnectOptions::new().filename(&path).connect().await.unwrap();
        sqlx::query(
            "CREATE TRIGGER refuse BEFORE INSERT ON sessions BEGIN SELECT RAISE(ABORT, 'no'); END",
        )
        .execute(&mut side)
        .await
        .unwrap();
        let writes: Vec<_> = (0..100u8)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    if i % 2 == 0 {
                        let email = SubscriberEmail::parse(&format!("u{i}@example.com")).unwrap();
                        store.add_subscriber(&email, 0).await.is_ok()
                    } else {
                        store.create_session(&[i; 32], "{}", 1).await.is_ok()
                    }
                })
            })
            .collect();
        for (i, write) in writes.into_iter().enumerate() {
            assert_eq!(write.await.unwrap(), i % 2 == 0, "write {i}");
        }
        assert_eq!(store.count_subscribers().await.unwrap(), 50);
    }

    #[tokio::test]
    async fn counts_are_maintained_and_match_counts_stop_at_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteConnectOptions::new().filename(dir.path().join("t.db"));
        let store = SqliteStore::open(options, limits()).await.unwrap();
        for i in 0..30 {
            let email = SubscriberEmail::parse(&format!("member{i}@club.example")).unwrap();
            store.add_subscriber(&email, 0).await.unwrap();
        }
        let again = SubscriberEmail::parse("MEMBER1@club.example").unwrap();
        store.add_subscriber(&again, 0).await.unwrap();
        assert_eq!(store.count_subscribers().await.unwrap(), 30, "a duplicate is not counted");
        store.remove_subscriber(&again).await.unwrap();
        assert_eq!(store.count_subscribers().await.unwrap(), 29);

        let term = SearchTerm::parse("club").unwrap().unwrap();
        assert_eq!(store.count_matching(&term, 10).await.unwrap(), 10);
        assert_eq!(store.count_matching(&term, 100).await.unwrap(), 29);
        let digits = SearchTerm::parse("er2").unwrap().unwrap();
        // member2 and member20..member29
        assert_eq!(store.count_matching(&digits, 100).await.unwrap(), 11);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn grouped_inserts_answer_each_write_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteConnectOptions::new().filename(dir.path().join("t.db"));
        let store = SqliteStore::open(options, limits()).await.unwrap();
        let taken = [9u8; 32];
        store.create_session(&taken, "{}", i64::MAX).await.unwrap();
        let writes: Vec<_> = (0..200u8)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    match i % 4 {
                        // Two spellings of each of 50 addresses.
                        0 => store
                            .add_subscriber(
                                &SubscriberEmail::parse(&format!("p{i}@x.example")).unwrap(),
                                0,
                            )
                            .await
                            .map(|_| true),
                        1 => store
                            .add_subscriber(
                                &SubscriberEmail::parse(&format!("P{}@X.example", i - 1)).unwrap(),
                                0,
                            )
                            .await
                            .map(|_| true),
                        // New sessions, and one id that is already taken.
                        2 => store.create_session(&[i; 32], "{}", i64::MAX).await,
                        _ => store
                            .create_session(&taken, "{}", i64::MAX)
                            .await
                            .map(|created| !created),
                    }
                })
            })
            .collect();
        for write in writes {
            assert!(write.await.unwrap().unwrap());
        }
        assert_eq!(store.count_subscribers().await.unwrap(), 50);
        assert_eq!(store.list_subscribers(None, None, 100).await.unwrap().len(), 50);
    }
}
