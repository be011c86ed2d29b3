//! What goes in and out of storage for consent and mail: the rows, the writes that must happen
//! together, and their outcomes.

use crate::domain::{ClientEvidence, Evidence, SubscriberEmail, SubscriberStatus};

/// A keyed hash standing for an address where the address itself must not be kept.
pub type AddressHash = [u8; 32];

/// A subscriber to add, with how they consented.
#[derive(Debug, Clone, Copy)]
pub struct NewSubscriber<'a> {
    pub email: &'a SubscriberEmail,
    pub evidence: &'a Evidence,
    pub address_hash: AddressHash,
    pub now: i64,
}

/// A signup that waits for confirmation: the row as pending (unless there already is one), a
/// new confirmation link and its mail, all in one commit, within the per-address limit.
#[derive(Debug, Clone, Copy)]
pub struct ConfirmationRequest<'a> {
    pub subscriber: NewSubscriber<'a>,
    pub nonce: [u8; 16],
    pub expires_at: i64,
    /// At most this many confirmation mails per address since `window_start`.
    pub limit: u32,
    pub window_start: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfirmationQueued {
    Queued,
    AlreadyConfirmed,
    LimitReached,
}

/// A confirmation mail (whose id and nonce make its link), with the subscriber it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Confirmation {
    pub id: i64,
    pub subscriber_id: i64,
    pub nonce: Vec<u8>,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    pub email: String,
    #[sqlx(try_from = "String")]
    pub status: SubscriberStatus,
}

/// Confirming: the subscriber becomes confirmed (once), the link is used up, and the welcome
/// mail (if any) is queued, together.
#[derive(Debug, Clone, Copy)]
pub struct ConfirmWrite<'a> {
    pub confirmation_id: i64,
    pub client: &'a ClientEvidence,
    pub address_hash: AddressHash,
    /// Queue a welcome mail if this confirms.
    pub welcome: bool,
    pub now: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmed {
    Now,
    Already,
    Expired,
    Unknown,
}

/// Why an address leaves for good: its row goes, its sessions end, and only a keyed hash stays
/// behind so nobody but the person can put it back.
#[derive(Debug, Clone, Copy)]
pub struct Leaving {
    pub address_hash: AddressHash,
    pub reason: LeaveReason,
    pub now: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveReason {
    Unsubscribed,
    Erased,
}

impl LeaveReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unsubscribed => "unsubscribed",
            Self::Erased => "erased",
        }
    }
}

/// The columns of a [`SubscriberRecord`], the same on both backends.
pub(crate) const RECORD_COLUMNS: &str = "id, email, email_key, status, created_at, source, \
    signup_ip, signup_agent, consent, confirmed_at, confirm_ip, confirm_agent";

/// Everything kept about one subscriber.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SubscriberRecord {
    pub id: i64,
    pub email: String,
    pub email_key: String,
    #[sqlx(try_from = "String")]
    pub status: SubscriberStatus,
    pub created_at: i64,
    pub source: String,
    pub signup_ip: Option<String>,
    pub signup_agent: Option<String>,
    pub consent: Option<String>,
    pub confirmed_at: Option<i64>,
    pub confirm_ip: Option<String>,
    pub confirm_agent: Option<String>,
}

/// A mail to one subscriber, as the admin and the person see it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct MailRecord {
    pub purpose: String,
    pub status: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub sent_at: Option<i64>,
}

/// A mail the outbox worker has leased and must send.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct QueuedMail {
    pub id: i64,
    pub purpose: String,
    pub attempts: i64,
    pub created_at: i64,
    pub subscriber_id: i64,
    pub email: String,
    pub email_key: String,
    /// Confirmation mails: what their link is made from.
    pub nonce: Option<Vec<u8>>,
    /// Announcements and their test mails: which one.
    pub announcement_id: Option<i64>,
}

/// What happened to one leased mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailOutcome {
    pub id: i64,
    pub result: MailResult,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailResult {
    Sent {
        at: i64,
    },
    /// Try again no earlier than `at`.
    Retry {
        at: i64,
        error: String,
    },
    Failed {
        at: i64,
        error: String,
    },
}

