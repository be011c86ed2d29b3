//! The [`Store`] implementation for SQLite: reads straight from the reader pool, writes through
//! the writer task.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context;
use async_trait::async_trait;

use super::SqliteStore;
use super::announcements::AnnouncementOp;
use super::import_batch::OwnedImportRow;
use super::ops::{DryRun, EvidenceRow, Target, WriteOp, answer};
use super::search_index::UNINDEXED_TAIL;
use super::session_cache::Lookup;
use super::webhooks::WebhookOp;
use crate::domain::{
    AnnouncementAction, AnnouncementText, Evidence, SearchTerm, SubscriberEmail, SubscriberStatus,
};
use crate::store::records::RECORD_COLUMNS;
use crate::store::records::counts_from;
use crate::store::{
    AddressHash, AnnouncementRecord, AttemptRecord, ConfirmWrite, Confirmation, ConfirmationQueued,
    ConfirmationRequest, Confirmed, Counts, DeliveryOutcome, EndpointRecord, Expansion,
    ExportChunk, FailureGroup, ImportBatch, ImportCounts, Leaving, ListFilter, MailOutcome,
    MailRecord, NewEndpoint, NewSubscriber, NewToken, Pace, QueuedDelivery, QueuedMail, Selection,
    SessionKey, Store, StoreResult, Subscriber, SubscriberRecord, SubscriberRow, TokenRecord, Walk,
};

/// The FTS5 query for a search term: a phrase (the term in double quotes, inner quotes doubled),
/// which the trigram tokenizer matches as a substring, case-insensitively.
fn trigram_phrase(term: &SearchTerm) -> String {
    format!("\"{}\"", term.as_str().replace('"', "\"\""))
}

fn evidence_row(evidence: &Evidence) -> EvidenceRow {
    EvidenceRow {
        source: evidence.door.as_str(),
        ip: evidence.client.ip.clone(),
        agent: evidence.client.agent.clone(),
        consent: evidence.consent.clone(),
    }
}

const SUBSCRIBER_COLUMNS: &str = "id, email, created_at, status";

