//! The admin password: settled once at start so that every instance on one database holds the
//! same stored hash, then kept in step with the database, so a password set by one instance at
//! its restart reaches the others without restarting them.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::{PasswordHash, generate_password, hash_password, verify_password};
use crate::config::AdminPasswordSetting;
use crate::domain::AdminPassword;
use crate::session::unix_now;
use crate::store::{Store, StoreResult};

/// The longest an admin check relies on a copy of the stored credential without reading it again.
const MAX_AGE: Duration = Duration::from_secs(2);
/// Reads forced by a failed login happen at most this often, whatever the number of guesses.
const MIN_FORCED_INTERVAL: Duration = Duration::from_secs(1);
/// Fingerprints of replaced credentials that we remember, so a flood of cookies from before a
/// password change is refused without reading the database for each.
const REMEMBERED_STALE: usize = 16;
/// Start-time attempts to settle the credential while other instances change it at once.
const SETTLE_ATTEMPTS: usize = 8;

/// One admin password hash and the fingerprint admin sessions carry.
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

/// Whether an admin session's credential is the one in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialCheck {
    Current,
    Replaced,
}

struct Cached {
    current: Arc<AdminCredential>,
    read_at: Instant,
    /// Fingerprints known to be replaced, newest last.
    stale: VecDeque<String>,
}

/// The credential in force, as last read from storage.
pub struct AdminCredentials {
    store: Arc<dyn Store>,
    cached: Mutex<Cached>,
    /// One re-read at a time; others wait for it and use its result.
    reading: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for AdminCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminCredentials").finish_non_exhaustive()
    }
}

