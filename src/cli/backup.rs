//! `enlist backup FILE`: a consistent copy of a SQLite database, also while a server runs.
//!
//! The copy is SQLite's own `VACUUM INTO` on a read-only connection of this process. enlist's
//! lock on the file keeps other enlist processes from *writing*; SQLite's WAL lets any process
//! read one consistent snapshot beside the writer, so the copy holds every commit made before it
//! began (every acknowledged signup) and none half-made, without stopping the server.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use sqlx::ConnectOptions;

use super::ToolError;
use crate::config::{DatabaseUrl, SettingError, Settings};

/// What was written.
pub struct Backup {
    pub path: PathBuf,
    pub bytes: u64,
    pub subscribers: i64,
}

pub async fn run(settings: &Settings, target: &Path) -> Result<Backup, ToolError> {
    let DatabaseUrl::Sqlite(options) = &settings.database else {
        return Err(SettingError::new(
            "--database-url (ENLIST_DATABASE_URL)",
            "enlist backup copies a SQLite file; back up PostgreSQL with pg_dump",
        )
        .into());
    };
    if target.exists() {
        return Err(anyhow::anyhow!(
            "{} exists already; a backup never overwrites",
            target.display()
        )
        .into());
    }
    let source = options.clone().read_only(true).create_if_missing(false);
    let mut connection = source.connect().await.context("opening the database to copy")?;
    // A private directory beside the target: the copy is personal data from its first byte,
    // and appears under its name only once it is whole and on disk.
    let parent = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let staging = parent.join(format!(".enlist-backup-{}", std::process::id()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .with_context(|| format!("creating {}", staging.display()))?;
    let result = copy(&mut connection, &staging, target).await;
    let _ = std::fs::remove_dir_all(&staging);
    result
}

async fn copy(
    connection: &mut sqlx::SqliteConnection,
    staging: &Path,
    target: &Path,
) -> Result<Backup, ToolError> {
    let staged = staging.join("copy.db");
    let staged_name = staged.to_str().context("a backup path that is not UTF-8")?;
    sqlx::query("VACUUM INTO ?1")
        .bind(staged_name)
        .execute(&mut *connection)
        .await
        .context("copying the database")?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))
        .context("making the copy private")?;
    let mut check = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&staged)
        .read_only(true)
        .connect()
        .await
        .context("opening the copy")?;
    let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut check)
        .await
        .context("checking the copy")?;
    if integrity != "ok" {
        return Err(anyhow::anyhow!("the copy failed SQLite's integrity check: {integrity}").into());
    }
    let subscribers: i64 = sqlx::query_scalar("SELECT count(*) FROM subscribers")
        .fetch_one(&mut check)
        .await
        .context("counting the copy's subscribers")?;
    drop(check);
    std::fs::File::open(&staged).and_then(|f| f.sync_all()).context("syncing the copy")?;
    std::fs::rename(&staged, target)
        .with_context(|| format!("moving the copy to {}", target.display()))?;
    if let Some(dir) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    let bytes = std::fs::metadata(target).map(|m| m.len()).unwrap_or_default();
    Ok(Backup { path: target.to_path_buf(), bytes, subscribers })
}
