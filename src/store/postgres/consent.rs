//! The PostgreSQL writes that must happen together: each is one transaction. Rows are locked
//! (`FOR UPDATE`) before anything is counted, so instances meeting on one address take turns.

use sqlx::{Postgres, Transaction};

use super::PostgresStore;
use crate::domain::Evidence;
use crate::domain::SubscriberStatus;
use crate::store::records::admit_request;
use crate::store::{
    ConfirmWrite, ConfirmationQueued, ConfirmationRequest, Confirmed, ImportBatch, ImportCounts,
    ImportRow, Leaving, MailOutcome, MailResult, NewSubscriber, StoreResult,
};

/// How a row to remove is named.
#[derive(Debug, Clone, Copy)]
pub(super) enum RowRef<'a> {
    Key(&'a str),
    Id(i64),
    /// By key, and only while unconfirmed.
    PendingKey(&'a str),
}

const INSERT_SUBSCRIBER: &str = "INSERT INTO subscribers
    (email, email_key, created_at, status, source, signup_ip, signup_agent, consent, confirmed_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (email_key) DO NOTHING";

fn insert_subscriber<'q>(
    new: &'q NewSubscriber<'q>,
    evidence: &'q Evidence,
    status: &'static str,
    confirmed_at: Option<i64>,
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(INSERT_SUBSCRIBER)
        .bind(new.email.as_str())
        .bind(new.email.key())
        .bind(new.now)
        .bind(status)
        .bind(evidence.door.as_str())
        .bind(evidence.client.ip.as_str())
        .bind(evidence.client.agent.as_deref())
        .bind(evidence.consent.as_str())
        .bind(confirmed_at)
}

/// Queues a mail to the subscriber; a confirmation mail carries its link's nonce and expiry.
async fn queue_mail(
    tx: &mut Transaction<'_, Postgres>,
    purpose: &str,
    subscriber_id: i64,
    link: Option<(&[u8], i64)>,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO outbox (purpose, priority, subscriber_id, nonce, expires_at, next_attempt_at,
                             created_at)
         VALUES ($1, 0, $2, $3, $4, $5, $5)",
    )
    .bind(purpose)
    .bind(subscriber_id)
    .bind(link.map(|(nonce, _)| nonce))
    .bind(link.map(|(_, expires_at)| expires_at))
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// `$1`/`$2` are the batch's addresses and keys as two arrays.
macro_rules! insert_batch {
    () => {
        "INSERT INTO subscribers (email, email_key, created_at, status, source, consent,
                                  confirmed_at)
         SELECT e, k, $3, $4, $7, $5, $6 FROM unnest($1::TEXT[], $2::TEXT[]) AS v (e, k)
         ON CONFLICT (email_key) DO NOTHING"
    };
}

impl PostgresStore {
    pub(super) async fn insert_confirmed(&self, new: NewSubscriber<'_>) -> StoreResult<()> {
        let work = async {
            let mut tx = self.pool.begin().await?;
            insert_subscriber(&new, new.evidence, "confirmed", Some(new.now))
                .execute(&mut *tx)
                .await?;
            // A signup on the form is new consent: a suppression of the address is lifted.
            sqlx::query("DELETE FROM suppressions WHERE address_hash = $1")
                .bind(&new.address_hash[..])
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        };
        self.bounded("adding a subscriber", work).await
    }

