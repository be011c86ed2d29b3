//! Many double opt-in signups in one group commit, as a handful of multi-row statements instead
//! of six statements each: under load this is most of what the writer does with mail on. The
//! whole group runs in one savepoint, so it lands entirely or not at all.

use std::collections::HashMap;

use anyhow::{Context, anyhow};
use sqlx::{Executor, QueryBuilder, Sqlite, SqliteConnection};

use super::batch::Outcome;
use super::ops::{WriteOp, answer};
use crate::store::records::admit_request;

/// The writes at `which` are all `RequestConfirmation`s for different addresses.
pub(super) async fn run(
    connection: &mut SqliteConnection,
    ops: &[&WriteOp],
    which: &[usize],
    outcomes: &mut [Option<Outcome>],
) {
    if let Err(e) = connection.execute("SAVEPOINT confirm_group").await {
        fail(outcomes, which, &e.to_string());
        return;
    }
    match statements(connection, ops, which).await {
        Ok(answers) => match connection.execute("RELEASE confirm_group").await {
            Ok(_) => {
                for (&i, answer) in which.iter().zip(answers) {
                    outcomes[i] = Some(Ok(answer));
                }
            }
            Err(e) => fail(outcomes, which, &e.to_string()),
        },
        Err(e) => {
            let _ = connection.execute("ROLLBACK TO confirm_group").await;
            let _ = connection.execute("RELEASE confirm_group").await;
            fail(outcomes, which, &format!("{e:#}"));
        }
    }
}

fn fail(outcomes: &mut [Option<Outcome>], which: &[usize], message: &str) {
    for &i in which {
        outcomes[i] = Some(Err(anyhow!("{message}")));
    }
}

/// One request's fields, borrowed from its write.
struct Request<'a> {
    email: &'a str,
    key: &'a str,
    now: i64,
    evidence: &'a super::ops::EvidenceRow,
    address_hash: &'a [u8],
    nonce: &'a [u8],
    expires_at: i64,
    limit: u32,
    window_start: i64,
}

fn request<'a>(op: &'a WriteOp) -> anyhow::Result<Request<'a>> {
    match op {
        WriteOp::RequestConfirmation {
            email,
            key,
            now,
            evidence,
            address_hash,
            nonce,
            expires_at,
            limit,
            window_start,
        } => Ok(Request {
            email,
            key,
            now: *now,
            evidence,
            address_hash,
            nonce,
            expires_at: *expires_at,
            limit: *limit,
            window_start: *window_start,
        }),
        _ => Err(anyhow!("not a confirmation request")),
    }
}

async fn statements(
    c: &mut SqliteConnection,
    ops: &[&WriteOp],
    which: &[usize],
) -> anyhow::Result<Vec<u64>> {
    let requests: Vec<Request> =
        which.iter().map(|&i| request(ops[i])).collect::<Result<_, _>>()?;

    let mut insert = QueryBuilder::<Sqlite>::new(
        "INSERT INTO subscribers (email, email_key, created_at, status, source, signup_ip, \
         signup_agent, consent) ",
    );
    insert.push_values(&requests, |mut row, r| {
        row.push_bind(r.email)
            .push_bind(r.key)
            .push_bind(r.now)
            .push_bind("pending")
            .push_bind(r.evidence.source)
            .push_bind(r.evidence.ip.as_str())
            .push_bind(r.evidence.agent.as_deref())
            .push_bind(r.evidence.consent.as_str());
    });
    insert.push(" ON CONFLICT (email_key) DO NOTHING");
    c.execute(insert.build()).await.context("adding pending subscribers")?;

    let mut select = QueryBuilder::<Sqlite>::new(
        "SELECT email_key, id, status FROM subscribers WHERE email_key IN (",
    );
    let mut keys = select.separated(", ");
    for r in &requests {
        keys.push_bind(r.key);
    }
    select.push(")");
    let rows: Vec<(String, i64, String)> =
        select.build_query_as().fetch_all(&mut *c).await.context("reading the subscribers")?;
    let subscribers: HashMap<String, (i64, String)> =
        rows.into_iter().map(|(key, id, status)| (key, (id, status))).collect();

    let mut select = QueryBuilder::<Sqlite>::new(
        "SELECT address_hash, times FROM confirmation_limits WHERE address_hash IN (",
    );
    let mut hashes = select.separated(", ");
    for r in &requests {
        hashes.push_bind(r.address_hash);
    }
    select.push(")");
    let stored: Vec<(Vec<u8>, String)> =
        select.build_query_as().fetch_all(&mut *c).await.context("reading the mail limits")?;
    let stored: HashMap<Vec<u8>, String> = stored.into_iter().collect();

    // The confirmation mails already queued for rows that existed before this batch.
    let mut select = QueryBuilder::<Sqlite>::new(
        "SELECT subscriber_id, group_concat(created_at, ' ') FROM outbox \
         WHERE purpose = 'confirm' AND subscriber_id IN (",
    );
    let mut ids = select.separated(", ");
    for (id, _) in subscribers.values() {
        ids.push_bind(*id);
    }
    select.push(") GROUP BY subscriber_id");
    let queued: Vec<(i64, String)> =
        select.build_query_as().fetch_all(&mut *c).await.context("reading queued mails")?;
    let queued: HashMap<i64, String> = queued.into_iter().collect();

    let mut answers = Vec::with_capacity(requests.len());
    let mut queue: Vec<(&Request, i64)> = Vec::new();
    for r in &requests {
        let (id, status) = subscribers.get(r.key).context("a subscriber just upserted")?;
        if status == "confirmed" {
            answers.push(answer::ALREADY);
            continue;
        }
        // See `ops::carry_mail_limit`: the outbox holds the count while the row exists.
        let sent = [stored.get(r.address_hash), queued.get(id)]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(" ");
        if admit_request(Some(&sent), r.window_start, r.limit, r.now).is_some() {
            queue.push((r, *id));
            answers.push(answer::DONE);
        } else {
            answers.push(answer::REFUSED);
        }
    }
    if queue.is_empty() {
        return Ok(answers);
    }

    let mut mail = QueryBuilder::<Sqlite>::new(
        "INSERT INTO outbox (purpose, priority, subscriber_id, nonce, expires_at, next_attempt_at, \
         created_at) ",
    );
    mail.push_values(&queue, |mut row, (r, id)| {
        row.push_bind("confirm")
            .push_bind(0)
            .push_bind(*id)
            .push_bind(r.nonce)
            .push_bind(r.expires_at)
            .push_bind(r.now)
            .push_bind(r.now);
    });
    c.execute(mail.build()).await.context("queuing confirmation mails")?;
    Ok(answers)
}
