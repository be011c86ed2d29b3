//! Issuing API tokens, for the admin page and `enlist token create` alike.

use crate::domain::TokenName;
use crate::security::new_api_token;
use crate::session::unix_now;
use crate::store::{NewToken, Store, StoreError};

/// A new token, or `None` when a token of that name exists. The token is returned this once.
pub async fn issue(
    store: &dyn Store,
    name: &TokenName,
    read_only: bool,
) -> Result<Option<String>, StoreError> {
    let (token, hash) = new_api_token().map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let new = NewToken { name: name.as_str(), hash, read_only, now: unix_now() };
    Ok(store.create_token(new).await?.then_some(token))
}
