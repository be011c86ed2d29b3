//! What the store keeps about announcements, and the one rule both backends apply when they
//! turn an announcement's audience into outbox rows: how many may go in now.

use crate::domain::AnnouncementState;

pub(crate) const ANNOUNCEMENT_COLUMNS: &str = "id, subject, body, state, created_at, updated_at, \
     started_at, last_id, audience, cursor, queued, sent, failed, paused_at, paused_secs, \
     pace_origin_ms, finished_at";

/// An announcement with its figures.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AnnouncementRecord {
    pub id: i64,
    pub subject: String,
    /// Markdown.
    pub body: String,
    #[sqlx(try_from = "String")]
    pub state: AnnouncementState,
    pub created_at: i64,
    pub updated_at: i64,
    /// When Send was confirmed: the audience is who was confirmed then.
    pub started_at: Option<i64>,
    /// The newest subscriber id then.
    pub last_id: Option<i64>,
    /// How many were confirmed then.
    pub audience: i64,
    /// Subscribers up to this id have their outbox row (or were not in the audience).
    pub cursor: i64,
    /// Outbox rows made so far.
    pub queued: i64,
    pub sent: i64,
    pub failed: i64,
    pub paused_at: Option<i64>,
    pub paused_secs: i64,
    /// Where the pace counts from (Unix milliseconds): the start, moved on by every pause.
    pub pace_origin_ms: i64,
    pub finished_at: Option<i64>,
}

impl AnnouncementRecord {
    /// Seconds spent sending, pauses not counted.
    pub fn sending_secs(&self, now: i64) -> i64 {
        let Some(started) = self.started_at else { return 0 };
        let end = self.finished_at.or(self.paused_at).unwrap_or(now);
        (end - started - self.paused_secs).max(0)
    }

    /// Messages a second, on average over the time spent sending.
    pub fn rate(&self, now: i64) -> f64 {
        if self.started_at.is_none() {
            return 0.0;
        }
        // A send over within its first second counts as taking one.
        (self.sent + self.failed) as f64 / self.sending_secs(now).max(1) as f64
    }

    /// Those not sent to yet: all of the audience not done, less nobody (some may leave first,
    /// so this is at most what is left; exact once every row is made).
    pub fn remaining(&self) -> i64 {
        match self.state {
            AnnouncementState::Sent | AnnouncementState::Cancelled => 0,
            _ => (self.audience - self.sent - self.failed).max(0),
        }
    }
}

/// The server's answers of the failed mails of an announcement, grouped.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct FailureGroup {
    pub error: String,
    pub count: i64,
}

/// How fast an announcement's audience becomes outbox rows: that is the pace of the send, the
/// same whichever instance (or how many) does the work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// Messages a second; 0 for as fast as the mail server takes them.
    pub per_second: u32,
    /// Outbox rows made in one step at most.
    pub step: i64,
    /// Outbox rows of this announcement waiting at most: as fast as the server takes them, this
    /// keeps the outbox (and a pause's leftovers) small.
    pub lookahead: i64,
}

/// What one expansion step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expansion {
    pub added: u64,
    /// Every mail of the announcement has been made and answered: it is now sent.
    pub finished: bool,
}

impl Pace {
    /// How many outbox rows may be made now, for an announcement in this state with `waiting`
    /// of its rows not yet sent, at Unix time `now_ms` (milliseconds).
    pub fn allowance(&self, announcement: &AnnouncementRecord, waiting: i64, now_ms: i64) -> i64 {
        let mut allowed = self.step.min(self.lookahead - waiting);
        if self.per_second > 0 {
            let elapsed_ms = (now_ms - announcement.pace_origin_ms).max(0);
            // The first mail goes at once, then one every 1/rate seconds.
            let due = 1 + i64::from(self.per_second) * elapsed_ms / 1000;
            allowed = allowed.min(due - announcement.queued);
        }
        allowed.max(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sending(started_at: i64, queued: i64) -> AnnouncementRecord {
        AnnouncementRecord {
            id: 1,
            subject: "s".into(),
            body: "b".into(),
            state: AnnouncementState::Sending,
            created_at: 0,
            updated_at: 0,
            started_at: Some(started_at),
            last_id: Some(100),
            audience: 100,
            cursor: 0,
            queued,
            sent: 0,
            failed: 0,
            paused_at: None,
            paused_secs: 0,
            pace_origin_ms: started_at * 1000,
            finished_at: None,
        }
    }

    #[test]
    fn the_pace_sends_one_at_once_and_then_the_rate() {
        let pace = Pace { per_second: 20, step: 1000, lookahead: 5000 };
        assert_eq!(pace.allowance(&sending(100, 0), 0, 100_000), 1);
        assert_eq!(pace.allowance(&sending(100, 1), 1, 100_049), 0);
        assert_eq!(pace.allowance(&sending(100, 1), 1, 100_050), 1);
        assert_eq!(pace.allowance(&sending(100, 11), 0, 101_000), 10);
        // A pause moves the origin on.
        let mut resumed = sending(100, 21);
        resumed.pace_origin_ms += 10_000;
        assert_eq!(pace.allowance(&resumed, 0, 111_000), 0);
        assert_eq!(pace.allowance(&resumed, 0, 112_000), 20);
        // Never more than a step, or than the lookahead has room for.
        assert_eq!(pace.allowance(&sending(0, 0), 0, 1_000_000), 1000);
        assert_eq!(pace.allowance(&sending(0, 0), 4990, 1_000_000), 10);
    }

    #[test]
    fn as_fast_as_possible_keeps_the_lookahead_full() {
        let pace = Pace { per_second: 0, step: 2000, lookahead: 5000 };
        assert_eq!(pace.allowance(&sending(100, 0), 0, 100_000), 2000);
        assert_eq!(pace.allowance(&sending(100, 4000), 4000, 100_000), 1000);
        assert_eq!(pace.allowance(&sending(100, 9000), 6000, 100_000), 0);
    }

    #[test]
    fn figures() {
        let mut a = sending(100, 50);
        a.sent = 40;
        a.failed = 2;
        assert_eq!(a.remaining(), 58);
        assert_eq!(a.sending_secs(121), 21);
        assert!((a.rate(121) - 2.0).abs() < 1e-9);
        a.paused_at = Some(110);
        assert_eq!(a.sending_secs(200), 10);
    }
}
