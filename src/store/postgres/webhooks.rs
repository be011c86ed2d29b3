//! Webhook endpoints, deliveries and attempts in PostgreSQL. The events themselves are queued by
//! a trigger (see the migration), in the same commit as the change.

use sqlx::{Postgres, Transaction};

use super::PostgresStore;
use crate::store::webhook_records::{DELIVERY_COLUMNS, ENDPOINT_FIELDS, ENDPOINT_QUEUED};
use crate::store::{
    ATTEMPTS_KEPT, AttemptRecord, DeliveryOutcome, DeliveryResult, EndpointRecord, NewEndpoint,
    QueuedDelivery, StoreResult,
};

impl PostgresStore {
    pub(super) async fn insert_endpoint(&self, endpoint: NewEndpoint<'_>) -> StoreResult<i64> {
        let insert = sqlx::query_scalar(
            "INSERT INTO webhook_endpoints (url, secret, events, created_at)
             VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(endpoint.url)
        .bind(endpoint.secret)
        .bind(i64::from(endpoint.events))
        .bind(endpoint.now)
        .fetch_one(&self.pool);
        self.bounded("adding a webhook endpoint", insert).await
    }

    pub(super) async fn all_endpoints(&self) -> StoreResult<Vec<EndpointRecord>> {
        let select = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {ENDPOINT_FIELDS}, {ENDPOINT_QUEUED} AS queued FROM webhook_endpoints AS e ORDER BY e.id"
        )))
        .fetch_all(&self.pool);
        self.bounded("listing webhook endpoints", select).await
    }

    pub(super) async fn one_endpoint(&self, id: i64) -> StoreResult<Option<EndpointRecord>> {
        let select = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {ENDPOINT_FIELDS}, {ENDPOINT_QUEUED} AS queued FROM webhook_endpoints AS e WHERE e.id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool);
        self.bounded("reading a webhook endpoint", select).await
    }

    pub(super) async fn delete_endpoint(&self, id: i64) -> StoreResult<bool> {
        let delete =
            sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1").bind(id).execute(&self.pool);
        Ok(self.bounded("removing a webhook endpoint", delete).await?.rows_affected() == 1)
    }

    pub(super) async fn insert_ping(&self, endpoint_id: i64, now: i64) -> StoreResult<bool> {
        let insert = sqlx::query(
            "INSERT INTO webhook_deliveries (endpoint_id, event, occurred_at, next_attempt_at)
             SELECT id, 'webhook.ping', $2, $2 FROM webhook_endpoints
             WHERE id = $1 AND disabled_at IS NULL",
        )
        .bind(endpoint_id)
        .bind(now)
        .execute(&self.pool);
        Ok(self.bounded("queuing a webhook ping", insert).await?.rows_affected() == 1)
    }

    /// Rows another instance is leasing right now are skipped, not waited for.
    pub(super) async fn lease_deliveries(
        &self,
        now: i64,
        until: i64,
        owner: i64,
        limit: u32,
    ) -> StoreResult<Vec<QueuedDelivery>> {
        let lease = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "WITH due AS (
                 SELECT id FROM webhook_deliveries
                 WHERE next_attempt_at <= $3 AND lease_until <= $3
                 ORDER BY next_attempt_at, id LIMIT $4 FOR UPDATE SKIP LOCKED
             ), d AS (
                 UPDATE webhook_deliveries AS w SET lease_until = $1, lease_owner = $2
                 FROM due WHERE w.id = due.id RETURNING w.*
             )
             SELECT {DELIVERY_COLUMNS} FROM d JOIN webhook_endpoints AS e ON e.id = d.endpoint_id
             ORDER BY d.next_attempt_at, d.id"
        )))
        .bind(until)
        .bind(owner)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool);
        self.bounded("leasing webhook deliveries", lease).await
    }

    pub(super) async fn record_deliveries_done(
        &self,
        outcomes: &[DeliveryOutcome],
    ) -> StoreResult<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let work = async {
            let mut tx = self.pool.begin().await?;
            record_all(&mut tx, outcomes).await?;
            let mut endpoints: Vec<i64> = outcomes.iter().map(|o| o.endpoint_id).collect();
            endpoints.sort_unstable();
            endpoints.dedup();
            sqlx::query(
                "DELETE FROM webhook_attempts AS a USING (
                     SELECT id, row_number() OVER (PARTITION BY endpoint_id ORDER BY id DESC) AS n
                     FROM webhook_attempts WHERE endpoint_id = ANY($1)
                 ) AS old WHERE a.id = old.id AND old.n > $2",
            )
            .bind(&endpoints)
            .bind(ATTEMPTS_KEPT)
            .execute(&mut *tx)
            .await?;
            tx.commit().await
        };
        self.bounded("recording webhook deliveries", work).await
    }

    pub(super) async fn endpoint_attempts(
        &self,
        endpoint_id: i64,
    ) -> StoreResult<Vec<AttemptRecord>> {
        let select = sqlx::query_as(
            "SELECT delivery_id, event, at, http_status, duration_ms, outcome, error
             FROM webhook_attempts WHERE endpoint_id = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(endpoint_id)
        .bind(ATTEMPTS_KEPT)
        .fetch_all(&self.pool);
        self.bounded("reading webhook attempts", select).await
    }
}

