//! Server-side sessions and typed access to them.
//!
//! The cookie carries only a random 256-bit id; storage keeps its SHA-256 and a small JSON
//! document ([`SessionData`]). Nothing is written until a handler stores something, so a plain
//! visit sets no cookie. Handlers never see raw keys: they call the typed methods below, each of
//! which writes through to storage before the handler answers, so a `303` is only ever sent after
//! the session change it implies is durable.

use std::sync::{Arc, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Mutex;

mod cookie;

pub use cookie::{CookieProblem, SessionLayerState, session_cookie};

use crate::domain::SubscriberEmail;
use crate::security::{AdminCredentials, CredentialCheck, SecretKey};
use crate::store::{SessionKey, Store, StoreError, StoreResult};

const FORM_TOKEN_PURPOSE: &str = "enlist form token v1";
/// Admin activity is recorded at most this often, so browsing the admin pages is mostly reads.
const MAX_TOUCH_INTERVAL: Duration = Duration::from_secs(60);

/// How sessions behave; built once at start.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub cookie_name: &'static str,
    pub secure_cookie: bool,
    pub visitor_ttl: Duration,
    pub admin_idle_timeout: Duration,
    pub admin_absolute_timeout: Duration,
    pub secret: SecretKey,
}

impl SessionConfig {
    /// On https the cookie gets `Secure` and the `__Host-` prefix, which pins it to this exact
    /// host and path `/`.
    pub fn cookie_name_for(secure: bool) -> &'static str {
        if secure { "__Host-enlist_session" } else { "enlist_session" }
    }

    fn touch_interval(&self) -> Duration {
        MAX_TOUCH_INTERVAL.min(self.admin_idle_timeout / 10)
    }
}

/// Everything a session can remember. The database's `subscriber_sessions_forget` triggers
/// name the two visitor fields: renaming them needs a migration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
struct SessionData {
    #[serde(skip_serializing_if = "Option::is_none")]
    visitor_email: Option<SubscriberEmail>,
    /// The visitor signed up with mail on and has not confirmed from this browser yet.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    awaiting_confirmation: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    notice: Option<Notice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    admin: Option<AdminLogin>,
    #[serde(skip_serializing_if = "Option::is_none")]
    admin_notice: Option<Notice>,
}

impl SessionData {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// A one-time message shown on the next page view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    pub kind: NoticeKind,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoticeKind {
    Success,
    Error,
}

impl Notice {
    pub fn success(text: impl Into<String>) -> Self {
        Self { kind: NoticeKind::Success, text: text.into() }
    }

    pub fn error(text: impl Into<String>) -> Self {
        Self { kind: NoticeKind::Error, text: text.into() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct AdminLogin {
    /// Which admin password opened this session (see `PasswordHash::fingerprint`).
    credential: String,
    logged_in_at_ms: i64,
    last_seen_at_ms: i64,
}

/// Whether the request comes from a logged-in admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminStatus {
    Active,
    /// Was logged in, but a timeout passed or the password changed.
    Expired,
    LoggedOut,
}

/// A rejected per-session form token.
#[derive(Debug, thiserror::Error)]
#[error("the form token is missing or does not belong to this session")]
pub struct BadFormToken;

/// A session's id, as carried by its cookie. Opaque outside this module.
///
/// A new id is the creation time in microseconds (8 bytes, big-endian) and 25 random bytes; its
/// storage key keeps the time in front of a hash of the random part, so new sessions land at
/// the end of the key index instead of on a random page of it (one page written per commit for
/// a burst of signups, not one per signup). Ids issued before that are 32 random bytes whose
/// key is their SHA-256; they stay valid until they expire.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionId {
    Ordered([u8; ORDERED_BYTES]),
    Legacy([u8; LEGACY_BYTES]),
}

const TIME_BYTES: usize = 8;
const ORDERED_BYTES: usize = TIME_BYTES + 25;
const LEGACY_BYTES: usize = 32;

// A session id is a bearer credential: never print it.
impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionId(..)")
    }
}

