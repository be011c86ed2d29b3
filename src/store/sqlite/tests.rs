use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::*;
use crate::domain::{ClientEvidence, Door, Evidence, SearchTerm, SubscriberEmail};
use crate::store::{ListFilter, NewSubscriber, Role, Store};

mod backlog;
mod created_events;

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
    let syncs = stats.syncs.load(Ordering::Relaxed);
    assert!((1..=commits).contains(&syncs), "{syncs} fsyncs for {commits} answered commits");
}

#[tokio::test]
async fn the_writer_leaves_its_commits_fsync_to_the_syncer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let options = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Full);
    let mut writer = options.connect().await.unwrap();
    let mut sync = hand_fsyncs_to_syncer(&mut writer, &path).await.unwrap();
    let synchronous: i64 =
        sqlx::query_scalar("PRAGMA synchronous").fetch_one(&mut writer).await.unwrap();
    assert_eq!(synchronous, 1, "NORMAL: the writer's COMMIT does not wait for the disk");
    sync().unwrap();
    let mut wal = path.into_os_string();
    wal.push("-wal");
    let mode = std::fs::metadata(&wal).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the log is as private as the database");
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

/// A group commit whose `COMMIT` itself fails (here a deferred foreign key, checked only then)
/// keeps none of its writes and tells every one of them so; the writer goes on. Both ways a
/// batch is committed are driven: signups alone (on SQLite's handle) and signups with a write
/// that goes through sqlx's thread. Many rounds, each started at once behind a barrier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_fails_keeps_nothing_of_its_batch_and_says_so() {
    let (_dir, path, store) = server_store().await;
    let side = rusqlite::Connection::open(&path).unwrap();
    side.execute_batch(
        "CREATE TABLE parent (id INTEGER PRIMARY KEY);
         CREATE TABLE child (p INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);
         CREATE TRIGGER dangle AFTER INSERT ON subscribers WHEN new.email_key LIKE 'fail-%'
         BEGIN INSERT INTO child VALUES (1); END",
    )
    .unwrap();
    let stored = |address: &str| -> bool {
        side.query_row("SELECT count(*) FROM subscribers WHERE email = ?", [address], |row| {
            row.get::<_, i64>(0)
        })
        .unwrap()
            == 1
    };
    for round in 0..20 {
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(21));
        let writes: Vec<_> = (0..21)
            .map(|i| {
                let (store, barrier) = (store.clone(), barrier.clone());
                tokio::spawn(async move {
                    let address = match i {
                        0 => format!("fail-{round}@example.com"),
                        _ => format!("r{round}-u{i}@example.com"),
                    };
                    barrier.wait().await;
                    if i == 20 && round % 2 == 1 {
                        let _ = store.delete_expired_sessions(0).await;
                        return (None, true);
                    }
                    let email = SubscriberEmail::parse(&address).unwrap();
                    let written = add(&store, &email).await.is_ok();
                    (Some(address), written)
                })
            })
            .collect();
        for write in writes {
            let (address, written) = write.await.unwrap();
            let Some(address) = address else { continue };
            assert_eq!(stored(&address), written, "round {round}: {address}");
            if address.starts_with("fail-") {
                assert!(!written, "round {round}: the failing commit's own write");
            }
        }
        let after = SubscriberEmail::parse(&format!("after-{round}@example.com")).unwrap();
        add(&store, &after).await.expect("the writer goes on after a failed commit");
    }
    let (rows, counted): (i64, i64) = side
        .query_row(
            "SELECT (SELECT count(*) FROM subscribers),
                    (SELECT n FROM subscriber_counts WHERE status = 'confirmed')",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert_eq!(rows, counted, "what a failed commit counted is undone with it");
    assert!(rows >= 20, "every round's last signup is kept");
}

