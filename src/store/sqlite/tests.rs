use std::sync::atomic::Ordering;
use std::time::Duration;

use super::*;
use crate::domain::{ClientEvidence, Door, Evidence, SearchTerm, SubscriberEmail};
use crate::store::{ListFilter, NewSubscriber, Role, Store};

fn evidence() -> Evidence {
    Evidence {
        door: Door::Form,
        client: ClientEvidence::new([127, 0, 0, 1].into(), None, false),
        consent: "test".into(),
    }
}

async fn add(store: &SqliteStore, email: &SubscriberEmail) -> crate::store::StoreResult<()> {
    let evidence = evidence();
    store
        .add_subscriber(NewSubscriber { email, evidence: &evidence, address_hash: [0; 32], now: 0 })
        .await
}

async fn count(store: &SqliteStore) -> u64 {
    store.counts().await.unwrap().on_list()
}

/// A server's store on a new database file, with the file's path; the file lives as long as
/// the test holds the directory.
async fn server_store() -> (tempfile::TempDir, std::path::PathBuf, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let options = SqliteConnectOptions::new().filename(&path);
    let store = SqliteStore::open(options, limits(), Role::Server).await.unwrap();
    (dir, path, store)
}

fn limits() -> PoolLimits {
    PoolLimits {
        pool_size: 2,
        connect_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(5),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_commits_and_all_land() {
    let (_dir, _, store) = server_store().await;
    let writes: Vec<_> = (0..500)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let email = SubscriberEmail::parse(&format!("user{i}@example.com")).unwrap();
                add(&store, &email).await
            })
        })
        .collect();
    for write in writes {
        write.await.unwrap().unwrap();
    }
    assert_eq!(count(&store).await, 500);
    let stats = store.writer.stats();
    let (commits, writes) =
        (stats.commits.load(Ordering::Relaxed), stats.writes.load(Ordering::Relaxed));
    assert!(writes >= 500);
    assert!(commits < writes / 2, "{writes} writes in {commits} commits: no batching");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_statement_fails_alone_and_the_batch_still_commits() {
    let (_dir, path, store) = server_store().await;
    // Make one kind of write fail at statement level, as a constraint would.
    let mut side = SqliteConnectOptions::new().filename(&path).connect().await.unwrap();
    sqlx::query(
        "CREATE TRIGGER refuse BEFORE INSERT ON sessions BEGIN SELECT RAISE(ABORT, 'no'); END",
    )
    .execute(&mut side)
    .await
    .unwrap();
    let writes: Vec<_> = (0..100u8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                if i % 2 == 0 {
                    let email = SubscriberEmail::parse(&format!("u{i}@example.com")).unwrap();
                    add(&store, &email).await.is_ok()
                } else {
                    store.create_session(&[i; 32], "{}", None, 1).await.is_ok()
                }
            })
        })
        .collect();
    for (i, write) in writes.into_iter().enumerate() {
        assert_eq!(write.await.unwrap(), i % 2 == 0, "write {i}");
    }
    assert_eq!(count(&store).await, 50);
}

