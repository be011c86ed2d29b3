//! Announcements in SQLite: drafts, the send's state, and the steps that turn its audience into
//! outbox rows. Writes go through the writer like every other.

use std::sync::{Arc, Mutex};

use anyhow::Context;
use sqlx::SqliteConnection;

use super::SqliteStore;
use super::ops::WriteOp;
use crate::domain::{AnnouncementAction, AnnouncementState};
use crate::store::announcement_records::ANNOUNCEMENT_COLUMNS;
use crate::store::{AnnouncementRecord, Expansion, FailureGroup, Pace, StoreResult};

/// The announcement writes the writer task runs, each in its own savepoint.
pub(super) enum AnnouncementOp {
    Create { subject: String, body: String, now: i64 },
    Update { id: i64, subject: String, body: String, now: i64 },
    Start { id: i64, now_ms: i64 },
    Change { id: i64, action: AnnouncementAction, now: i64 },
    Expand { id: i64, pace: Pace, now_ms: i64, done: Arc<Mutex<Expansion>> },
    QueueTest { id: i64, to: String, now: i64 },
}

impl AnnouncementOp {
    pub(super) fn describe(&self) -> &'static str {
        match self {
            Self::Create { .. } => "saving an announcement",
            Self::Update { .. } => "changing an announcement",
            Self::Start { .. } => "starting to send an announcement",
            Self::Change { .. } => "pausing, resuming or cancelling an announcement",
            Self::Expand { .. } => "queuing an announcement's mails",
            Self::QueueTest { .. } => "queuing a test mail",
        }
    }

    /// Returns the new announcement's id, or the rows affected.
    pub(super) async fn run(&self, c: &mut SqliteConnection) -> anyhow::Result<u64> {
        match self {
            Self::Create { subject, body, now } => {
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO announcements (subject, body, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?3) RETURNING id",
                )
                .bind(subject.as_str())
                .bind(body.as_str())
                .bind(*now)
                .fetch_one(&mut *c)
                .await?;
                Ok(u64::try_from(id)?)
            }
            Self::Update { id, subject, body, now } => Ok(sqlx::query(
                "UPDATE announcements SET subject = ?2, body = ?3, updated_at = ?4
                 WHERE id = ?1 AND state = 'draft'",
            )
            .bind(*id)
            .bind(subject.as_str())
            .bind(body.as_str())
            .bind(*now)
            .execute(&mut *c)
            .await?
            .rows_affected()),
            // The audience: everyone confirmed now, the newest of them by id.
            Self::Start { id, now_ms } => Ok(sqlx::query(
                "UPDATE announcements
                 SET state = 'sending', started_at = ?2 / 1000, updated_at = ?2 / 1000,
                     pace_origin_ms = ?2, cursor = 0,
                     last_id = (SELECT coalesce(max(id), 0) FROM subscribers),
                     audience = (SELECT coalesce(sum(n), 0) FROM subscriber_counts
                                 WHERE status = 'confirmed')
                 WHERE id = ?1 AND state = 'draft'",
            )
            .bind(*id)
            .bind(*now_ms)
            .execute(&mut *c)
            .await?
            .rows_affected()),
            Self::Change { id, action, now } => change(c, *id, *action, *now).await,
            Self::Expand { id, pace, now_ms, done } => {
                let expansion = expand(c, *id, *pace, *now_ms).await?;
                *done.lock().unwrap_or_else(|p| p.into_inner()) = expansion;
                Ok(expansion.added)
            }
            Self::QueueTest { id, to, now } => Ok(sqlx::query(
                "INSERT INTO outbox (purpose, priority, announcement_id, to_address,
                                     next_attempt_at, created_at)
                 SELECT 'test', 0, id, ?2, ?3, ?3 FROM announcements WHERE id = ?1",
            )
            .bind(*id)
            .bind(to.as_str())
            .bind(*now)
            .execute(&mut *c)
            .await?
            .rows_affected()),
        }
    }
}

