//! Running one group commit's statements. Most batches under load are many signups: their
//! subscriber rows go in as one multi-row INSERT and their new sessions as another, instead of a
//! round trip to SQLite per row. Batches where two writes touch the same row, or that hold rarer
//! writes, run one statement at a time in arrival order, so the last write still wins.

use std::collections::HashSet;

use anyhow::anyhow;
use sqlx::{Executor, QueryBuilder, Sqlite, SqliteConnection};

use super::writer::WriteOp;

/// Rows affected by each write, in the order given.
pub(super) type Outcome = Result<u64, anyhow::Error>;

pub(super) async fn run(connection: &mut SqliteConnection, ops: &[&WriteOp]) -> Vec<Outcome> {
    if can_group(ops) { grouped(connection, ops).await } else { one_by_one(connection, ops).await }
}

async fn one_by_one(connection: &mut SqliteConnection, ops: &[&WriteOp]) -> Vec<Outcome> {
    let mut outcomes = Vec::with_capacity(ops.len());
    for op in ops {
        outcomes.push(
            connection.execute(op.query()).await.map(|r| r.rows_affected()).map_err(Into::into),
        );
    }
    outcomes
}

/// Grouping reorders writes of different kinds, which is harmless only when no two of them touch
/// the same subscriber or session, and when nothing in the batch acts on many rows at once.
fn can_group(ops: &[&WriteOp]) -> bool {
    let mut addresses = HashSet::new();
    let mut sessions = HashSet::new();
    ops.iter().all(|op| match op {
        WriteOp::AddSubscriber { key, .. } | WriteOp::RemoveSubscriber { key } => {
            addresses.insert(key.as_str())
        }
        WriteOp::CreateSession { key, .. }
        | WriteOp::SaveSession { key, .. }
        | WriteOp::DeleteSession { key } => sessions.insert(*key),
        WriteOp::Flush => true,
        WriteOp::SetAdminHash { .. }
        | WriteOp::CreateAdminHash { .. }
        | WriteOp::DeleteExpiredSessions { .. } => false,
    })
}

async fn grouped(connection: &mut SqliteConnection, ops: &[&WriteOp]) -> Vec<Outcome> {
    let mut outcomes: Vec<Option<Outcome>> = ops.iter().map(|_| None).collect();
    let signups: Vec<usize> = indexes(ops, |op| matches!(op, WriteOp::AddSubscriber { .. }));
    let sessions: Vec<usize> = indexes(ops, |op| matches!(op, WriteOp::CreateSession { .. }));
    insert_subscribers(connection, ops, &signups, &mut outcomes).await;
    insert_sessions(connection, ops, &sessions, &mut outcomes).await;
    for (i, op) in ops.iter().enumerate() {
        if outcomes[i].is_none() {
            let result = connection.execute(op.query()).await;
            outcomes[i] = Some(result.map(|r| r.rows_affected()).map_err(Into::into));
        }
    }
    outcomes.into_iter().map(|o| o.unwrap_or_else(|| Err(anyhow!("write was not run")))).collect()
}

fn indexes(ops: &[&WriteOp], wanted: impl Fn(&WriteOp) -> bool) -> Vec<usize> {
    ops.iter().enumerate().filter(|(_, op)| wanted(op)).map(|(i, _)| i).collect()
}

/// One INSERT for every new address; `RETURNING` tells which rows were new.
async fn insert_subscribers(
    connection: &mut SqliteConnection,
    ops: &[&WriteOp],
    which: &[usize],
    outcomes: &mut [Option<Outcome>],
) {
    if which.len() < 2 {
        return;
    }
    let mut insert: QueryBuilder<Sqlite> =
        QueryBuilder::new("INSERT INTO subscribers (email, email_key, created_at) ");
    insert.push_values(which, |mut row, &i| {
        if let WriteOp::AddSubscriber { email, key, now } = ops[i] {
            row.push_bind(email.as_str()).push_bind(key.as_str()).push_bind(*now);
        }
    });
    insert.push(" ON CONFLICT (email_key) DO NOTHING RETURNING email_key");
    let result: Result<Vec<String>, _> =
        insert.build_query_scalar().fetch_all(&mut *connection).await;
    settle(result, which, outcomes, |i, inserted: &HashSet<String>| match ops[i] {
        WriteOp::AddSubscriber { key, .. } => inserted.contains(key),
        _ => false,
    });
}

/// One INSERT for every new session; `RETURNING` tells which ids were free.
async fn insert_sessions(
    connection: &mut SqliteConnection,
    ops: &[&WriteOp],
    which: &[usize],
    outcomes: &mut [Option<Outcome>],
) {
    if which.len() < 2 {
        return;
    }
    let mut insert: QueryBuilder<Sqlite> =
        QueryBuilder::new("INSERT INTO sessions (key, data, expires_at) ");
    insert.push_values(which, |mut row, &i| {
        if let WriteOp::CreateSession { key, data, expires_at } = ops[i] {
            row.push_bind(&key[..]).push_bind(data.as_str()).push_bind(*expires_at);
        }
    });
    insert.push(" ON CONFLICT (key) DO NOTHING RETURNING key");
    let result: Result<Vec<Vec<u8>>, _> =
        insert.build_query_scalar().fetch_all(&mut *connection).await;
    settle(result, which, outcomes, |i, inserted: &HashSet<Vec<u8>>| match ops[i] {
        WriteOp::CreateSession { key, .. } => inserted.contains(&key[..]),
        _ => false,
    });
}

/// Gives each write of a multi-row statement its own outcome: one row if it was inserted.
fn settle<T: std::hash::Hash + Eq>(
    result: Result<Vec<T>, sqlx::Error>,
    which: &[usize],
    outcomes: &mut [Option<Outcome>],
    was_inserted: impl Fn(usize, &HashSet<T>) -> bool,
) {
    match result {
        Ok(returned) => {
            let inserted: HashSet<T> = returned.into_iter().collect();
            for &i in which {
                outcomes[i] = Some(Ok(u64::from(was_inserted(i, &inserted))));
            }
        }
        Err(e) => {
            let message = e.to_string();
            for &i in which {
                outcomes[i] = Some(Err(anyhow!("{message}")));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(key: &str) -> WriteOp {
        WriteOp::AddSubscriber { email: key.into(), key: key.into(), now: 0 }
    }

    #[test]
    fn only_batches_without_shared_rows_are_grouped() {
        let (a, b) = (add("a@example.com"), add("b@example.com"));
        let remove_a = WriteOp::RemoveSubscriber { key: "a@example.com".into() };
        let session = WriteOp::CreateSession { key: [1; 32], data: "{}".into(), expires_at: 1 };
        let save_same = WriteOp::SaveSession { key: [1; 32], data: "{}".into(), expires_at: 2 };
        let sweep = WriteOp::DeleteExpiredSessions { now: 0 };
        assert!(can_group(&[&a, &b, &session, &WriteOp::Flush]));
        assert!(!can_group(&[&a, &b, &remove_a]), "add then remove of one address keeps its order");
        assert!(!can_group(&[&session, &save_same]));
        assert!(!can_group(&[&a, &sweep]));
    }
}
