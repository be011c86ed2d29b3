//! Webhook endpoints, deliveries and attempts in SQLite. The events themselves are queued by
//! triggers (see the migration `webhooks`), in the same commit as the change; a new row's by
//! the lease, from the row itself (migration `created_events_from_rows`).

use std::sync::{Arc, Mutex};

use anyhow::Context;
use sqlx::SqliteConnection;

use super::SqliteStore;
use super::ops::WriteOp;
use crate::store::webhook_records::{DELIVERY_COLUMNS, ENDPOINT_FIELDS, ENDPOINT_QUEUED};
use crate::store::{
    ATTEMPTS_KEPT, AttemptRecord, DeliveryOutcome, DeliveryResult, EndpointRecord, NewEndpoint,
    QueuedDelivery, StoreResult,
};

/// The webhook writes the writer task runs, each in its own savepoint.
pub(super) enum WebhookOp {
    CreateEndpoint {
        url: String,
        secret: String,
        events: u32,
        now: i64,
    },
    RemoveEndpoint {
        id: i64,
    },
    QueuePing {
        endpoint_id: i64,
        now: i64,
    },
    Lease {
        now: i64,
        until: i64,
        owner: i64,
        limit: u32,
        /// Filled in with the ids the lease took.
        leased: Arc<Mutex<Vec<i64>>>,
    },
    Record {
        outcomes: Vec<DeliveryOutcome>,
    },
}

impl WebhookOp {
    pub(super) fn describe(&self) -> &'static str {
        match self {
            Self::CreateEndpoint { .. } => "adding a webhook endpoint",
            Self::RemoveEndpoint { .. } => "removing a webhook endpoint",
            Self::QueuePing { .. } => "queuing a webhook ping",
            Self::Lease { .. } => "leasing webhook deliveries",
            Self::Record { .. } => "recording webhook deliveries",
        }
    }

    /// Returns the new endpoint's id, or the rows affected.
    pub(super) async fn run(&self, c: &mut SqliteConnection) -> anyhow::Result<u64> {
        match self {
            Self::CreateEndpoint { url, secret, events, now } => {
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO webhook_endpoints (url, secret, events, created_at)
                     VALUES (?, ?, ?, ?) RETURNING id",
                )
                .bind(url.as_str())
                .bind(secret.as_str())
                .bind(i64::from(*events))
                .bind(*now)
                .fetch_one(&mut *c)
                .await?;
                Ok(u64::try_from(id)?)
            }
            Self::RemoveEndpoint { id } => {
                Ok(sqlx::query("DELETE FROM webhook_endpoints WHERE id = ?")
                    .bind(*id)
                    .execute(&mut *c)
                    .await?
                    .rows_affected())
            }
            Self::QueuePing { endpoint_id, now } => Ok(sqlx::query(
                "INSERT INTO webhook_deliveries (endpoint_id, event, occurred_at, next_attempt_at)
                 SELECT id, 'webhook.ping', ?2, ?2 FROM webhook_endpoints
                 WHERE id = ?1 AND disabled_at IS NULL",
            )
            .bind(*endpoint_id)
            .bind(*now)
            .execute(&mut *c)
            .await?
            .rows_affected()),
            Self::Lease { now, until, owner, limit, leased } => {
                queue_created_events(c, *limit).await?;
                let ids: Vec<i64> = sqlx::query_scalar(
                    "UPDATE webhook_deliveries SET lease_until = ?1, lease_owner = ?2
                     WHERE id IN (SELECT id FROM webhook_deliveries
                                  WHERE next_attempt_at <= ?3 AND lease_until <= ?3
                                  ORDER BY next_attempt_at, id LIMIT ?4)
                     RETURNING id",
                )
                .bind(*until)
                .bind(*owner)
                .bind(*now)
                .bind(*limit)
                .fetch_all(&mut *c)
                .await?;
                let count = ids.len() as u64;
                *leased.lock().unwrap_or_else(|p| p.into_inner()) = ids;
                Ok(count)
            }
            Self::Record { outcomes } => {
                record(c, outcomes).await?;
                Ok(outcomes.len() as u64)
            }
        }
    }
}