/// A group commit's signups are counted by status by the writer, with no trigger on the insert.
/// A signup that fails after its row went in is undone whole, count included, and its group
/// commit runs again without it: the others are stored and counted once. Many rounds, each
/// started at once behind a barrier, so the failing signup shares group commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signups_are_counted_by_status_and_one_failing_halfway_is_undone_whole() {
    let (_dir, path, store) = server_store().await;
    let refused_hash = [7u8; 32];
    let side = rusqlite::Connection::open(&path).unwrap();
    side.execute_batch(
        "CREATE TRIGGER refuse BEFORE DELETE ON suppressions BEGIN \
         SELECT RAISE(ABORT, 'refused'); END; \
         INSERT INTO suppressions (address_hash, reason, created_at) \
         VALUES (x'0707070707070707070707070707070707070707070707070707070707070707', 'test', 0)",
    )
    .unwrap();
    let stored = |sql: &str| -> Vec<(String, i64)> {
        let mut statement = side.prepare(sql).unwrap();
        statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    for round in 0..20 {
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(31));
        let writes: Vec<_> = (0..31)
            .map(|i| {
                let (store, barrier) = (store.clone(), barrier.clone());
                tokio::spawn(async move {
                    let address = format!("r{round}-u{i}@example.com");
                    barrier.wait().await;
                    match i % 3 {
                        _ if i == 30 => {
                            let email = SubscriberEmail::parse(&address).unwrap();
                            let evidence = evidence();
                            let new = NewSubscriber {
                                email: &email,
                                evidence: &evidence,
                                address_hash: refused_hash,
                                now: 0,
                            };
                            store.add_subscriber(new).await.is_ok()
                        }
                        0 => add(&store, &SubscriberEmail::parse(&address).unwrap()).await.is_ok(),
                        1 => {
                            ask_confirmation(&store, &address, 0).await;
                            true
                        }
                        // Already on the list: answered, not counted again.
                        _ => add(&store, &SubscriberEmail::parse("again@example.com").unwrap())
                            .await
                            .is_ok(),
                    }
                })
            })
            .collect();
        for (i, write) in writes.into_iter().enumerate() {
            assert_eq!(write.await.unwrap(), i != 30, "round {round}, write {i}");
        }
        let counted = stored(
            "SELECT status, n FROM subscriber_counts WHERE n > 0 AND status <> 'left' ORDER BY status",
        );
        let rows =
            stored("SELECT status, count(*) FROM subscribers GROUP BY status ORDER BY status");
        assert_eq!(counted, rows, "round {round}");
        let expected = i64::from(round + 1) * 10 + 1;
        assert_eq!(
            rows,
            [("confirmed".to_owned(), expected), ("pending".to_owned(), expected - 1)]
        );
    }
    let refused: i64 = side
        .query_row("SELECT count(*) FROM subscribers WHERE email LIKE '%-u30@%'", [], |row| {
            row.get(0)
        })
        .unwrap();
    assert_eq!(refused, 0, "a signup that failed halfway left its row");

    // The owner's adds (admin page, API) and imports are counted too, by the import's own
    // statement: no trigger counts for them either.
    for (door, address) in [(Door::Admin, "owner@example.com"), (Door::Import, "csv@example.com")] {
        let email = SubscriberEmail::parse(address).unwrap();
        let row = crate::store::ImportRow { email: &email, address_hash: [9; 32], nonce: None };
        let batch = crate::store::ImportBatch {
            rows: std::slice::from_ref(&row),
            door,
            status: crate::domain::SubscriberStatus::Confirmed,
            consent: "test",
            confirm_expires_at: None,
            dry_run: false,
            now: 1,
        };
        assert_eq!(store.import_batch(batch).await.unwrap().added, 1);
    }
    let counted = stored("SELECT status, n FROM subscriber_counts WHERE status = 'confirmed'");
    let rows = stored("SELECT status, count(*) FROM subscribers WHERE status = 'confirmed'");
    assert_eq!(counted, rows);
    assert_eq!(rows[0].1, 20 * 10 + 1 + 2);
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

