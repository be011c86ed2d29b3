//! The writes SQLite's writer task runs. Most are one statement; the consent and outbox writes
//! are several, which run inside a savepoint so that each write is all or nothing even though it
//! shares its transaction with the rest of its group commit.

use std::sync::{Arc, Mutex};

use anyhow::Context;
use sqlx::sqlite::SqliteArguments;
use sqlx::{Executor, Sqlite, SqliteConnection};

use super::announcements::AnnouncementOp;
use super::import_batch::{self, OwnedImportRow};
use super::session_cache::SessionCache;
use super::webhooks::WebhookOp;
use crate::store::ImportCounts;

/// A dry-run import undoes its writes by failing its savepoint on purpose.
#[derive(Debug, thiserror::Error)]
#[error("a dry run writes nothing")]
pub(super) struct DryRun;
use crate::store::{AddressHash, Leaving, MailOutcome, MailResult, SessionKey};

/// Answers of compound writes, carried in the writer's row count.
pub(super) mod answer {
    pub const UNKNOWN: u64 = 0;
    pub const DONE: u64 = 1;
    pub const ALREADY: u64 = 2;
    pub const REFUSED: u64 = 3;
}

/// How a row was named.
pub(super) enum Target {
    Key(String),
    Id(i64),
}

/// Evidence columns, as stored.
pub(super) struct EvidenceRow {
    pub source: &'static str,
    pub ip: String,
    pub agent: Option<String>,
    pub consent: String,
}

/// One write. No `Debug`: it holds addresses and session contents.
pub(super) enum WriteOp {
    AddSubscriber {
        email: String,
        key: String,
        now: i64,
        evidence: EvidenceRow,
        address_hash: AddressHash,
    },
    RequestConfirmation {
        email: String,
        key: String,
        now: i64,
        evidence: EvidenceRow,
        address_hash: AddressHash,
        nonce: [u8; 16],
        expires_at: i64,
        limit: u32,
        window_start: i64,
    },
    Confirm {
        confirmation_id: i64,
        now: i64,
        ip: String,
        agent: Option<String>,
        address_hash: AddressHash,
        welcome: bool,
    },
    RemoveSubscriber {
        target: Target,
        leaving: Option<Leaving>,
    },
    /// An unconfirmed signup withdrawn by its visitor.
    RemovePending {
        key: String,
        address_hash: AddressHash,
    },
    SwapAdminHash {
        expected: Option<String>,
        phc: String,
        now: i64,
    },
    CreateSession {
        key: SessionKey,
        data: String,
        /// The key of the address the session remembers (see `Store::create_session`).
        remembers: Option<String>,
        expires_at: i64,
    },
    SaveSession {
        key: SessionKey,
        data: String,
        /// The key of the address the session remembers (see `Store::create_session`).
        remembers: Option<String>,
        expires_at: i64,
    },
    DeleteSession {
        key: SessionKey,
    },
    DeleteExpiredSessions {
        now: i64,
    },
    LeaseMail {
        now: i64,
        until: i64,
        owner: i64,
        limit: u32,
        /// Filled in with the ids the lease took.
        leased: Arc<Mutex<Vec<i64>>>,
    },
    RecordMail {
        outcomes: Vec<MailOutcome>,
    },
    PurgeStale {
        pending_before: i64,
        requests_before: i64,
    },
    Import {
        rows: Vec<OwnedImportRow>,
        source: &'static str,
        status: &'static str,
        consent: String,
        confirm_expires_at: Option<i64>,
        dry_run: bool,
        now: i64,
        /// Filled in with what the batch did (or would do).
        counts: Arc<Mutex<ImportCounts>>,
    },
    /// The admin's delete of several rows: ids as a JSON array.
    RemoveIds {
        ids: String,
    },
    RemoveMatching {
        term: Option<String>,
        status: Option<&'static str>,
        up_to_id: i64,
        limit: i64,
    },
    CreateToken {
        name: String,
        hash: [u8; 32],
        read_only: bool,
        now: i64,
    },
    RevokeToken {
        name: String,
    },
    TouchToken {
        id: i64,
        now: i64,
    },
    Webhook(WebhookOp),
    Announcement(AnnouncementOp),
    /// Writes nothing; answered once everything queued before it is committed.
    Flush,
}

type Query<'q> = sqlx::query::Query<'q, Sqlite, SqliteArguments>;

