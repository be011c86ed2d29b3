//! The trigram index, kept up in the writer's idle time: inserting into an FTS5 index costs more
//! than the rest of a new row together, so signups and imports commit without it and the writer
//! indexes the newest rows in steps when nothing else waits (and at least once a second under
//! load). Until then, searches read those rows directly (`UNINDEXED_TAIL`), so every row is
//! searchable from its commit on.

use std::time::Duration;

use anyhow::Context;
use sqlx::{Executor, SqliteConnection};

/// Rows one step indexes: about 15 ms of work, the longest a write waits behind a step.
pub(super) const STEP: i64 = 2_000;
/// How long the queue stays empty before the writer spends the time on the index.
pub(super) const IDLE: Duration = Duration::from_millis(50);
/// The most the index trails the list while writes never stop.
pub(super) const MAX_LAG: Duration = Duration::from_secs(1);

/// The rows not yet in the index: the condition a search adds for them, inside its statement so
/// that it sees the same snapshot as the index.
pub(super) const UNINDEXED_TAIL: &str = "id > (SELECT indexed_up_to FROM search_progress)";

/// Indexes up to `STEP` rows in one transaction; returns how many.
pub(super) async fn step(c: &mut SqliteConnection) -> anyhow::Result<i64> {
    c.execute("BEGIN IMMEDIATE").await.context("starting to index")?;
    let indexed = match index(c).await {
        Ok(n) => c.execute("COMMIT").await.map(|_| n).context("committing the index"),
        Err(e) => Err(e),
    };
    if indexed.is_err() {
        let _ = c.execute("ROLLBACK").await;
    }
    indexed
}

async fn index(c: &mut SqliteConnection) -> anyhow::Result<i64> {
    let (from, upto, rows): (i64, Option<i64>, i64) = sqlx::query_as(
        "SELECT p.indexed_up_to, max(s.id), count(s.id)
         FROM search_progress AS p
         LEFT JOIN (SELECT id FROM subscribers
                    WHERE id > (SELECT indexed_up_to FROM search_progress)
                    ORDER BY id LIMIT ?1) AS s",
    )
    .bind(STEP)
    .fetch_one(&mut *c)
    .await
    .context("finding rows to index")?;
    let Some(upto) = upto else { return Ok(0) };
    sqlx::query(
        "INSERT INTO subscribers_search (rowid, text)
         SELECT id, CASE WHEN lower(email) = email_key THEN email_key
                         ELSE email_key || ' ' || email END
         FROM subscribers WHERE id > ?1 AND id <= ?2",
    )
    .bind(from)
    .bind(upto)
    .execute(&mut *c)
    .await
    .context("indexing rows for search")?;
    sqlx::query("UPDATE search_progress SET indexed_up_to = ?1")
        .bind(upto)
        .execute(&mut *c)
        .await
        .context("recording the index's progress")?;
    Ok(rows)
}