/// One address of an import batch.
#[derive(Debug, Clone, Copy)]
pub struct ImportRow<'a> {
    pub email: &'a SubscriberEmail,
    pub address_hash: AddressHash,
    /// For a pending import: the nonce of the row's confirmation link.
    pub nonce: Option<[u8; 16]>,
}

/// Addresses to add as `status`, skipping those on the list or suppressed, in one commit
/// (or, with `dry_run`, counted and not written).
#[derive(Debug, Clone, Copy)]
pub struct ImportBatch<'a> {
    pub rows: &'a [ImportRow<'a>],
    /// Which way they came in: an import, or the admin or the API adding one address.
    pub door: crate::domain::Door,
    pub status: SubscriberStatus,
    /// The evidence: which file the owner vouched for.
    pub consent: &'a str,
    /// Pending imports queue a confirmation mail, whose link expires then.
    pub confirm_expires_at: Option<i64>,
    pub dry_run: bool,
    pub now: i64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportCounts {
    pub added: u64,
    pub existing: u64,
    pub suppressed: u64,
}

/// One chunk of the CSV export, written by the database itself: one row comes back per chunk
/// instead of one per subscriber, which is what makes a million rows take a second.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ExportChunk {
    /// CRLF-terminated CSV lines, newest first.
    pub csv: Option<String>,
    pub rows: i64,
    /// The oldest id in the chunk: where the next one starts.
    pub last_id: Option<i64>,
}

/// Rows picked by what the admin searched for, up to the newest id the admin was shown, so a
/// row that arrives between the confirmation and the click is never part of it.
#[derive(Debug, Clone, Copy)]
pub struct Selection<'a> {
    pub filter: crate::store::ListFilter<'a>,
    pub up_to_id: i64,
}

/// An API token as stored: never the token itself, only its hash.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TokenRecord {
    pub id: i64,
    pub name: String,
    pub read_only: bool,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// A token to store.
#[derive(Debug, Clone, Copy)]
pub struct NewToken<'a> {
    pub name: &'a str,
    pub hash: [u8; 32],
    pub read_only: bool,
    pub now: i64,
}

/// Counts from maintained counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub pending: u64,
    pub confirmed: u64,
    /// Addresses that unsubscribed or erased themselves and have not come back.
    pub left: u64,
}

impl Counts {
    pub fn on_list(&self) -> u64 {
        self.pending + self.confirmed
    }
}

/// Counts from `(status, n)` rows; a missing status counts zero.
pub(crate) fn counts_from(rows: Vec<(String, i64)>) -> Counts {
    let mut counts = Counts::default();
    for (status, n) in rows {
        let n = u64::try_from(n).unwrap_or_default();
        match status.as_str() {
            "pending" => counts.pending = n,
            "confirmed" => counts.confirmed = n,
            "left" => counts.left = n,
            _ => {}
        }
    }
    counts
}

/// The per-address record of confirmation mails asked for: at most `limit` times, newest last,
/// none older than the window. Returns the times to store, or `None` when the limit is reached.
pub(crate) fn admit_request(
    stored: Option<&str>,
    window_start: i64,
    limit: u32,
    now: i64,
) -> Option<String> {
    let mut times: Vec<i64> = stored
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .filter(|&t| t > window_start)
        .collect();
    if times.len() >= limit as usize {
        return None;
    }
    times.push(now);
    Some(times.iter().map(i64::to_string).collect::<Vec<_>>().join(" "))
}

#[cfg(test)]
mod tests {
    use super::admit_request;

    #[test]
    fn the_limit_slides_with_the_window() {
        assert_eq!(admit_request(None, 0, 3, 10).as_deref(), Some("10"));
        assert_eq!(admit_request(Some("10 20"), 0, 3, 30).as_deref(), Some("10 20 30"));
        assert_eq!(admit_request(Some("10 20 30"), 0, 3, 40), None);
        // The oldest has left the window: room for one more.
        assert_eq!(admit_request(Some("10 20 30"), 10, 3, 40).as_deref(), Some("20 30 40"));
        assert_eq!(admit_request(Some("junk 5"), 0, 3, 6).as_deref(), Some("5 6"));
    }
}
