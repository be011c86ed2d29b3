use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;
use async_trait::async_trait;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::{PoolLimits, SessionKey, Store, StoreResult, Subscriber};
use crate::domain::{SearchTerm, SubscriberEmail};

/// SQLite allows one writer at a time, so writes go through a pool of exactly one connection and
/// never fight over the lock; reads use their own pool and run beside it (WAL).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    readers: SqlitePool,
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
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(limits.connect_timeout)
            .connect_with(options.clone())
            .await
            .context("opening the SQLite database")?;
        // sqlx locks migrations on PostgreSQL but not on SQLite; instances sharing one file take
        // turns through an exclusive flock (independent of SQLite's own fcntl locks).
        let path = options.get_filename().to_path_buf();
        let migration_lock = tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&path)?;
            file.lock()?;
            Ok::<_, std::io::Error>(file)
        })
        .await
        .context("waiting for the migration lock")?
        .context("locking the database file for migrations")?;
        sqlx::migrate!("migrations/sqlite")
            .run(&writer)
            .await
            .context("applying SQLite migrations")?;
        drop(migration_lock);
        let readers = SqlitePoolOptions::new()
            .max_connections(limits.pool_size)
            .acquire_timeout(limits.connect_timeout)
            .connect_with(options.read_only(true))
            .await
            .context("opening SQLite read connections")?;
        Ok(Self { writer, readers })
    }
}

/// The list is personal data: a new database file is readable by its owner only, and SQLite
/// gives its -wal and -shm files the same mode.
fn create_private_file(path: &Path) -> anyhow::Result<()> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

fn search_pattern(search: Option<&SearchTerm>) -> Option<String> {
    search.map(SearchTerm::like_pattern)
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.readers)
            .await
            .context("pinging SQLite")?;
        Ok(())
    }

    async fn add_subscriber(&self, email: &SubscriberEmail, now: i64) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO subscribers (email, email_key, created_at) VALUES (?, ?, ?)
             ON CONFLICT (email_key) DO NOTHING",
        )
        .bind(email.as_str())
        .bind(email.key())
        .bind(now)
        .execute(&self.writer)
        .await
        .context("adding a subscriber")?;
        Ok(())
    }

    async fn remove_subscriber(&self, email: &SubscriberEmail) -> StoreResult<bool> {
        let result = sqlx::query("DELETE FROM subscribers WHERE email_key = ?")
            .bind(email.key())
            .execute(&self.writer)
            .await
            .context("removing a subscriber")?;
        Ok(result.rows_affected() > 0)
    }

    async fn list_subscribers(
        &self,
        search: Option<&SearchTerm>,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<Subscriber>> {
        let rows: Vec<(i64, String, i64)> = sqlx::query_as(
            "SELECT id, email, created_at FROM subscribers
             WHERE (?1 IS NULL OR id < ?1)
               AND (?2 IS NULL OR email_key LIKE ?2 ESCAPE '\\' OR email LIKE ?2 ESCAPE '\\')
             ORDER BY id DESC LIMIT ?3",
        )
        .bind(before)
        .bind(search_pattern(search))
        .bind(limit)
        .fetch_all(&self.readers)
        .await
        .context("listing subscribers")?;
        Ok(rows
            .into_iter()
            .map(|(id, email, created_at)| Subscriber {
                id,
                email,
                created_at,
            })
            .collect())
    }

    async fn count_subscribers(&self, search: Option<&SearchTerm>) -> StoreResult<u64> {
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM subscribers
             WHERE ?1 IS NULL OR email_key LIKE ?1 ESCAPE '\\' OR email LIKE ?1 ESCAPE '\\'",
        )
        .bind(search_pattern(search))
        .fetch_one(&self.readers)
        .await
        .context("counting subscribers")?;
        Ok(u64::try_from(count).unwrap_or_default())
    }

    async fn admin_password_hash(&self) -> StoreResult<Option<String>> {
        let hash = sqlx::query_scalar("SELECT password_hash FROM admin_credential WHERE id = 1")
            .fetch_optional(&self.readers)
            .await
            .context("reading the admin credential")?;
        Ok(hash)
    }

    async fn set_admin_password_hash(&self, phc: &str, now: i64) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO admin_credential (id, password_hash, updated_at) VALUES (1, ?, ?)
             ON CONFLICT (id) DO UPDATE SET password_hash = excluded.password_hash,
                                            updated_at = excluded.updated_at",
        )
        .bind(phc)
        .bind(now)
        .execute(&self.writer)
        .await
        .context("storing the admin credential")?;
        Ok(())
    }

    async fn create_admin_password_hash(&self, phc: &str, now: i64) -> StoreResult<bool> {
        let result = sqlx::query(
            "INSERT INTO admin_credential (id, password_hash, updated_at) VALUES (1, ?, ?)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(phc)
        .bind(now)
        .execute(&self.writer)
        .await
        .context("storing the first admin credential")?;
        Ok(result.rows_affected() == 1)
    }

    async fn load_session(&self, key: &SessionKey, now: i64) -> StoreResult<Option<String>> {
        let data = sqlx::query_scalar("SELECT data FROM sessions WHERE key = ? AND expires_at > ?")
            .bind(&key[..])
            .bind(now)
            .fetch_optional(&self.readers)
            .await
            .context("loading a session")?;
        Ok(data)
    }

    async fn create_session(
        &self,
        key: &SessionKey,
        data: &str,
        expires_at: i64,
    ) -> StoreResult<bool> {
        let result = sqlx::query(
            "INSERT INTO sessions (key, data, expires_at) VALUES (?, ?, ?) ON CONFLICT (key) DO NOTHING",
        )
        .bind(&key[..])
        .bind(data)
        .bind(expires_at)
        .execute(&self.writer)
        .await
        .context("creating a session")?;
        Ok(result.rows_affected() == 1)
    }

    async fn save_session(&self, key: &SessionKey, data: &str, expires_at: i64) -> StoreResult<()> {
        sqlx::query("UPDATE sessions SET data = ?, expires_at = ? WHERE key = ?")
            .bind(data)
            .bind(expires_at)
            .bind(&key[..])
            .execute(&self.writer)
            .await
            .context("saving a session")?;
        Ok(())
    }

    async fn delete_session(&self, key: &SessionKey) -> StoreResult<()> {
        sqlx::query("DELETE FROM sessions WHERE key = ?")
            .bind(&key[..])
            .execute(&self.writer)
            .await
            .context("deleting a session")?;
        Ok(())
    }

    async fn delete_expired_sessions(&self, now: i64) -> StoreResult<u64> {
        let result = sqlx::query("DELETE FROM sessions WHERE expires_at <= ?")
            .bind(now)
            .execute(&self.writer)
            .await
            .context("deleting expired sessions")?;
        Ok(result.rows_affected())
    }
}
