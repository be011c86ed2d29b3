//! Announcements in PostgreSQL. Several instances may step the same send: each step locks the
//! announcement's row (skipping it when another instance holds it), so the pace is the
//! announcement's, not the instance's, and no recipient is queued twice.

use super::PostgresStore;
use crate::domain::{AnnouncementAction, AnnouncementState, AnnouncementText, SubscriberEmail};
use crate::store::announcement_records::ANNOUNCEMENT_COLUMNS;
use crate::store::{AnnouncementRecord, Expansion, FailureGroup, Pace, StoreResult};

impl PostgresStore {
    pub(super) async fn insert_announcement(
        &self,
        text: &AnnouncementText,
        now: i64,
    ) -> StoreResult<i64> {
        let insert = sqlx::query_scalar(
            "INSERT INTO announcements (subject, body, created_at, updated_at)
             VALUES ($1, $2, $3, $3) RETURNING id",
        )
        .bind(text.subject())
        .bind(text.body())
        .bind(now)
        .fetch_one(&self.pool);
        self.bounded("saving an announcement", insert).await
    }

    pub(super) async fn rewrite_announcement(
        &self,
        id: i64,
        text: &AnnouncementText,
        now: i64,
    ) -> StoreResult<bool> {
        let update = sqlx::query(
            "UPDATE announcements SET subject = $2, body = $3, updated_at = $4
             WHERE id = $1 AND state = 'draft'",
        )
        .bind(id)
        .bind(text.subject())
        .bind(text.body())
        .bind(now)
        .execute(&self.pool);
        Ok(self.bounded("changing an announcement", update).await?.rows_affected() == 1)
    }

