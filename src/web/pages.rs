//! Pages kept as rendered, under the version of the session they were rendered from: a
//! remembered visitor's "thanks" page, and the signup form every new visitor sees, only change
//! when what the session stores changes.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::body::Bytes;

use crate::session::SessionVersion;

/// At most this many pages (about 1.5 kB each) are kept; past it, an arbitrary one makes room.
const MAX_PAGES: usize = 1024;

/// Keyed by a session's whole stored record, so the hash is foldhash's rather than SipHash's: a
/// record is a few hundred bytes, hashed on every page view. Records are written by this service,
/// not chosen by visitors, and the hasher is still seeded per process.
#[derive(Default)]
pub struct RenderedPages(Mutex<HashMap<SessionVersion, Bytes, foldhash::fast::RandomState>>);

impl RenderedPages {
    pub fn get(&self, version: &SessionVersion) -> Option<Bytes> {
        self.0.lock().ok()?.get(version).cloned()
    }

    pub fn keep(&self, version: SessionVersion, page: Bytes) {
        // A poisoned lock only means a page is rendered again next time.
        let Ok(mut pages) = self.0.lock() else { return };
        if pages.len() >= MAX_PAGES
            && let Some(any) = pages.keys().next().cloned()
        {
            pages.remove(&any);
        }
        pages.insert(version, page);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_bounded_number_of_pages() {
        let pages = RenderedPages::default();
        for n in 0..MAX_PAGES + 10 {
            pages.keep(SessionVersion::for_test(n), Bytes::from(n.to_string()));
        }
        assert_eq!(pages.0.lock().unwrap().len(), MAX_PAGES);
        let last = MAX_PAGES + 9;
        assert_eq!(pages.get(&SessionVersion::for_test(last)), Some(Bytes::from(last.to_string())));
    }
}
