//! The storage boundary. Handlers and sessions talk to [`Store`]; SQL lives only in the backends.

mod announcement_records;
mod postgres;
mod records;
mod sqlite;
mod webhook_records;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::config::DatabaseUrl;
use crate::domain::{
    AnnouncementAction, AnnouncementText, SearchTerm, SubscriberEmail, SubscriberStatus,
};

pub use announcement_records::{AnnouncementRecord, Expansion, FailureGroup, Pace};
pub use postgres::PostgresStore;
pub use records::{
    AddressHash, ConfirmWrite, Confirmation, ConfirmationQueued, ConfirmationRequest, Confirmed,
    Counts, ExportChunk, ImportBatch, ImportCounts, ImportRow, LeaveReason, Leaving, MailOutcome,
    MailRecord, MailResult, NewSubscriber, NewToken, QueuedMail, Selection, SubscriberRecord,
    TokenRecord,
};
pub use sqlite::{DatabaseInUse, SqliteStore, copy_database, use_global_allocator};
pub use webhook_records::{
    ATTEMPTS_KEPT, AttemptRecord, DeliveryOutcome, DeliveryResult, EndpointRecord, NewEndpoint,
    QueuedDelivery,
};

/// How many connections, and how long anything may wait.
#[derive(Debug, Clone, Copy)]
pub struct PoolLimits {
    /// PostgreSQL connections, or SQLite read connections (SQLite always has one writer).
    pub pool_size: u32,
    /// How long a request waits for a connection.
    pub connect_timeout: Duration,
    /// How long one statement may run (or, on SQLite, wait for the write lock).
    pub statement_timeout: Duration,
}

/// Who opens the database: a server keeps SQLite's search index up in its idle time; a
/// command-line tool leaves that to the server, so that an import or export runs at full speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Server,
    Tool,
}

/// Opens and migrates the database the URL names.
pub async fn open(
    database: &DatabaseUrl,
    limits: PoolLimits,
    role: Role,
) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match database {
        DatabaseUrl::Sqlite(options) => {
            Arc::new(SqliteStore::open(options.clone(), limits, role).await?)
        }
        DatabaseUrl::Postgres(options) => {
            Arc::new(PostgresStore::open(options.clone(), limits).await?)
        }
    })
}

/// The newest subscriber's id (0 for an empty list): where a snapshot of the list ends.
pub async fn newest_id(store: &dyn Store) -> StoreResult<i64> {
    let newest = store.list_subscribers(ListFilter::default(), None, 1).await?;
    Ok(newest.first().map_or(0, |row| row.id))
}

/// Storage failed (unreachable, locked, full, read-only...). Clients see a generic 503; the
/// cause chain goes to the log once, in `web::error`.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct StoreError(#[from] pub anyhow::Error);

pub type StoreResult<T> = Result<T, StoreError>;

/// One row of the list as the admin sees it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Subscriber {
    pub id: i64,
    pub email: String,
    /// Unix seconds.
    pub created_at: i64,
    #[sqlx(try_from = "String")]
    pub status: SubscriberStatus,
}

impl Subscriber {
    pub fn as_row(&self) -> SubscriberRow<'_> {
        SubscriberRow {
            id: self.id,
            email: &self.email,
            created_at: self.created_at,
            status: self.status,
        }
    }
}

/// A [`Subscriber`] as it is read, its address borrowed from the read: a page written straight
/// from these copies no address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriberRow<'a> {
    pub id: i64,
    pub email: &'a str,
    /// Unix seconds.
    pub created_at: i64,
    pub status: SubscriberStatus,
}

impl SubscriberRow<'_> {
    pub fn to_owned(self) -> Subscriber {
        Subscriber {
            id: self.id,
            email: self.email.to_owned(),
            created_at: self.created_at,
            status: self.status,
        }
    }
}

/// A stored text as `str`. Addresses are nearly always ASCII, which `is_ascii` checks a word
/// at a time, where `from_utf8` went through a short address a byte at a time: checking a
/// page's addresses and statuses that way was 7% of what the API's list cost.
pub fn stored_text(bytes: &[u8]) -> Result<&str, std::str::Utf8Error> {
    if bytes.is_ascii() {
        // SAFETY: every sequence of ASCII bytes is valid UTF-8.
        Ok(unsafe { std::str::from_utf8_unchecked(bytes) })
    } else {
        std::str::from_utf8(bytes)
    }
}

