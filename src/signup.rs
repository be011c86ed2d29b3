//! Adding an address to the list, with every guard a signup must pass, whatever door it came
//! through (the form today; an API or an embedded form later): the honeypot, the per-client and
//! per-address limits, validation, the evidence of consent, and the durable write. With mail
//! configured the signup waits for confirmation, and its confirmation mail is queued in the
//! same commit.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::domain::{ClientEvidence, Door, EmailError, Evidence, SubscriberEmail};
use crate::mail::Composer;
use crate::outbox::OutboxBell;
use crate::security::{Limits, Links, TooMany, new_nonce};
use crate::session::unix_now;
use crate::store::{ConfirmationQueued, ConfirmationRequest, NewSubscriber, Store, StoreError};

/// At most this many confirmation mails per address in [`CONFIRMATION_WINDOW`], whoever asks.
pub const CONFIRMATIONS_PER_ADDRESS: u32 = 3;
pub const CONFIRMATION_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// How signups are recorded on this installation.
pub struct SignupPolicy {
    pub links: Links,
    pub list_name: String,
    /// Which consent text the form shows (a hash of the rendered intro).
    pub consent: String,
    pub keep_full_ip: bool,
    /// `None`: single opt-in.
    pub double_opt_in: Option<DoubleOptIn>,
}

pub struct DoubleOptIn {
    pub confirm_ttl: Duration,
    pub composer: Arc<Composer>,
    pub bell: OutboxBell,
}

/// What a client sent.
pub struct SignupRequest<'a> {
    pub client: IpAddr,
    pub user_agent: Option<&'a str>,
    pub door: Door,
    pub email: &'a str,
    /// A field people never see and never fill in; bots fill in everything.
    pub honeypot: &'a str,
}

pub enum SignupOutcome {
    /// On the list (newly, or already: the answer is the same).
    Listed(SubscriberEmail),
    /// Waiting for the click in the confirmation mail. Said whether or not a mail was queued
    /// (already confirmed, or the address's mail limit reached), so the answer tells nothing.
    AwaitingConfirmation(SubscriberEmail),
    /// A bot: answer exactly as for a signup, store nothing.
    Trapped,
}

#[derive(Debug, thiserror::Error)]
pub enum SignupError {
    #[error(transparent)]
    Invalid(#[from] EmailError),
    #[error("too many signups from this client")]
    ClientLimit(TooMany),
    #[error("too many signups of this address")]
    AddressLimit(TooMany),
    #[error(transparent)]
    Storage(#[from] StoreError),
}

pub async fn sign_up(
    store: &dyn Store,
    limits: &Limits,
    policy: &SignupPolicy,
    request: SignupRequest<'_>,
) -> Result<SignupOutcome, SignupError> {
    if !request.honeypot.trim().is_empty() {
        return Ok(SignupOutcome::Trapped);
    }
    let now = Instant::now();
    // Counted before validation, so floods of junk are limited too.
    limits.signup_from(request.client, now).map_err(SignupError::ClientLimit)?;
    let email = SubscriberEmail::parse(request.email)?;
    limits.signup_of(email.key(), now).map_err(SignupError::AddressLimit)?;
    let evidence = Evidence {
        door: request.door,
        client: ClientEvidence::new(request.client, request.user_agent, policy.keep_full_ip),
        consent: policy.consent.clone(),
    };
    match &policy.double_opt_in {
        None => {
            let new = NewSubscriber {
                email: &email,
                evidence: &evidence,
                address_hash: policy.links.address_hash(email.key()),
                now: unix_now(),
            };
            store.add_subscriber(new).await?;
            Ok(SignupOutcome::Listed(email))
        }
        Some(opt_in) => {
            queue_confirmation(store, policy, opt_in, &email, &evidence).await?;
            Ok(SignupOutcome::AwaitingConfirmation(email))
        }
    }
}

/// Adds the address as pending (unless it is on the list already) and queues a fresh
/// confirmation link, within the per-address limit counted in the database.
pub async fn queue_confirmation(
    store: &dyn Store,
    policy: &SignupPolicy,
    opt_in: &DoubleOptIn,
    email: &SubscriberEmail,
    evidence: &Evidence,
) -> Result<ConfirmationQueued, StoreError> {
    let now = unix_now();
    let request = ConfirmationRequest {
        subscriber: NewSubscriber {
            email,
            evidence,
            address_hash: policy.links.address_hash(email.key()),
            now,
        },
        nonce: new_nonce()?,
        expires_at: now.saturating_add(secs(opt_in.confirm_ttl)),
        limit: CONFIRMATIONS_PER_ADDRESS,
        window_start: now - secs(CONFIRMATION_WINDOW),
    };
    let queued = store.request_confirmation(request).await?;
    if queued == ConfirmationQueued::Queued {
        opt_in.bell.ring();
    }
    Ok(queued)
}

fn secs(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}
