//! The durable outbox's worker: one per instance. It leases due mails (so instances sharing a
//! database never send the same one), sends each with a bound on the whole attempt, and records
//! what happened: sent, retry later with exponential backoff, or failed for good. Handlers never
//! send anything themselves; they queue in the same commit as the change that causes the mail
//! (on SQLite a new address's confirmation is kept in its pending row, and the lease queues it).

mod announcer;
mod lanes;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::mail::{AnnouncementContent, CONNECTIONS, Composer, Mailer, SEND_TIMEOUT, SendFailure};
use crate::metrics::{MailResult as Attempt, Metrics};
use crate::session::unix_now;
use crate::store::{MailOutcome, MailResult, QueuedMail, Store};
use crate::web::RequestGauge;
pub use announcer::Announcer;
pub(crate) use lanes::Lanes;

/// How long a claimed mail stays ours: a worker that dies mid-send frees its rows after this.
const LEASE: Duration = Duration::from_secs(2 * SEND_TIMEOUT.as_secs());
/// Mails leased at a time: enough to keep every connection busy between claims.
const CLAIM: usize = 64;
/// How often to look for due mail nobody told us about (other instances, retries).
const POLL: Duration = Duration::from_secs(1);
const BUSY_PAUSE: Duration = Duration::from_millis(50);
/// Transient failures are retried for this long after the mail was queued.
const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// A way to tell the worker that something was queued, so it need not wait for its next look.
/// Rings between two claims are one: during a burst of double opt-in signups the worker is
/// woken once, not once a signup.
#[derive(Debug, Clone, Default)]
pub struct OutboxBell(Arc<Bell>);

#[derive(Debug, Default)]
struct Bell {
    notify: Notify,
    /// Rung since the worker last began a claim.
    rung: AtomicBool,
}

impl OutboxBell {
    pub fn ring(&self) {
        if !self.0.rung.swap(true, Ordering::AcqRel) {
            self.0.notify.notify_one();
        }
    }

    async fn heard(&self) {
        self.0.notify.notified().await;
    }

    /// Called just before a claim: what is queued after this point rings again.
    fn claiming(&self) {
        self.0.rung.store(false, Ordering::Release);
    }
}

pub struct OutboxWorker {
    pub store: Arc<dyn Store>,
    pub composer: Arc<Composer>,
    pub mailer: Arc<Mailer>,
    pub bell: OutboxBell,
    /// The first retry waits this long; each next one twice as long, up to an hour.
    pub retry_base: Duration,
    /// Requests being answered: while many are, mail goes out one at a time and waits its
    /// turn, so a burst of signups is not slowed by its own confirmation mails.
    pub visitors: RequestGauge,
    pub metrics: Arc<Metrics>,
    pub announcements: AnnouncementCache,
}

/// Announcements as their mails need them, read and rendered once per instance: a send to a
/// million people reads its announcement once. A test mail reads its draft every time, since
/// a draft can change between tests.
#[derive(Default)]
pub struct AnnouncementCache(Mutex<HashMap<i64, Arc<AnnouncementContent>>>);

/// Announcements kept rendered at most; more than this sending at once is not a real case.
const CACHED_ANNOUNCEMENTS: usize = 16;