/// Queues the events of up to `limit` new rows (the claim's worth, at least one delivery
/// each) by moving the cursor past them: its trigger makes the deliveries.
async fn queue_created_events(c: &mut SqliteConnection, limit: u32) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE created_events_queued
         SET up_to = coalesce((SELECT id FROM subscribers WHERE id > up_to
                               ORDER BY id LIMIT 1 OFFSET ?1 - 1),
                              (SELECT max(id) FROM subscribers))
         WHERE up_to < (SELECT max(id) FROM subscribers)",
    )
    .bind(limit.max(1))
    .execute(&mut *c)
    .await
    .context("queuing new rows' webhook events")?;
    Ok(())
}

/// The columns of an [`EndpointRecord`]: its queue holds the new rows' events not yet made
/// into deliveries as well.
fn endpoint_columns() -> String {
    format!(
        "{ENDPOINT_FIELDS}, {ENDPOINT_QUEUED}
         + coalesce((SELECT n FROM created_events_waiting AS w WHERE w.endpoint_id = e.id), 0)
           AS queued"
    )
}

/// A batch's outcomes in a fixed handful of statements, whatever its size: two statements per
/// delivery, each a hand-off to sqlx's thread, cost a sixth of a backlog's drain.
async fn record(c: &mut SqliteConnection, outcomes: &[DeliveryOutcome]) -> anyhow::Result<()> {
    let attempts: Vec<_> = outcomes
        .iter()
        .map(|o| {
            let r = &o.result;
            (
                o.endpoint_id,
                o.delivery_id,
                &o.event,
                o.at,
                o.http_status,
                o.duration_ms,
                r.as_str(),
                r.error(),
            )
        })
        .collect();
    // In the batch's order, so the attempts' ids keep the order they ended in.
    sqlx::query(
        "INSERT INTO webhook_attempts
         (endpoint_id, delivery_id, event, at, http_status, duration_ms, outcome, error)
         SELECT a.value ->> 0, a.value ->> 1, a.value ->> 2, a.value ->> 3, a.value ->> 4,
                a.value ->> 5, a.value ->> 6, a.value ->> 7
         FROM json_each(?) AS a
         WHERE EXISTS (SELECT 1 FROM webhook_endpoints WHERE id = a.value ->> 0)
         ORDER BY a.key",
    )
    .bind(serde_json::to_string(&attempts).context("listing attempts")?)
    .execute(&mut *c)
    .await?;
    let finished: Vec<i64> = outcomes
        .iter()
        .filter(|o| matches!(o.result, DeliveryResult::Delivered | DeliveryResult::Failed { .. }))
        .map(|o| o.delivery_id)
        .collect();
    if !finished.is_empty() {
        sqlx::query("DELETE FROM webhook_deliveries WHERE id IN (SELECT value FROM json_each(?))")
            .bind(serde_json::to_string(&finished).context("listing deliveries")?)
            .execute(&mut *c)
            .await?;
    }
    for outcome in outcomes {
        match &outcome.result {
            DeliveryResult::Delivered | DeliveryResult::Failed { .. } => {}
            DeliveryResult::Retry { at, .. } => {
                sqlx::query(
                    "UPDATE webhook_deliveries SET attempts = attempts + 1, next_attempt_at = ?,
                     lease_until = 0 WHERE id = ?",
                )
                .bind(*at)
                .bind(outcome.delivery_id)
                .execute(&mut *c)
                .await?;
            }
            DeliveryResult::Gone => {
                sqlx::query(
                    "UPDATE webhook_endpoints SET disabled_at = ?, disabled_reason = ?
                     WHERE id = ? AND disabled_at IS NULL",
                )
                .bind(outcome.at)
                .bind("the receiver answered 410 Gone")
                .bind(outcome.endpoint_id)
                .execute(&mut *c)
                .await?;
                sqlx::query("DELETE FROM webhook_deliveries WHERE endpoint_id = ?")
                    .bind(outcome.endpoint_id)
                    .execute(&mut *c)
                    .await?;
            }
        }
    }
    let mut endpoints: Vec<i64> = outcomes.iter().map(|o| o.endpoint_id).collect();
    endpoints.sort_unstable();
    endpoints.dedup();
    for endpoint_id in endpoints {
        sqlx::query(
            "DELETE FROM webhook_attempts WHERE endpoint_id = ?1 AND id <=
             (SELECT id FROM webhook_attempts WHERE endpoint_id = ?1
              ORDER BY id DESC LIMIT 1 OFFSET ?2)",
        )
        .bind(endpoint_id)
        .bind(ATTEMPTS_KEPT)
        .execute(&mut *c)
        .await?;
    }
    Ok(())
}