/// The rows of a selection: what the search matches (as the short search of the admin list
/// does, which for any term is what the trigram index finds too), up to an id.
macro_rules! selection_where {
    () => {
        "id <= ?1 AND (?2 IS NULL OR status = ?2)
         AND (?3 IS NULL OR instr(email_key, ?3) > 0 OR instr(email, ?3) > 0)"
    };
}
pub(super) use selection_where;
/// The newest rows of a selection, at most ?4 of them: one step of a large delete.
const REMOVE_MATCHING: &str = concat!(
    "DELETE FROM subscribers WHERE id IN (SELECT id FROM subscribers WHERE ",
    selection_where!(),
    " ORDER BY id DESC LIMIT ?4)"
);

#[cfg(test)]
impl WriteOp {
    /// A form signup of `address` (its own key), as the writer's tests make them.
    pub(super) fn test_signup(address: &str, address_hash: AddressHash) -> Self {
        Self::AddSubscriber {
            email: address.into(),
            key: address.into(),
            now: 0,
            evidence: EvidenceRow {
                source: "form",
                ip: "127.0.0.0/24".into(),
                agent: None,
                consent: "x".into(),
            },
            address_hash,
        }
    }
}

impl WriteOp {
    /// A signup's write, which may add a row to `subscribers`.
    pub(super) fn adds_a_row(&self) -> bool {
        matches!(self, Self::AddSubscriber { .. } | Self::RequestConfirmation { .. })
    }

    /// The address or session this write is about, for deciding what a batch may reorder.
    pub(super) fn address_key(&self) -> Option<&str> {
        match self {
            Self::AddSubscriber { key, .. } | Self::RequestConfirmation { key, .. } => Some(key),
            Self::RemoveSubscriber { target: Target::Key(key), leaving: None }
            | Self::RemovePending { key, .. } => Some(key),
            _ => None,
        }
    }

    /// Keeps the session cache equal to what was just committed.
    pub(super) fn committed(&self, rows: u64, cache: &SessionCache) {
        match self {
            // What the database kept of a session that remembers an address depends on whether
            // its row still exists (see `Store::create_session`): the next read fetches it.
            Self::CreateSession { key, remembers: Some(_), .. }
            | Self::SaveSession { key, remembers: Some(_), .. }
                if rows == 1 =>
            {
                cache.forget(key)
            }
            Self::CreateSession { key, data, expires_at, .. } if rows == 1 => {
                cache.stored(key, data, *expires_at)
            }
            Self::SaveSession { key, data, expires_at, .. } if rows == 1 => {
                cache.stored(key, data, *expires_at)
            }
            // Saving a session that is gone (ended elsewhere) leaves it gone.
            Self::SaveSession { key, .. } | Self::DeleteSession { key } => cache.deleted(key),
            Self::DeleteExpiredSessions { now } => cache.expired(*now),
            _ => {}
        }
    }

    /// Whether the write removed subscriber rows, and so (by a trigger) changed or ended the
    /// sessions that remember them: which ones, only the database knows.
    pub(super) fn ended_sessions(&self, rows: u64) -> bool {
        match self {
            // Also sessions named by the address's hash, whether or not a row went.
            Self::RemoveSubscriber { leaving: Some(_), .. } => true,
            Self::RemoveSubscriber { .. }
            | Self::RemovePending { .. }
            | Self::RemoveIds { .. }
            | Self::RemoveMatching { .. }
            | Self::PurgeStale { .. } => rows > 0,
            _ => false,
        }
    }

    /// The transaction failed: whatever the cache knew about this session may be wrong.
    pub(super) fn failed(&self, cache: &SessionCache) {
        match self {
            Self::CreateSession { key, .. }
            | Self::SaveSession { key, .. }
            | Self::DeleteSession { key } => cache.forget(key),
            _ => {}
        }
    }

    /// Runs the write; returns rows affected, or one of [`answer`] for compound writes.
    pub(super) async fn run(&self, connection: &mut SqliteConnection) -> anyhow::Result<u64> {
        if let Some(query) = self.single_statement() {
            return Ok(connection.execute(query).await?.rows_affected());
        }
        connection.execute("SAVEPOINT write_op").await?;
        match self.compound(connection).await {
            Ok(answer) => {
                connection.execute("RELEASE write_op").await?;
                Ok(answer)
            }
            Err(e) => {
                // Undo this write's statements and leave the batch's others alone.
                connection.execute("ROLLBACK TO write_op").await?;
                connection.execute("RELEASE write_op").await?;
                Err(e)
            }
        }
    }

