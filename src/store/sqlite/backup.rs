//! A consistent copy of a SQLite database, also while a server owns it.
//!
//! `VACUUM INTO` on a read-only connection of the calling process: enlist's lock on the file keeps
//! other enlist processes from *writing*; SQLite's WAL lets any process read one consistent
//! snapshot beside the writer, so the copy holds every commit made before it began.

use std::path::Path;

use anyhow::Context;
use sqlx::ConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;

/// Writes the database `source` names to `copy` (which must not exist), checks the copy with
/// `PRAGMA integrity_check`, and returns how many subscribers it holds.
pub async fn copy_database(source: &SqliteConnectOptions, copy: &Path) -> anyhow::Result<i64> {
    let source = source.clone().read_only(true).create_if_missing(false);
    let mut connection = source.connect().await.context("opening the database to copy")?;
    let copy_name = copy.to_str().context("a backup path that is not UTF-8")?;
    sqlx::query("VACUUM INTO ?1")
        .bind(copy_name)
        .execute(&mut connection)
        .await
        .context("copying the database")?;
    let mut check = SqliteConnectOptions::new()
        .filename(copy)
        .read_only(true)
        .connect()
        .await
        .context("opening the copy")?;
    let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut check)
        .await
        .context("checking the copy")?;
    anyhow::ensure!(integrity == "ok", "the copy failed SQLite's integrity check: {integrity}");
    let subscribers = sqlx::query_scalar("SELECT count(*) FROM subscribers")
        .fetch_one(&mut check)
        .await
        .context("counting the copy's subscribers")?;
    Ok(subscribers)
}
