//! Running one group commit's statements. Most batches under load are many signups: their
//! subscriber rows go in as one multi-row INSERT and their new sessions as another, instead of a
//! round trip to SQLite per row, and double opt-in signups likewise (`confirm_batch`). New rows
//! always go in before new sessions, which may name them. The batch's other writes then run one
//! at a time in arrival order. Batches where two writes touch the same row, or that hold writes acting on many rows,
//! run everything in arrival order, so the last write still wins.

use std::collections::HashSet;

use anyhow::anyhow;
use sqlx::{Executor, QueryBuilder, Sqlite, SqliteConnection};

use super::ops::WriteOp;

/// Rows affected by each write, in the order given.
pub(super) type Outcome = Result<u64, anyhow::Error>;

pub(super) async fn run(connection: &mut SqliteConnection, ops: &[&WriteOp]) -> Vec<Outcome> {
    if can_group(ops) { grouped(connection, ops).await } else { one_by_one(connection, ops).await }
}

async fn one_by_one(connection: &mut SqliteConnection, ops: &[&WriteOp]) -> Vec<Outcome> {
    let mut outcomes = Vec::with_capacity(ops.len());
    for op in ops {
        outcomes.push(op.run(connection).await);
    }
    outcomes
}

/// Grouping reorders writes of different kinds, which is harmless only when no two of them touch
/// the same subscriber or session, and when nothing in the batch acts on rows it cannot name.
fn can_group(ops: &[&WriteOp]) -> bool {
    let mut addresses = HashSet::new();
    let mut sessions = HashSet::new();
    ops.iter().all(|op| match op {
        WriteOp::CreateSession { key, .. }
        | WriteOp::SaveSession { key, .. }
        | WriteOp::DeleteSession { key } => sessions.insert(*key),
        // Outbox bookkeeping names rows no signup in the batch can touch: leasing takes what
        // is due, recording updates rows leased earlier.
        WriteOp::Flush | WriteOp::LeaseMail { .. } | WriteOp::RecordMail { .. } => true,
        other => other.address_key().is_some_and(|key| addresses.insert(key)),
    })
}

async fn grouped(connection: &mut SqliteConnection, ops: &[&WriteOp]) -> Vec<Outcome> {
    let mut outcomes: Vec<Option<Outcome>> = ops.iter().map(|_| None).collect();
    let signups: Vec<usize> = indexes(ops, |op| matches!(op, WriteOp::AddSubscriber { .. }));
    let sessions: Vec<usize> = indexes(ops, |op| matches!(op, WriteOp::CreateSession { .. }));
    let confirmations: Vec<usize> =
        indexes(ops, |op| matches!(op, WriteOp::RequestConfirmation { .. }));
    if confirmations.len() >= 2 {
        super::confirm_batch::run(connection, ops, &confirmations, &mut outcomes).await;
    }
    let subscribers = "INSERT INTO subscribers (email, email_key, created_at, status, source, \
                       signup_ip, signup_agent, consent, confirmed_at) ";
    let returning = " ON CONFLICT (email_key) DO NOTHING RETURNING CAST(email_key AS BLOB)";
    if insert_many(connection, ops, &signups, &mut outcomes, subscribers, returning).await {
        lift_suppressions(connection, ops, &signups, &mut outcomes).await;
    }
    // A new session names its address by the row (see `WriteOp::CreateSession`), and a
    // signup's session may arrive in the same batch: every new row goes in before the sessions.
    for (i, op) in ops.iter().enumerate() {
        let adds_a_row =
            matches!(op, WriteOp::AddSubscriber { .. } | WriteOp::RequestConfirmation { .. });
        if adds_a_row && outcomes[i].is_none() {
            outcomes[i] = Some(op.run(connection).await);
        }
    }
    let new_sessions = "INSERT INTO sessions (key, data, subscriber_id, expires_at) ";
    let returning = " ON CONFLICT (key) DO NOTHING RETURNING key";
    insert_many(connection, ops, &sessions, &mut outcomes, new_sessions, returning).await;
    for (i, op) in ops.iter().enumerate() {
        if outcomes[i].is_none() {
            outcomes[i] = Some(op.run(connection).await);
        }
    }
    outcomes.into_iter().map(|o| o.unwrap_or_else(|| Err(anyhow!("write was not run")))).collect()
}

fn indexes(ops: &[&WriteOp], wanted: impl Fn(&WriteOp) -> bool) -> Vec<usize> {
    ops.iter().enumerate().filter(|(_, op)| wanted(op)).map(|(i, _)| i).collect()
}

