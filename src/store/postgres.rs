use std::future::Future;
use std::time::Duration;

use anyhow::{Context, anyhow};
use async_trait::async_trait;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::{PoolLimits, SessionKey, Store, StoreResult, Subscriber, Walk};
use crate::domain::{SearchTerm, SubscriberEmail};

/// PostgreSQL, shared by any number of instances. Every call is bounded in time on our side too:
/// `statement_timeout` cannot help when the network, not the server, has gone quiet.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    deadline: Duration,
}

impl PostgresStore {
    /// Connects and applies migrations. sqlx's migrator holds an advisory lock while it works,
    /// so instances starting together apply each migration exactly once.
    pub async fn open(options: PgConnectOptions, limits: PoolLimits) -> anyhow::Result<Self> {
        let statement_ms = limits.statement_timeout.as_millis().to_string();
        let options = options
            .application_name("enlist")
            .options([("statement_timeout", statement_ms.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(limits.pool_size)
            .acquire_timeout(limits.connect_timeout)
            .connect_with(options)
            .await
            .context("connecting to PostgreSQL")?;
        sqlx::migrate!("migrations/postgres")
            .run(&pool)
            .await
            .context("applying PostgreSQL migrations")?;
        Ok(Self { pool, deadline: limits.connect_timeout + limits.statement_timeout })
    }

    async fn bounded<T>(
        &self,
        doing: &'static str,
        work: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> StoreResult<T> {
        match tokio::time::timeout(self.deadline, work).await {
            Ok(result) => Ok(result.context(doing)?),
            Err(_) => Err(anyhow!("no answer from PostgreSQL within {:?}", self.deadline)
                .context(doing)
                .into()),
        }
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn ping(&self) -> StoreResult<()> {
        self.bounded("pinging PostgreSQL", sqlx::query("SELECT 1").execute(&self.pool)).await?;
        Ok(())
    }

    async fn add_subscriber(&self, email: &SubscriberEmail, now: i64) -> StoreResult<()> {
        let insert = sqlx::query(
            "INSERT INTO subscribers (email, email_key, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (email_key) DO NOTHING",
        )
        .bind(email.as_str())
        .bind(email.key())
        .bind(now)
        .execute(&self.pool);
        self.bounded("adding a subscriber", insert).await?;
        Ok(())
    }

    async fn remove_subscriber(&self, email: &SubscriberEmail) -> StoreResult<bool> {
        let delete = sqlx::query("DELETE FROM subscribers WHERE email_key = $1")
            .bind(email.key())
            .execute(&self.pool);
        let result = self.bounded("removing a subscriber", delete).await?;
        Ok(result.rows_affected() > 0)
    }

    async fn list_subscribers(
        &self,
        search: Option<&SearchTerm>,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<Subscriber>> {
        // With a search, the planner picks between the trigram indexes (rare terms) and walking
        // the primary key newest first until the page is full (common terms).
        let select = sqlx::query_as::<_, Subscriber>(
            "SELECT id, email, created_at FROM subscribers
             WHERE id < $1
               AND ($2::TEXT IS NULL OR email_key LIKE $2 ESCAPE '\\'
                                     OR lower(email) LIKE $2 ESCAPE '\\')
             ORDER BY id DESC LIMIT $3",
        )
        .bind(before.unwrap_or(i64::MAX))
        .bind(search.map(SearchTerm::like_pattern))
        .bind(i64::from(limit))
        .fetch_all(&self.pool);
        let rows = self.bounded("listing subscribers", select).await?;
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
        let boundary = sqlx::query_scalar::<_, i64>(
            "SELECT id FROM subscribers WHERE id < $1 ORDER BY id DESC LIMIT 1 OFFSET $2",
        )
        .bind(before)
        .bind(i64::from(window))
        .fetch_optional(&self.pool);
        let stopped_at = self.bounded("finding where a search walk ends", boundary).await?;
        // The key holds the local part lower-cased and the domain as ASCII, the address the
        // domain in Unicode (already lower-case): between them every case-insensitive match.
        let select = sqlx::query_as::<_, Subscriber>(
            "SELECT id, email, created_at FROM subscribers
             WHERE id < $1 AND id > $2 AND (strpos(email_key, $3) > 0 OR strpos(email, $3) > 0)
             ORDER BY id DESC LIMIT $4",
        )
        .bind(before)
        .bind(stopped_at.unwrap_or(i64::MIN))
        .bind(term.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.pool);
        let rows = self.bounded("walking the list for a search", select).await?;
        Ok(Walk { rows, stopped_at })
    }

    async fn count_subscribers(&self) -> StoreResult<u64> {
        let sum =
            sqlx::query_scalar::<_, i64>("SELECT CAST(sum(n) AS BIGINT) FROM subscriber_counts")
                .fetch_one(&self.pool);
        let count = self.bounded("reading the subscriber count", sum).await?;
        Ok(u64::try_from(count).unwrap_or_default())
    }

    async fn count_matching(&self, search: &SearchTerm, cap: u64) -> StoreResult<u64> {
        let count = sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM (SELECT 1 FROM subscribers
                                   WHERE email_key LIKE $1 ESCAPE '\\'
                                      OR lower(email) LIKE $1 ESCAPE '\\'
                                   LIMIT $2) AS capped",
        )
        .bind(search.like_pattern())
        .bind(i64::try_from(cap).unwrap_or(i64::MAX))
        .fetch_one(&self.pool);
        let count = self.bounded("counting matching subscribers", count).await?;
        Ok(u64::try_from(count).unwrap_or_default())
    }

    async fn admin_password_hash(&self) -> StoreResult<Option<String>> {
        let select = sqlx::query_scalar("SELECT password_hash FROM admin_credential WHERE id = 1")
            .fetch_optional(&self.pool);
        self.bounded("reading the admin credential", select).await
    }

    async fn swap_admin_password_hash(
        &self,
        expected: Option<&str>,
        phc: &str,
        now: i64,
    ) -> StoreResult<bool> {
        let swap = match expected {
            None => sqlx::query(
                "INSERT INTO admin_credential (id, password_hash, updated_at) VALUES (1, $1, $2)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(phc)
            .bind(now),
            Some(expected) => sqlx::query(
                "UPDATE admin_credential SET password_hash = $1, updated_at = $2
                 WHERE id = 1 AND password_hash = $3",
            )
            .bind(phc)
            .bind(now)
            .bind(expected),
        }
        .execute(&self.pool);
        let result = self.bounded("storing the admin credential", swap).await?;
        Ok(result.rows_affected() == 1)
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    async fn load_session(&self, key: &SessionKey, now: i64) -> StoreResult<Option<String>> {
        let select =
            sqlx::query_scalar("SELECT data FROM sessions WHERE key = $1 AND expires_at > $2")
                .bind(&key[..])
                .bind(now)
                .fetch_optional(&self.pool);
        self.bounded("loading a session", select).await
    }

    async fn create_session(
        &self,
        key: &SessionKey,
        data: &str,
        expires_at: i64,
    ) -> StoreResult<bool> {
        let insert = sqlx::query(
            "INSERT INTO sessions (key, data, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(&key[..])
        .bind(data)
        .bind(expires_at)
        .execute(&self.pool);
        let result = self.bounded("creating a session", insert).await?;
        Ok(result.rows_affected() == 1)
    }

    async fn save_session(&self, key: &SessionKey, data: &str, expires_at: i64) -> StoreResult<()> {
        let update = sqlx::query("UPDATE sessions SET data = $1, expires_at = $2 WHERE key = $3")
            .bind(data)
            .bind(expires_at)
            .bind(&key[..])
            .execute(&self.pool);
        self.bounded("saving a session", update).await?;
        Ok(())
    }

    async fn delete_session(&self, key: &SessionKey) -> StoreResult<()> {
        let delete =
            sqlx::query("DELETE FROM sessions WHERE key = $1").bind(&key[..]).execute(&self.pool);
        self.bounded("deleting a session", delete).await?;
        Ok(())
    }

    async fn delete_expired_sessions(&self, now: i64) -> StoreResult<u64> {
        let delete = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool);
        let result = self.bounded("deleting expired sessions", delete).await?;
        Ok(result.rows_affected())
    }
}