impl SessionId {
    fn generate() -> StoreResult<Self> {
        let mut id = [0u8; ORDERED_BYTES];
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        id[..TIME_BYTES].copy_from_slice(&micros.to_be_bytes());
        crate::security::random::fill(&mut id[TIME_BYTES..])
            .map_err(|e| StoreError::from(anyhow::anyhow!("no randomness: {e}")))?;
        Ok(Self::Ordered(id))
    }

    /// `None` for anything that is not one of ours: 33 bytes are exactly 44 base64 characters,
    /// a legacy id's 32 bytes exactly 43.
    fn parse(cookie_value: &str) -> Option<Self> {
        match cookie_value.len() {
            44 => decode_exact(cookie_value).map(Self::Ordered),
            43 => decode_exact(cookie_value).map(Self::Legacy),
            _ => None,
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Self::Ordered(id) => id,
            Self::Legacy(id) => id,
        }
    }

    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.bytes())
    }

    fn storage_key(&self) -> SessionKey {
        match self {
            Self::Ordered(id) => {
                let (time, secret) = id.split_at(TIME_BYTES);
                let mut key = [0u8; 32];
                key[..TIME_BYTES].copy_from_slice(time);
                key[TIME_BYTES..].copy_from_slice(&Sha256::digest(secret)[..32 - TIME_BYTES]);
                key
            }
            Self::Legacy(id) => Sha256::digest(id).into(),
        }
    }
}

fn decode_exact<const N: usize>(text: &str) -> Option<[u8; N]> {
    let mut bytes = [0u8; N];
    match URL_SAFE_NO_PAD.decode_slice(text, &mut bytes) {
        Ok(n) if n == N => Some(bytes),
        _ => None,
    }
}

#[cfg(test)]
impl SessionVersion {
    /// The `n`th version of one session.
    pub fn for_test(n: usize) -> Self {
        Self(Some((SessionId::Legacy([7; LEGACY_BYTES]), Arc::from(n.to_string()))))
    }
}

/// What the response must do with the cookie.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CookieChange {
    Keep,
    Set(SessionId),
    Clear,
}

struct Loaded {
    /// `None` while nothing is stored.
    id: Option<SessionId>,
    data: SessionData,
    /// `data` as stored: what [`SessionVersion`] compares.
    stored: Arc<str>,
}

impl Loaded {
    fn version(&self) -> SessionVersion {
        SessionVersion(self.id.map(|id| (id, self.stored.clone())))
    }
}

/// Everything a page rendered from a session depends on: its id and all that is stored under
/// it. Equal versions render equal pages, so a rendered page can be kept under its version;
/// every session with nothing stored has the same version.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionVersion(Option<(SessionId, Arc<str>)>);

struct RequestState {
    /// What storage held under the incoming id (`Some(None)`: nothing), before it is read.
    fetched: Option<Option<(SessionId, Arc<str>)>>,
    loaded: Option<Loaded>,
}

struct Inner {
    store: Arc<dyn Store>,
    config: Arc<SessionConfig>,
    incoming: Option<SessionId>,
    state: Mutex<RequestState>,
    /// Apart from `state`, and never held across an await, so the layer reads it the moment
    /// the answer is ready.
    cookie: std::sync::Mutex<CookieChange>,
}

/// The current request's session. Loaded from storage on first use, so routes that never ask
/// cost nothing.
#[derive(Clone)]
pub struct Session(Arc<Inner>);

impl Session {
    fn new(store: Arc<dyn Store>, config: Arc<SessionConfig>, incoming: Option<SessionId>) -> Self {
        Self(Arc::new(Inner {
            store,
            config,
            incoming,
            state: Mutex::new(RequestState { fetched: None, loaded: None }),
            cookie: std::sync::Mutex::new(CookieChange::Keep),
        }))
    }

