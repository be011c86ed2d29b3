//! The order of one group commit's writes. A batch under load is mostly signups and their new
//! sessions: every new row goes in before the sessions, which may name it, and the writes that
//! run on SQLite's handle stay together so that one lock of it serves them all. That reordering
//! is harmless only when no two writes touch the same subscriber or session, and when nothing in
//! the batch acts on rows it cannot name; other batches run in arrival order, so the last write
//! still wins.

use std::collections::HashSet;

use super::direct::{Ran, Undo, WriteConnection};
use super::ops::WriteOp;

/// Rows affected by each write, in the order given.
pub(super) async fn run(connection: &mut WriteConnection, ops: &[&WriteOp], undo: Undo) -> Ran {
    connection.run(ops, &order(ops), undo).await
}

/// The order to run `ops` in (indexes into it).
pub(super) fn order(ops: &[&WriteOp]) -> Vec<usize> {
    if can_group(ops) {
        let (mut rows, rest): (Vec<usize>, Vec<usize>) =
            (0..ops.len()).partition(|&i| ops[i].adds_a_row());
        rows.extend(rest);
        rows
    } else {
        (0..ops.len()).collect()
    }
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

#[cfg(test)]
mod tests {
    use super::super::ops::Target;
    use super::*;

    fn add(key: &str) -> WriteOp {
        WriteOp::test_signup(key, [0; 32])
    }

    async fn migrated() -> (tempfile::TempDir, WriteConnection) {
        use sqlx::{Connection, SqliteConnection};
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let mut connection = SqliteConnection::connect(&url).await.unwrap();
        sqlx::migrate!("migrations/sqlite").run(&mut connection).await.unwrap();
        (dir, WriteConnection::new(connection))
    }

    fn remembering(key: u8, address: &str) -> WriteOp {
        WriteOp::CreateSession {
            key: [key; 32],
            data: format!(r#"{{"visitor_email":"{address}"}}"#),
            remembers: Some(address.into()),
            expires_at: 1,
        }
    }

    /// Makes a signup's second statement (lifting a suppression) fail after its first has
    /// inserted the row.
    async fn refuse_suppression_deletes(connection: &mut WriteConnection) {
        use sqlx::Executor;
        connection
            .sqlx()
            .execute(
                "CREATE TRIGGER refuse BEFORE DELETE ON suppressions BEGIN \
                 SELECT RAISE(ABORT, 'refused'); END; \
                 INSERT INTO suppressions (address_hash, reason, created_at) \
                 VALUES (zeroblob(32), 'test', 0)",
            )
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_signup_goes_in_before_the_sessions_that_name_it_around_a_write_through_sqlx() {
        use sqlx::Executor;
        let (_dir, mut connection) = migrated().await;
        let lease = WriteOp::LeaseMail {
            now: 0,
            until: 1,
            owner: 1,
            limit: 10,
            leased: Default::default(),
        };
        // The signup arrives after the session that names it, and a write that goes through
        // sqlx's thread sits between the two sessions: the handle is taken, given back and
        // taken again within one transaction.
        let (first, signup, second) = (
            remembering(1, "a@example.com"),
            add("a@example.com"),
            remembering(2, "b@example.com"),
        );
        let ops = [&first, &lease, &signup, &second];
        assert!(can_group(&ops));
        connection.sqlx().execute("BEGIN").await.unwrap();
        let ran = run(&mut connection, &ops, Undo::Transaction).await;
        assert!(!ran.undone_only_by_rollback);
        let outcomes: Vec<u64> = ran.outcomes.into_iter().map(Result::unwrap).collect();
        assert_eq!(outcomes, [1, 0, 1, 1]);
        connection.sqlx().execute("COMMIT").await.unwrap();
        let kept: Vec<String> = sqlx::query_scalar("SELECT data FROM sessions ORDER BY key")
            .fetch_all(connection.sqlx())
            .await
            .unwrap();
        assert_eq!(kept, [r#"{"visitor_email":"a@example.com"}"#, "{}"]);
        connection.close().await;
    }

    #[tokio::test]
    async fn a_failed_write_on_the_handle_is_undone_alone() {
        use sqlx::Executor;
        let (_dir, mut connection) = migrated().await;
        refuse_suppression_deletes(&mut connection).await;
        let refused = add("a@example.com");
        let kept = WriteOp::test_signup("b@example.com", [1; 32]);
        // With no savepoint per write, the failure is reported for the whole transaction.
        connection.sqlx().execute("BEGIN").await.unwrap();
        let ran = run(&mut connection, &[&refused, &kept], Undo::Transaction).await;
        assert!(ran.undone_only_by_rollback);
        connection.sqlx().execute("ROLLBACK").await.unwrap();
        // Run again as the writer does, each write undone on its own.
        connection.sqlx().execute("BEGIN").await.unwrap();
        let ran = run(&mut connection, &[&refused, &kept], Undo::EachWrite).await;
        assert!(!ran.undone_only_by_rollback);
        let outcomes = ran.outcomes;
        assert!(format!("{:#}", outcomes[0].as_ref().unwrap_err()).contains("refused"));
        assert_eq!(outcomes[1].as_ref().unwrap(), &1);
        connection.sqlx().execute("COMMIT").await.unwrap();
        let rows: Vec<String> = sqlx::query_scalar("SELECT email FROM subscribers")
            .fetch_all(connection.sqlx())
            .await
            .unwrap();
        assert_eq!(rows, ["b@example.com"], "the failed signup's row is undone, the other kept");
        let counted: i64 =
            sqlx::query_scalar("SELECT n FROM subscriber_counts WHERE status = 'confirmed'")
                .fetch_one(connection.sqlx())
                .await
                .unwrap();
        assert_eq!(counted, 1, "the failed signup's count is undone with it");
        connection.close().await;
    }

    fn pending(address: &str) -> WriteOp {
        let WriteOp::AddSubscriber { email, key, now, evidence, address_hash } =
            WriteOp::test_signup(address, [2; 32])
        else {
            unreachable!("test_signup is a signup")
        };
        WriteOp::RequestConfirmation {
            email,
            key,
            now,
            evidence,
            address_hash,
            nonce: [3; 16],
            expires_at: 100,
            limit: 3,
            window_start: -100,
        }
    }

    /// Each session's data and the address of the row it names, in the order of its key.
    async fn sessions(connection: &mut WriteConnection) -> Vec<(String, Option<String>)> {
        sqlx::query_as(
            "SELECT s.data, b.email FROM sessions AS s
             LEFT JOIN subscribers AS b ON b.id = s.subscriber_id ORDER BY s.key",
        )
        .fetch_all(connection.sqlx())
        .await
        .unwrap()
    }

    /// A session created behind its signup takes the row's id from the signup's own write; one
    /// whose address was already on the list, or was never written, looks it up as before.
    #[tokio::test]
    async fn a_session_behind_its_signup_names_the_row_that_signup_wrote() {
        use sqlx::Executor;
        let (_dir, mut connection) = migrated().await;
        let earlier = add("earlier@example.com");
        let ran = run(&mut connection, &[&earlier], Undo::Transaction).await;
        assert_eq!(ran.outcomes[0].as_ref().unwrap(), &1);
        // New rows, a row already there (no id from its insert), a pending signup of an
        // address already pending (its id found by the signup's own lookup), and an address
        // with no row; each session arrives in another order than its signup.
        let (a, b, again, waiting) = (
            add("a@example.com"),
            add("b@example.com"),
            add("earlier@example.com"),
            pending("waiting@example.com"),
        );
        let first = run(&mut connection, &[&waiting], Undo::Transaction).await;
        assert!(first.outcomes[0].is_ok());
        let waiting_again = pending("waiting@example.com");
        let ops: [&WriteOp; 9] = [
            &remembering(1, "b@example.com"),
            &a,
            &remembering(2, "earlier@example.com"),
            &b,
            &again,
            &waiting_again,
            &remembering(3, "a@example.com"),
            &remembering(4, "nobody@example.com"),
            &remembering(5, "waiting@example.com"),
        ];
        assert!(can_group(&ops));
        connection.sqlx().execute("BEGIN").await.unwrap();
        let ran = run(&mut connection, &ops, Undo::Transaction).await;
        assert!(!ran.undone_only_by_rollback);
        connection.sqlx().execute("COMMIT").await.unwrap();
        let named = |address: &str| {
            (format!(r#"{{"visitor_email":"{address}"}}"#), Some(address.to_string()))
        };
        assert_eq!(
            sessions(&mut connection).await,
            [
                named("b@example.com"),
                named("earlier@example.com"),
                named("a@example.com"),
                ("{}".to_string(), None),
                named("waiting@example.com"),
            ]
        );
        connection.close().await;
    }

    /// A signup undone by its savepoint takes back the id its insert learned: the session
    /// behind it finds no row and remembers no address.
    #[tokio::test]
    async fn a_session_behind_an_undone_signup_names_no_row() {
        use sqlx::Executor;
        let (_dir, mut connection) = migrated().await;
        refuse_suppression_deletes(&mut connection).await;
        let refused = add("a@example.com");
        let session = remembering(1, "a@example.com");
        connection.sqlx().execute("BEGIN").await.unwrap();
        let ran = run(&mut connection, &[&refused, &session], Undo::EachWrite).await;
        assert!(ran.outcomes[0].is_err());
        assert_eq!(ran.outcomes[1].as_ref().unwrap(), &1);
        connection.sqlx().execute("COMMIT").await.unwrap();
        assert_eq!(sessions(&mut connection).await, [("{}".to_string(), None)]);
        connection.close().await;
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
