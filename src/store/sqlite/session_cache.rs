//! An in-process copy of recently used sessions, so that a remembered visitor costs no database
//! read. It is exact because one process owns the SQLite file (see `InstanceLock`) and the
//! writer applies every committed session change here, in commit order.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::store::SessionKey;

/// About 2–3 MB when full.
const CAPACITY: usize = 10_000;

#[derive(Clone)]
struct Entry {
    /// `None`: deleted. Kept so a read that started before the delete cannot bring it back.
    data: Option<Arc<str>>,
    expires_at: i64,
}

/// Keys end in SHA-256 output of random bytes (a new key starts with its creation time): the XOR
/// of their 8-byte words is already uniformly spread, as good a hash as any (and only sessions
/// that exist ever get in).
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(word);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[derive(Default)]
struct Inner {
    entries: HashMap<SessionKey, Entry, BuildHasherDefault<KeyHasher>>,
    /// Bumped whenever entries disappear other than by a newer write.
    evictions: u64,
}

#[derive(Default)]
pub(super) struct SessionCache {
    inner: Mutex<Inner>,
}

/// What a lookup found.
pub(super) enum Lookup {
    /// The session's data, or `None` if it does not exist (or has expired).
    Hit(Option<Arc<str>>),
    /// Read the database, then offer the result back with [`SessionCache::fill`].
    Miss(FillTicket),
}

/// Proof of when a missed read started, so its result is only cached if nothing changed since.
pub(super) struct FillTicket {
    evictions: u64,
}

impl SessionCache {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the map half-updated in a way that
        // matters: every operation is a single insert or remove.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn lookup(&self, key: &SessionKey, now: i64) -> Lookup {
        let inner = self.lock();
        match inner.entries.get(key) {
            Some(entry) if entry.expires_at > now => Lookup::Hit(entry.data.clone()),
            Some(_) => Lookup::Hit(None),
            None => Lookup::Miss(FillTicket { evictions: inner.evictions }),
        }
    }

    /// Caches what the database said, unless a write or an eviction may have overtaken it.
    /// Any write to `key` after the read began left an entry for it (or bumped `evictions`).
    pub(super) fn fill(
        &self,
        key: &SessionKey,
        found: Option<(Arc<str>, i64)>,
        ticket: FillTicket,
    ) {
        let Some((data, expires_at)) = found else {
            return;
        };
        let mut inner = self.lock();
        if inner.evictions == ticket.evictions && !inner.entries.contains_key(key) {
            Self::insert(&mut inner, *key, Entry { data: Some(data), expires_at });
        }
    }

    /// A committed create or save.
    pub(super) fn stored(&self, key: &SessionKey, data: &str, expires_at: i64) {
        let mut inner = self.lock();
        Self::insert(&mut inner, *key, Entry { data: Some(Arc::from(data)), expires_at });
    }

    /// A committed delete.
    pub(super) fn deleted(&self, key: &SessionKey) {
        let mut inner = self.lock();
        Self::insert(&mut inner, *key, Entry { data: None, expires_at: i64::MAX });
    }

    /// A write whose outcome is unknown (its transaction failed): forget what we knew.
    pub(super) fn forget(&self, key: &SessionKey) {
        let mut inner = self.lock();
        inner.entries.remove(key);
        inner.evictions += 1;
    }

    /// Sessions were deleted by a rule the cache cannot evaluate: start over.
    pub(super) fn forget_all(&self) {
        let mut inner = self.lock();
        inner.entries.clear();
        inner.evictions += 1;
    }

    pub(super) fn expired(&self, now: i64) {
        let mut inner = self.lock();
        inner.entries.retain(|_, entry| entry.expires_at > now);
        inner.evictions += 1;
    }

    fn insert(inner: &mut Inner, key: SessionKey, entry: Entry) {
        if inner.entries.len() >= CAPACITY && !inner.entries.contains_key(&key) {
            // Crude but O(1) amortised and exact: start over rather than track recency.
            inner.entries.clear();
            inner.evictions += 1;
        }
        inner.entries.insert(key, entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(lookup: Lookup) -> Option<Arc<str>> {
        match lookup {
            Lookup::Hit(data) => data,
            Lookup::Miss(_) => panic!("expected a hit"),
        }
    }

    fn ticket(lookup: Lookup) -> FillTicket {
        match lookup {
            Lookup::Miss(ticket) => ticket,
            Lookup::Hit(_) => panic!("expected a miss"),
        }
    }

    #[test]
    fn a_read_overtaken_by_a_write_is_not_cached() {
        let cache = SessionCache::default();
        let key = [1; 32];
        let started = ticket(cache.lookup(&key, 0));
        cache.stored(&key, "new", 100);
        cache.fill(&key, Some((Arc::from("old"), 100)), started);
        assert_eq!(hit(cache.lookup(&key, 0)).as_deref(), Some("new"));
    }

    #[test]
    fn a_read_overtaken_by_a_delete_cannot_resurrect_it() {
        let cache = SessionCache::default();
        let key = [2; 32];
        let started = ticket(cache.lookup(&key, 0));
        cache.deleted(&key);
        cache.fill(&key, Some((Arc::from("old"), 100)), started);
        assert_eq!(hit(cache.lookup(&key, 0)), None);
    }

    #[test]
    fn a_read_overtaken_by_an_eviction_is_not_cached() {
        let cache = SessionCache::default();
        let key = [3; 32];
        let started = ticket(cache.lookup(&key, 0));
        cache.forget(&[4; 32]);
        cache.fill(&key, Some((Arc::from("old"), 100)), started);
        assert!(matches!(cache.lookup(&key, 0), Lookup::Miss(_)));
    }

    #[test]
    fn expiry_and_capacity() {
        let cache = SessionCache::default();
        cache.stored(&[5; 32], "soon", 10);
        assert_eq!(hit(cache.lookup(&[5; 32], 9)).as_deref(), Some("soon"));
        assert_eq!(hit(cache.lookup(&[5; 32], 10)), None);
        for i in 0..=CAPACITY {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&(i as u64).to_le_bytes());
            cache.stored(&key, "x", 100);
        }
        assert!(cache.lock().entries.len() <= CAPACITY);
    }
}