impl SqliteStore {
    pub(super) async fn insert_endpoint(&self, endpoint: NewEndpoint<'_>) -> StoreResult<i64> {
        let op = WebhookOp::CreateEndpoint {
            url: endpoint.url.to_owned(),
            secret: endpoint.secret.to_owned(),
            events: endpoint.events,
            now: endpoint.now,
        };
        let id = self.writer.write(WriteOp::Webhook(op)).await?;
        Ok(i64::try_from(id).context("a new endpoint's id")?)
    }

    pub(super) async fn all_endpoints(&self) -> StoreResult<Vec<EndpointRecord>> {
        let endpoints = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM webhook_endpoints AS e ORDER BY e.id",
            endpoint_columns()
        )))
        .fetch_all(&self.readers)
        .await
        .context("listing webhook endpoints")?;
        Ok(endpoints)
    }

    pub(super) async fn one_endpoint(&self, id: i64) -> StoreResult<Option<EndpointRecord>> {
        let endpoint = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM webhook_endpoints AS e WHERE e.id = ?",
            endpoint_columns()
        )))
        .bind(id)
        .fetch_optional(&self.readers)
        .await
        .context("reading a webhook endpoint")?;
        Ok(endpoint)
    }

    pub(super) async fn webhook_write(&self, op: WebhookOp) -> StoreResult<u64> {
        self.writer.write(WriteOp::Webhook(op)).await
    }

    pub(super) async fn lease_deliveries(
        &self,
        now: i64,
        until: i64,
        owner: i64,
        limit: u32,
    ) -> StoreResult<Vec<QueuedDelivery>> {
        // Most looks find nothing due: answer those from a reader, not through the writer.
        let due: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM webhook_deliveries WHERE next_attempt_at <= ?1 AND lease_until <= ?1
             UNION ALL SELECT 0 FROM created_events_unqueued
             LIMIT 1",
        )
        .bind(now)
        .fetch_optional(&self.readers)
        .await
        .context("looking for due webhook deliveries")?;
        if due.is_none() {
            return Ok(Vec::new());
        }
        let leased = Arc::new(Mutex::new(Vec::new()));
        let lease = WebhookOp::Lease { now, until, owner, limit, leased: leased.clone() };
        if self.webhook_write(lease).await? == 0 {
            return Ok(Vec::new());
        }
        let ids = std::mem::take(&mut *leased.lock().unwrap_or_else(|p| p.into_inner()));
        // By id: nothing indexes the lease's owner, and reading by it scanned the whole queue
        // for every claim, which made a long drain quadratic.
        let leased = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries AS d
             JOIN webhook_endpoints AS e ON e.id = d.endpoint_id
             WHERE d.id IN (SELECT value FROM json_each(?)) ORDER BY d.next_attempt_at, d.id"
        )))
        .bind(serde_json::to_string(&ids).context("listing leased deliveries")?)
        .fetch_all(&self.readers)
        .await
        .context("reading leased webhook deliveries")?;
        Ok(leased)
    }

    pub(super) async fn endpoint_attempts(
        &self,
        endpoint_id: i64,
    ) -> StoreResult<Vec<AttemptRecord>> {
        let attempts = sqlx::query_as(
            "SELECT delivery_id, event, at, http_status, duration_ms, outcome, error
             FROM webhook_attempts WHERE endpoint_id = ? ORDER BY id DESC LIMIT ?",
        )
        .bind(endpoint_id)
        .bind(ATTEMPTS_KEPT)
        .fetch_all(&self.readers)
        .await
        .context("reading webhook attempts")?;
        Ok(attempts)
    }
}
