//! Who is calling the API: a bearer token, checked against the stored hashes, with failed
//! checks throttled per client exactly like failed admin logins.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::security::api_token_hash;
use crate::session::unix_now;
use crate::web::AppState;
use crate::web::client_ip::ClientIp;
use crate::web::error::AppError;

/// A token's last use is written at most this often (seconds): a busy script must not turn
/// every read into a write.
const TOUCH_EVERY: i64 = 60;

/// A caller with a valid token.
pub struct ApiCaller {
    pub token_name: String,
    read_only: bool,
}

impl ApiCaller {
    /// Refuses a read-only token a write.
    pub fn may_write(&self) -> Result<(), AppError> {
        if self.read_only { Err(AppError::ReadOnlyToken) } else { Ok(()) }
    }
}

/// When each token's last use was last written, in this process.
#[derive(Debug, Default)]
pub struct TokenUses(Mutex<HashMap<i64, i64>>);

impl TokenUses {
    /// Whether this use should be written (and, if so, notes it as written).
    fn due(&self, id: i64, stored: Option<i64>, now: i64) -> bool {
        let mut written = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let last = written.get(&id).copied().max(stored).unwrap_or(i64::MIN);
        if now.saturating_sub(last) < TOUCH_EVERY {
            return false;
        }
        written.insert(id, now);
        true
    }
}

impl FromRequestParts<AppState> for ApiCaller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, AppError> {
        let client = parts
            .extensions
            .get::<ClientIp>()
            .map(|c| c.0)
            .ok_or_else(|| AppError::Unexpected(anyhow::anyhow!("no client address")))?;
        // Checked before the token, so a throttled guess costs the guesser nothing but time.
        app.limits
            .login_allowed(client, Instant::now())
            .map_err(|t| AppError::LoginThrottled { retry_after: t.retry_after })?;
        let presented = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or(AppError::Unauthorized)?;
        let Some(token) = app.store.token_by_hash(&api_token_hash(presented)).await? else {
            app.limits.login_failed(client, Instant::now());
            return Err(AppError::Unauthorized);
        };
        let now = unix_now();
        if app.api_tokens.due(token.id, token.last_used_at, now) {
            app.store.touch_token(token.id, now).await?;
        }
        Ok(Self { token_name: token.name, read_only: token.read_only })
    }
}