    async fn with_loaded<R>(&self, f: impl FnOnce(&mut RequestState) -> R) -> StoreResult<R> {
        let mut state = self.0.state.lock().await;
        if state.loaded.is_none() {
            let loaded = Self::parse(self.fetch(&mut state).await?);
            if self.0.incoming.is_some() && loaded.id.is_none() {
                // Unknown, expired, ended elsewhere or unreadable: tell the browser to forget it.
                self.set_cookie(CookieChange::Clear);
            }
            state.loaded = Some(loaded);
        }
        Ok(f(&mut state))
    }

    /// What storage holds under the incoming id, asked once per request.
    async fn fetch(&self, state: &mut RequestState) -> StoreResult<Option<(SessionId, Arc<str>)>> {
        if let Some(fetched) = &state.fetched {
            return Ok(fetched.clone());
        }
        let fetched = match self.0.incoming {
            Some(id) => self
                .0
                .store
                .load_session(&id.storage_key(), unix_now())
                .await?
                .map(|json| (id, json)),
            None => None,
        };
        if self.0.incoming.is_some() && fetched.is_none() {
            self.set_cookie(CookieChange::Clear);
        }
        state.fetched = Some(fetched.clone());
        Ok(fetched)
    }

    fn parse(fetched: Option<(SessionId, Arc<str>)>) -> Loaded {
        let empty = Loaded { id: None, data: SessionData::default(), stored: Arc::from("") };
        let Some((id, stored)) = fetched else {
            return empty;
        };
        match serde_json::from_str(&stored) {
            Ok(data) => Loaded { id: Some(id), data, stored },
            Err(e) => {
                tracing::warn!(error = %e, "unreadable session record; starting afresh");
                empty
            }
        }
    }

    async fn read<R>(&self, f: impl FnOnce(&SessionData) -> R) -> StoreResult<R> {
        self.with_loaded(|state| f(&state.loaded.as_ref().expect("loaded above").data)).await
    }

    /// Applies `f` and writes the result through to storage: an empty session is deleted, a new
    /// one gets a fresh id. With `rotate`, the old id is retired and the data moves to a new one.
    async fn write<R>(
        &self,
        rotate: bool,
        f: impl FnOnce(&mut SessionData) -> R,
    ) -> StoreResult<R> {
        self.with_loaded(|_| ()).await?;
        let mut state = self.0.state.lock().await;
        let store = &self.0.store;
        let loaded = state.loaded.as_mut().expect("loaded above");
        let mut data = loaded.data.clone();
        let result = f(&mut data);
        if data == loaded.data && !rotate {
            return Ok(result);
        }
        let expires_at = unix_now() + secs(self.0.config.visitor_ttl);
        let old_id = loaded.id;
        let mut new_id = old_id;
        if let Some(id) = old_id.filter(|_| rotate || data.is_empty()) {
            store.delete_session(&id.storage_key()).await?;
            new_id = None;
        }
        let mut stored = String::new();
        if !data.is_empty() {
            let json = serde_json::to_string(&data)
                .map_err(|e| StoreError::from(anyhow::Error::from(e)))?;
            let remembers = data.visitor_email.as_ref().map(SubscriberEmail::key);
            match new_id {
                Some(id) => {
                    store.save_session(&id.storage_key(), &json, remembers, expires_at).await?
                }
                None => new_id = Some(self.create(&json, remembers, expires_at).await?),
            }
            stored = json;
        }
        let loaded = state.loaded.as_mut().expect("loaded above");
        loaded.id = new_id;
        loaded.data = data;
        loaded.stored = Arc::from(stored);
        self.set_cookie(match new_id {
            Some(id) => CookieChange::Set(id),
            None if self.0.incoming.is_some() || old_id.is_some() => CookieChange::Clear,
            None => CookieChange::Keep,
        });
        Ok(result)
    }

    async fn create(
        &self,
        json: &str,
        remembers: Option<&str>,
        expires_at: i64,
    ) -> StoreResult<SessionId> {
        // 200 random bits do not collide in practice; the loop only makes that a guarantee.
        loop {
            let id = SessionId::generate()?;
            if self.0.store.create_session(&id.storage_key(), json, remembers, expires_at).await? {
                return Ok(id);
            }
        }
    }

