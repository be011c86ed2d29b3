//! Outgoing webhooks, signed as the Standard Webhooks specification says: which events exist,
//! which URLs may receive them, the secret and the signature. Events are queued by the database
//! in the same commit as the change (on SQLite a new row's are made from the row by the lease);
//! [`WebhookWorker`] delivers them.

mod destination;
mod worker;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};
use serde::Serialize;
use sha2::Sha256;
use url::Url;

pub use destination::{Destination, is_public};
pub use worker::WebhookWorker;

use crate::domain::Rfc3339;
use crate::store::{NewEndpoint, QueuedDelivery, Store, StoreError};

/// What a subscriber's row went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Created,
    Confirmed,
    Unsubscribed,
    Deleted,
    Erased,
}

impl Event {
    pub const ALL: [Self; 5] =
        [Self::Created, Self::Confirmed, Self::Unsubscribed, Self::Deleted, Self::Erased];

    /// The `type` of the event's body. The bit is the migration's: keep them in step.
    pub fn name(self) -> &'static str {
        match self {
            Self::Created => "subscriber.created",
            Self::Confirmed => "subscriber.confirmed",
            Self::Unsubscribed => "subscriber.unsubscribed",
            Self::Deleted => "subscriber.deleted",
            Self::Erased => "subscriber.erased",
        }
    }

    fn bit(self) -> u32 {
        match self {
            Self::Created => 1,
            Self::Confirmed => 2,
            Self::Unsubscribed => 4,
            Self::Deleted => 8,
            Self::Erased => 16,
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.name() == name)
    }
}

/// The events an endpoint wants; never empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventSet(u32);

impl EventSet {
    pub fn all() -> Self {
        Self(Event::ALL.iter().map(|e| e.bit()).sum())
    }

    /// Event names (`subscriber.created`, …); none means all of them.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut bits = 0;
        for name in names.into_iter().map(str::trim).filter(|n| !n.is_empty()) {
            let event = Event::parse(name).ok_or_else(|| {
                let known: Vec<_> = Event::ALL.iter().map(|e| e.name()).collect();
                format!("unknown event {name:?}; the events are {}", known.join(", "))
            })?;
            bits |= event.bit();
        }
        Ok(if bits == 0 { Self::all() } else { Self(bits) })
    }

    /// As stored: anything outside the known bits is dropped.
    pub fn from_bits(bits: i64) -> Self {
        Self(u32::try_from(bits).unwrap_or(0) & Self::all().0)
    }

    pub fn bits(self) -> u32 {
        self.0
    }

    pub fn contains(self, event: Event) -> bool {
        self.0 & event.bit() != 0
    }

    pub fn names(self) -> Vec<&'static str> {
        Event::ALL.into_iter().filter(|e| self.contains(*e)).map(Event::name).collect()
    }
}

/// What the operator allows webhooks to reach, and how patiently.
#[derive(Debug, Clone, Copy)]
pub struct WebhookPolicy {
    /// `--webhooks-allow-http`: plain `http` URLs too.
    pub allow_http: bool,
    /// `--webhooks-allow-private`: loopback, private and link-local addresses too.
    pub allow_private: bool,
    /// The first retry waits this long, each next one twice as long, up to an hour.
    pub retry_base: Duration,
}

/// A URL an endpoint may have: `https` (or `http` when allowed), a host, no credentials.
/// Where it points is checked separately, at add time and again at every send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUrl(Url);

impl EndpointUrl {
    const MAX_LEN: usize = 2000;

