//! What the store keeps about outgoing webhooks: endpoints, deliveries waiting, attempts made.

/// An endpoint to add; `events` is the bit set of [`crate::webhooks::EventSet`].
#[derive(Debug, Clone, Copy)]
pub struct NewEndpoint<'a> {
    pub url: &'a str,
    pub secret: &'a str,
    pub events: u32,
    pub now: i64,
}

/// An endpoint as the admin sees it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EndpointRecord {
    pub id: i64,
    pub url: String,
    pub events: i64,
    pub created_at: i64,
    pub disabled_at: Option<i64>,
    pub disabled_reason: Option<String>,
    /// Deliveries still to make.
    pub queued: i64,
}

/// A delivery leased to this worker, with what it takes to sign and send it.
#[derive(Clone, sqlx::FromRow)]
pub struct QueuedDelivery {
    pub id: i64,
    pub endpoint_id: i64,
    pub url: String,
    pub secret: String,
    pub event: String,
    pub occurred_at: i64,
    pub subscriber_id: Option<i64>,
    pub email: Option<String>,
    pub status: Option<String>,
    pub source: Option<String>,
    pub signed_up_at: Option<i64>,
    pub confirmed_at: Option<i64>,
    pub attempts: i64,
}

impl std::fmt::Debug for QueuedDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No address, no secret in a log line.
        f.debug_struct("QueuedDelivery")
            .field("id", &self.id)
            .field("endpoint_id", &self.endpoint_id)
            .field("event", &self.event)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// What one attempt got, to record.
#[derive(Debug, Clone)]
pub struct DeliveryOutcome {
    pub delivery_id: i64,
    pub endpoint_id: i64,
    pub event: String,
    pub at: i64,
    pub http_status: Option<u16>,
    pub duration_ms: i64,
    pub result: DeliveryResult,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryResult {
    /// A 2xx: done.
    Delivered,
    /// Try again at this time.
    Retry { at: i64, error: String },
    /// Given up (24 hours of failures): the delivery goes, the attempt stays in the history.
    Failed { error: String },
    /// `410 Gone`: the endpoint is disabled and its queued deliveries dropped.
    Gone,
}

impl DeliveryResult {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Retry { .. } => "retry",
            Self::Failed { .. } => "failed",
            Self::Gone => "disabled",
        }
    }

    pub fn error(&self) -> Option<&str> {
        match self {
            Self::Retry { error, .. } | Self::Failed { error } => Some(error),
            Self::Delivered | Self::Gone => None,
        }
    }
}

/// One attempt as the admin page lists it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AttemptRecord {
    pub delivery_id: i64,
    pub event: String,
    pub at: i64,
    pub http_status: Option<i32>,
    pub duration_ms: i64,
    pub outcome: String,
    pub error: Option<String>,
}

/// The columns of an [`EndpointRecord`] but `queued`, the same on both backends.
pub(crate) const ENDPOINT_FIELDS: &str =
    "e.id, e.url, e.events, e.created_at, e.disabled_at, e.disabled_reason";

/// The deliveries queued for endpoint `e`.
pub(crate) const ENDPOINT_QUEUED: &str =
    "(SELECT count(*) FROM webhook_deliveries AS d WHERE d.endpoint_id = e.id)";

/// The columns of a [`QueuedDelivery`] (deliveries `d` joined to endpoints `e`).
pub(crate) const DELIVERY_COLUMNS: &str = "d.id, d.endpoint_id, e.url, e.secret, d.event, \
    d.occurred_at, d.subscriber_id, d.email, d.status, d.source, d.signed_up_at, d.confirmed_at, \
    d.attempts";

/// Attempts kept per endpoint.
pub const ATTEMPTS_KEPT: i64 = 100;
