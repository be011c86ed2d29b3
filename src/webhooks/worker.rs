//! Delivers queued webhooks: one worker per instance. Deliveries are leased (so instances
//! sharing a database never send the same one), each attempt is bounded by [`SEND_TIMEOUT`], and
//! the outcome is recorded: delivered, retry later with exponential backoff, given up after 24
//! hours, or — on `410 Gone` — the endpoint disabled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use url::Url;

use super::destination::{Destination, ScreeningResolver};
use super::{WebhookPolicy, body, message_id, sign};
use crate::metrics::{Metrics, WebhookResult};
use crate::outbox::{Lanes, backoff, lease_owner};
use crate::session::unix_now;
use crate::store::{DeliveryOutcome, DeliveryResult, QueuedDelivery, Store};
use crate::web::RequestGauge;

/// A receiver has this long to answer, connection and body included.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a claimed delivery stays ours: a worker that dies mid-send frees it after this.
const LEASE: Duration = Duration::from_secs(60);
/// Time kept in hand after an attempt, for the pause and the record that follow it.
const RECORD_ROOM: Duration = Duration::from_secs(5);
/// Deliveries in flight at once, across all endpoints.
const PARALLEL: usize = 16;
/// Deliveries leased at a time: one lease write feeds many attempts.
const CLAIM: usize = 256;
/// How often to look for due deliveries (new events, retries, other instances' leftovers).
const POLL: Duration = Duration::from_secs(1);
const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);

pub struct WebhookWorker {
    store: Arc<dyn Store>,
    client: reqwest::Client,
    policy: WebhookPolicy,
    metrics: Arc<Metrics>,
    /// Requests being answered: while many are, deliveries go one at a time with a pause, as
    /// mail does, so a burst of signups is not slowed by its own webhooks (they catch up after).
    visitors: RequestGauge,
}

impl WebhookWorker {
    pub fn new(
        store: Arc<dyn Store>,
        policy: WebhookPolicy,
        metrics: Arc<Metrics>,
        visitors: RequestGauge,
    ) -> anyhow::Result<Self> {
        crate::install_tls_provider();
        let client = reqwest::Client::builder()
            // A redirect is a failure: following one could lead anywhere.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(SEND_TIMEOUT)
            .connect_timeout(SEND_TIMEOUT / 2)
            // A proxy would connect to the name itself, past the address check.
            .no_proxy()
            .dns_resolver(ScreeningResolver { allow_private: policy.allow_private })
            .user_agent(concat!("enlist/", env!("CARGO_PKG_VERSION"), " (webhooks)"))
            .build()?;
        Ok(Self { store, client, policy, metrics, visitors })
    }

    /// Runs until `stop` completes, then waits (bounded) for the attempts in flight and
    /// records them.
    pub async fn run(self, stop: impl Future<Output = ()>) {
        let worker = Arc::new(self);
        let mut lanes: Lanes<QueuedDelivery, DeliveryOutcome> = Lanes::new();
        tokio::pin!(stop);
        loop {
            // After a quiet second, or once the leased ones are nearly all under way.
            if lanes.queued() < PARALLEL {
                lanes.lease(worker.claim(CLAIM - lanes.queued()).await);
            }
            let busy = worker.visitors.busy();
            let parallel = if busy { 1 } else { PARALLEL };
            // Room on the lease for the attempt and its record.
            lanes.start(parallel, SEND_TIMEOUT + RECORD_ROOM, busy, |delivery| {
                let worker = worker.clone();
                async move { worker.attempt(delivery).await }
            });
            tokio::select! {
                outcomes = lanes.finished(), if !lanes.is_idle() => worker.record(&outcomes).await,
                () = tokio::time::sleep(POLL) => {}
                () = &mut stop => break,
            }
        }
        if let Some(outcomes) = lanes.finish(SEND_TIMEOUT).await {
            worker.record(&outcomes).await;
        }
    }