    pub fn parse(raw: &str, policy: &WebhookPolicy) -> Result<Self, String> {
        let raw = raw.trim();
        if raw.len() > Self::MAX_LEN {
            return Err(format!("a webhook URL has at most {} characters", Self::MAX_LEN));
        }
        let url = Url::parse(raw).map_err(|e| format!("not a URL ({e})"))?;
        match url.scheme() {
            "https" => {}
            "http" if policy.allow_http => {}
            "http" => {
                return Err(
                    "the URL must use https (plain http needs --webhooks-allow-http)".into()
                );
            }
            other => return Err(format!("the URL must use https, not {other}")),
        }
        if url.host().is_none() {
            return Err("the URL needs a host".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("the URL must not hold a user name or password".into());
        }
        Ok(Self(url))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn url(&self) -> &Url {
        &self.0
    }
}

/// Why an endpoint was not added.
#[derive(Debug, thiserror::Error)]
pub enum AddRefused {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A new endpoint, and the secret to give its owner (shown this once).
#[derive(Debug)]
pub struct Added {
    pub id: i64,
    pub secret: String,
}

/// Checks the URL and where it points, then stores the endpoint with a fresh secret.
pub async fn add_endpoint(
    store: &dyn Store,
    policy: &WebhookPolicy,
    raw_url: &str,
    events: EventSet,
) -> Result<Added, AddRefused> {
    let url = EndpointUrl::parse(raw_url, policy).map_err(AddRefused::Invalid)?;
    Destination::check(url.url(), policy.allow_private).await.map_err(AddRefused::Invalid)?;
    let secret = new_secret().map_err(|e| StoreError(e.context("making a webhook secret")))?;
    let now = crate::session::unix_now();
    let new = NewEndpoint { url: url.as_str(), secret: &secret, events: events.bits(), now };
    let id = store.create_endpoint(new).await?;
    Ok(Added { id, secret })
}

/// `whsec_` and 32 random bytes in base64, as the specification's libraries expect.
fn new_secret() -> anyhow::Result<String> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(format!("whsec_{}", STANDARD.encode(key)))
}

fn secret_key(secret: &str) -> Vec<u8> {
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    STANDARD.decode(encoded).unwrap_or_else(|_| encoded.as_bytes().to_vec())
}

fn hmac(secret: &str, message: &[&[u8]]) -> [u8; 32] {
    // HMAC takes a key of any length.
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(&secret_key(secret))
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    for part in message {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// `webhook-signature`: `v1,` and the base64 HMAC-SHA256 of `id.timestamp.body`.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let timestamp = timestamp.to_string();
    let mac = hmac(secret, &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body]);
    format!("v1,{}", STANDARD.encode(mac))
}

/// `webhook-id`: the same on every retry of a delivery, and not guessable or shared between
/// endpoints (it is keyed with the endpoint's secret), so receivers can drop repeats.
pub fn message_id(delivery: &QueuedDelivery) -> String {
    let mac = hmac(&delivery.secret, &[b"delivery:", delivery.id.to_string().as_bytes()]);
    let hex: String = mac[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("msg_{hex}")
}

/// The body: `{"type", "timestamp", "data"}`, the same bytes on every retry.
pub fn body(delivery: &QueuedDelivery) -> Vec<u8> {
    #[derive(Serialize)]
    struct Body<'a> {
        r#type: &'a str,
        timestamp: Rfc3339,
        data: serde_json::Value,
    }
    let data = match delivery.event.as_str() {
        "webhook.ping" => serde_json::json!({ "endpoint_id": delivery.endpoint_id }),
        "subscriber.erased" => serde_json::json!({ "id": delivery.subscriber_id }),
        _ => serde_json::json!({
            "id": delivery.subscriber_id,
            "email": delivery.email,
            "status": delivery.status,
            "source": delivery.source,
            "signed_up_at": delivery.signed_up_at.map(Rfc3339),
            "confirmed_at": delivery.confirmed_at.map(Rfc3339),
        }),
    };
    let body = Body { r#type: &delivery.event, timestamp: Rfc3339(delivery.occurred_at), data };
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_specification_example() {
        // The Standard Webhooks specification's own test vector.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn event_sets_parse_names_and_default_to_all() {
        assert_eq!(EventSet::parse([]), Ok(EventSet::all()));
        let two = EventSet::parse(["subscriber.created", " subscriber.erased "]).unwrap();
        assert_eq!(two.names(), ["subscriber.created", "subscriber.erased"]);
        assert!(EventSet::parse(["subscriber.exploded"]).is_err());
        assert_eq!(EventSet::from_bits(1 << 20), EventSet(0));
    }

    #[test]
    fn urls_must_be_https_without_credentials() {
        let strict = WebhookPolicy {
            allow_http: false,
            allow_private: false,
            retry_base: Duration::from_secs(1),
        };
        let lax = WebhookPolicy { allow_http: true, ..strict };
        assert!(EndpointUrl::parse("https://hooks.example.com/in", &strict).is_ok());
        assert!(EndpointUrl::parse("http://hooks.example.com/in", &strict).is_err());
        assert!(EndpointUrl::parse("http://hooks.example.com/in", &lax).is_ok());
        assert!(EndpointUrl::parse("ftp://hooks.example.com/", &lax).is_err());
        assert!(EndpointUrl::parse("https://user:pw@hooks.example.com/", &strict).is_err());
        assert!(EndpointUrl::parse("not a url", &strict).is_err());
        assert!(
            EndpointUrl::parse(&format!("https://a.example/{}", "x".repeat(2000)), &strict)
                .is_err()
        );
    }
}
