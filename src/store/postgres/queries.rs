//! The [`Store`] implementation for PostgreSQL.

use std::sync::Arc;

use async_trait::async_trait;

use super::PostgresStore;
use super::consent::RowRef;
use crate::domain::{
    AnnouncementAction, AnnouncementText, SearchTerm, SubscriberEmail, SubscriberStatus,
};
use crate::store::records::RECORD_COLUMNS;
use crate::store::records::counts_from;
use crate::store::{
    AddressHash, AnnouncementRecord, AttemptRecord, ConfirmWrite, Confirmation, ConfirmationQueued,
    ConfirmationRequest, Confirmed, Counts, DeliveryOutcome, EndpointRecord, Expansion,
    ExportChunk, FailureGroup, ImportBatch, ImportCounts, Leaving, ListFilter, MailOutcome,
    MailRecord, NewEndpoint, NewSubscriber, NewToken, Pace, QueuedDelivery, QueuedMail, Selection,
    SessionKey, Store, StoreResult, Subscriber, SubscriberRecord, TokenRecord, Walk,
};

#[async_trait]
impl Store for PostgresStore {
    async fn ping(&self) -> StoreResult<()> {
        self.bounded("pinging PostgreSQL", sqlx::query("SELECT 1").execute(&self.pool)).await?;
        Ok(())
    }

    async fn add_subscriber(&self, new: NewSubscriber<'_>) -> StoreResult<()> {
        self.insert_confirmed(new).await
    }

    async fn request_confirmation(
        &self,
        request: ConfirmationRequest<'_>,
    ) -> StoreResult<ConfirmationQueued> {
        self.queue_confirmation(request).await
    }

    async fn confirmation(&self, id: i64) -> StoreResult<Option<Confirmation>> {
        let select = sqlx::query_as(
            "SELECT o.id, o.subscriber_id, o.nonce, o.expires_at, o.used_at, s.email, s.status
             FROM outbox AS o JOIN subscribers AS s ON s.id = o.subscriber_id
             WHERE o.id = $1 AND o.purpose = 'confirm'",
        )
        .bind(id)
        .fetch_optional(&self.pool);
        self.bounded("reading a confirmation link", select).await
    }

    async fn confirm(&self, write: ConfirmWrite<'_>) -> StoreResult<Confirmed> {
        self.confirm_now(write).await
    }

    async fn remove_subscriber(
        &self,
        email: &SubscriberEmail,
        leaving: Option<Leaving>,
    ) -> StoreResult<bool> {
        self.remove(RowRef::Key(email.key()), leaving).await
    }

    async fn remove_subscriber_by_id(
        &self,
        id: i64,
        leaving: Option<Leaving>,
    ) -> StoreResult<bool> {
        self.remove(RowRef::Id(id), leaving).await
    }

    /// PostgreSQL counts confirmation mails in `confirmation_limits` as they are asked for.
    async fn remove_pending(
        &self,
        email: &SubscriberEmail,
        _address_hash: AddressHash,
    ) -> StoreResult<bool> {
        self.remove(RowRef::PendingKey(email.key()), None).await
    }