    async fn claim(&self, room: usize) -> Vec<(QueuedDelivery, i64)> {
        let now = unix_now();
        let lease_until = now + LEASE.as_secs() as i64;
        let owner = lease_owner();
        match self.store.claim_deliveries(now, lease_until, owner, room as u32).await {
            Ok(claimed) => claimed.into_iter().map(|d| (d, lease_until)).collect(),
            Err(e) => {
                tracing::warn!(error = format!("{:#}", e.0), "could not claim webhook deliveries");
                Vec::new()
            }
        }
    }

    async fn record(&self, outcomes: &[DeliveryOutcome]) {
        // A failed record leaves the leases to run out, and the deliveries go again: at least
        // once, with the same webhook-id.
        if let Err(e) = self.store.record_deliveries(outcomes).await {
            tracing::warn!(error = format!("{:#}", e.0), "could not record webhook deliveries");
        }
    }

    async fn attempt(&self, delivery: QueuedDelivery) -> DeliveryOutcome {
        let started = Instant::now();
        let answer = self.send(&delivery).await;
        let now = unix_now();
        let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let (http_status, result) = match answer {
            Ok(status) if (200..300).contains(&status) => (Some(status), DeliveryResult::Delivered),
            Ok(410) => (Some(410), DeliveryResult::Gone),
            Ok(status) => (Some(status), self.failed(&delivery, now, format!("HTTP {status}"))),
            Err(reason) => (None, self.failed(&delivery, now, reason)),
        };
        if let DeliveryResult::Retry { error, .. } | DeliveryResult::Failed { error } = &result {
            tracing::warn!(
                endpoint = delivery.endpoint_id,
                event = delivery.event,
                attempt = delivery.attempts + 1,
                reason = error,
                "webhook not delivered"
            );
        }
        self.metrics.webhook(match result {
            DeliveryResult::Delivered => WebhookResult::Delivered,
            DeliveryResult::Retry { .. } => WebhookResult::Retry,
            DeliveryResult::Failed { .. } => WebhookResult::Failed,
            DeliveryResult::Gone => WebhookResult::Disabled,
        });
        DeliveryOutcome {
            delivery_id: delivery.id,
            endpoint_id: delivery.endpoint_id,
            event: delivery.event,
            at: now,
            http_status,
            duration_ms,
            result,
        }
    }

    /// Retry with backoff, or give up once the event is a day old.
    fn failed(&self, delivery: &QueuedDelivery, now: i64, reason: String) -> DeliveryResult {
        if now.saturating_sub(delivery.occurred_at) >= GIVE_UP_AFTER.as_secs() as i64 {
            return DeliveryResult::Failed { error: format!("gave up after 24 hours: {reason}") };
        }
        let wait = backoff(self.policy.retry_base, delivery.attempts);
        let at = now + i64::try_from(wait.as_secs().max(1)).unwrap_or(i64::MAX);
        DeliveryResult::Retry { at, error: reason }
    }

    /// The receiver's status code, or why there was none.
    async fn send(&self, delivery: &QueuedDelivery) -> Result<u16, String> {
        let url = Url::parse(&delivery.url).map_err(|e| format!("bad URL: {e}"))?;
        // A host given as an address never reaches the resolver: check it here.
        if !matches!(url.host(), Some(url::Host::Domain(_))) {
            Destination::check(&url, self.policy.allow_private).await?;
        }
        let id = message_id(delivery);
        let timestamp = unix_now();
        let body = body(delivery);
        let signature = sign(&delivery.secret, &id, timestamp, &body);
        let response = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(describe)?;
        Ok(response.status().as_u16())
    }
}

/// reqwest's error with its causes (the resolver's refusal is one of them).
fn describe(error: reqwest::Error) -> String {
    if error.is_timeout() {
        return format!("no answer within {} seconds", SEND_TIMEOUT.as_secs());
    }
    let mut causes = Vec::new();
    let mut cause = std::error::Error::source(&error);
    while let Some(inner) = cause {
        causes.push(inner.to_string());
        cause = inner.source();
    }
    let mut text = error.without_url().to_string();
    for inner in causes {
        text.push_str(": ");
        text.push_str(&inner);
    }
    text
}
