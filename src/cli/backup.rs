//! `enlist backup FILE`: a consistent copy of a SQLite database, also while a server runs
//! (`store::copy_database` says how), put in place only once it is whole, private and on disk.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;

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
    // A private directory beside the target: the copy is personal data from its first byte,
    // and appears under its name only once it is whole and on disk.
    let parent = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let staging = parent.join(format!(".enlist-backup-{}", std::process::id()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .with_context(|| format!("creating {}", staging.display()))?;
    let result = copy(options, &staging, target).await;
    let _ = std::fs::remove_dir_all(&staging);
    result
}

async fn copy(
    source: &sqlx::sqlite::SqliteConnectOptions,
    staging: &Path,
    target: &Path,
) -> Result<Backup, ToolError> {
    let staged = staging.join("copy.db");
    let subscribers = crate::store::copy_database(source, &staged).await?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))
        .context("making the copy private")?;
    std::fs::File::open(&staged).and_then(|f| f.sync_all()).context("syncing the copy")?;
    std::fs::rename(&staged, target)
        .with_context(|| format!("moving the copy to {}", target.display()))?;
    if let Some(dir) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    let bytes = std::fs::metadata(target).map(|m| m.len()).unwrap_or_default();
    Ok(Backup { path: target.to_path_buf(), bytes, subscribers })
}