    async fn subscriber(&self, id: i64) -> StoreResult<Option<SubscriberRecord>> {
        let select = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {RECORD_COLUMNS} FROM subscribers WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool);
        self.bounded("reading a subscriber", select).await
    }

    async fn mails_to(&self, subscriber_id: i64) -> StoreResult<Vec<MailRecord>> {
        let select = sqlx::query_as(
            "SELECT purpose, status, CAST(attempts AS BIGINT) AS attempts, last_error, created_at,
                    sent_at
             FROM outbox WHERE subscriber_id = $1 ORDER BY id DESC",
        )
        .bind(subscriber_id)
        .fetch_all(&self.pool);
        self.bounded("reading a subscriber's mails", select).await
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
            // The status is written into the statement (it is one of two fixed words) so that
            // every plan for `pending` uses the partial index of pending rows.
            let status = status.map_or(String::new(), |status| format!("AND status = '{status}'"));
            let select = sqlx::query_as::<_, Subscriber>(sqlx::AssertSqlSafe(format!(
                "SELECT id, email, created_at, status FROM subscribers
                 WHERE id < $1 {status} ORDER BY id DESC LIMIT $2"
            )))
            .bind(before)
            .bind(i64::from(limit))
            .fetch_all(&self.pool);
            return self.bounded("listing subscribers", select).await;
        };
        // For the indexed rows the planner picks between the trigram index (rare terms) and
        // walking the primary key newest first until the page is full (common terms).
        let select = sqlx::query_as::<_, Subscriber>(
            "SELECT * FROM (
                 (SELECT s.id, s.email, s.created_at, s.status
                  FROM subscriber_search AS x JOIN subscribers AS s ON s.id = x.id
                  WHERE x.id < $1 AND x.text LIKE $2 ESCAPE '\\'
                    AND ($4::TEXT IS NULL OR s.status = $4)
                  ORDER BY x.id DESC LIMIT $3)
                 UNION ALL
                 (SELECT s.id, s.email, s.created_at, s.status
                  FROM search_backlog AS b JOIN subscribers AS s ON s.id = b.id
                  WHERE b.id < $1 AND (s.email_key || E'\\n' || lower(s.email)) LIKE $2 ESCAPE '\\'
                    AND ($4::TEXT IS NULL OR s.status = $4)
                  ORDER BY b.id DESC LIMIT $3)
             ) AS found
             ORDER BY id DESC LIMIT $3",
        )
        .bind(before)
        .bind(term.like_pattern())
        .bind(i64::from(limit))
        .bind(status)
        .fetch_all(&self.pool);
        self.bounded("searching subscribers", select).await
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
        let boundary = sqlx::query_scalar::<_, i64>(
            "SELECT id FROM subscribers WHERE id < $1 ORDER BY id DESC LIMIT 1 OFFSET $2",
        )
        .bind(before)
        .bind(i64::from(window))
        .fetch_optional(&self.pool);
        let stopped_at = self.bounded("finding where a search walk ends", boundary).await?;
        // The key holds the local part lower-cased and the domain as ASCII, the address the
        // domain in Unicode (already lower-case): between them every case-insensitive match.
        let select = sqlx::query_as::<_, Subscriber>(
            "SELECT id, email, created_at, status FROM subscribers
             WHERE id < $1 AND id > $2 AND ($5::TEXT IS NULL OR status = $5)
               AND (strpos(email_key, $3) > 0 OR strpos(email, $3) > 0)
             ORDER BY id DESC LIMIT $4",
        )
        .bind(before)
        .bind(stopped_at.unwrap_or(i64::MIN))
        .bind(term.as_str())
        .bind(i64::from(limit))
        .bind(status.map(SubscriberStatus::as_str))
        .fetch_all(&self.pool);
        let rows = self.bounded("walking the list for a search", select).await?;
        Ok(Walk { rows, stopped_at })
    }

    async fn import_batch(&self, batch: ImportBatch<'_>) -> StoreResult<ImportCounts> {
        self.import_rows(batch).await
    }

    async fn export_chunk(
        &self,
        status: Option<SubscriberStatus>,
        below: i64,
        from: i64,
    ) -> StoreResult<ExportChunk> {
        // One row per chunk, as on SQLite; see there for the quoting.
        let select = sqlx::query_as(
            "SELECT string_agg(line, '' ORDER BY id DESC) AS csv, count(*) AS rows,
                    min(id) AS last_id
             FROM (SELECT id,
                          CASE WHEN email ~ '[,\"\\r\\n]'
                               THEN '\"' || replace(email, '\"', '\"\"') || '\"' ELSE email END
                          || ',' || status
                          || ',' || to_char(to_timestamp(created_at) AT TIME ZONE 'UTC',
                                            'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
                          || ',' || coalesce(to_char(to_timestamp(confirmed_at) AT TIME ZONE 'UTC',
                                                     'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), '')
                          || ',' || source || E'\\r\\n' AS line
                   FROM subscribers
                   WHERE id < $1 AND id >= $2 AND ($3::TEXT IS NULL OR status = $3)
                   ORDER BY id DESC) AS chunk",
        )
        .bind(below)
        .bind(from)
        .bind(status.map(SubscriberStatus::as_str))
        .fetch_one(&self.pool);
        self.bounded("reading subscribers for the export", select).await
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
        self.delete_endpoint(id).await
    }

    async fn queue_ping(&self, endpoint_id: i64, now: i64) -> StoreResult<bool> {
        self.insert_ping(endpoint_id, now).await
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
        self.record_deliveries_done(outcomes).await
    }

    async fn webhook_attempts(&self, endpoint_id: i64) -> StoreResult<Vec<AttemptRecord>> {
        self.endpoint_attempts(endpoint_id).await
    }

    async fn counts(&self) -> StoreResult<Counts> {
        let select = sqlx::query_as::<_, (String, i64)>(
            "SELECT status, CAST(sum(n) AS BIGINT) FROM subscriber_counts GROUP BY status",
        )
        .fetch_all(&self.pool);
        let rows = self.bounded("reading the subscriber counts", select).await?;
        Ok(counts_from(rows))
    }

    async fn outbox_backlog(&self) -> StoreResult<Vec<(String, u64, i64)>> {
        let select = sqlx::query_as::<_, (String, i64, i64)>(
            "SELECT purpose, count(*), min(created_at) FROM outbox WHERE status = 'queued'
             GROUP BY purpose
             UNION ALL
             SELECT 'webhook', count(*), min(occurred_at) FROM webhook_deliveries HAVING count(*) > 0
             ORDER BY 1",
        )
        .fetch_all(&self.pool);
        let rows = self.bounded("reading the outbox backlog", select).await?;
        Ok(rows.into_iter().map(|(kind, n, oldest)| (kind, n.unsigned_abs(), oldest)).collect())
    }

    async fn connections(&self) -> StoreResult<(u64, u64)> {
        let (size, idle) = (u64::from(self.pool.size()), self.pool.num_idle() as u64);
        Ok((size.saturating_sub(idle), idle))
    }

    async fn index_for_search(&self) -> StoreResult<u64> {
        self.index_backlog().await
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
        let count = sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM (
                 SELECT 1 FROM subscriber_search AS x JOIN subscribers AS s ON s.id = x.id
                 WHERE x.text LIKE $1 ESCAPE '\\' AND ($3::TEXT IS NULL OR s.status = $3)
                 UNION ALL
                 SELECT 1 FROM search_backlog AS b JOIN subscribers AS s ON s.id = b.id
                 WHERE (s.email_key || E'\\n' || lower(s.email)) LIKE $1 ESCAPE '\\'
                   AND ($3::TEXT IS NULL OR s.status = $3)
                 LIMIT $2) AS capped",
        )
        .bind(term.like_pattern())
        .bind(i64::try_from(cap).unwrap_or(i64::MAX))
        .bind(filter.status.map(SubscriberStatus::as_str))
        .fetch_one(&self.pool);
        let count = self.bounded("counting matching subscribers", count).await?;
        Ok(u64::try_from(count).unwrap_or_default())
    }

    async fn create_announcement(&self, text: &AnnouncementText, now: i64) -> StoreResult<i64> {
        self.insert_announcement(text, now).await
    }

    async fn update_announcement(
        &self,
        id: i64,
        text: &AnnouncementText,
        now: i64,
    ) -> StoreResult<bool> {
        self.rewrite_announcement(id, text, now).await
    }

    async fn announcement(&self, id: i64) -> StoreResult<Option<AnnouncementRecord>> {
        self.read_announcement(id).await
    }

    async fn announcements(&self, limit: u32) -> StoreResult<Vec<AnnouncementRecord>> {
        self.read_announcements(limit).await
    }

    async fn start_announcement(&self, id: i64, now_ms: i64) -> StoreResult<bool> {
        self.begin_announcement(id, now_ms).await
    }

    async fn change_announcement(
        &self,
        id: i64,
        action: AnnouncementAction,
        now: i64,
    ) -> StoreResult<bool> {
        self.act_on_announcement(id, action, now).await
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
        self.expand(id, pace, now_ms).await
    }

    async fn announcement_failures(&self, id: i64) -> StoreResult<Vec<FailureGroup>> {
        self.read_failures(id).await
    }

    async fn queue_test_mail(&self, id: i64, to: &SubscriberEmail, now: i64) -> StoreResult<bool> {
        self.insert_test_mail(id, to, now).await
    }

    async fn claim_mail(
        &self,
        now: i64,
        lease_until: i64,
        owner: i64,
        limit: u32,
    ) -> StoreResult<Vec<QueuedMail>> {
        // SKIP LOCKED: instances claiming at the same moment take different rows, never the same.
        let claim = sqlx::query_as(
            // A paused announcement's mails wait where they are; a test mail goes to an
            // address that need not be a subscriber's.
            "WITH leased AS (
                 UPDATE outbox SET lease_until = $2, lease_owner = $3
                 WHERE id IN (SELECT id FROM outbox
                              WHERE status = 'queued' AND next_attempt_at <= $1
                                AND lease_until <= $1
                                AND (announcement_id IS NULL OR announcement_id NOT IN
                                     (SELECT id FROM announcements
                                      WHERE state IN ('paused', 'cancelled')))
                              ORDER BY priority, next_attempt_at, id
                              LIMIT $4 FOR UPDATE SKIP LOCKED)
                 RETURNING id, purpose, attempts, created_at, subscriber_id, nonce, priority,
                           next_attempt_at, announcement_id, to_address)
             SELECT l.id, l.purpose, CAST(l.attempts AS BIGINT) AS attempts, l.created_at,
                    coalesce(l.subscriber_id, 0) AS subscriber_id,
                    coalesce(s.email, l.to_address) AS email,
                    coalesce(s.email_key, lower(l.to_address)) AS email_key, l.nonce,
                    l.announcement_id
             FROM leased AS l
             LEFT JOIN subscribers AS s ON s.id = l.subscriber_id
             WHERE s.id IS NOT NULL OR l.to_address IS NOT NULL
             ORDER BY l.priority, l.next_attempt_at, l.id",
        )
        .bind(now)
        .bind(lease_until)
        .bind(owner)
        .bind(i64::from(limit))
        .fetch_all(&self.pool);
        self.bounded("leasing mail", claim).await
    }

    async fn record_mail(&self, outcomes: &[MailOutcome]) -> StoreResult<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        self.record_outcomes(outcomes).await
    }

    async fn purge_stale(&self, pending_before: i64, requests_before: i64) -> StoreResult<u64> {
        self.purge(pending_before, requests_before).await
    }

    async fn admin_password_hash(&self) -> StoreResult<Option<String>> {
        let select = sqlx::query_scalar("SELECT password_hash FROM admin_credential WHERE id = 1")
            .fetch_optional(&self.pool);
        self.bounded("reading the admin credential", select).await
    }

    async fn swap_admin_password_hash(
        &self,
        expected: Option<&str>,
        phc: &str,
        now: i64,
    ) -> StoreResult<bool> {
        let swap = match expected {
            None => sqlx::query(
                "INSERT INTO admin_credential (id, password_hash, updated_at) VALUES (1, $1, $2)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(phc)
            .bind(now),
            Some(expected) => sqlx::query(
                "UPDATE admin_credential SET password_hash = $1, updated_at = $2
                 WHERE id = 1 AND password_hash = $3",
            )
            .bind(phc)
            .bind(now)
            .bind(expected),
        }
        .execute(&self.pool);
        let result = self.bounded("storing the admin credential", swap).await?;
        Ok(result.rows_affected() == 1)
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    async fn load_session(&self, key: &SessionKey, now: i64) -> StoreResult<Option<Arc<str>>> {
        let select =
            sqlx::query_scalar("SELECT data FROM sessions WHERE key = $1 AND expires_at > $2")
                .bind(&key[..])
                .bind(now)
                .fetch_optional(&self.pool);
        let data: Option<String> = self.bounded("loading a session", select).await?;
        Ok(data.map(Arc::from))
    }

    async fn create_session(
        &self,
        key: &SessionKey,
        data: &str,
        remembers: Option<&str>,
        expires_at: i64,
    ) -> StoreResult<bool> {
        // The row is locked as a foreign key check would: a delete running at the same moment
        // waits for this session and then makes it forget the address, or goes first and this
        // session never names it.
        let insert = sqlx::query(
            "INSERT INTO sessions (key, data, subscriber_id, expires_at)
             SELECT $1, CASE WHEN $3::text IS NULL OR remembered.id IS NOT NULL THEN $2
                        ELSE ($2::jsonb - 'visitor_email' - 'awaiting_confirmation')::text END,
                    remembered.id, $4
             FROM (SELECT (SELECT id FROM subscribers WHERE email_key = $3 FOR KEY SHARE) AS id) remembered
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(&key[..])
        .bind(data)
        .bind(remembers)
        .bind(expires_at)
        .execute(&self.pool);
        let result = self.bounded("creating a session", insert).await?;
        Ok(result.rows_affected() == 1)
    }

    async fn save_session(
        &self,
        key: &SessionKey,
        data: &str,
        remembers: Option<&str>,
        expires_at: i64,
    ) -> StoreResult<()> {
        // A session from before `subscriber_id` moves over to it here (`owner` emptied).
        let update = sqlx::query(
            "UPDATE sessions SET owner = NULL, expires_at = $3, subscriber_id = remembered.id,
             data = CASE WHEN $2::text IS NULL OR remembered.id IS NOT NULL THEN $1
                    ELSE ($1::jsonb - 'visitor_email' - 'awaiting_confirmation')::text END
             FROM (SELECT (SELECT id FROM subscribers WHERE email_key = $2 FOR KEY SHARE) AS id) remembered
             WHERE key = $4",
        )
        .bind(data)
        .bind(remembers)
        .bind(expires_at)
        .bind(&key[..])
        .execute(&self.pool);
        self.bounded("saving a session", update).await?;
        Ok(())
    }

    async fn delete_session(&self, key: &SessionKey) -> StoreResult<()> {
        let delete =
            sqlx::query("DELETE FROM sessions WHERE key = $1").bind(&key[..]).execute(&self.pool);
        self.bounded("deleting a session", delete).await?;
        Ok(())
    }

    async fn delete_expired_sessions(&self, now: i64) -> StoreResult<u64> {
        let delete = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool);
        let result = self.bounded("deleting expired sessions", delete).await?;
        Ok(result.rows_affected())
    }
}