    pub(super) async fn read_announcement(
        &self,
        id: i64,
    ) -> StoreResult<Option<AnnouncementRecord>> {
        let select = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {ANNOUNCEMENT_COLUMNS} FROM announcements WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool);
        self.bounded("reading an announcement", select).await
    }

    pub(super) async fn read_announcements(
        &self,
        limit: u32,
    ) -> StoreResult<Vec<AnnouncementRecord>> {
        let select = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {ANNOUNCEMENT_COLUMNS} FROM announcements ORDER BY id DESC LIMIT $1"
        )))
        .bind(i64::from(limit))
        .fetch_all(&self.pool);
        self.bounded("listing announcements", select).await
    }

    /// The audience: everyone confirmed now, the newest of them by id.
    pub(super) async fn begin_announcement(&self, id: i64, now_ms: i64) -> StoreResult<bool> {
        let update = sqlx::query(
            "UPDATE announcements
             SET state = 'sending', started_at = $2 / 1000, updated_at = $2 / 1000,
                 pace_origin_ms = $2, cursor = 0,
                 last_id = (SELECT coalesce(max(id), 0) FROM subscribers),
                 audience = (SELECT coalesce(sum(n), 0) FROM subscriber_counts
                             WHERE status = 'confirmed')
             WHERE id = $1 AND state = 'draft'",
        )
        .bind(id)
        .bind(now_ms)
        .execute(&self.pool);
        Ok(self.bounded("starting to send an announcement", update).await?.rows_affected() == 1)
    }

    pub(super) async fn act_on_announcement(
        &self,
        id: i64,
        action: AnnouncementAction,
        now: i64,
    ) -> StoreResult<bool> {
        let query = match action {
            AnnouncementAction::Pause => {
                "UPDATE announcements SET state = 'paused', paused_at = $2, updated_at = $2
                 WHERE id = $1 AND state = 'sending'"
            }
            AnnouncementAction::Resume => {
                "UPDATE announcements
                 SET state = 'sending', paused_secs = paused_secs + greatest($2 - paused_at, 0),
                     pace_origin_ms = pace_origin_ms + greatest($2 - paused_at, 0) * 1000,
                     paused_at = NULL, updated_at = $2
                 WHERE id = $1 AND state = 'paused'"
            }
            AnnouncementAction::Cancel => {
                "UPDATE announcements
                 SET state = 'cancelled', finished_at = $2, updated_at = $2,
                     paused_secs = paused_secs + coalesce(greatest($2 - paused_at, 0), 0),
                     paused_at = NULL
                 WHERE id = $1 AND state IN ('sending', 'paused')"
            }
        };
        let work = async {
            let mut tx = self.pool.begin().await?;
            let changed =
                sqlx::query(query).bind(id).bind(now).execute(&mut *tx).await?.rows_affected();
            if changed == 1 && action == AnnouncementAction::Cancel {
                // What is not being sent right now is never sent.
                sqlx::query(
                    "DELETE FROM outbox WHERE announcement_id = $1 AND status = 'queued'
                                          AND subscriber_id IS NOT NULL AND lease_until <= $2",
                )
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(changed == 1)
        };
        self.bounded("pausing, resuming or cancelling an announcement", work).await
    }

    pub(super) async fn read_sending(&self) -> StoreResult<Vec<i64>> {
        let select =
            sqlx::query_scalar("SELECT id FROM announcements WHERE state = 'sending' ORDER BY id")
                .fetch_all(&self.pool);
        self.bounded("finding announcements to send", select).await
    }

    /// One step: the next recipients in id order become outbox rows, as many as the pace
    /// allows.
    pub(super) async fn expand(&self, id: i64, pace: Pace, now_ms: i64) -> StoreResult<Expansion> {
        let now = now_ms / 1000;
        let work = async {
            let mut tx = self.pool.begin().await?;
            let announcement: Option<AnnouncementRecord> =
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {ANNOUNCEMENT_COLUMNS} FROM announcements WHERE id = $1
                     FOR UPDATE SKIP LOCKED"
                )))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(announcement) = announcement.filter(|a| a.state == AnnouncementState::Sending)
            else {
                return Ok(Expansion::default());
            };
            let (Some(started_at), Some(last_id)) = (announcement.started_at, announcement.last_id)
            else {
                return Ok(Expansion::default());
            };
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM outbox WHERE announcement_id = $1 AND status = 'queued'",
            )
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
            if announcement.cursor >= last_id {
                if waiting > 0 {
                    return Ok(Expansion::default());
                }
                let finished = sqlx::query(
                    "UPDATE announcements SET state = 'sent', finished_at = $2, updated_at = $2
                     WHERE id = $1 AND state = 'sending'",
                )
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tx.commit().await?;
                return Ok(Expansion { added: 0, finished: finished == 1 });
            }
            let allowed = pace.allowance(&announcement, waiting, now_ms);
            if allowed == 0 {
                return Ok(Expansion::default());
            }
            let recipients: Vec<i64> = sqlx::query_scalar(
                "SELECT id FROM subscribers
                 WHERE id > $1 AND id <= $2 AND status = 'confirmed'
                   AND coalesce(confirmed_at, created_at) <= $3
                 ORDER BY id LIMIT $4",
            )
            .bind(announcement.cursor)
            .bind(last_id)
            .bind(started_at)
            .bind(allowed)
            .fetch_all(&mut *tx)
            .await?;
            let cursor = match recipients.last() {
                Some(&newest) if recipients.len() as i64 == allowed => newest,
                _ => last_id,
            };
            let added = sqlx::query(
                "INSERT INTO outbox (purpose, priority, subscriber_id, announcement_id,
                                     next_attempt_at, created_at)
                 SELECT 'announcement', 2, r, $2, $3, $3 FROM unnest($1::BIGINT[]) AS r
                 ON CONFLICT (announcement_id, subscriber_id)
                    WHERE announcement_id IS NOT NULL AND subscriber_id IS NOT NULL
                 DO NOTHING",
            )
            .bind(&recipients)
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            sqlx::query("UPDATE announcements SET cursor = $2, queued = queued + $3 WHERE id = $1")
                .bind(id)
                .bind(cursor)
                .bind(i64::try_from(added).unwrap_or(i64::MAX))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Expansion { added, finished: false })
        };
        self.bounded("queuing an announcement's mails", work).await
    }

    pub(super) async fn read_failures(&self, id: i64) -> StoreResult<Vec<FailureGroup>> {
        let select = sqlx::query_as(
            "SELECT coalesce(last_error, '') AS error, count(*) AS count FROM outbox
             WHERE announcement_id = $1 AND status = 'failed' AND subscriber_id IS NOT NULL
             GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 20",
        )
        .bind(id)
        .fetch_all(&self.pool);
        self.bounded("reading an announcement's failures", select).await
    }

    pub(super) async fn insert_test_mail(
        &self,
        id: i64,
        to: &SubscriberEmail,
        now: i64,
    ) -> StoreResult<bool> {
        let insert = sqlx::query(
            "INSERT INTO outbox (purpose, priority, announcement_id, to_address, next_attempt_at,
                                 created_at)
             SELECT 'test', 0, id, $2, $3, $3 FROM announcements WHERE id = $1",
        )
        .bind(id)
        .bind(to.as_str())
        .bind(now)
        .execute(&self.pool);
        Ok(self.bounded("queuing a test mail", insert).await?.rows_affected() == 1)
    }
}