/// What a bounded walk down the list found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walk {
    /// Matches, newest first.
    pub rows: Vec<Subscriber>,
    /// The newest id the walk did not reach, when it stopped before the end of the list.
    pub stopped_at: Option<i64>,
}

/// Which rows a listing wants.
#[derive(Debug, Clone, Copy, Default)]
pub struct ListFilter<'a> {
    pub search: Option<&'a SearchTerm>,
    pub status: Option<SubscriberStatus>,
}

/// The SHA-256 of a session id. Only this reaches storage, so a copy of the database does not
/// hand out live sessions.
pub type SessionKey = [u8; 32];

/// Rows one background step adds to the search index (PostgreSQL): about a tenth of a second.
pub const SEARCH_INDEX_STEP: i64 = 5_000;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Whether writes commit in the order they are started, so that a write naming another's
    /// row (a signup's session) may start before that one answers and share its commit. True
    /// for SQLite's single writer; on PostgreSQL each write has a connection of its own.
    fn commits_in_start_order(&self) -> bool {
        false
    }

    /// Answers when the database does.
    async fn ping(&self) -> StoreResult<()>;

    /// Adds the address as confirmed (single opt-in: the signup is the consent) and lifts any
    /// suppression of it; an address already on the list (in any letter case) is left as it is.
    /// Returns only after the change is durable.
    async fn add_subscriber(&self, new: NewSubscriber<'_>) -> StoreResult<()>;
    /// Double opt-in: see [`ConfirmationRequest`].
    async fn request_confirmation(
        &self,
        request: ConfirmationRequest<'_>,
    ) -> StoreResult<ConfirmationQueued>;
    async fn confirmation(&self, id: i64) -> StoreResult<Option<Confirmation>>;
    async fn confirm(&self, write: ConfirmWrite<'_>) -> StoreResult<Confirmed>;
    /// Removes the row (with its links and mails); with `leaving`, also suppresses the address
    /// and ends the sessions that remember it. Returns whether a row was removed.
    async fn remove_subscriber(
        &self,
        email: &SubscriberEmail,
        leaving: Option<Leaving>,
    ) -> StoreResult<bool>;
    async fn remove_subscriber_by_id(&self, id: i64, leaving: Option<Leaving>)
    -> StoreResult<bool>;
    /// Removes the address only while it is unconfirmed. The hash keeps the count of its
    /// confirmation mails once the row is gone, where a store keeps that count on the row.
    async fn remove_pending(
        &self,
        email: &SubscriberEmail,
        address_hash: AddressHash,
    ) -> StoreResult<bool>;
    async fn subscriber(&self, id: i64) -> StoreResult<Option<SubscriberRecord>>;
    /// Every mail to the subscriber, newest first.
    async fn mails_to(&self, subscriber_id: i64) -> StoreResult<Vec<MailRecord>>;

    /// Newest first, ids below `before`, at most `limit` rows.
    async fn list_subscribers(
        &self,
        filter: ListFilter<'_>,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<Subscriber>>;
    /// The rows [`Store::list_subscribers`] returns without a search, handed to `each` as they
    /// are read: the API writes its page from them without a copy of each row.
    async fn each_subscriber(
        &self,
        status: Option<SubscriberStatus>,
        before: Option<i64>,
        limit: u32,
        each: &mut (dyn for<'r> FnMut(SubscriberRow<'r>) + Send),
    ) -> StoreResult<()> {
        let filter = ListFilter { search: None, status };
        for row in self.list_subscribers(filter, before, limit).await? {
            each(row.as_row());
        }
        Ok(())
    }
    /// Walks at most `window` rows below `before`, newest first, and returns up to `limit` of
    /// them containing `term` (for terms too short for the trigram indexes).
    async fn walk_matching(
        &self,
        term: &SearchTerm,
        status: Option<SubscriberStatus>,
        before: Option<i64>,
        window: u32,
        limit: u32,
    ) -> StoreResult<Walk>;
    /// See [`ImportBatch`].
    async fn import_batch(&self, batch: ImportBatch<'_>) -> StoreResult<ImportCounts>;
    /// The rows with `from <= id < below`, newest first, for the CSV export.
    async fn export_chunk(
        &self,
        status: Option<SubscriberStatus>,
        below: i64,
        from: i64,
    ) -> StoreResult<ExportChunk>;
    async fn subscriber_by_key(&self, email_key: &str) -> StoreResult<Option<SubscriberRecord>>;
    /// Removes these rows (the admin's delete: no suppression). Returns how many went.
    async fn remove_subscribers(&self, ids: &[i64]) -> StoreResult<u64>;
    /// How many rows the selection holds, exactly (a scan, for a confirmation page).
    async fn count_selection(&self, selection: Selection<'_>) -> StoreResult<u64>;
    /// Removes every row of the selection, newest first, a few thousand rows a commit (so no
    /// commit holds the writer, and no statement runs, for long). Returns how many went.
    async fn remove_selection(&self, selection: Selection<'_>) -> StoreResult<u64>;

    /// `false` when a token of that name exists.
    async fn create_token(&self, token: NewToken<'_>) -> StoreResult<bool>;
    async fn tokens(&self) -> StoreResult<Vec<TokenRecord>>;
    async fn revoke_token(&self, name: &str) -> StoreResult<bool>;
    async fn token_by_hash(&self, hash: &[u8; 32]) -> StoreResult<Option<TokenRecord>>;
    async fn touch_token(&self, id: i64, now: i64) -> StoreResult<()>;

    /// The numbers per status, from maintained counters (no scan).
    async fn counts(&self) -> StoreResult<Counts>;
    /// Messages waiting in the outbox per kind (`confirm`, `welcome`, …): how many, and the
    /// Unix time the oldest was queued.
    async fn outbox_backlog(&self) -> StoreResult<Vec<(String, u64, i64)>>;
    /// Database connections of the pool: (in use, idle).
    async fn connections(&self) -> StoreResult<(u64, u64)>;
    /// How many addresses match, counting no further than `cap`.
    async fn count_matching(&self, filter: ListFilter<'_>, cap: u64) -> StoreResult<u64>;
    /// Moves up to [`SEARCH_INDEX_STEP`] new rows into the search index; returns how many.
    /// Servers call it in the background. SQLite's writer does this in its idle time itself.
    async fn index_for_search(&self) -> StoreResult<u64> {
        Ok(0)
    }

    /// A new draft announcement; returns its id.
    async fn create_announcement(&self, text: &AnnouncementText, now: i64) -> StoreResult<i64>;
    /// Rewrites a draft; `false` when it is not (or no longer) a draft.
    async fn update_announcement(
        &self,
        id: i64,
        text: &AnnouncementText,
        now: i64,
    ) -> StoreResult<bool>;
    async fn announcement(&self, id: i64) -> StoreResult<Option<AnnouncementRecord>>;
    /// Newest first.
    async fn announcements(&self, limit: u32) -> StoreResult<Vec<AnnouncementRecord>>;
    /// Sends a draft: its audience is everyone confirmed now (`now_ms`, Unix milliseconds).
    /// `false` when it is not a draft.
    async fn start_announcement(&self, id: i64, now_ms: i64) -> StoreResult<bool>;
    /// `false` when the announcement is not in a state the action applies to.
    async fn change_announcement(
        &self,
        id: i64,
        action: AnnouncementAction,
        now: i64,
    ) -> StoreResult<bool>;
    /// The announcements being sent now.
    async fn sending_announcements(&self) -> StoreResult<Vec<i64>>;
    /// One step of a send: the next recipients become outbox rows, as many as `pace` allows at
    /// `now_ms` (Unix milliseconds); once every mail is made and answered, the send is over.
    async fn expand_announcement(&self, id: i64, pace: Pace, now_ms: i64)
    -> StoreResult<Expansion>;
    /// The server's answers to the mails that failed for good, grouped, most common first.
    async fn announcement_failures(&self, id: i64) -> StoreResult<Vec<FailureGroup>>;
    /// A test mail of the announcement to `to` alone; `false` when there is no announcement.
    async fn queue_test_mail(&self, id: i64, to: &SubscriberEmail, now: i64) -> StoreResult<bool>;

    /// Leases up to `limit` due mails to `owner` until `lease_until`, and returns them.
    async fn claim_mail(
        &self,
        now: i64,
        lease_until: i64,
        owner: i64,
        limit: u32,
    ) -> StoreResult<Vec<QueuedMail>>;
    async fn record_mail(&self, outcomes: &[MailOutcome]) -> StoreResult<()>;
    /// Deletes pending signups made before `pending_before` (with their links and mails) and
    /// confirmation requests older than `requests_before`. Returns the signups removed.
    async fn purge_stale(&self, pending_before: i64, requests_before: i64) -> StoreResult<u64>;

    /// The stored argon2id PHC string, if any.
    async fn admin_password_hash(&self) -> StoreResult<Option<String>>;
    /// Stores `phc` if the stored hash is still `expected` (`None`: none stored yet); `false`
    /// when another writer got there first.
    async fn swap_admin_password_hash(
        &self,
        expected: Option<&str>,
        phc: &str,
        now: i64,
    ) -> StoreResult<bool>;

    /// Adds a webhook endpoint; returns its id.
    async fn create_endpoint(&self, endpoint: NewEndpoint<'_>) -> StoreResult<i64>;
    async fn endpoints(&self) -> StoreResult<Vec<EndpointRecord>>;
    async fn endpoint(&self, id: i64) -> StoreResult<Option<EndpointRecord>>;
    /// Removes the endpoint with its queued deliveries and history.
    async fn remove_endpoint(&self, id: i64) -> StoreResult<bool>;
    /// Queues a `webhook.ping` to the endpoint; `false` when there is no such enabled endpoint.
    async fn queue_ping(&self, endpoint_id: i64, now: i64) -> StoreResult<bool>;
    /// Leases up to `limit` due deliveries to enabled endpoints, as [`Store::claim_mail`].
    async fn claim_deliveries(
        &self,
        now: i64,
        lease_until: i64,
        owner: i64,
        limit: u32,
    ) -> StoreResult<Vec<QueuedDelivery>>;
    async fn record_deliveries(&self, outcomes: &[DeliveryOutcome]) -> StoreResult<()>;
    /// The endpoint's newest attempts, newest first.
    async fn webhook_attempts(&self, endpoint_id: i64) -> StoreResult<Vec<AttemptRecord>>;

    /// Waits until every acknowledged or queued write is committed, at shutdown.
    async fn close(&self);

    /// The session's JSON data, unless it is missing or expired.
    async fn load_session(&self, key: &SessionKey, now: i64) -> StoreResult<Option<Arc<str>>>;
    /// Inserts a new session; `false` if the key is already taken. `remembers` is the key
    /// (`SubscriberEmail::key`) of the address the session remembers, if any. A session
    /// remembers an address only while its row exists: without one, `visitor_email` and
    /// `awaiting_confirmation` are left out of the stored JSON, here and in `save_session`, and
    /// whatever removes the row later takes them out of every session (ending those with
    /// nothing else in them).
    async fn create_session(
        &self,
        key: &SessionKey,
        data: &str,
        remembers: Option<&str>,
        expires_at: i64,
    ) -> StoreResult<bool>;
    async fn save_session(
        &self,
        key: &SessionKey,
        data: &str,
        remembers: Option<&str>,
        expires_at: i64,
    ) -> StoreResult<()>;
    async fn delete_session(&self, key: &SessionKey) -> StoreResult<()>;
    /// Returns how many expired sessions were removed.
    async fn delete_expired_sessions(&self, now: i64) -> StoreResult<u64>;
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::stored_text;

    #[test]
    fn stored_text_reads_ascii_and_other_utf8_and_refuses_the_rest() {
        assert_eq!(stored_text(b"anna@example.com"), Ok("anna@example.com"));
        assert_eq!(stored_text("kim@bücher.de".as_bytes()), Ok("kim@bücher.de"));
        assert!(stored_text(b"kim@b\xfccher.de").is_err(), "Latin-1 is not UTF-8");
        assert!(stored_text(b"\xe2\x82").is_err(), "a character cut short");
    }

    proptest! {
        #[test]
        fn stored_text_agrees_with_from_utf8(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(stored_text(&bytes), std::str::from_utf8(&bytes));
        }

        #[test]
        fn stored_text_keeps_any_string(text in ".{0,40}") {
            prop_assert_eq!(stored_text(text.as_bytes()), Ok(text.as_str()));
        }
    }
}