    fn single_statement(&self) -> Option<Query<'_>> {
        Some(match self {
            Self::RemoveSubscriber { target: Target::Key(key), leaving: None } => {
                sqlx::query("DELETE FROM subscribers WHERE email_key = ?").bind(key.as_str())
            }
            Self::RemoveSubscriber { target: Target::Id(id), leaving: None } => {
                sqlx::query("DELETE FROM subscribers WHERE id = ?").bind(*id)
            }
            Self::SwapAdminHash { expected: None, phc, now } => sqlx::query(
                "INSERT INTO admin_credential (id, password_hash, updated_at) VALUES (1, ?, ?)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(phc.as_str())
            .bind(*now),
            Self::SwapAdminHash { expected: Some(expected), phc, now } => sqlx::query(
                "UPDATE admin_credential SET password_hash = ?, updated_at = ?
                 WHERE id = 1 AND password_hash = ?",
            )
            .bind(phc.as_str())
            .bind(*now)
            .bind(expected.as_str()),
            Self::DeleteExpiredSessions { now } => {
                sqlx::query("DELETE FROM sessions WHERE expires_at <= ?").bind(*now)
            }
            Self::RemoveIds { ids } => {
                sqlx::query("DELETE FROM subscribers WHERE id IN (SELECT value FROM json_each(?))")
                    .bind(ids.as_str())
            }
            Self::RemoveMatching { term, status, up_to_id, limit } => sqlx::query(REMOVE_MATCHING)
                .bind(*up_to_id)
                .bind(*status)
                .bind(term.as_deref())
                .bind(*limit),
            Self::CreateToken { name, hash, read_only, now } => sqlx::query(
                "INSERT INTO api_tokens (name, token_hash, read_only, created_at)
                 VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            )
            .bind(name.as_str())
            .bind(&hash[..])
            .bind(*read_only)
            .bind(*now),
            Self::RevokeToken { name } => {
                sqlx::query("DELETE FROM api_tokens WHERE name = ?").bind(name.as_str())
            }
            Self::TouchToken { id, now } => {
                sqlx::query("UPDATE api_tokens SET last_used_at = ? WHERE id = ?")
                    .bind(*now)
                    .bind(*id)
            }
            Self::Confirm { .. }
            | Self::RemoveSubscriber { leaving: Some(_), .. }
            | Self::RemovePending { .. }
            | Self::LeaseMail { .. }
            | Self::RecordMail { .. }
            | Self::PurgeStale { .. }
            | Self::Import { .. }
            | Self::Webhook(_)
            | Self::Announcement(_) => return None,
            // Run on SQLite's handle: see `direct`.
            Self::AddSubscriber { .. }
            | Self::RequestConfirmation { .. }
            | Self::CreateSession { .. }
            | Self::SaveSession { .. }
            | Self::DeleteSession { .. }
            | Self::Flush => return None,
        })
    }

