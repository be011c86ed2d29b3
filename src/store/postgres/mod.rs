use std::future::Future;
use std::time::Duration;

use anyhow::{Context, anyhow};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::{PoolLimits, StoreResult};

mod announcements;
mod consent;
mod owner;
mod queries;
mod search_index;
mod webhooks;

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