    pub(super) async fn queue_confirmation(
        &self,
        request: ConfirmationRequest<'_>,
    ) -> StoreResult<ConfirmationQueued> {
        let new = request.subscriber;
        let work = async {
            let mut tx = self.pool.begin().await?;
            insert_subscriber(&new, new.evidence, "pending", None).execute(&mut *tx).await?;
            let (id, status): (i64, String) = sqlx::query_as(
                "SELECT id, status FROM subscribers WHERE email_key = $1 FOR UPDATE",
            )
            .bind(new.email.key())
            .fetch_one(&mut *tx)
            .await?;
            if status == "confirmed" {
                tx.commit().await?;
                return Ok(ConfirmationQueued::AlreadyConfirmed);
            }
            let stored: Option<String> =
                sqlx::query_scalar("SELECT times FROM confirmation_limits WHERE address_hash = $1")
                    .bind(&new.address_hash[..])
                    .fetch_optional(&mut *tx)
                    .await?;
            let admitted =
                admit_request(stored.as_deref(), request.window_start, request.limit, new.now);
            let Some(times) = admitted else {
                tx.commit().await?;
                return Ok(ConfirmationQueued::LimitReached);
            };
            sqlx::query(
                "INSERT INTO confirmation_limits (address_hash, newest, times) VALUES ($1, $2, $3)
                 ON CONFLICT (address_hash) DO UPDATE SET newest = excluded.newest,
                                                          times = excluded.times",
            )
            .bind(&new.address_hash[..])
            .bind(new.now)
            .bind(times)
            .execute(&mut *tx)
            .await?;
            let link = Some((&request.nonce[..], request.expires_at));
            queue_mail(&mut tx, "confirm", id, link, new.now).await?;
            tx.commit().await?;
            Ok(ConfirmationQueued::Queued)
        };
        self.bounded("queuing a confirmation", work).await
    }