/// One multi-row INSERT for the writes at `which` (all of one kind: new subscribers or new
/// sessions). `RETURNING` names the rows that were new, so each write still gets its own answer:
/// one row if inserted, none if its address or session id was already taken. Returns whether the
/// statement ran (false: fewer than two writes, left to run alone, or an error already recorded).
async fn insert_many(
    connection: &mut SqliteConnection,
    ops: &[&WriteOp],
    which: &[usize],
    outcomes: &mut [Option<Outcome>],
    insert_into: &'static str,
    on_conflict_returning: &'static str,
) -> bool {
    if which.len() < 2 {
        return false;
    }
    let mut insert: QueryBuilder<Sqlite> = QueryBuilder::new(insert_into);
    insert.push_values(which, |mut row, &i| match ops[i] {
        WriteOp::AddSubscriber { email, key, now, evidence, .. } => {
            row.push_bind(email.as_str())
                .push_bind(key.as_str())
                .push_bind(*now)
                .push_bind("confirmed")
                .push_bind(evidence.source)
                .push_bind(evidence.ip.as_str())
                .push_bind(evidence.agent.as_deref())
                .push_bind(evidence.consent.as_str())
                .push_bind(*now);
        }
        WriteOp::CreateSession { key, data, remembers, expires_at } => {
            // As `WriteOp::CreateSession` alone does, with the parameters spelled out per row.
            let remembers = remembers.as_deref();
            row.push_bind(&key[..])
                .push("CASE WHEN ")
                .push_bind_unseparated(remembers)
                .push_unseparated(
                    " IS NULL OR EXISTS (SELECT 1 FROM subscribers WHERE email_key = ",
                )
                .push_bind_unseparated(remembers)
                .push_unseparated(") THEN ")
                .push_bind_unseparated(data.as_str())
                .push_unseparated(" ELSE json_remove(")
                .push_bind_unseparated(data.as_str())
                .push_unseparated(", '$.visitor_email', '$.awaiting_confirmation') END")
                .push("(SELECT id FROM subscribers WHERE email_key = ")
                .push_bind_unseparated(remembers)
                .push_unseparated(")")
                .push_bind(*expires_at);
        }
        _ => {}
    });
    insert.push(on_conflict_returning);
    let result: Result<Vec<Vec<u8>>, _> =
        insert.build_query_scalar().fetch_all(&mut *connection).await;
    match result {
        Ok(returned) => {
            let inserted: HashSet<Vec<u8>> = returned.into_iter().collect();
            for &i in which {
                let new = row_key(ops[i]).is_some_and(|key| inserted.contains(key));
                outcomes[i] = Some(Ok(u64::from(new)));
            }
            true
        }
        Err(e) => {
            fail(outcomes, which, &e.to_string());
            false
        }
    }
}

/// A signup on the form is new consent: whatever suppression the address had is lifted.
async fn lift_suppressions(
    connection: &mut SqliteConnection,
    ops: &[&WriteOp],
    which: &[usize],
    outcomes: &mut [Option<Outcome>],
) {
    let mut delete: QueryBuilder<Sqlite> =
        QueryBuilder::new("DELETE FROM suppressions WHERE address_hash IN (");
    let mut list = delete.separated(", ");
    for &i in which {
        if let WriteOp::AddSubscriber { address_hash, .. } = ops[i] {
            list.push_bind(&address_hash[..]);
        }
    }
    delete.push(")");
    if let Err(e) = connection.execute(delete.build()).await {
        fail(outcomes, which, &e.to_string());
    }
}

fn fail(outcomes: &mut [Option<Outcome>], which: &[usize], message: &str) {
    for &i in which {
        outcomes[i] = Some(Err(anyhow!("{message}")));
    }
}

/// What `RETURNING` gives back for an inserted row of this write.
fn row_key(op: &WriteOp) -> Option<&[u8]> {
    match op {
        WriteOp::AddSubscriber { key, .. } => Some(key.as_bytes()),
        WriteOp::CreateSession { key, .. } => Some(&key[..]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::ops::{EvidenceRow, Target};
    use super::*;

    fn add(key: &str) -> WriteOp {
        WriteOp::AddSubscriber {
            email: key.into(),
            key: key.into(),
            now: 0,
            evidence: EvidenceRow {
                source: "form",
                ip: "127.0.0.0/24".into(),
                agent: None,
                consent: "x".into(),
            },
            address_hash: [0; 32],
        }
    }

    #[tokio::test]
    async fn a_lone_signup_goes_in_before_the_grouped_sessions_that_name_it() {
        use sqlx::Connection;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let mut connection = SqliteConnection::connect(&url).await.unwrap();
        sqlx::migrate!("migrations/sqlite").run(&mut connection).await.unwrap();
        let session = |key: u8, remembers: &str| WriteOp::CreateSession {
            key: [key; 32],
            data: format!(r#"{{"visitor_email":"{remembers}"}}"#),
            remembers: Some(remembers.into()),
            expires_at: 1,
        };
        // One signup (too few to group) behind two sessions (grouped), one of which names it.
        let (first, signup, second) =
            (session(1, "a@example.com"), add("a@example.com"), session(2, "b@example.com"));
        let ops = [&first, &signup, &second];
        assert!(can_group(&ops));
        connection.execute("BEGIN").await.unwrap();
        for outcome in run(&mut connection, &ops).await {
            assert_eq!(outcome.unwrap(), 1);
        }
        connection.execute("COMMIT").await.unwrap();
        let kept: Vec<String> = sqlx::query_scalar("SELECT data FROM sessions ORDER BY key")
            .fetch_all(&mut connection)
            .await
            .unwrap();
        assert_eq!(kept, [r#"{"visitor_email":"a@example.com"}"#, "{}"]);
    }

    #[test]
    fn only_batches_without_shared_rows_are_grouped() {
        let (a, b) = (add("a@example.com"), add("b@example.com"));
        let remove_a = WriteOp::RemoveSubscriber {
            target: Target::Key("a@example.com".into()),
            leaving: None,
        };
        let remove_by_id = WriteOp::RemoveSubscriber { target: Target::Id(1), leaving: None };
        let session = WriteOp::CreateSession {
            key: [1; 32],
            data: "{}".into(),
            remembers: None,
            expires_at: 1,
        };
        let save_same = WriteOp::SaveSession {
            key: [1; 32],
            data: "{}".into(),
            remembers: None,
            expires_at: 2,
        };
        let sweep = WriteOp::DeleteExpiredSessions { now: 0 };
        assert!(can_group(&[&a, &b, &session, &WriteOp::Flush]));
        assert!(!can_group(&[&a, &b, &remove_a]), "add then remove of one address keeps its order");
        assert!(!can_group(&[&session, &save_same]));
        assert!(!can_group(&[&a, &sweep]));
        assert!(!can_group(&[&a, &remove_by_id]), "a row named by id could be any address");
    }
}
