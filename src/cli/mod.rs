//! The command-line tools: thin over the same store and signup rules as the server.

pub mod announce;
pub mod backup;
pub mod export;
pub mod import;
pub mod token;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use crate::config::{DatabaseUrl, SettingError, Settings};
use crate::store::{DatabaseInUse, PoolLimits, Store};

/// Why a tool stopped. A bad setting exits with code 2, anything else with 1.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error(transparent)]
    Setting(#[from] SettingError),
    /// A running server owns the SQLite file; the message says which way in to use instead.
    #[error("{0}")]
    InUse(String),
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// Opens the database a tool works on. A SQLite file belongs to one process: when a server holds
/// it, say so, and name the ways in that go through that server.
pub async fn open_store(settings: &Settings, instead: &str) -> Result<Arc<dyn Store>, ToolError> {
    crate::install_tls_provider();
    let limits = PoolLimits {
        pool_size: 4,
        // A server that holds the file does not let go; a moment is enough to know.
        connect_timeout: Duration::from_millis(200).max(match settings.database {
            DatabaseUrl::Sqlite(_) => Duration::ZERO,
            DatabaseUrl::Postgres(_) => settings.database_connect_timeout,
        }),
        statement_timeout: Duration::from_secs(600),
    };
    crate::store::open(&settings.database, limits, crate::store::Role::Tool).await.map_err(|e| {
        match e.downcast_ref::<DatabaseInUse>() {
            Some(in_use) => ToolError::InUse(format!(
                "a running enlist server holds {}: {instead}",
                in_use.0.display()
            )),
            None => ToolError::Failed(e.context("opening the database")),
        }
    })
}