/// A batch's outcomes in a fixed handful of statements, whatever its size: a round trip per
/// delivery made a long drain wait on the database more than on the receivers.
async fn record_all(
    tx: &mut Transaction<'_, Postgres>,
    outcomes: &[DeliveryOutcome],
) -> Result<(), sqlx::Error> {
    let endpoint_ids: Vec<i64> = outcomes.iter().map(|o| o.endpoint_id).collect();
    let delivery_ids: Vec<i64> = outcomes.iter().map(|o| o.delivery_id).collect();
    let events: Vec<&str> = outcomes.iter().map(|o| o.event.as_str()).collect();
    let ats: Vec<i64> = outcomes.iter().map(|o| o.at).collect();
    let statuses: Vec<Option<i32>> =
        outcomes.iter().map(|o| o.http_status.map(i32::from)).collect();
    let durations: Vec<i64> = outcomes.iter().map(|o| o.duration_ms).collect();
    let results: Vec<&str> = outcomes.iter().map(|o| o.result.as_str()).collect();
    let errors: Vec<Option<&str>> = outcomes.iter().map(|o| o.result.error()).collect();
    sqlx::query(
        "INSERT INTO webhook_attempts
         (endpoint_id, delivery_id, event, at, http_status, duration_ms, outcome, error)
         SELECT a.endpoint_id, a.delivery_id, a.event, a.at, a.http_status, a.duration_ms,
                a.outcome, a.error
         FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], $5::int[],
                     $6::bigint[], $7::text[], $8::text[])
              WITH ORDINALITY AS a(endpoint_id, delivery_id, event, at, http_status,
                                   duration_ms, outcome, error, n)
         WHERE EXISTS (SELECT 1 FROM webhook_endpoints WHERE id = a.endpoint_id)
         ORDER BY a.n",
    )
    .bind(&endpoint_ids)
    .bind(&delivery_ids)
    .bind(&events)
    .bind(&ats)
    .bind(&statuses)
    .bind(&durations)
    .bind(&results)
    .bind(&errors)
    .execute(&mut **tx)
    .await?;
    let finished: Vec<i64> = outcomes
        .iter()
        .filter(|o| matches!(o.result, DeliveryResult::Delivered | DeliveryResult::Failed { .. }))
        .map(|o| o.delivery_id)
        .collect();
    if !finished.is_empty() {
        sqlx::query("DELETE FROM webhook_deliveries WHERE id = ANY($1)")
            .bind(&finished)
            .execute(&mut **tx)
            .await?;
    }
    for outcome in outcomes {
        match &outcome.result {
            DeliveryResult::Delivered | DeliveryResult::Failed { .. } => {}
            DeliveryResult::Retry { at, .. } => {
                sqlx::query(
                    "UPDATE webhook_deliveries SET attempts = attempts + 1, next_attempt_at = $1,
                     lease_until = 0 WHERE id = $2",
                )
                .bind(*at)
                .bind(outcome.delivery_id)
                .execute(&mut **tx)
                .await?;
            }
            DeliveryResult::Gone => {
                sqlx::query(
                    "UPDATE webhook_endpoints SET disabled_at = $1, disabled_reason = $2
                     WHERE id = $3 AND disabled_at IS NULL",
                )
                .bind(outcome.at)
                .bind("the receiver answered 410 Gone")
                .bind(outcome.endpoint_id)
                .execute(&mut **tx)
                .await?;
                sqlx::query("DELETE FROM webhook_deliveries WHERE endpoint_id = $1")
                    .bind(outcome.endpoint_id)
                    .execute(&mut **tx)
                    .await?;
            }
        }
    }
    Ok(())
}