/// Under writes that never leave the writer idle, the search index still takes a step at least
/// every `MAX_LAG`: rows written in a long busy spell become searchable through the index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_keeps_up_under_writes_that_never_pause() {
    let (_dir, _, store) = server_store().await;
    let busy_spell = search_index::MAX_LAG * 5 / 2;
    let writing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let writers: Vec<_> = (0..16)
        .map(|task| {
            let (store, writing) = (store.clone(), writing.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while writing.load(Ordering::Relaxed) {
                    let email = format!("t{task}-{i}@busy.example");
                    add(&store, &SubscriberEmail::parse(&email).unwrap()).await.unwrap();
                    i += 1;
                }
            })
        })
        .collect();
    tokio::time::sleep(busy_spell).await;
    let indexed_while_writing = indexed_up_to(&store).await;
    writing.store(false, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    assert!(indexed_while_writing > 0, "no index step in {busy_spell:?} of writes");
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

async fn ask_confirmation(
    store: &SqliteStore,
    address: &str,
    now: i64,
) -> crate::store::ConfirmationQueued {
    let email = SubscriberEmail::parse(address).unwrap();
    let evidence = evidence();
    let hash = [address.len() as u8; 32];
    let subscriber = NewSubscriber { email: &email, evidence: &evidence, address_hash: hash, now };
    let request = crate::store::ConfirmationRequest {
        subscriber,
        nonce: [address.len() as u8; 16],
        expires_at: now + 100,
        limit: 3,
        window_start: now - 1_000,
    };
    store.request_confirmation(request).await.unwrap()
}

fn outbox_rows(path: &std::path::Path) -> i64 {
    let reader = rusqlite::Connection::open(path).unwrap();
    reader.query_row("SELECT count(*) FROM outbox", [], |row| row.get(0)).unwrap()
}

/// A new address's confirmation is not queued in its signup's commit: the next mail lease
/// queues it from the pending row, with the nonce and expiry the request gave, exactly once.
#[tokio::test]
async fn a_new_addresss_confirmation_is_queued_from_its_row_by_the_lease_once() {
    use crate::store::ConfirmationQueued;
    let (_dir, path, store) = server_store().await;
    assert_eq!(ask_confirmation(&store, "new@example.com", 50).await, ConfirmationQueued::Queued);
    assert_eq!(outbox_rows(&path), 0, "queued in the signup's commit");
    let backlog = store.outbox_backlog().await.unwrap();
    assert_eq!(backlog, vec![("confirm".to_owned(), 1, 50)], "counted as queued meanwhile");

    let mails = store.claim_mail(60, 120, 1, 64).await.unwrap();
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert_eq!((mail.purpose.as_str(), mail.email.as_str()), ("confirm", "new@example.com"));
    assert_eq!((mail.nonce.as_deref(), mail.created_at), (Some(&[15u8; 16][..]), 50));
    let link = store.confirmation(mail.id).await.unwrap().expect("a confirmation row");
    assert_eq!((link.expires_at, link.used_at), (150, None));

    // Leased: not claimed again while the lease lasts, and never queued a second time.
    assert!(store.claim_mail(61, 121, 2, 64).await.unwrap().is_empty());
    let again = store.claim_mail(200, 260, 3, 64).await.unwrap();
    assert_eq!(again.iter().map(|m| m.id).collect::<Vec<_>>(), vec![mail.id], "the lease ran out");
    assert_eq!(outbox_rows(&path), 1);
    assert_eq!(store.outbox_backlog().await.unwrap(), vec![("confirm".to_owned(), 1, 50)]);
}

/// A row withdrawn before its turn gets no mail, nor does a new row whose request the limit
/// refused; the lease passes over both and queues the rows after them, each once.
#[tokio::test]
async fn rows_without_a_mail_due_are_passed_over() {
    use crate::store::ConfirmationQueued::{LimitReached, Queued};
    let (_dir, path, store) = server_store().await;
    let gone = SubscriberEmail::parse("gone@example.com").unwrap();
    assert_eq!(ask_confirmation(&store, gone.as_str(), 10).await, Queued);
    assert!(store.remove_pending(&gone, [16; 32]).await.unwrap());
    // "limit@example.com": its first ask is still in its row, unqueued, and counts.
    let limited = SubscriberEmail::parse("limit@example.com").unwrap();
    for now in [11, 12, 13] {
        assert_eq!(ask_confirmation(&store, limited.as_str(), now).await, Queued);
    }
    assert_eq!(ask_confirmation(&store, limited.as_str(), 14).await, LimitReached);
    // Withdrawing carries all three, the unqueued one too: a new row is refused.
    assert!(store.remove_pending(&limited, [17; 32]).await.unwrap());
    assert_eq!(ask_confirmation(&store, limited.as_str(), 15).await, LimitReached);
    assert_eq!(ask_confirmation(&store, "kept@example.com", 16).await, Queued);

    let mails = store.claim_mail(20, 80, 1, 64).await.unwrap();
    let to: Vec<&str> = mails.iter().map(|m| m.email.as_str()).collect();
    assert_eq!(to, vec!["kept@example.com"]);
    let again: Vec<i64> =
        store.claim_mail(100, 160, 2, 64).await.unwrap().iter().map(|m| m.id).collect();
    assert_eq!(again, vec![mails[0].id], "the same mail once its lease ran out");
    let rows_for_kept = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row(
            "SELECT count(*) FROM outbox AS o JOIN subscribers AS s ON s.id = o.subscriber_id
             WHERE s.email_key = 'kept@example.com'",
            [],
            |row| row.get::<_, i64>(0),
        )
        .unwrap();
    assert_eq!(rows_for_kept, 1);
}

/// The signup's commit is the only record of its mail until a lease queues it: a restart
/// in between loses nothing.
#[tokio::test]
async fn a_confirmation_not_yet_queued_survives_a_restart() {
    let (_dir, path, store) = server_store().await;
    ask_confirmation(&store, "restart@example.com", 30).await;
    store.close().await;
    drop(store);
    let options = SqliteConnectOptions::new().filename(&path);
    let reopened = SqliteStore::open(options, limits(), Role::Server).await.unwrap();
    let mails = reopened.claim_mail(40, 100, 1, 64).await.unwrap();
    let to: Vec<&str> = mails.iter().map(|m| m.email.as_str()).collect();
    assert_eq!(to, vec!["restart@example.com"]);
}

/// Imported pending rows queue their own mail and carry no nonce: however many lie past the
/// cursor, the next lease passes over all of them and queues the signup behind them.
#[tokio::test]
async fn a_signup_behind_many_imported_pending_rows_is_queued_by_the_next_lease() {
    let (_dir, path, store) = server_store().await;
    let writer = rusqlite::Connection::open(&path).unwrap();
    writer.busy_timeout(Duration::from_secs(5)).unwrap();
    writer
        .execute_batch(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
             INSERT INTO subscribers (email, email_key, created_at, status, source, consent)
             SELECT 'imported' || i || '@example.com', 'imported' || i || '@example.com', 5,
                    'pending', 'import', 'test'
             FROM n",
        )
        .unwrap();
    drop(writer);
    ask_confirmation(&store, "behind@example.com", 40).await;
    let mails = store.claim_mail(50, 110, 1, 64).await.unwrap();
    let to: Vec<&str> = mails.iter().map(|m| m.email.as_str()).collect();
    assert_eq!(to, vec!["behind@example.com"]);
    assert_eq!(outbox_rows(&path), 1, "an imported row was queued by the lease");
}
