//! Turns announcements being sent into outbox rows, a step at a time and at the announcement's
//! pace; the outbox worker then sends them like any other mail, after the confirmations and
//! welcomes people are waiting for. One per instance; the store makes sure two instances
//! stepping the same announcement neither queue a recipient twice nor double the pace.

use std::sync::Arc;
use std::time::Duration;

use super::OutboxBell;
use crate::session::unix_now_ms;
use crate::store::{Pace, Store};

/// How often a send is stepped: often enough that a rate of a few per second is smooth and that
/// a pause or a new send is seen at once.
const TICK: Duration = Duration::from_millis(100);
/// Outbox rows made in one step at most.
const STEP: i64 = 2_000;
/// Outbox rows of one announcement waiting at most.
const LOOKAHEAD: i64 = 5_000;

pub struct Announcer {
    pub store: Arc<dyn Store>,
    pub bell: OutboxBell,
    /// Messages a second; 0 for as fast as the mail server accepts them.
    pub rate: u32,
}

impl Announcer {
    pub fn pace(&self) -> Pace {
        Pace { per_second: self.rate, step: STEP, lookahead: LOOKAHEAD }
    }

    pub async fn run(self, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            let full_step = self.step().await;
            if !full_step {
                tokio::select! {
                    () = tokio::time::sleep(TICK) => {}
                    () = &mut stop => break,
                }
            }
        }
    }

    /// Steps every announcement being sent; whether one took a whole step (there is more to do
    /// at once).
    async fn step(&self) -> bool {
        let sending = match self.store.sending_announcements().await {
            Ok(sending) => sending,
            Err(e) => {
                tracing::warn!(error = format!("{:#}", e.0), "could not look for announcements");
                return false;
            }
        };
        let mut full_step = false;
        for id in sending {
            match self.store.expand_announcement(id, self.pace(), unix_now_ms()).await {
                Ok(expansion) => {
                    if expansion.added > 0 {
                        self.bell.ring();
                    }
                    if expansion.finished {
                        tracing::info!(announcement = id, "announcement sent");
                    }
                    full_step |= expansion.added >= STEP.unsigned_abs();
                }
                Err(e) => tracing::warn!(
                    announcement = id,
                    error = format!("{:#}", e.0),
                    "could not queue an announcement's mails"
                ),
            }
        }
        full_step
    }
}
