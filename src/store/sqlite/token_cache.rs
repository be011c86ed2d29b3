//! An in-process copy of the API tokens that have been presented, so that an API request costs
//! one database read (its answer), not two. Exact for the same reason as the session cache: one
//! process owns the SQLite file, and every create or revoke passes through this store.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use crate::store::TokenRecord;

/// Tokens are few; this only bounds what a flood of distinct valid tokens could hold.
const CAPACITY: usize = 1_000;

#[derive(Default)]
struct Inner {
    by_hash: HashMap<[u8; 32], TokenRecord>,
    /// Bumped by every create or revoke, so a read that began before one is never cached.
    generation: u64,
}

#[derive(Default)]
pub(super) struct TokenCache {
    inner: Mutex<Inner>,
}

/// What a lookup found: the token, or the generation to hand back with the database's answer.
pub(super) enum TokenLookup {
    Hit(TokenRecord),
    Miss(u64),
}

impl TokenCache {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every operation is one insert or a clear: a panic cannot leave it half-done.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn lookup(&self, hash: &[u8; 32]) -> TokenLookup {
        let inner = self.lock();
        match inner.by_hash.get(hash) {
            Some(token) => TokenLookup::Hit(token.clone()),
            None => TokenLookup::Miss(inner.generation),
        }
    }

    /// Keeps a token the database returned, unless the tokens changed since the read began.
    /// Unknown hashes are not kept: guesses would fill the map.
    pub(super) fn fill(&self, hash: &[u8; 32], token: &TokenRecord, read_began: u64) {
        let mut inner = self.lock();
        if inner.generation != read_began {
            return;
        }
        if inner.by_hash.len() >= CAPACITY {
            inner.by_hash.clear();
        }
        inner.by_hash.insert(*hash, token.clone());
    }

    /// After any create or revoke, whether or not it committed: start over.
    pub(super) fn changed(&self) {
        let mut inner = self.lock();
        inner.by_hash.clear();
        inner.generation += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> TokenRecord {
        TokenRecord {
            id: 1,
            name: "script".into(),
            read_only: true,
            created_at: 0,
            last_used_at: None,
        }
    }

    #[test]
    fn a_read_overtaken_by_a_revoke_is_not_cached() {
        let cache = TokenCache::default();
        let TokenLookup::Miss(began) = cache.lookup(&[1; 32]) else { panic!("empty cache hit") };
        cache.changed();
        cache.fill(&[1; 32], &token(), began);
        assert!(matches!(cache.lookup(&[1; 32]), TokenLookup::Miss(_)));
    }

    #[test]
    fn a_revoke_drops_what_was_cached() {
        let cache = TokenCache::default();
        let TokenLookup::Miss(began) = cache.lookup(&[2; 32]) else { panic!("empty cache hit") };
        cache.fill(&[2; 32], &token(), began);
        assert!(matches!(cache.lookup(&[2; 32]), TokenLookup::Hit(t) if t == token()));
        cache.changed();
        assert!(matches!(cache.lookup(&[2; 32]), TokenLookup::Miss(_)));
    }
}