    async fn compound(&self, c: &mut SqliteConnection) -> anyhow::Result<u64> {
        match self {
            Self::Confirm { confirmation_id, now, ip, agent, address_hash, welcome } => {
                let found: Option<(i64, i64, String)> = sqlx::query_as(
                    "SELECT o.subscriber_id, o.expires_at, s.status
                     FROM outbox AS o JOIN subscribers AS s ON s.id = o.subscriber_id
                     WHERE o.id = ? AND o.purpose = 'confirm'",
                )
                .bind(*confirmation_id)
                .fetch_optional(&mut *c)
                .await?;
                let Some((subscriber_id, expires_at, status)) = found else {
                    return Ok(answer::UNKNOWN);
                };
                if status == "confirmed" {
                    mark_used(c, *confirmation_id, *now).await?;
                    return Ok(answer::ALREADY);
                }
                if expires_at <= *now {
                    return Ok(answer::REFUSED);
                }
                sqlx::query(
                    "UPDATE subscribers SET status = 'confirmed', confirmed_at = ?, confirm_ip = ?,
                                            confirm_agent = ?
                     WHERE id = ?",
                )
                .bind(*now)
                .bind(ip.as_str())
                .bind(agent.as_deref())
                .bind(subscriber_id)
                .execute(&mut *c)
                .await?;
                mark_used(c, *confirmation_id, *now).await?;
                sqlx::query("DELETE FROM suppressions WHERE address_hash = ?")
                    .bind(&address_hash[..])
                    .execute(&mut *c)
                    .await?;
                if *welcome {
                    queue_mail(c, "welcome", subscriber_id, None, *now).await?;
                }
                Ok(answer::DONE)
            }
            Self::LeaseMail { now, until, owner, limit, leased } => {
                queue_confirmations(c, *limit).await?;
                let ids: Vec<i64> = sqlx::query_scalar(
                    // Numbered throughout: sqlx counts a bare `?` apart from `?N`.
                    // A paused announcement's mails wait where they are.
                    "UPDATE outbox SET lease_until = ?1, lease_owner = ?2
                     WHERE id IN (SELECT id FROM outbox
                                  WHERE status = 'queued' AND next_attempt_at <= ?3
                                    AND lease_until <= ?3
                                    AND (announcement_id IS NULL OR announcement_id NOT IN
                                         (SELECT id FROM announcements
                                          WHERE state IN ('paused', 'cancelled')))
                                  ORDER BY priority, next_attempt_at, id LIMIT ?4)
                     RETURNING id",
                )
                .bind(*until)
                .bind(*owner)
                .bind(*now)
                .bind(*limit)
                .fetch_all(&mut *c)
                .await?;
                let count = ids.len() as u64;
                *leased.lock().unwrap_or_else(|p| p.into_inner()) = ids;
                Ok(count)
            }
            Self::RemovePending { key, address_hash } => {
                let pending = "email_key = ?2 AND status = 'pending'";
                carry_mail_limit(c, pending, key.as_str(), address_hash).await?;
                let removed = sqlx::query(
                    "DELETE FROM subscribers WHERE email_key = ? AND status = 'pending'",
                )
                .bind(key.as_str())
                .execute(&mut *c)
                .await?
                .rows_affected();
                Ok(removed)
            }
            Self::RemoveSubscriber { target, leaving: Some(leaving) } => {
                let removed = match target {
                    Target::Key(key) => {
                        carry_mail_limit(c, "email_key = ?2", key.as_str(), &leaving.address_hash)
                            .await?;
                        // Read by the delete trigger that queues the webhook event.
                        sqlx::query("UPDATE subscribers SET leaving = ? WHERE email_key = ?")
                            .bind(leaving.reason.as_str())
                            .bind(key.as_str())
                            .execute(&mut *c)
                            .await?;
                        sqlx::query("DELETE FROM subscribers WHERE email_key = ?")
                            .bind(key.as_str())
                            .execute(&mut *c)
                            .await?
                    }
                    Target::Id(id) => {
                        carry_mail_limit(c, "id = ?2", *id, &leaving.address_hash).await?;
                        sqlx::query("UPDATE subscribers SET leaving = ? WHERE id = ?")
                            .bind(leaving.reason.as_str())
                            .bind(*id)
                            .execute(&mut *c)
                            .await?;
                        sqlx::query("DELETE FROM subscribers WHERE id = ?")
                            .bind(*id)
                            .execute(&mut *c)
                            .await?
                    }
                }
                .rows_affected();
                sqlx::query(
                    "INSERT INTO suppressions (address_hash, reason, created_at) VALUES (?, ?, ?)
                     ON CONFLICT (address_hash) DO NOTHING",
                )
                .bind(&leaving.address_hash[..])
                .bind(leaving.reason.as_str())
                .bind(leaving.now)
                .execute(&mut *c)
                .await?;
                // The row's sessions forgot it (a trigger); these are sessions written before
                // `subscriber_id`, which name the address by its hash, and end.
                sqlx::query("DELETE FROM sessions WHERE owner = ?")
                    .bind(&leaving.address_hash[..])
                    .execute(&mut *c)
                    .await?;
                Ok(removed)
            }
            Self::RecordMail { outcomes } => {
                record_sent(c, outcomes).await?;
                for outcome in
                    outcomes.iter().filter(|o| !matches!(o.result, MailResult::Sent { .. }))
                {
                    record_one(c, outcome).await?;
                }
                Ok(outcomes.len() as u64)
            }
            Self::Import {
                rows,
                source,
                status,
                consent,
                confirm_expires_at,
                dry_run,
                now,
                counts,
            } => {
                let columns = import_batch::Columns { source, status, consent };
                let counted =
                    import_batch::run(c, rows, columns, *confirm_expires_at, *now).await?;
                *counts.lock().unwrap_or_else(|p| p.into_inner()) = counted;
                if *dry_run {
                    // Counted, not kept: undo it, and report it as not written.
                    return Err(DryRun.into());
                }
                Ok(counted.added)
            }
            Self::PurgeStale { pending_before, requests_before } => {
                let removed = sqlx::query(
                    "DELETE FROM subscribers WHERE status = 'pending' AND created_at < ?",
                )
                .bind(*pending_before)
                .execute(&mut *c)
                .await?
                .rows_affected();
                sqlx::query("DELETE FROM confirmation_limits WHERE newest < ?")
                    .bind(*requests_before)
                    .execute(&mut *c)
                    .await?;
                Ok(removed)
            }
            Self::Webhook(op) => op.run(c).await,
            Self::Announcement(op) => op.run(c).await,
            // The writes of a signup and its session run on the handle (`direct`); the rest
            // are single statements, run in `run`.
            other => Err(anyhow::anyhow!("{} does not run through sqlx", other.describe())),
        }
    }

