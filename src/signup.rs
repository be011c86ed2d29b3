//! Adding an address to the list, with every guard a signup must pass, whatever door it came
//! through (the form today; an API or an embedded form later): the honeypot, the per-client and
//! per-address limits, validation, and the durable write.

use std::net::IpAddr;
use std::time::Instant;

use crate::domain::{EmailError, SubscriberEmail};
use crate::security::{Limits, TooMany};
use crate::session::unix_now;
use crate::store::{Store, StoreError};

/// What a client sent.
pub struct SignupRequest<'a> {
    pub client: IpAddr,
    pub email: &'a str,
    /// A field people never see and never fill in; bots fill in everything.
    pub honeypot: &'a str,
}

pub enum SignupOutcome {
    /// On the list (newly, or already: the answer is the same).
    Listed(SubscriberEmail),
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
    store.add_subscriber(&email, unix_now()).await?;
    Ok(SignupOutcome::Listed(email))
}