#[tokio::test]
async fn counts_are_maintained_and_match_counts_stop_at_the_cap() {
    let (_dir, _, store) = server_store().await;
    for i in 0..30 {
        let email = SubscriberEmail::parse(&format!("member{i}@club.example")).unwrap();
        add(&store, &email).await.unwrap();
    }
    let again = SubscriberEmail::parse("MEMBER1@club.example").unwrap();
    add(&store, &again).await.unwrap();
    assert_eq!(count(&store).await, 30, "a duplicate is not counted");
    store.remove_subscriber(&again, None).await.unwrap();
    assert_eq!(count(&store).await, 29);

    let term = SearchTerm::parse("club").unwrap().unwrap();
    assert_eq!(
        store.count_matching(ListFilter { search: Some(&term), status: None }, 10).await.unwrap(),
        10
    );
    assert_eq!(
        store.count_matching(ListFilter { search: Some(&term), status: None }, 100).await.unwrap(),
        29
    );
    let digits = SearchTerm::parse("er2").unwrap().unwrap();
    // member2 and member20..member29
    assert_eq!(
        store
            .count_matching(ListFilter { search: Some(&digits), status: None }, 100)
            .await
            .unwrap(),
        11
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grouped_inserts_answer_each_write_exactly() {
    let (_dir, _, store) = server_store().await;
    let taken = [9u8; 32];
    store.create_session(&taken, "{}", None, i64::MAX).await.unwrap();
    let writes: Vec<_> = (0..200u8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                match i % 4 {
                    // Two spellings of each of 50 addresses.
                    0 => add(&store, &SubscriberEmail::parse(&format!("p{i}@x.example")).unwrap())
                        .await
                        .map(|_| true),
                    1 => add(
                        &store,
                        &SubscriberEmail::parse(&format!("P{}@X.example", i - 1)).unwrap(),
                    )
                    .await
                    .map(|_| true),
                    // New sessions, and one id that is already taken.
                    2 => store.create_session(&[i; 32], "{}", None, i64::MAX).await,
                    _ => store
                        .create_session(&taken, "{}", None, i64::MAX)
                        .await
                        .map(|created| !created),
                }
            })
        })
        .collect();
    for write in writes {
        assert!(write.await.unwrap().unwrap());
    }
    assert_eq!(count(&store).await, 50);
    assert_eq!(store.list_subscribers(ListFilter::default(), None, 100).await.unwrap().len(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_remember_only_addresses_with_a_row_grouped_or_alone() {
    let (_dir, _, store) = server_store().await;
    let listed = SubscriberEmail::parse("listed@x.example").unwrap();
    add(&store, &listed).await.unwrap();
    let remembering = |email: &str| format!(r#"{{"visitor_email":"{email}","notice":"n"}}"#);
    // Many at once, so the writer groups them into one INSERT; then one alone.
    let writes: Vec<_> = (0..64u8)
        .map(|i| {
            let store = store.clone();
            let (email, data) = if i % 2 == 0 {
                ("listed@x.example", remembering("listed@x.example"))
            } else {
                ("missing@x.example", remembering("missing@x.example"))
            };
            tokio::spawn(async move { store.create_session(&[i; 32], &data, Some(email), 1).await })
        })
        .collect();
    for write in writes {
        assert!(write.await.unwrap().unwrap());
    }
    let alone = remembering("missing@x.example");
    assert!(store.create_session(&[200; 32], &alone, Some("missing@x.example"), 1).await.unwrap());
    let stored: Vec<(Vec<u8>, String, Option<i64>)> =
        sqlx::query_as("SELECT key, data, subscriber_id FROM sessions ORDER BY key")
            .fetch_all(&store.readers)
            .await
            .unwrap();
    assert_eq!(stored.len(), 65);
    for (key, data, subscriber_id) in stored {
        if key[0] % 2 == 0 && key[0] < 64 {
            assert_eq!(data, remembering("listed@x.example"));
            assert_eq!(subscriber_id, Some(1));
        } else {
            assert_eq!(data, r#"{"notice":"n"}"#, "no row, so the address is left out");
            assert_eq!(subscriber_id, None);
        }
    }
    // Saving goes by the same rule; removing the row takes the address out afterwards.
    store
        .save_session(&[1; 32], &remembering("missing@x.example"), Some("missing@x.example"), 1)
        .await
        .unwrap();
    assert!(store.remove_subscriber(&listed, None).await.unwrap());
    let left: Vec<String> = sqlx::query_scalar("SELECT DISTINCT data FROM sessions")
        .fetch_all(&store.readers)
        .await
        .unwrap();
    assert_eq!(left, [r#"{"notice":"n"}"#]);
}

async fn indexed_up_to(store: &SqliteStore) -> i64 {
    sqlx::query_scalar("SELECT indexed_up_to FROM search_progress")
        .fetch_one(&store.readers)
        .await
        .unwrap()
}

async fn search(store: &SqliteStore, term: &SearchTerm, before: Option<i64>) -> Vec<String> {
    let filter = ListFilter { search: Some(term), status: None };
    let rows = store.list_subscribers(filter, before, 100).await.unwrap();
    rows.into_iter().map(|row| row.email).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_reads_rows_the_index_does_not_hold_yet() {
    let (_dir, _, store) = server_store().await;
    let address = |i: u32| SubscriberEmail::parse(&format!("member{i}@club.example")).unwrap();
    for i in 0..20 {
        add(&store, &address(i)).await.unwrap();
    }
    let term = SearchTerm::parse("club").unwrap().unwrap();
    let newest_first: Vec<String> = (0..20).rev().map(|i| address(i).to_string()).collect();
    // Straight after the commit: the rows may or may not be indexed; either way all are found.
    assert_eq!(search(&store, &term, None).await, newest_first);

    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while indexed_up_to(&store).await < 20 {
        assert!(std::time::Instant::now() < deadline, "the writer never indexed the rows");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Ten more, one straight after the other: the index trails by up to its idle wait.
    for i in 20..30 {
        add(&store, &address(i)).await.unwrap();
    }
    store.remove_subscriber(&address(5), None).await.unwrap();
    store.remove_subscriber(&address(25), None).await.unwrap();
    let expected: Vec<String> =
        (0..30).rev().filter(|i| *i != 5 && *i != 25).map(|i| address(i).to_string()).collect();
    assert_eq!(search(&store, &term, None).await, expected);
    let filter = ListFilter { search: Some(&term), status: None };
    assert_eq!(store.count_matching(filter, 100).await.unwrap(), 28);
    // A page that starts in the unindexed rows and ends in the indexed ones.
    assert_eq!(search(&store, &term, Some(23)).await, expected[7..]);

    while indexed_up_to(&store).await < 30 {
        assert!(std::time::Instant::now() < deadline, "the writer never caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(search(&store, &term, None).await, expected);
    assert_eq!(store.count_matching(filter, 100).await.unwrap(), 28);
    let one = SearchTerm::parse("member25@").unwrap().unwrap();
    assert!(search(&store, &one, None).await.is_empty(), "a deleted row left in the index");
}

/// After `close` the writer still commits what it is sent but starts nothing of its own: a tool
/// or test that goes on to write the file must never find it locked by an index step begun
/// after the close (a blocked caller on a one-thread runtime would wait for its busy timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_writer_starts_no_index_step() {
    let (_dir, path, store) = server_store().await;
    add(&store, &SubscriberEmail::parse("before@example.com").unwrap()).await.unwrap();
    store.close().await;
    let indexed_at_close = indexed_up_to(&store).await;
    add(&store, &SubscriberEmail::parse("after@example.com").unwrap()).await.unwrap();
    // Several of the writer's idle waits: an index step would have run by now.
    tokio::time::sleep(search_index::IDLE * 6).await;
    assert_eq!(indexed_up_to(&store).await, indexed_at_close, "an index step ran after close");
    assert_eq!(count(&store).await, 2, "a write sent after close is still committed");
    // And nothing holds the write lock: another connection takes it without waiting.
    let mut other = SqliteConnectOptions::new()
        .filename(&path)
        .busy_timeout(Duration::ZERO)
        .connect()
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE").execute(&mut other).await.unwrap();
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
}

/// The resend limit is kept in the outbox while a row exists and moves under the address's hash
/// when the visitor withdraws it: grouped requests (many addresses in one commit) and single ones
/// count the same way, and withdrawing does not reset the count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_confirmation_limit_holds_in_groups_and_across_a_withdrawal() {
    use crate::store::{ConfirmationQueued, ConfirmationRequest};
    let (_dir, _, store) = server_store().await;
    let ask = |i: u8, now: i64| {
        let store = store.clone();
        tokio::spawn(async move {
            let email = SubscriberEmail::parse(&format!("asker{i}@example.com")).unwrap();
            let evidence = evidence();
            let subscriber =
                NewSubscriber { email: &email, evidence: &evidence, address_hash: [i; 32], now };
            let request = ConfirmationRequest {
                subscriber,
                nonce: [i; 16],
                expires_at: now + 100,
                limit: 3,
                window_start: now - 1_000,
            };
            store.request_confirmation(request).await.unwrap()
        })
    };
    let round = |now: i64| async move {
        let asks: Vec<_> = (0..20).map(|i| ask(i, now)).collect();
        let mut answers = Vec::new();
        for a in asks {
            answers.push(a.await.unwrap());
        }
        answers
    };
    for now in [10, 20] {
        assert!(round(now).await.iter().all(|a| *a == ConfirmationQueued::Queued));
    }
    for i in 0..20 {
        let email = SubscriberEmail::parse(&format!("asker{i}@example.com")).unwrap();
        assert!(store.remove_pending(&email, [i; 32]).await.unwrap());
    }
    assert!(round(30).await.iter().all(|a| *a == ConfirmationQueued::Queued), "the third");
    assert!(round(40).await.iter().all(|a| *a == ConfirmationQueued::LimitReached), "a fourth");
    // Once the window has passed, the address may ask again.
    let later = ask(3, 2_000).await.unwrap();
    assert_eq!(later, ConfirmationQueued::Queued);
}

#[tokio::test]
async fn the_writer_keeps_statement_journals_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let options =
        SqliteConnectOptions::new().filename(dir.path().join("t.db")).create_if_missing(true);
    let mut writer = options.connect().await.unwrap();
    let before: i64 = sqlx::query_scalar("PRAGMA temp_store").fetch_one(&mut writer).await.unwrap();
    prepare_writer(&mut writer).await.unwrap();
    let after: i64 = sqlx::query_scalar("PRAGMA temp_store").fetch_one(&mut writer).await.unwrap();
    assert_eq!((before, after), (0, 2), "2 is MEMORY: no temporary file per group commit");
}

#[tokio::test]
async fn a_new_row_queues_created_then_confirmed_for_each_endpoint_that_wants_them() {
    use sqlx::{Connection, SqliteConnection};
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let mut c = SqliteConnection::connect(&url).await.unwrap();
    sqlx::migrate!("migrations/sqlite").run(&mut c).await.unwrap();
    // Bits: 1 created, 2 confirmed. The third endpoint is disabled.
    sqlx::query(
        "INSERT INTO webhook_endpoints (url, secret, events, created_at, disabled_at) VALUES
         ('http://a', 's', 3, 0, NULL), ('http://b', 's', 1, 0, NULL),
         ('http://c', 's', 3, 0, 1), ('http://d', 's', 2, 0, NULL)",
    )
    .execute(&mut c)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO subscribers (email, email_key, created_at, status, source, signup_ip, consent,
                                  confirmed_at) VALUES
         ('in@x.example', 'in@x.example', 5, 'confirmed', 'form', '-', '-', 5),
         ('pending@x.example', 'pending@x.example', 6, 'pending', 'form', '-', '-', NULL),
         ('imported@x.example', 'imported@x.example', 7, 'confirmed', 'import', '-', '-', 7)",
    )
    .execute(&mut c)
    .await
    .unwrap();
    let queued: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT email, event, endpoint_id FROM webhook_deliveries ORDER BY id")
            .fetch_all(&mut c)
            .await
            .unwrap();
    let queued: Vec<_> = queued.iter().map(|(e, k, id)| (e.as_str(), k.as_str(), *id)).collect();
    assert_eq!(
        queued,
        [
            ("in@x.example", "subscriber.created", 1),
            ("in@x.example", "subscriber.created", 2),
            ("in@x.example", "subscriber.confirmed", 1),
            ("in@x.example", "subscriber.confirmed", 4),
            ("pending@x.example", "subscriber.created", 1),
            ("pending@x.example", "subscriber.created", 2),
        ],
        "imports queue their events in their own batch statement, not here"
    );
    let counts: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, n FROM subscriber_counts WHERE status <> 'left' ORDER BY status",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    assert_eq!(counts, [("confirmed".to_owned(), 1), ("pending".to_owned(), 1)]);
}