impl AnnouncementCache {
    async fn get(
        &self,
        store: &dyn Store,
        id: i64,
        fresh: bool,
    ) -> Result<Option<Arc<AnnouncementContent>>, SendFailure> {
        if !fresh && let Some(found) = self.lock().get(&id) {
            return Ok(Some(found.clone()));
        }
        let record = store.announcement(id).await.map_err(|e| SendFailure {
            permanent: false,
            reason: format!("reading the announcement: {:#}", e.0),
        })?;
        let Some(record) = record else { return Ok(None) };
        let content = Arc::new(AnnouncementContent::from(&record));
        if !fresh {
            let mut cache = self.lock();
            if cache.len() >= CACHED_ANNOUNCEMENTS {
                cache.clear();
            }
            cache.insert(id, content.clone());
        }
        Ok(Some(content))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Arc<AnnouncementContent>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl OutboxWorker {
    /// Runs until `stop` completes, then waits (bounded) for the sends in flight and records them.
    pub async fn run(self, stop: impl Future<Output = ()>) {
        let worker = Arc::new(self);
        let mut lanes: Lanes<QueuedMail, MailOutcome> = Lanes::new();
        // Whether a claim may find something: after a full claim, the bell, or a quiet second.
        let mut maybe_due = true;
        tokio::pin!(stop);
        loop {
            if maybe_due && lanes.queued() < CONNECTIONS as usize {
                let wanted = CLAIM - lanes.queued();
                worker.bell.claiming();
                let (claimed, lease_until) = worker.claim(wanted).await;
                maybe_due = claimed.len() == wanted;
                lanes.lease(claimed.into_iter().map(|mail| (mail, lease_until)));
            }
            let busy = worker.visitors.busy();
            let connections = if busy { 1 } else { CONNECTIONS as usize };
            lanes.start(connections, SEND_TIMEOUT, busy, |mail| {
                let worker = worker.clone();
                async move { worker.deliver(mail).await }
            });
            tokio::select! {
                outcomes = lanes.finished(), if !lanes.is_idle() => worker.record(&outcomes).await,
                () = worker.bell.heard() => maybe_due = true,
                () = tokio::time::sleep(POLL) => maybe_due = true,
                () = &mut stop => break,
            }
        }
        if let Some(outcomes) = lanes.finish(SEND_TIMEOUT).await {
            worker.record(&outcomes).await;
        }
    }

    /// Leases up to `room` due mails; returns them with the end of their lease.
    async fn claim(&self, room: usize) -> (Vec<QueuedMail>, i64) {
        let now = unix_now();
        let lease_until = now + LEASE.as_secs() as i64;
        let owner = lease_owner();
        match self.store.claim_mail(now, lease_until, owner, room as u32).await {
            Ok(mails) => (mails, lease_until),
            Err(e) => {
                tracing::warn!(
                    error = format!("{:#}", e.0),
                    "could not claim mail from the outbox"
                );
                (Vec::new(), lease_until)
            }
        }
    }

    async fn record(&self, outcomes: &[MailOutcome]) {
        // A failed record leaves the leases to run out, and the mails go again: at least once.
        if let Err(e) = self.store.record_mail(outcomes).await {
            tracing::warn!(error = format!("{:#}", e.0), "could not record sent mail");
        }
    }

    async fn deliver(&self, mail: QueuedMail) -> MailOutcome {
        let announcement = match mail.announcement_id {
            None => Ok(None),
            Some(id) => {
                self.announcements.get(self.store.as_ref(), id, mail.purpose == "test").await
            }
        };
        let result = match announcement {
            Err(failure) => Err(failure),
            Ok(announcement) => match self.composer.compose(&mail, announcement.as_deref()) {
                Err(e) => Err(SendFailure { permanent: true, reason: format!("{e:#}") }),
                Ok(composed) => {
                    self.mailer.send(&composed.envelope, &composed.bytes, mail.id).await
                }
            },
        };
        let now = unix_now();
        let result = match result {
            Ok(()) => MailResult::Sent { at: now },
            Err(failure) => {
                tracing::warn!(
                    purpose = mail.purpose,
                    attempt = mail.attempts + 1,
                    permanent = failure.permanent,
                    reason = failure.reason,
                    "mail not delivered"
                );
                let age = now.saturating_sub(mail.created_at);
                if failure.permanent {
                    MailResult::Failed { at: now, error: failure.reason }
                } else if age >= GIVE_UP_AFTER.as_secs() as i64 {
                    let error = format!("gave up after 24 hours: {}", failure.reason);
                    MailResult::Failed { at: now, error }
                } else {
                    let wait = backoff(self.retry_base, mail.attempts);
                    let at = now + i64::try_from(wait.as_secs().max(1)).unwrap_or(i64::MAX);
                    MailResult::Retry { at, error: failure.reason }
                }
            }
        };
        self.metrics.mail(match result {
            MailResult::Sent { .. } => Attempt::Sent,
            MailResult::Retry { .. } => Attempt::Retry,
            MailResult::Failed { .. } => Attempt::Failed,
        });
        MailOutcome { id: mail.id, result }
    }
}

/// `base`, then twice as long after every failed attempt, never more than an hour.
pub(crate) fn backoff(base: Duration, attempts_before: i64) -> Duration {
    let doublings = u32::try_from(attempts_before.clamp(0, 20)).unwrap_or(20);
    base.saturating_mul(2u32.saturating_pow(doublings)).min(MAX_BACKOFF)
}

/// A fresh random lease owner per claim, so a claim reads back exactly the rows it leased.
pub(crate) fn lease_owner() -> i64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return i64::from(std::process::id()) << 20 | unix_now() & 0xfffff;
    }
    i64::from_le_bytes(bytes) & i64::MAX
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        let base = Duration::from_secs(30);
        assert_eq!(backoff(base, 0), Duration::from_secs(30));
        assert_eq!(backoff(base, 1), Duration::from_secs(60));
        assert_eq!(backoff(base, 3), Duration::from_secs(240));
        assert_eq!(backoff(base, 10), MAX_BACKOFF);
        assert_eq!(backoff(base, 1000), MAX_BACKOFF);
    }

    #[test]
    fn rings_before_a_claim_wake_the_waiting_worker_once_and_a_ring_after_it_again() {
        use futures_util::FutureExt;
        let bell = OutboxBell::default();
        // The worker waits as it does in its loop: registered, then woken or not.
        let mut waiting = Box::pin(bell.heard());
        assert!((&mut waiting).now_or_never().is_none(), "not rung yet");
        bell.ring();
        assert!(waiting.now_or_never().is_some(), "rung");
        // Woken, it found no room for a claim and waits again: more signups ring.
        let mut waiting = Box::pin(bell.heard());
        assert!((&mut waiting).now_or_never().is_none());
        bell.ring();
        bell.clone().ring();
        assert!((&mut waiting).now_or_never().is_none(), "rung before the claim it owes");
        bell.claiming();
        bell.ring();
        assert!(waiting.now_or_never().is_some(), "rung again once a claim began");
    }
}