impl AdminCredentials {
    pub fn new(store: Arc<dyn Store>, settled: AdminCredential) -> Self {
        Self {
            store,
            cached: Mutex::new(Cached {
                current: Arc::new(settled),
                read_at: Instant::now(),
                stale: VecDeque::new(),
            }),
            reading: tokio::sync::Mutex::new(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Cached> {
        // Every update below is a plain assignment: a panic elsewhere cannot leave it torn.
        self.cached.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The credential in force, read again when the copy is older than a couple of seconds.
    /// Storage trouble keeps the copy: the request will meet that trouble soon enough itself.
    pub async fn current(&self) -> Arc<AdminCredential> {
        match self.reread_if_older_than(MAX_AGE).await {
            Ok(current) => current,
            Err(e) => {
                tracing::warn!(
                    error = format!("{:#}", e.0),
                    "could not re-read the admin credential"
                );
                self.lock().current.clone()
            }
        }
    }

    /// Judges the credential an admin session was opened with. A fingerprint that is neither
    /// current nor known to be replaced may come from a newer password set by another instance:
    /// read storage again before calling it stale.
    pub async fn check(&self, fingerprint: &str) -> StoreResult<CredentialCheck> {
        let current = self.current().await;
        if current.fingerprint() == fingerprint {
            return Ok(CredentialCheck::Current);
        }
        if self.lock().stale.iter().any(|f| f == fingerprint) {
            return Ok(CredentialCheck::Replaced);
        }
        let current = self.reread_if_older_than(Duration::ZERO).await?;
        if current.fingerprint() == fingerprint {
            return Ok(CredentialCheck::Current);
        }
        self.remember_stale(fingerprint.to_owned());
        Ok(CredentialCheck::Replaced)
    }

    /// After a failed login: the password may have just been changed by another instance. Returns
    /// a credential to try again with, if storage holds a newer one.
    pub async fn newer_than(
        &self,
        tried: &AdminCredential,
    ) -> StoreResult<Option<Arc<AdminCredential>>> {
        let current = self.reread_if_older_than(MIN_FORCED_INTERVAL).await?;
        Ok((current.fingerprint() != tried.fingerprint()).then_some(current))
    }

    fn remember_stale(&self, fingerprint: String) {
        let mut cached = self.lock();
        if cached.stale.len() >= REMEMBERED_STALE {
            cached.stale.pop_front();
        }
        cached.stale.push_back(fingerprint);
    }

    async fn reread_if_older_than(&self, age: Duration) -> StoreResult<Arc<AdminCredential>> {
        let asked_at = Instant::now();
        {
            let cached = self.lock();
            if cached.read_at.elapsed() < age {
                return Ok(cached.current.clone());
            }
        }
        let _reading = self.reading.lock().await;
        {
            // Someone else read while we waited: theirs is as fresh as ours would be.
            let cached = self.lock();
            if cached.read_at >= asked_at || cached.read_at.elapsed() < age {
                return Ok(cached.current.clone());
            }
        }
        let read_at = Instant::now();
        let stored = stored_hash(self.store.as_ref()).await?;
        let mut cached = self.lock();
        if let Some(hash) = stored
            && hash != cached.current.hash
        {
            let replaced = cached.current.fingerprint.clone();
            cached.current = Arc::new(AdminCredential::new(hash));
            let now_current = cached.current.fingerprint.clone();
            cached.stale.retain(|f| *f != now_current);
            if cached.stale.len() >= REMEMBERED_STALE {
                cached.stale.pop_front();
            }
            cached.stale.push_back(replaced);
            tracing::info!("the admin password was changed by another instance; using the new one");
        }
        cached.read_at = read_at;
        Ok(cached.current.clone())
    }
}

/// Settles which password is in force and makes sure storage holds its hash (never the plain
/// text). Every change is a compare-and-set against what was read, so instances starting at the
/// same moment all end up holding the one hash that storage kept. Returns the generated password
/// when there was none at all, for the caller to show once.
pub async fn resolve_admin_credential(
    store: &dyn Store,
    setting: AdminPasswordSetting,
) -> anyhow::Result<(AdminCredential, Option<AdminPassword>)> {
    // Hashing is slow and salted: do it at most once, however many attempts it takes.
    let mut ours: Option<(PasswordHash, Option<AdminPassword>)> = None;
    for _ in 0..SETTLE_ATTEMPTS {
        let stored = stored_hash(store).await?;
        let adopted = match (&setting, &stored) {
            (AdminPasswordSetting::Hash(wanted), Some(stored)) if wanted == stored => {
                Some(stored.clone())
            }
            (AdminPasswordSetting::Unset, Some(stored)) => Some(stored.clone()),
            (AdminPasswordSetting::Plain(password), Some(stored)) => {
                let (password, stored) = (password.clone(), stored.clone());
                // Re-hashing at every start would change the fingerprint and so log the admin
                // out at each restart: keep the stored hash while the password matches it.
                off_thread(
                    move || Ok(verify_password(password.expose(), &stored).then_some(stored)),
                )
                .await?
            }
            _ => None,
        };
        if let Some(hash) = adopted {
            return Ok((AdminCredential::new(hash), None));
        }
        if ours.is_none() {
            ours = Some(match &setting {
                AdminPasswordSetting::Hash(hash) => (hash.clone(), None),
                AdminPasswordSetting::Plain(password) => {
                    let password = password.clone();
                    (off_thread(move || hash_password(&password)).await?, None)
                }
                AdminPasswordSetting::Unset => {
                    let password = generate_password()?;
                    let for_hashing = password.clone();
                    (off_thread(move || hash_password(&for_hashing)).await?, Some(password))
                }
            });
        }
        let (hash, generated) = ours.as_ref().context("a hash was just made")?;
        let expected = stored.as_ref().map(PasswordHash::as_str);
        if store.swap_admin_password_hash(expected, hash.as_str(), unix_now()).await? {
            return Ok((AdminCredential::new(hash.clone()), generated.clone()));
        }
        // Another instance changed it between our read and our write: look again.
    }
    bail!(
        "the stored admin password kept changing while starting; is another instance restarting in a loop?"
    )
}

async fn stored_hash(store: &dyn Store) -> StoreResult<Option<PasswordHash>> {
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