    pub(super) async fn confirm_now(&self, write: ConfirmWrite<'_>) -> StoreResult<Confirmed> {
        let work = async {
            let mut tx = self.pool.begin().await?;
            let found: Option<(i64, i64, String)> = sqlx::query_as(
                "SELECT o.subscriber_id, o.expires_at, s.status
                 FROM outbox AS o JOIN subscribers AS s ON s.id = o.subscriber_id
                 WHERE o.id = $1 AND o.purpose = 'confirm' FOR UPDATE OF s",
            )
            .bind(write.confirmation_id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((subscriber_id, expires_at, status)) = found else {
                return Ok(Confirmed::Unknown);
            };
            let mark_used =
                sqlx::query("UPDATE outbox SET used_at = $1 WHERE id = $2 AND used_at IS NULL")
                    .bind(write.now)
                    .bind(write.confirmation_id);
            if status == "confirmed" {
                mark_used.execute(&mut *tx).await?;
                tx.commit().await?;
                return Ok(Confirmed::Already);
            }
            if expires_at <= write.now {
                return Ok(Confirmed::Expired);
            }
            sqlx::query(
                "UPDATE subscribers SET status = 'confirmed', confirmed_at = $1, confirm_ip = $2,
                                        confirm_agent = $3
                 WHERE id = $4",
            )
            .bind(write.now)
            .bind(write.client.ip.as_str())
            .bind(write.client.agent.as_deref())
            .bind(subscriber_id)
            .execute(&mut *tx)
            .await?;
            mark_used.execute(&mut *tx).await?;
            sqlx::query("DELETE FROM suppressions WHERE address_hash = $1")
                .bind(&write.address_hash[..])
                .execute(&mut *tx)
                .await?;
            if write.welcome {
                queue_mail(&mut tx, "welcome", subscriber_id, None, write.now).await?;
            }
            tx.commit().await?;
            Ok(Confirmed::Now)
        };
        self.bounded("confirming a subscriber", work).await
    }

    /// Deletes the row, and records the leaving.
    pub(super) async fn remove(
        &self,
        row: RowRef<'_>,
        leaving: Option<Leaving>,
    ) -> StoreResult<bool> {
        let work = async move {
            let mut tx = self.pool.begin().await?;
            if let Some(leaving) = &leaving {
                // Read by the delete trigger that queues the webhook event.
                let mark = match row {
                    RowRef::Key(key) | RowRef::PendingKey(key) => {
                        sqlx::query("UPDATE subscribers SET leaving = $1 WHERE email_key = $2")
                            .bind(leaving.reason.as_str())
                            .bind(key)
                    }
                    RowRef::Id(id) => {
                        sqlx::query("UPDATE subscribers SET leaving = $1 WHERE id = $2")
                            .bind(leaving.reason.as_str())
                            .bind(id)
                    }
                };
                mark.execute(&mut *tx).await?;
            }
            let delete = match row {
                RowRef::Key(key) => {
                    sqlx::query("DELETE FROM subscribers WHERE email_key = $1").bind(key)
                }
                RowRef::Id(id) => sqlx::query("DELETE FROM subscribers WHERE id = $1").bind(id),
                RowRef::PendingKey(key) => sqlx::query(
                    "DELETE FROM subscribers WHERE email_key = $1 AND status = 'pending'",
                )
                .bind(key),
            };
            let removed = delete.execute(&mut *tx).await?.rows_affected();
            if let Some(leaving) = leaving {
                sqlx::query(
                    "INSERT INTO suppressions (address_hash, reason, created_at)
                     VALUES ($1, $2, $3) ON CONFLICT (address_hash) DO NOTHING",
                )
                .bind(&leaving.address_hash[..])
                .bind(leaving.reason.as_str())
                .bind(leaving.now)
                .execute(&mut *tx)
                .await?;
                // The row's sessions forgot it (a trigger); these are sessions written before
                // `subscriber_id`, which name the address by its hash, and end.
                sqlx::query("DELETE FROM sessions WHERE owner = $1")
                    .bind(&leaving.address_hash[..])
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(removed > 0)
        };
        self.bounded("removing a subscriber", work).await
    }

    pub(super) async fn record_outcomes(&self, outcomes: &[MailOutcome]) -> StoreResult<()> {
        let mut ids = Vec::with_capacity(outcomes.len());
        let mut statuses = Vec::with_capacity(outcomes.len());
        let mut finished = Vec::with_capacity(outcomes.len());
        let mut next = Vec::with_capacity(outcomes.len());
        let mut errors = Vec::with_capacity(outcomes.len());
        for outcome in outcomes {
            ids.push(outcome.id);
            let (status, finished_at, next_at, error) = match &outcome.result {
                MailResult::Sent { at } => ("sent", Some(*at), None, None),
                MailResult::Retry { at, error } => ("queued", None, Some(*at), Some(error.clone())),
                MailResult::Failed { at, error } => {
                    ("failed", Some(*at), None, Some(error.clone()))
                }
            };
            statuses.push(status.to_owned());
            finished.push(finished_at);
            next.push(next_at);
            errors.push(error);
        }
        let update = sqlx::query(
            "UPDATE outbox AS o
             SET status = v.status, sent_at = v.finished_at,
                 next_attempt_at = coalesce(v.next_at, o.next_attempt_at),
                 last_error = v.error, attempts = o.attempts + 1, lease_until = 0
             FROM unnest($1::BIGINT[], $2::TEXT[], $3::BIGINT[], $4::BIGINT[], $5::TEXT[])
                  AS v (id, status, finished_at, next_at, error)
             WHERE o.id = v.id",
        )
        .bind(ids)
        .bind(statuses)
        .bind(finished)
        .bind(next)
        .bind(errors)
        .execute(&self.pool);
        self.bounded("recording sent mail", update).await?;
        Ok(())
    }

    pub(super) async fn import_rows(&self, batch: ImportBatch<'_>) -> StoreResult<ImportCounts> {
        let work = async {
            let mut tx = self.pool.begin().await?;
            // Most lists have few or no suppressions; the batch's hashes are only sent when some
            // exist.
            let any_left: i64 = sqlx::query_scalar(
                "SELECT CAST(coalesce(sum(n), 1) AS BIGINT) FROM subscriber_counts
                 WHERE status = 'left'",
            )
            .fetch_one(&mut *tx)
            .await?;
            let found: Vec<Vec<u8>> = if any_left > 0 {
                let hashes: Vec<Vec<u8>> =
                    batch.rows.iter().map(|r| r.address_hash.to_vec()).collect();
                sqlx::query_scalar(
                    "SELECT address_hash FROM suppressions WHERE address_hash = ANY($1)",
                )
                .bind(&hashes)
                .fetch_all(&mut *tx)
                .await?
            } else {
                Vec::new()
            };
            let suppressed: std::collections::HashSet<Vec<u8>> = found.into_iter().collect();
            let mut counts = ImportCounts::default();
            let mut seen = std::collections::HashSet::new();
            let keep: Vec<&ImportRow> = batch
                .rows
                .iter()
                .filter(|row| {
                    if suppressed.contains(&row.address_hash[..]) {
                        counts.suppressed += 1;
                        false
                    } else if !seen.insert(row.email.key()) {
                        counts.existing += 1;
                        false
                    } else {
                        true
                    }
                })
                .collect();
            // In key order: two batches inserting at once then take their addresses in the same
            // order, so where they share one, one waits for the other and neither deadlocks.
            let mut keep = keep;
            keep.sort_unstable_by(|a, b| a.email.key().cmp(b.email.key()));
            let emails: Vec<&str> = keep.iter().map(|r| r.email.as_str()).collect();
            let keys: Vec<&str> = keep.iter().map(|r| r.email.key()).collect();
            let confirmed_at = (batch.status == SubscriberStatus::Confirmed).then_some(batch.now);
            // Which rows were new matters only for the confirmation mails of a pending import;
            // otherwise the count is enough, and cheaper than a row back per address.
            let insert = sqlx::query(if batch.confirm_expires_at.is_some() {
                concat!(insert_batch!(), " RETURNING email_key")
            } else {
                insert_batch!()
            })
            .bind(&emails)
            .bind(&keys)
            .bind(batch.now)
            .bind(batch.status.as_str())
            .bind(batch.consent)
            .bind(confirmed_at)
            .bind(batch.door.as_str());
            if let Some(expires_at) = batch.confirm_expires_at {
                let added: Vec<String> = insert
                    .fetch_all(&mut *tx)
                    .await?
                    .iter()
                    .map(|row| sqlx::Row::try_get(row, 0))
                    .collect::<Result<_, _>>()?;
                counts.added = added.len() as u64;
                let added: std::collections::HashSet<&str> =
                    added.iter().map(String::as_str).collect();
                let (keys, nonces): (Vec<&str>, Vec<Vec<u8>>) = keep
                    .iter()
                    .filter(|r| added.contains(r.email.key()))
                    .filter_map(|r| r.nonce.map(|n| (r.email.key(), n.to_vec())))
                    .unzip();
                sqlx::query(
                    "INSERT INTO outbox (purpose, priority, subscriber_id, nonce, expires_at,
                                         next_attempt_at, created_at)
                     SELECT 'confirm', 1, s.id, v.n, $3, $4, $4
                     FROM unnest($1::TEXT[], $2::BYTEA[]) AS v (k, n)
                     JOIN subscribers AS s ON s.email_key = v.k",
                )
                .bind(&keys)
                .bind(&nonces)
                .bind(expires_at)
                .bind(batch.now)
                .execute(&mut *tx)
                .await?;
            } else {
                counts.added = insert.execute(&mut *tx).await?.rows_affected();
            }
            counts.existing += keep.len() as u64 - counts.added;
            if batch.dry_run {
                tx.rollback().await?;
            } else {
                tx.commit().await?;
            }
            Ok(counts)
        };
        self.bounded("importing subscribers", work).await
    }

    pub(super) async fn purge(
        &self,
        pending_before: i64,
        requests_before: i64,
    ) -> StoreResult<u64> {
        let work = async {
            let mut tx = self.pool.begin().await?;
            let removed =
                sqlx::query("DELETE FROM subscribers WHERE status = 'pending' AND created_at < $1")
                    .bind(pending_before)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            sqlx::query("DELETE FROM confirmation_limits WHERE newest < $1")
                .bind(requests_before)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(removed)
        };
        self.bounded("purging stale signups", work).await
    }
}
