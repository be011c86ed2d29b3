use anyhow::Context;

use super::{PasswordHash, generate_password, hash_password, verify_password};
use crate::config::AdminPasswordSetting;
use crate::domain::AdminPassword;
use crate::session::unix_now;
use crate::store::Store;

/// The admin password the server checks logins against, and the fingerprint admin sessions carry.
#[derive(Debug, Clone)]
pub struct AdminCredential {
    hash: PasswordHash,
    fingerprint: String,
}

impl AdminCredential {
    fn new(hash: PasswordHash) -> Self {
        let fingerprint = hash.fingerprint();
        Self { hash, fingerprint }
    }

    pub fn hash(&self) -> &PasswordHash {
        &self.hash
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

/// Settles which password is in force and makes sure storage holds its hash (never the plain
/// text). Returns the generated password when there was none at all, for the caller to show once.
pub async fn resolve_admin_credential(
    store: &dyn Store,
    setting: AdminPasswordSetting,
) -> anyhow::Result<(AdminCredential, Option<AdminPassword>)> {
    let stored = stored_hash(store).await?;
    let now = unix_now();
    match setting {
        AdminPasswordSetting::Hash(hash) => {
            if stored.as_ref() != Some(&hash) {
                store.set_admin_password_hash(hash.as_str(), now).await?;
            }
            Ok((AdminCredential::new(hash), None))
        }
        AdminPasswordSetting::Plain(password) => {
            // Re-hashing at every start would change the fingerprint and so log the admin out at
            // each restart: keep the stored hash while the configured password still matches it.
            let previous = stored.clone();
            let hash = off_thread(move || match previous {
                Some(stored) if verify_password(password.expose(), &stored) => Ok(stored),
                _ => hash_password(&password),
            })
            .await?;
            if stored.as_ref() != Some(&hash) {
                store.set_admin_password_hash(hash.as_str(), now).await?;
            }
            Ok((AdminCredential::new(hash), None))
        }
        AdminPasswordSetting::Unset => {
            if let Some(stored) = stored {
                return Ok((AdminCredential::new(stored), None));
            }
            let password = generate_password()?;
            let for_hashing = password.clone();
            let hash = off_thread(move || hash_password(&for_hashing)).await?;
            if store.create_admin_password_hash(hash.as_str(), now).await? {
                return Ok((AdminCredential::new(hash), Some(password)));
            }
            // Another instance starting at the same moment stored its own first: use that one.
            let winner =
                stored_hash(store).await?.context("the admin credential vanished during start")?;
            Ok((AdminCredential::new(winner), None))
        }
    }
}

async fn stored_hash(store: &dyn Store) -> anyhow::Result<Option<PasswordHash>> {
    match store.admin_password_hash().await? {
        Some(phc) => Ok(Some(
            PasswordHash::parse(&phc).context("the stored admin password hash is malformed")?,
        )),
        None => Ok(None),
    }
}

async fn off_thread<T: Send + 'static>(
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(work).await.context("password hashing task")?
}