#[async_trait]
impl Store for SqliteStore {
    // One queue, one writer: a write started later lands in the same commit or a later one.
    fn commits_in_start_order(&self) -> bool {
        true
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.readers).await.context("pinging SQLite")?;
        Ok(())
    }

    async fn add_subscriber(&self, new: NewSubscriber<'_>) -> StoreResult<()> {
        let op = WriteOp::AddSubscriber {
            email: new.email.as_str().to_owned(),
            key: new.email.key().to_owned(),
            now: new.now,
            evidence: evidence_row(new.evidence),
            address_hash: new.address_hash,
        };
        self.writer.write(op).await?;
        Ok(())
    }

    async fn request_confirmation(
        &self,
        request: ConfirmationRequest<'_>,
    ) -> StoreResult<ConfirmationQueued> {
        let new = request.subscriber;
        let op = WriteOp::RequestConfirmation {
            email: new.email.as_str().to_owned(),
            key: new.email.key().to_owned(),
            now: new.now,
            evidence: evidence_row(new.evidence),
            address_hash: new.address_hash,
            nonce: request.nonce,
            expires_at: request.expires_at,
            limit: request.limit,
            window_start: request.window_start,
        };
        Ok(match self.writer.write(op).await? {
            answer::ALREADY => ConfirmationQueued::AlreadyConfirmed,
            answer::REFUSED => ConfirmationQueued::LimitReached,
            _ => ConfirmationQueued::Queued,
        })
    }

    async fn confirmation(&self, id: i64) -> StoreResult<Option<Confirmation>> {
        let found = sqlx::query_as(
            "SELECT o.id, o.subscriber_id, o.nonce, o.expires_at, o.used_at, s.email, s.status
             FROM outbox AS o JOIN subscribers AS s ON s.id = o.subscriber_id
             WHERE o.id = ? AND o.purpose = 'confirm'",
        )
        .bind(id)
        .fetch_optional(&self.readers)
        .await
        .context("reading a confirmation link")?;
        Ok(found)
    }

    async fn confirm(&self, write: ConfirmWrite<'_>) -> StoreResult<Confirmed> {
        let op = WriteOp::Confirm {
            confirmation_id: write.confirmation_id,
            now: write.now,
            ip: write.client.ip.clone(),
            agent: write.client.agent.clone(),
            address_hash: write.address_hash,
            welcome: write.welcome,
        };
        Ok(match self.writer.write(op).await? {
            answer::DONE => Confirmed::Now,
            answer::ALREADY => Confirmed::Already,
            answer::REFUSED => Confirmed::Expired,
            _ => Confirmed::Unknown,
        })
    }

    async fn remove_subscriber(
        &self,
        email: &SubscriberEmail,
        leaving: Option<Leaving>,
    ) -> StoreResult<bool> {
        let op = WriteOp::RemoveSubscriber { target: Target::Key(email.key().to_owned()), leaving };
        Ok(self.writer.write(op).await? > 0)
    }

    async fn remove_subscriber_by_id(
        &self,
        id: i64,
        leaving: Option<Leaving>,
    ) -> StoreResult<bool> {
        let op = WriteOp::RemoveSubscriber { target: Target::Id(id), leaving };
        Ok(self.writer.write(op).await? > 0)
    }

    async fn remove_pending(
        &self,
        email: &SubscriberEmail,
        address_hash: AddressHash,
    ) -> StoreResult<bool> {
        let op = WriteOp::RemovePending { key: email.key().to_owned(), address_hash };
        Ok(self.writer.write(op).await? > 0)
    }

    async fn subscriber(&self, id: i64) -> StoreResult<Option<SubscriberRecord>> {
        let found = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {RECORD_COLUMNS} FROM subscribers WHERE id = ?"
        )))
        .bind(id)
        .fetch_optional(&self.readers)
        .await
        .context("reading a subscriber")?;
        Ok(found)
    }

    async fn mails_to(&self, subscriber_id: i64) -> StoreResult<Vec<MailRecord>> {
        let mails = sqlx::query_as(
            "SELECT purpose, status, attempts, last_error, created_at, sent_at
             FROM outbox WHERE subscriber_id = ? ORDER BY id DESC",
        )
        .bind(subscriber_id)
        .fetch_all(&self.readers)
        .await
        .context("reading a subscriber's mails")?;
        Ok(mails)
    }

    async fn list_subscribers(
        &self,
        filter: ListFilter<'_>,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<Subscriber>> {
        let before = before.unwrap_or(i64::MAX);
        let status = filter.status.map(SubscriberStatus::as_str);
        let Some(term) = filter.search else {
            return self.quick.page(filter.status, before, limit);
        };
        // The trigram index hands out matches newest first; stop at the page's end. Rows newer
        // than the index are read directly.
        let rows: Vec<Subscriber> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT * FROM (
               SELECT * FROM (SELECT {SUBSCRIBER_COLUMNS} FROM subscribers
                              WHERE {UNINDEXED_TAIL} AND id < ?2
                                AND (?4 IS NULL OR status = ?4)
                                AND (instr(email_key, ?5) > 0 OR instr(email, ?5) > 0)
                              ORDER BY id DESC LIMIT ?3)
               UNION ALL
               SELECT * FROM (SELECT s.id, s.email, s.created_at, s.status
                              FROM subscribers_search AS hit
                              JOIN subscribers AS s ON s.id = hit.rowid
                              WHERE subscribers_search MATCH ?1 AND hit.rowid < ?2
                                AND (?4 IS NULL OR s.status = ?4)
                              ORDER BY hit.rowid DESC LIMIT ?3))
             ORDER BY id DESC LIMIT ?3"
        )))
        .bind(trigram_phrase(term))
        .bind(before)
        .bind(limit)
        .bind(status)
        .bind(term.as_str())
        .fetch_all(&self.readers)
        .await
        .context("listing subscribers")?;
        Ok(rows)
    }

    async fn each_subscriber(
        &self,
        status: Option<SubscriberStatus>,
        before: Option<i64>,
        limit: u32,
        each: &mut (dyn for<'r> FnMut(SubscriberRow<'r>) + Send),
    ) -> StoreResult<()> {
        self.quick.each(status, before.unwrap_or(i64::MAX), limit, each)
    }

    async fn walk_matching(
        &self,
        term: &SearchTerm,
        status: Option<SubscriberStatus>,
        before: Option<i64>,
        window: u32,
        limit: u32,
    ) -> StoreResult<Walk> {
        let before = before.unwrap_or(i64::MAX);
        let stopped_at: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM subscribers WHERE id < ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2",
        )
        .bind(before)
        .bind(window)
        .fetch_optional(&self.readers)
        .await
        .context("finding where a search walk ends")?;
        // The key holds the local part lower-cased and the domain as ASCII, the address the
        // domain in Unicode (already lower-case): between them every case-insensitive match.
        let rows = sqlx::query_as(
            "SELECT id, email, created_at, status FROM subscribers
             WHERE id < ?1 AND id > ?2 AND (?5 IS NULL OR status = ?5)
               AND (instr(email_key, ?3) > 0 OR instr(email, ?3) > 0)
             ORDER BY id DESC LIMIT ?4",
        )
        .bind(before)
        .bind(stopped_at.unwrap_or(i64::MIN))
        .bind(term.as_str())
        .bind(limit)
        .bind(status.map(SubscriberStatus::as_str))
        .fetch_all(&self.readers)
        .await
        .context("walking the list for a search")?;
        Ok(Walk { rows, stopped_at })
    }

    async fn import_batch(&self, batch: ImportBatch<'_>) -> StoreResult<ImportCounts> {
        let counts = Arc::new(std::sync::Mutex::new(ImportCounts::default()));
        let op = WriteOp::Import {
            rows: batch
                .rows
                .iter()
                .map(|row| OwnedImportRow {
                    email: row.email.as_str().to_owned(),
                    key: row.email.key().to_owned(),
                    address_hash: row.address_hash,
                    nonce: row.nonce,
                })
                .collect(),
            source: batch.door.as_str(),
            status: batch.status.as_str(),
            consent: batch.consent.to_owned(),
            confirm_expires_at: batch.confirm_expires_at,
            dry_run: batch.dry_run,
            now: batch.now,
            counts: counts.clone(),
        };
        match self.writer.write(op).await {
            Ok(_) => {}
            Err(e) if batch.dry_run && e.0.root_cause().is::<DryRun>() => {}
            Err(e) => return Err(e),
        }
        Ok(*counts.lock().unwrap_or_else(|p| p.into_inner()))
    }

    async fn export_chunk(
        &self,
        status: Option<SubscriberStatus>,
        below: i64,
        from: i64,
    ) -> StoreResult<ExportChunk> {
        // Addresses never hold a comma, quote or line break (the parser refuses them), and the
        // other columns are words and times: no field needs quoting, but an odd one still gets it.
        // `datetime` with the separator replaced is RFC 3339 at a third of `strftime`'s cost.
        // The lines are joined in the order the subquery yields them (newest first); an ORDER BY
        // inside `group_concat` would sort each chunk again in a temporary B-tree (a third of
        // the export's time). The transfer tests check the order row by row.
        let chunk = sqlx::query_as(
            "SELECT group_concat(line, '') AS csv, count(*) AS rows,
                    min(id) AS last_id
             FROM (SELECT id,
                          CASE WHEN instr(email, ',') OR instr(email, '\"')
                                    OR instr(email, char(13)) OR instr(email, char(10))
                               THEN '\"' || replace(email, '\"', '\"\"') || '\"' ELSE email END
                          || ',' || status
                          || ',' || replace(datetime(created_at, 'unixepoch'), ' ', 'T') || 'Z'
                          || ',' || coalesce(replace(datetime(confirmed_at, 'unixepoch'), ' ', 'T') || 'Z', '')
                          || ',' || source || char(13, 10) AS line
                   FROM subscribers
                   WHERE id < ?1 AND id >= ?2 AND (?3 IS NULL OR status = ?3)
                   ORDER BY id DESC)",
        )
        .bind(below)
        .bind(from)
        .bind(status.map(SubscriberStatus::as_str))
        .fetch_one(&self.readers)
        .await
        .context("reading subscribers for the export")?;
        Ok(chunk)
    }

    async fn subscriber_by_key(&self, email_key: &str) -> StoreResult<Option<SubscriberRecord>> {
        self.record_by_key(email_key).await
    }

    async fn remove_subscribers(&self, ids: &[i64]) -> StoreResult<u64> {
        self.remove_ids(ids).await
    }

    async fn count_selection(&self, selection: Selection<'_>) -> StoreResult<u64> {
        self.count_in(selection).await
    }

    async fn remove_selection(&self, selection: Selection<'_>) -> StoreResult<u64> {
        self.remove_in(selection).await
    }

    async fn create_token(&self, token: NewToken<'_>) -> StoreResult<bool> {
        self.insert_token(token).await
    }

    async fn tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        self.all_tokens().await
    }

    async fn revoke_token(&self, name: &str) -> StoreResult<bool> {
        self.delete_token(name).await
    }

    async fn token_by_hash(&self, hash: &[u8; 32]) -> StoreResult<Option<TokenRecord>> {
        self.find_token(hash).await
    }

    async fn touch_token(&self, id: i64, now: i64) -> StoreResult<()> {
        self.mark_token_used(id, now).await
    }

    async fn create_endpoint(&self, endpoint: NewEndpoint<'_>) -> StoreResult<i64> {
        self.insert_endpoint(endpoint).await
    }

    async fn endpoints(&self) -> StoreResult<Vec<EndpointRecord>> {
        self.all_endpoints().await
    }

    async fn endpoint(&self, id: i64) -> StoreResult<Option<EndpointRecord>> {
        self.one_endpoint(id).await
    }

    async fn remove_endpoint(&self, id: i64) -> StoreResult<bool> {
        Ok(self.webhook_write(WebhookOp::RemoveEndpoint { id }).await? == 1)
    }

    async fn queue_ping(&self, endpoint_id: i64, now: i64) -> StoreResult<bool> {
        Ok(self.webhook_write(WebhookOp::QueuePing { endpoint_id, now }).await? == 1)
    }

    async fn claim_deliveries(
        &self,
        now: i64,
        lease_until: i64,
        owner: i64,
        limit: u32,
    ) -> StoreResult<Vec<QueuedDelivery>> {
        self.lease_deliveries(now, lease_until, owner, limit).await
    }

    async fn record_deliveries(&self, outcomes: &[DeliveryOutcome]) -> StoreResult<()> {
        if !outcomes.is_empty() {
            self.webhook_write(WebhookOp::Record { outcomes: outcomes.to_vec() }).await?;
        }
        Ok(())
    }

    async fn webhook_attempts(&self, endpoint_id: i64) -> StoreResult<Vec<AttemptRecord>> {
        self.endpoint_attempts(endpoint_id).await
    }

    async fn counts(&self) -> StoreResult<Counts> {
        let rows: Vec<(String, i64)> = sqlx::query_as("SELECT status, n FROM subscriber_counts")
            .fetch_all(&self.readers)
            .await
            .context("reading the subscriber counts")?;
        Ok(counts_from(rows))
    }

    async fn outbox_backlog(&self) -> StoreResult<Vec<(String, u64, i64)>> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            // A new address's confirmation and its webhook events wait in its row until a
            // lease queues them (migrations `confirmations_from_rows`,
            // `created_events_from_rows`): they are counted as queued from the start, from
            // index ranges (`backlog_counted_from_indexes`), not row by row.
            "SELECT purpose, sum(n), min(oldest) FROM (
                 SELECT purpose, count(*) AS n, min(created_at) AS oldest FROM outbox
                 WHERE status = 'queued' GROUP BY purpose
                 UNION ALL
                 SELECT 'confirm', n, oldest FROM confirmations_waiting WHERE n > 0
                 UNION ALL
                 SELECT 'webhook', count(*), min(occurred_at) FROM webhook_deliveries
                 HAVING count(*) > 0
                 UNION ALL
                 SELECT 'webhook', n, (SELECT occurred_at FROM created_events_unqueued
                                       ORDER BY subscriber_id LIMIT 1)
                 FROM (SELECT sum(n) AS n FROM created_events_waiting) WHERE n > 0)
             GROUP BY purpose
             ORDER BY 1",
        )
        .fetch_all(&self.readers)
        .await
        .context("reading the outbox backlog")?;
        Ok(rows.into_iter().map(|(kind, n, oldest)| (kind, n.unsigned_abs(), oldest)).collect())
    }

    /// The read pool's connections; the one write connection is always in use by the writer.
    async fn connections(&self) -> StoreResult<(u64, u64)> {
        let (size, idle) = (u64::from(self.readers.size()), self.readers.num_idle() as u64);
        Ok((size.saturating_sub(idle) + 1, idle))
    }

    async fn count_matching(&self, filter: ListFilter<'_>, cap: u64) -> StoreResult<u64> {
        let Some(term) = filter.search else {
            let counts = self.counts().await?;
            return Ok(match filter.status {
                Some(SubscriberStatus::Pending) => counts.pending,
                Some(SubscriberStatus::Confirmed) => counts.confirmed,
                None => counts.on_list(),
            });
        };
        let cap = i64::try_from(cap).unwrap_or(i64::MAX);
        let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM (
               SELECT 1 FROM subscribers
               WHERE {UNINDEXED_TAIL} AND (?3 IS NULL OR status = ?3)
                 AND (instr(email_key, ?4) > 0 OR instr(email, ?4) > 0)
               UNION ALL
               SELECT 1 FROM subscribers_search AS hit JOIN subscribers AS s ON s.id = hit.rowid
               WHERE subscribers_search MATCH ?1 AND (?3 IS NULL OR s.status = ?3)
               LIMIT ?2)"
        )))
        .bind(trigram_phrase(term))
        .bind(cap)
        .bind(filter.status.map(SubscriberStatus::as_str))
        .bind(term.as_str())
        .fetch_one(&self.readers)
        .await
        .context("counting matching subscribers")?;
        Ok(u64::try_from(count).unwrap_or_default())
    }

    async fn create_announcement(&self, text: &AnnouncementText, now: i64) -> StoreResult<i64> {
        let op = AnnouncementOp::Create {
            subject: text.subject().to_owned(),
            body: text.body().to_owned(),
            now,
        };
        Ok(i64::try_from(self.write_announcement(op).await?).context("an announcement's id")?)
    }

    async fn update_announcement(
        &self,
        id: i64,
        text: &AnnouncementText,
        now: i64,
    ) -> StoreResult<bool> {
        let op = AnnouncementOp::Update {
            id,
            subject: text.subject().to_owned(),
            body: text.body().to_owned(),
            now,
        };
        Ok(self.write_announcement(op).await? == 1)
    }

    async fn announcement(&self, id: i64) -> StoreResult<Option<AnnouncementRecord>> {
        self.read_announcement(id).await
    }

    async fn announcements(&self, limit: u32) -> StoreResult<Vec<AnnouncementRecord>> {
        self.read_announcements(limit).await
    }

    async fn start_announcement(&self, id: i64, now_ms: i64) -> StoreResult<bool> {
        Ok(self.write_announcement(AnnouncementOp::Start { id, now_ms }).await? == 1)
    }

    async fn change_announcement(
        &self,
        id: i64,
        action: AnnouncementAction,
        now: i64,
    ) -> StoreResult<bool> {
        Ok(self.write_announcement(AnnouncementOp::Change { id, action, now }).await? == 1)
    }

    async fn sending_announcements(&self) -> StoreResult<Vec<i64>> {
        self.read_sending().await
    }

    async fn expand_announcement(
        &self,
        id: i64,
        pace: Pace,
        now_ms: i64,
    ) -> StoreResult<Expansion> {
        let done = Arc::new(std::sync::Mutex::new(Expansion::default()));
        self.write_announcement(AnnouncementOp::Expand { id, pace, now_ms, done: done.clone() })
            .await?;
        Ok(*done.lock().unwrap_or_else(|p| p.into_inner()))
    }

    async fn announcement_failures(&self, id: i64) -> StoreResult<Vec<FailureGroup>> {
        self.read_failures(id).await
    }

    async fn queue_test_mail(&self, id: i64, to: &SubscriberEmail, now: i64) -> StoreResult<bool> {
        let op = AnnouncementOp::QueueTest { id, to: to.as_str().to_owned(), now };
        Ok(self.write_announcement(op).await? == 1)
    }

    async fn claim_mail(
        &self,
        now: i64,
        lease_until: i64,
        owner: i64,
        limit: u32,
    ) -> StoreResult<Vec<QueuedMail>> {
        let leased = Arc::new(std::sync::Mutex::new(Vec::new()));
        let op =
            WriteOp::LeaseMail { now, until: lease_until, owner, limit, leased: leased.clone() };
        if self.writer.write(op).await? == 0 {
            return Ok(Vec::new());
        }
        let ids = std::mem::take(&mut *leased.lock().unwrap_or_else(|p| p.into_inner()));
        let mut select = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            // A test mail goes to an address that need not be a subscriber's.
            "SELECT o.id, o.purpose, o.attempts, o.created_at,
                    coalesce(o.subscriber_id, 0) AS subscriber_id,
                    coalesce(s.email, o.to_address) AS email,
                    coalesce(s.email_key, lower(o.to_address)) AS email_key, o.nonce,
                    o.announcement_id
             FROM outbox AS o LEFT JOIN subscribers AS s ON s.id = o.subscriber_id
             WHERE o.status = 'queued' AND (s.id IS NOT NULL OR o.to_address IS NOT NULL)
               AND o.lease_owner = ",
        );
        select.push_bind(owner).push(" AND o.id IN (");
        let mut list = select.separated(", ");
        for id in ids {
            list.push_bind(id);
        }
        select.push(") ORDER BY o.priority, o.next_attempt_at, o.id");
        let mails = select
            .build_query_as()
            .fetch_all(&self.readers)
            .await
            .context("reading leased mail")?;
        Ok(mails)
    }

    async fn record_mail(&self, outcomes: &[MailOutcome]) -> StoreResult<()> {
        if !outcomes.is_empty() {
            self.writer.write(WriteOp::RecordMail { outcomes: outcomes.to_vec() }).await?;
        }
        Ok(())
    }

    async fn purge_stale(&self, pending_before: i64, requests_before: i64) -> StoreResult<u64> {
        self.writer.write(WriteOp::PurgeStale { pending_before, requests_before }).await
    }

    async fn admin_password_hash(&self) -> StoreResult<Option<String>> {
        let hash = sqlx::query_scalar("SELECT password_hash FROM admin_credential WHERE id = 1")
            .fetch_optional(&self.readers)
            .await
            .context("reading the admin credential")?;
        Ok(hash)
    }

    async fn swap_admin_password_hash(
        &self,
        expected: Option<&str>,
        phc: &str,
        now: i64,
    ) -> StoreResult<bool> {
        let op = WriteOp::SwapAdminHash {
            expected: expected.map(str::to_owned),
            phc: phc.to_owned(),
            now,
        };
        Ok(self.writer.write(op).await? == 1)
    }

    async fn close(&self) {
        if let Err(e) = self.writer.close().await {
            tracing::warn!(error = format!("{e:#}"), "could not flush the SQLite writer");
        }
        let stats = self.writer.stats();
        let writes = stats.writes.load(Ordering::Relaxed);
        let commits = stats.commits.load(Ordering::Relaxed).max(1);
        let syncs = stats.syncs.load(Ordering::Relaxed);
        // Writes per commit is how much group commit saved in fsyncs; commits per sync, how
        // much syncing beside the writer saved again.
        tracing::info!(
            writes,
            commits,
            syncs,
            per_commit = writes as f64 / commits as f64,
            "SQLite writer flushed"
        );
    }

    async fn load_session(&self, key: &SessionKey, now: i64) -> StoreResult<Option<Arc<str>>> {
        let ticket = match self.sessions.lookup(key, now) {
            Lookup::Hit(data) => return Ok(data),
            Lookup::Miss(ticket) => ticket,
        };
        let row: Option<(String, i64)> = sqlx::query_as(
            "SELECT data, expires_at FROM sessions WHERE key = ? AND expires_at > ?",
        )
        .bind(&key[..])
        .bind(now)
        .fetch_optional(&self.readers)
        .await
        .context("loading a session")?;
        let found = row.map(|(data, expires)| (Arc::<str>::from(data), expires));
        self.sessions.fill(key, found.clone(), ticket);
        Ok(found.map(|(data, _)| data))
    }

    async fn create_session(
        &self,
        key: &SessionKey,
        data: &str,
        remembers: Option<&str>,
        expires_at: i64,
    ) -> StoreResult<bool> {
        let remembers = remembers.map(str::to_owned);
        let op = WriteOp::CreateSession { key: *key, data: data.to_owned(), remembers, expires_at };
        Ok(self.writer.write(op).await? == 1)
    }

    async fn save_session(
        &self,
        key: &SessionKey,
        data: &str,
        remembers: Option<&str>,
        expires_at: i64,
    ) -> StoreResult<()> {
        let remembers = remembers.map(str::to_owned);
        let op = WriteOp::SaveSession { key: *key, data: data.to_owned(), remembers, expires_at };
        self.writer.write(op).await?;
        Ok(())
    }

    async fn delete_session(&self, key: &SessionKey) -> StoreResult<()> {
        self.writer.write(WriteOp::DeleteSession { key: *key }).await?;
        Ok(())
    }

    async fn delete_expired_sessions(&self, now: i64) -> StoreResult<u64> {
        self.writer.write(WriteOp::DeleteExpiredSessions { now }).await
    }
}