    /// The version as stored, without reading what is stored: enough to find a page rendered
    /// from this very text before. (Text that cannot be read never has a page kept under it:
    /// pages are kept under [`Self::version`].)
    pub async fn stored_version(&self) -> StoreResult<SessionVersion> {
        let mut state = self.0.state.lock().await;
        if let Some(loaded) = &state.loaded {
            return Ok(loaded.version());
        }
        Ok(SessionVersion(self.fetch(&mut state).await?))
    }

    /// What a page rendered from this session depends on (see [`SessionVersion`]), once read.
    pub async fn version(&self) -> StoreResult<SessionVersion> {
        self.with_loaded(|state| state.loaded.as_ref().expect("loaded above").version()).await
    }

    /// The token every form rendered inside this session carries. `None` before anything is
    /// stored: such forms are only the signup and login forms, which need no token.
    pub async fn form_token(&self) -> StoreResult<Option<String>> {
        let id = self.with_loaded(|state| state.loaded.as_ref().and_then(|l| l.id)).await?;
        Ok(id.map(|id| URL_SAFE_NO_PAD.encode(self.token_for(id))))
    }

    fn token_for(&self, id: SessionId) -> [u8; 32] {
        self.0.config.secret.sign(FORM_TOKEN_PURPOSE, id.bytes())
    }

    /// Checks a submitted form token against this session, in constant time.
    pub async fn verify_form_token(&self, submitted: &str) -> Result<(), BadFormToken> {
        let id = self
            .with_loaded(|state| state.loaded.as_ref().and_then(|l| l.id))
            .await
            .map_err(|_| BadFormToken)?
            .ok_or(BadFormToken)?;
        let mut decoded = [0u8; 32];
        let valid = match URL_SAFE_NO_PAD.decode_slice(submitted.as_bytes(), &mut decoded) {
            Ok(32) => bool::from(decoded.ct_eq(&self.token_for(id))),
            _ => false,
        };
        if valid { Ok(()) } else { Err(BadFormToken) }
    }

    // --- the visitor ---

    pub async fn visitor_email(&self) -> StoreResult<Option<SubscriberEmail>> {
        self.read(|data| data.visitor_email.clone()).await
    }

    /// Whether the remembered visitor still has a confirmation link to click.
    pub async fn visitor_awaits_confirmation(&self) -> StoreResult<bool> {
        self.read(|data| data.visitor_email.is_some() && data.awaiting_confirmation).await
    }

    pub async fn remember_visitor(
        &self,
        email: SubscriberEmail,
        awaiting_confirmation: bool,
    ) -> StoreResult<()> {
        self.write(false, |data| {
            data.visitor_email = Some(email);
            data.awaiting_confirmation = awaiting_confirmation;
        })
        .await
    }

    /// The visitor confirmed from this browser: if this session remembers that address, it
    /// now shows them as on the list.
    pub async fn visitor_confirmed(&self, email_key: &str) -> StoreResult<()> {
        self.write(false, |data| {
            if data.visitor_email.as_ref().is_some_and(|e| e.key() == email_key) {
                data.awaiting_confirmation = false;
            }
        })
        .await
    }

    /// Forgets the visitor's address and leaves a message for the next page, under a new id:
    /// removing the address's row has just made every session that remembered it forget it,
    /// ending those (like this one, often) that held nothing else.
    pub async fn forget_visitor(&self, notice: Notice) -> StoreResult<()> {
        self.write(true, |data| {
            data.visitor_email = None;
            data.awaiting_confirmation = false;
            data.notice = Some(notice);
        })
        .await
    }

    pub async fn set_notice(&self, notice: Notice) -> StoreResult<()> {
        self.write(false, |data| data.notice = Some(notice)).await
    }

    /// The one-time message for the public page, removed as it is read.
    pub async fn take_notice(&self) -> StoreResult<Option<Notice>> {
        if self.read(|data| data.notice.is_none()).await? {
            return Ok(None);
        }
        self.write(false, |data| data.notice.take()).await
    }

    // --- the admin ---

