//! Webhook endpoints, deliveries and attempts in SQLite. The events themselves are queued by
//! triggers (see the migration), in the same commit as the change.

use anyhow::Context;
use sqlx::SqliteConnection;

use super::SqliteStore;
use super::ops::WriteOp;
use crate::store::webhook_records::{DELIVERY_COLUMNS, ENDPOINT_COLUMNS};
use crate::store::{
    ATTEMPTS_KEPT, AttemptRecord, DeliveryOutcome, DeliveryResult, EndpointRecord, NewEndpoint,
    QueuedDelivery, StoreResult,
};

/// The webhook writes the writer task runs, each in its own savepoint.
pub(super) enum WebhookOp {
    CreateEndpoint { url: String, secret: String, events: u32, now: i64 },
    RemoveEndpoint { id: i64 },
    QueuePing { endpoint_id: i64, now: i64 },
    Lease { now: i64, until: i64, owner: i64, limit: u32 },
    Record { outcomes: Vec<DeliveryOutcome> },
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
            Self::Lease { now, until, owner, limit } => Ok(sqlx::query(
                "UPDATE webhook_deliveries SET lease_until = ?1, lease_owner = ?2
                 WHERE id IN (SELECT id FROM webhook_deliveries
                              WHERE next_attempt_at <= ?3 AND lease_until <= ?3
                              ORDER BY next_attempt_at, id LIMIT ?4)",
            )
            .bind(*until)
            .bind(*owner)
            .bind(*now)
            .bind(*limit)
            .execute(&mut *c)
            .await?
            .rows_affected()),
            Self::Record { outcomes } => {
                for outcome in outcomes {
                    record_one(c, outcome).await?;
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
                Ok(outcomes.len() as u64)
            }
        }
    }
}

async fn record_one(c: &mut SqliteConnection, outcome: &DeliveryOutcome) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO webhook_attempts
         (endpoint_id, delivery_id, event, at, http_status, duration_ms, outcome, error)
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8
         WHERE EXISTS (SELECT 1 FROM webhook_endpoints WHERE id = ?1)",
    )
    .bind(outcome.endpoint_id)
    .bind(outcome.delivery_id)
    .bind(outcome.event.as_str())
    .bind(outcome.at)
    .bind(outcome.http_status.map(i64::from))
    .bind(outcome.duration_ms)
    .bind(outcome.result.as_str())
    .bind(outcome.result.error())
    .execute(&mut *c)
    .await?;
    match &outcome.result {
        DeliveryResult::Delivered | DeliveryResult::Failed { .. } => {
            sqlx::query("DELETE FROM webhook_deliveries WHERE id = ?")
                .bind(outcome.delivery_id)
                .execute(&mut *c)
                .await?;
        }
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
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints AS e ORDER BY e.id"
        )))
        .fetch_all(&self.readers)
        .await
        .context("listing webhook endpoints")?;
        Ok(endpoints)
    }

    pub(super) async fn one_endpoint(&self, id: i64) -> StoreResult<Option<EndpointRecord>> {
        let endpoint = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints AS e WHERE e.id = ?"
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
             LIMIT 1",
        )
        .bind(now)
        .fetch_optional(&self.readers)
        .await
        .context("looking for due webhook deliveries")?;
        if due.is_none() {
            return Ok(Vec::new());
        }
        if self.webhook_write(WebhookOp::Lease { now, until, owner, limit }).await? == 0 {
            return Ok(Vec::new());
        }
        let leased = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries AS d
             JOIN webhook_endpoints AS e ON e.id = d.endpoint_id
             WHERE d.lease_owner = ? AND d.lease_until = ? ORDER BY d.next_attempt_at, d.id"
        )))
        .bind(owner)
        .bind(until)
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