    /// The operation's name without its data (which may hold addresses or session contents).
    pub(super) fn describe(&self) -> &'static str {
        match self {
            Self::AddSubscriber { .. } => "adding a subscriber",
            Self::RequestConfirmation { .. } => "queuing a confirmation",
            Self::Confirm { .. } => "confirming a subscriber",
            Self::RemoveSubscriber { .. } | Self::RemovePending { .. } => "removing a subscriber",
            Self::SwapAdminHash { .. } => "storing the admin credential",
            Self::CreateSession { .. } => "creating a session",
            Self::SaveSession { .. } => "saving a session",
            Self::DeleteSession { .. } => "deleting a session",
            Self::DeleteExpiredSessions { .. } => "deleting expired sessions",
            Self::LeaseMail { .. } => "leasing mail",
            Self::RecordMail { .. } => "recording sent mail",
            Self::PurgeStale { .. } => "purging stale signups",
            Self::Import { .. } => "importing subscribers",
            Self::RemoveIds { .. } | Self::RemoveMatching { .. } => "removing subscribers",
            Self::CreateToken { .. } => "creating a token",
            Self::RevokeToken { .. } => "revoking a token",
            Self::TouchToken { .. } => "recording a token's use",
            Self::Webhook(op) => op.describe(),
            Self::Announcement(op) => op.describe(),
            Self::Flush => "flushing the writer",
        }
    }
}

/// The resend limit's record: while a subscriber row exists, the confirmation mails queued for
/// it in the outbox are the record (no write of its own on a signup's path), with the row's own
/// first mail until a lease queues it (`queue_confirmations`); when the row goes,
/// their times move to `confirmation_limits` under the address's keyed hash, so that removing
/// and signing up again does not reset the count. `row` names the subscriber with `?2`.
async fn carry_mail_limit<'q, T>(
    c: &mut SqliteConnection,
    row: &str,
    value: T,
    address_hash: &'q AddressHash,
) -> anyhow::Result<()>
where
    T: 'q + Send + sqlx::Encode<'q, Sqlite> + sqlx::Type<Sqlite>,
{
    let carry = format!(
        "INSERT INTO confirmation_limits (address_hash, newest, times)
         SELECT ?1, max(sent), group_concat(sent, ' ') FROM (
             SELECT created_at AS sent FROM outbox
             WHERE purpose = 'confirm' AND subscriber_id IN (SELECT id FROM subscribers WHERE {row})
             UNION ALL
             SELECT created_at FROM confirmations_unqueued
             WHERE id IN (SELECT id FROM subscribers WHERE {row}))
         HAVING count(*) > 0
         ON CONFLICT (address_hash) DO UPDATE SET newest = max(newest, excluded.newest),
                                                  times = times || ' ' || excluded.times"
    );
    sqlx::query(sqlx::AssertSqlSafe(carry))
        .bind(&address_hash[..])
        .bind(value)
        .execute(&mut *c)
        .await
        .context("keeping the count of confirmation mails")?;
    Ok(())
}

