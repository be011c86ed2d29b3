//! Adding an address to the list, with every guard a signup must pass, whatever door it came
//! through (the form today; an API or an embedded form later): the honeypot, the per-client and
//! per-address limits, validation, the evidence of consent, and the durable write. With mail
//! configured the signup waits for confirmation, and its confirmation mail is recorded in the
//! same commit.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::domain::{
    ClientEvidence, Door, EmailError, Evidence, SubscriberEmail, SubscriberStatus,
};
use crate::mail::Composer;
use crate::metrics::{Metrics, SignupResult};
use crate::outbox::OutboxBell;
use crate::security::{Limits, Links, TooMany, new_nonce};
use crate::session::unix_now;
use crate::store::{
    ConfirmationQueued, ConfirmationRequest, ImportBatch, ImportRow, NewSubscriber, Store,
    StoreError,
};

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
    pub metrics: Arc<Metrics>,
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
    sign_up_remembered(store, limits, policy, request, |_, _| async { Ok(()) }).await
}

/// [`sign_up`], with the visitor's session remembering the address (`remember` is given it
/// and whether it awaits confirmation) once every guard has passed. Where the store commits
/// writes in the order they start, the session's write starts right behind the signup's and
/// usually shares its commit: one fsync for the request instead of two.
pub async fn sign_up_remembered<R, F>(
    store: &dyn Store,
    limits: &Limits,
    policy: &SignupPolicy,
    request: SignupRequest<'_>,
    remember: R,
) -> Result<SignupOutcome, SignupError>
where
    R: FnOnce(SubscriberEmail, bool) -> F,
    F: Future<Output = Result<(), StoreError>>,
{
    let outcome = guarded_sign_up(store, limits, policy, request, remember).await;
    let counted = match &outcome {
        Ok(SignupOutcome::Listed(_)) => Some(SignupResult::Listed),
        Ok(SignupOutcome::AwaitingConfirmation(_)) => Some(SignupResult::Pending),
        Ok(SignupOutcome::Trapped) => Some(SignupResult::Trapped),
        Err(SignupError::Invalid(_)) => Some(SignupResult::Invalid),
        Err(SignupError::ClientLimit(_) | SignupError::AddressLimit(_)) => {
            Some(SignupResult::Limited)
        }
        Err(SignupError::Storage(_)) => None,
    };
    if let Some(counted) = counted {
        policy.metrics.signup(counted);
    }
    outcome
}

async fn guarded_sign_up<R, F>(
    store: &dyn Store,
    limits: &Limits,
    policy: &SignupPolicy,
    request: SignupRequest<'_>,
    remember: R,
) -> Result<SignupOutcome, SignupError>
where
    R: FnOnce(SubscriberEmail, bool) -> F,
    F: Future<Output = Result<(), StoreError>>,
{
    let now = Instant::now();
    // Counted before validation, so floods of junk (and of bots) are limited too.
    limits.signup_from(request.client, now).map_err(SignupError::ClientLimit)?;
    let email = SubscriberEmail::parse(request.email)?;
    // A bot gets exactly what a person sending the same address would: a refusal for a bad
    // address, a thank-you otherwise. Only then is it caught, before it can use up the
    // address's own limit.
    if !request.honeypot.trim().is_empty() {
        return Ok(SignupOutcome::Trapped);
    }
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
            let remembered = remember(email.clone(), false);
            write_then(store, store.add_subscriber(new), remembered).await?;
            Ok(SignupOutcome::Listed(email))
        }
        Some(opt_in) => {
            let queued = queue_confirmation(store, policy, opt_in, &email, &evidence);
            write_then(store, queued, remember(email.clone(), true)).await?;
            Ok(SignupOutcome::AwaitingConfirmation(email))
        }
    }
}

/// Runs `write`, then `then`, which names the row `write` adds: started together where the
/// store commits in start order (`write` is polled first, so it starts first), else one after
/// the other. Either way both are durable when this answers.
async fn write_then<T>(
    store: &dyn Store,
    write: impl Future<Output = Result<T, StoreError>>,
    then: impl Future<Output = Result<(), StoreError>>,
) -> Result<T, StoreError> {
    if store.commits_in_start_order() {
        let (written, after) = tokio::join!(write, then);
        let written = written?;
        after?;
        Ok(written)
    } else {
        let written = write.await?;
        then.await?;
        Ok(written)
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

/// What the owner (on the admin page, or through the API) asked an address to become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerAdd {
    /// On the list at once: the owner vouches for the consent.
    Confirmed,
    /// Asked to confirm by mail (needs mail).
    Pending,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerAdded {
    Added,
    AlreadyOnTheList,
    /// The person left; only they can come back, by signing up themselves.
    Suppressed,
    /// Pending was asked for and no mail is configured.
    NoMail,
}

/// Adds one address the way an import does (never changing an existing row, never re-adding a
/// suppressed address); `who` names the admin or the API token in the evidence.
pub async fn owner_add(
    store: &dyn Store,
    policy: &SignupPolicy,
    email: &SubscriberEmail,
    status: OwnerAdd,
    door: Door,
    who: &str,
) -> Result<OwnerAdded, StoreError> {
    let now = unix_now();
    let (status, nonce, confirm_expires_at) = match (status, &policy.double_opt_in) {
        (OwnerAdd::Confirmed, _) => (SubscriberStatus::Confirmed, None, None),
        (OwnerAdd::Pending, None) => return Ok(OwnerAdded::NoMail),
        (OwnerAdd::Pending, Some(opt_in)) => (
            SubscriberStatus::Pending,
            Some(new_nonce()?),
            Some(now.saturating_add(secs(opt_in.confirm_ttl))),
        ),
    };
    let row = ImportRow { email, address_hash: policy.links.address_hash(email.key()), nonce };
    let consent = format!("added by {who}");
    let batch = ImportBatch {
        door,
        rows: std::slice::from_ref(&row),
        status,
        consent: &consent,
        confirm_expires_at,
        dry_run: false,
        now,
    };
    let counted = store.import_batch(batch).await?;
    Ok(if counted.added == 1 {
        if let Some(opt_in) = &policy.double_opt_in
            && status == SubscriberStatus::Pending
        {
            opt_in.bell.ring();
        }
        OwnerAdded::Added
    } else if counted.suppressed == 1 {
        OwnerAdded::Suppressed
    } else {
        OwnerAdded::AlreadyOnTheList
    })
}
