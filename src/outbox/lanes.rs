//! What the mail and webhook workers share: leased work waiting in a queue, a bounded number of
//! sends in flight, pacing while visitors wait, and collecting what finished.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::task::JoinSet;

use super::BUSY_PAUSE;
use crate::session::unix_now;

pub(crate) struct Lanes<T, O> {
    /// Leased work, each with the end of its lease.
    queue: VecDeque<(T, i64)>,
    in_flight: JoinSet<O>,
}

impl<T, O: Send + 'static> Lanes<T, O> {
    pub(crate) fn new() -> Self {
        Self { queue: VecDeque::new(), in_flight: JoinSet::new() }
    }

    pub(crate) fn queued(&self) -> usize {
        self.queue.len()
    }

    pub(crate) fn lease(&mut self, leased: impl IntoIterator<Item = (T, i64)>) {
        self.queue.extend(leased);
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// Starts queued work until `limit` are in flight. Work with no more than `needs` left on
    /// its lease is dropped: it must end before its lease does, or another worker could do it
    /// too, so it is left to run out and be claimed again. While `busy`, each pauses after it
    /// ends, giving the CPU back to the requests before the next one.
    pub(crate) fn start<F>(
        &mut self,
        limit: usize,
        needs: Duration,
        busy: bool,
        mut run: impl FnMut(T) -> F,
    ) where
        F: Future<Output = O> + Send + 'static,
    {
        while self.in_flight.len() < limit {
            let Some((work, lease_until)) = self.queue.pop_front() else { break };
            if lease_until - unix_now() <= needs.as_secs() as i64 {
                continue;
            }
            let running = run(work);
            self.in_flight.spawn(async move {
                let outcome = running.await;
                if busy {
                    tokio::time::sleep(BUSY_PAUSE).await;
                }
                outcome
            });
        }
    }

    /// Waits for one to end; returns its outcome with those of every other that has ended too.
    pub(crate) async fn finished(&mut self) -> Vec<O> {
        let mut outcomes: Vec<O> = Vec::new();
        if let Some(done) = self.in_flight.join_next().await {
            outcomes.extend(done);
        }
        while let Some(done) = self.in_flight.try_join_next() {
            outcomes.extend(done);
        }
        outcomes
    }

    /// At shutdown: the outcomes of everything in flight, if it all ends within `within`.
    /// Anything unanswered keeps its lease and is done again after the lease runs out.
    pub(crate) async fn finish(mut self, within: Duration) -> Option<Vec<O>> {
        let finishing = async {
            let mut outcomes = Vec::new();
            while let Some(done) = self.in_flight.join_next().await {
                outcomes.extend(done);
            }
            outcomes
        };
        tokio::time::timeout(within, finishing).await.ok()
    }
}