    /// Starts an admin session under a brand-new id, so an id seen before login (planted or
    /// sniffed) is worthless afterwards.
    pub async fn log_in_admin(&self, credential: String) -> StoreResult<()> {
        let now = unix_now_ms();
        self.write(true, |data| {
            data.admin =
                Some(AdminLogin { credential, logged_in_at_ms: now, last_seen_at_ms: now });
            data.admin_notice = None;
        })
        .await
    }

    /// Ends the whole session on the server; replaying the old cookie finds nothing.
    pub async fn log_out(&self) -> StoreResult<()> {
        self.write(false, |data| *data = SessionData::default()).await
    }

    /// Checks the admin login against the timeouts and the current credential, ending it when
    /// it no longer holds and recording activity at a coarse interval.
    pub async fn admin_status(&self, credentials: &AdminCredentials) -> StoreResult<AdminStatus> {
        let config = &self.0.config;
        let Some(login) = self.read(|data| data.admin.clone()).await? else {
            return Ok(AdminStatus::LoggedOut);
        };
        let now = unix_now_ms();
        let idle = now.saturating_sub(login.last_seen_at_ms);
        let age = now.saturating_sub(login.logged_in_at_ms);
        let timed_out =
            age > millis(config.admin_absolute_timeout) || idle > millis(config.admin_idle_timeout);
        if timed_out || credentials.check(&login.credential).await? == CredentialCheck::Replaced {
            self.write(false, |data| {
                data.admin = None;
                data.admin_notice =
                    Some(Notice::error("Your admin session has ended. Please log in again."));
            })
            .await?;
            return Ok(AdminStatus::Expired);
        }
        if idle > millis(config.touch_interval()) {
            self.write(false, |data| {
                if let Some(admin) = data.admin.as_mut() {
                    admin.last_seen_at_ms = now;
                }
            })
            .await?;
        }
        Ok(AdminStatus::Active)
    }

    pub async fn set_admin_notice(&self, notice: Notice) -> StoreResult<()> {
        self.write(false, |data| data.admin_notice = Some(notice)).await
    }

    pub async fn take_admin_notice(&self) -> StoreResult<Option<Notice>> {
        if self.read(|data| data.admin_notice.is_none()).await? {
            return Ok(None);
        }
        self.write(false, |data| data.admin_notice.take()).await
    }

    fn set_cookie(&self, change: CookieChange) {
        *self.0.cookie.lock().unwrap_or_else(PoisonError::into_inner) = change;
    }

    fn cookie_change(&self) -> CookieChange {
        *self.0.cookie.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn config(&self) -> &SessionConfig {
        &self.0.config
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Session>()
            .cloned()
            .expect("the session layer runs before every handler"))
    }
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

pub fn unix_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn secs(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_junk_is_rejected() {
        let id = SessionId::generate().unwrap();
        assert_eq!(SessionId::parse(&id.encode()), Some(id));
        let legacy = SessionId::Legacy([7; 32]);
        assert_eq!(SessionId::parse(&legacy.encode()), Some(legacy));
        assert!(SessionId::parse("").is_none());
        assert!(SessionId::parse("not-a-session").is_none());
        assert!(SessionId::parse(&"A".repeat(45)).is_none());
        assert!(SessionId::parse(&"*".repeat(43)).is_none());
        assert!(SessionId::parse(&"*".repeat(44)).is_none());
    }

    #[test]
    fn new_ids_are_keyed_in_creation_order_and_keep_a_secret_part() {
        let first = SessionId::generate().unwrap();
        std::thread::sleep(Duration::from_millis(2));
        let second = SessionId::generate().unwrap();
        assert!(first.storage_key() < second.storage_key());
        assert_ne!(first.storage_key()[8..], second.storage_key()[8..]);
        // The key is not the id: a copy of the database does not hand out the cookie.
        assert_ne!(first.storage_key()[8..], first.bytes()[8..32]);
        let legacy = SessionId::Legacy([7; 32]);
        assert_eq!(legacy.storage_key(), <[u8; 32]>::from(Sha256::digest([7; 32])));
    }
}