async fn change(
    c: &mut SqliteConnection,
    id: i64,
    action: AnnouncementAction,
    now: i64,
) -> anyhow::Result<u64> {
    let query = match action {
        AnnouncementAction::Pause => {
            "UPDATE announcements SET state = 'paused', paused_at = ?2, updated_at = ?2
             WHERE id = ?1 AND state = 'sending'"
        }
        AnnouncementAction::Resume => {
            "UPDATE announcements
             SET state = 'sending', paused_secs = paused_secs + max(?2 - paused_at, 0),
                 pace_origin_ms = pace_origin_ms + max(?2 - paused_at, 0) * 1000,
                 paused_at = NULL, updated_at = ?2
             WHERE id = ?1 AND state = 'paused'"
        }
        AnnouncementAction::Cancel => {
            "UPDATE announcements
             SET state = 'cancelled', finished_at = ?2, updated_at = ?2,
                 paused_secs = paused_secs + coalesce(max(?2 - paused_at, 0), 0), paused_at = NULL
             WHERE id = ?1 AND state IN ('sending', 'paused')"
        }
    };
    let changed = sqlx::query(query).bind(id).bind(now).execute(&mut *c).await?.rows_affected();
    if changed == 1 && action == AnnouncementAction::Cancel {
        // What is not being sent right now is never sent.
        sqlx::query(
            "DELETE FROM outbox WHERE announcement_id = ?1 AND status = 'queued'
                                  AND subscriber_id IS NOT NULL AND lease_until <= ?2",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *c)
        .await?;
    }
    Ok(changed)
}

/// One step: the next recipients in id order become outbox rows, as many as the pace allows.
async fn expand(
    c: &mut SqliteConnection,
    id: i64,
    pace: Pace,
    now_ms: i64,
) -> anyhow::Result<Expansion> {
    let now = now_ms / 1000;
    let announcement: Option<AnnouncementRecord> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ANNOUNCEMENT_COLUMNS} FROM announcements WHERE id = ?"
    )))
    .bind(id)
    .fetch_optional(&mut *c)
    .await?;
    let Some(announcement) = announcement.filter(|a| a.state == AnnouncementState::Sending) else {
        return Ok(Expansion::default());
    };
    let (Some(started_at), Some(last_id)) = (announcement.started_at, announcement.last_id) else {
        return Ok(Expansion::default());
    };
    let waiting: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE announcement_id = ? AND status = 'queued'",
    )
    .bind(id)
    .fetch_one(&mut *c)
    .await?;
    if announcement.cursor >= last_id {
        if waiting > 0 {
            return Ok(Expansion::default());
        }
        let finished = sqlx::query(
            "UPDATE announcements SET state = 'sent', finished_at = ?2, updated_at = ?2
             WHERE id = ?1 AND state = 'sending'",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *c)
        .await?
        .rows_affected();
        return Ok(Expansion { added: 0, finished: finished == 1 });
    }
    let allowed = pace.allowance(&announcement, waiting, now_ms);
    if allowed == 0 {
        return Ok(Expansion::default());
    }
    let recipients: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM subscribers
         WHERE id > ?1 AND id <= ?2 AND status = 'confirmed'
           AND coalesce(confirmed_at, created_at) <= ?3
         ORDER BY id LIMIT ?4",
    )
    .bind(announcement.cursor)
    .bind(last_id)
    .bind(started_at)
    .bind(allowed)
    .fetch_all(&mut *c)
    .await?;
    let cursor = match recipients.last() {
        Some(&newest) if recipients.len() as i64 == allowed => newest,
        _ => last_id,
    };
    let added = if recipients.is_empty() {
        0
    } else {
        let ids = serde_json::to_string(&recipients).context("listing recipients")?;
        sqlx::query(
            "INSERT INTO outbox (purpose, priority, subscriber_id, announcement_id,
                                 next_attempt_at, created_at)
             SELECT 'announcement', 2, value, ?2, ?3, ?3 FROM json_each(?1) WHERE true
             ON CONFLICT DO NOTHING",
        )
        .bind(ids)
        .bind(id)
        .bind(now)
        .execute(&mut *c)
        .await?
        .rows_affected()
    };
    sqlx::query("UPDATE announcements SET cursor = ?2, queued = queued + ?3 WHERE id = ?1")
        .bind(id)
        .bind(cursor)
        .bind(i64::try_from(added)?)
        .execute(&mut *c)
        .await?;
    Ok(Expansion { added, finished: false })
}

impl SqliteStore {
    pub(super) async fn write_announcement(&self, op: AnnouncementOp) -> StoreResult<u64> {
        self.writer.write(WriteOp::Announcement(op)).await
    }

    pub(super) async fn read_announcement(
        &self,
        id: i64,
    ) -> StoreResult<Option<AnnouncementRecord>> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {ANNOUNCEMENT_COLUMNS} FROM announcements WHERE id = ?"
        )))
        .bind(id)
        .fetch_optional(&self.readers)
        .await
        .context("reading an announcement")?)
    }

    pub(super) async fn read_announcements(
        &self,
        limit: u32,
    ) -> StoreResult<Vec<AnnouncementRecord>> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {ANNOUNCEMENT_COLUMNS} FROM announcements ORDER BY id DESC LIMIT ?"
        )))
        .bind(limit)
        .fetch_all(&self.readers)
        .await
        .context("listing announcements")?)
    }

    pub(super) async fn read_sending(&self) -> StoreResult<Vec<i64>> {
        Ok(sqlx::query_scalar("SELECT id FROM announcements WHERE state = 'sending' ORDER BY id")
            .fetch_all(&self.readers)
            .await
            .context("finding announcements to send")?)
    }

    pub(super) async fn read_failures(&self, id: i64) -> StoreResult<Vec<FailureGroup>> {
        Ok(sqlx::query_as(
            "SELECT coalesce(last_error, '') AS error, count(*) AS count FROM outbox
             WHERE announcement_id = ? AND status = 'failed' AND subscriber_id IS NOT NULL
             GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 20",
        )
        .bind(id)
        .fetch_all(&self.readers)
        .await
        .context("reading an announcement's failures")?)
    }
}