/// Queues the confirmation mails of new addresses from their pending rows (see the migration
/// `confirmations_from_rows`): the first `limit` rows past the cursor that carry a nonce, and
/// the cursor moved past them in the same commit. Pending rows without one (imported rows queue
/// their own mail; a refused request has none) are passed over in the same step however many
/// there are, so an import of a million pending rows delays no signup's mail behind it.
async fn queue_confirmations(c: &mut SqliteConnection, limit: u32) -> anyhow::Result<()> {
    let due: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM confirmations_unqueued ORDER BY id LIMIT ?")
            .bind(limit)
            .fetch_all(&mut *c)
            .await
            .context("finding confirmations to queue")?;
    if let (Some(first), Some(last)) = (due.first(), due.last()) {
        sqlx::query(
            "INSERT INTO outbox
                 (purpose, priority, subscriber_id, nonce, expires_at, next_attempt_at, created_at)
             SELECT 'confirm', 0, id, confirm_nonce, confirm_expires_at, created_at, created_at
             FROM confirmations_unqueued WHERE id BETWEEN ?1 AND ?2
             ORDER BY id",
        )
        .bind(first)
        .bind(last)
        .execute(&mut *c)
        .await
        .context("queuing confirmations")?;
    }
    // Fewer than asked for: none is left past the cursor, so it may go to the newest row.
    let up_to = match due.last() {
        Some(&last) if due.len() == limit as usize => Some(last),
        _ => sqlx::query_scalar("SELECT max(id) FROM subscribers").fetch_one(&mut *c).await?,
    };
    sqlx::query("UPDATE confirmations_queued SET up_to = max(up_to, ?)")
        .bind(up_to.unwrap_or(0))
        .execute(&mut *c)
        .await
        .context("moving the confirmation cursor")?;
    Ok(())
}

/// A mail to a subscriber: purpose, subscriber id, the link's nonce and expiry (a confirmation
/// mail's), due and created when queued.
pub(super) const QUEUE_MAIL: &str = "INSERT INTO outbox
    (purpose, priority, subscriber_id, nonce, expires_at, next_attempt_at, created_at)
    VALUES (?, 0, ?, ?, ?, ?, ?)";

/// Queues a mail to the subscriber; a confirmation mail carries its link's nonce and expiry.
async fn queue_mail(
    c: &mut SqliteConnection,
    purpose: &str,
    subscriber_id: i64,
    link: Option<(&[u8], i64)>,
    now: i64,
) -> anyhow::Result<()> {
    sqlx::query(QUEUE_MAIL)
        .bind(purpose)
        .bind(subscriber_id)
        .bind(link.map(|(nonce, _)| nonce))
        .bind(link.map(|(_, expires_at)| expires_at))
        .bind(now)
        .bind(now)
        .execute(&mut *c)
        .await
        .context("queuing a mail")?;
    Ok(())
}

async fn mark_used(c: &mut SqliteConnection, confirmation_id: i64, now: i64) -> anyhow::Result<()> {
    sqlx::query("UPDATE outbox SET used_at = ? WHERE id = ? AND used_at IS NULL")
        .bind(now)
        .bind(confirmation_id)
        .execute(&mut *c)
        .await?;
    Ok(())
}

/// Every delivered mail of the batch in one statement: the common case under load.
async fn record_sent(c: &mut SqliteConnection, outcomes: &[MailOutcome]) -> anyhow::Result<()> {
    let mut sent = outcomes.iter().filter_map(|o| match o.result {
        MailResult::Sent { at } => Some((o.id, at)),
        _ => None,
    });
    let Some((_, at)) = sent.clone().next() else {
        return Ok(());
    };
    let mut update = sqlx::QueryBuilder::<Sqlite>::new(
        "UPDATE outbox SET status = 'sent', attempts = attempts + 1, lease_until = 0, \
         last_error = NULL, sent_at = ",
    );
    update.push_bind(at).push(" WHERE id IN (");
    let mut ids = update.separated(", ");
    for (id, _) in sent.by_ref() {
        ids.push_bind(id);
    }
    update.push(")");
    c.execute(update.build()).await.context("recording sent mail")?;
    Ok(())
}

async fn record_one(c: &mut SqliteConnection, outcome: &MailOutcome) -> anyhow::Result<()> {
    let query = match &outcome.result {
        MailResult::Sent { .. } => return Ok(()),
        MailResult::Retry { at, error } => sqlx::query(
            "UPDATE outbox SET next_attempt_at = ?, last_error = ?, attempts = attempts + 1,
                               lease_until = 0
             WHERE id = ?",
        )
        .bind(*at)
        .bind(error.as_str()),
        MailResult::Failed { at, error } => sqlx::query(
            "UPDATE outbox SET status = 'failed', sent_at = ?, last_error = ?,
                               attempts = attempts + 1, lease_until = 0
             WHERE id = ?",
        )
        .bind(*at)
        .bind(error.as_str()),
    };
    query.bind(outcome.id).execute(&mut *c).await?;
    Ok(())
}
