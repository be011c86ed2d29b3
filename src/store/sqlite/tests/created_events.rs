//! A new row's webhook events are made from the row by the webhook lease (migration
//! `created_events_from_rows`), not in the signup's commit.

use std::path::Path;

use super::{add, ask_confirmation, evidence, limits, server_store};
use crate::domain::{Door, SubscriberEmail, SubscriberStatus};
use crate::store::sqlite::{SqliteConnectOptions, SqliteStore};
use crate::store::{
    ImportBatch, ImportRow, LeaveReason, Leaving, NewEndpoint, NewSubscriber, QueuedDelivery, Role,
    Store,
};

/// Every event: created 1, confirmed 2, unsubscribed 4, deleted 8, erased 16.
const ALL_EVENTS: u32 = 31;

async fn endpoint(store: &SqliteStore, events: u32) -> i64 {
    let url = "http://127.0.0.1:9/hook";
    store.create_endpoint(NewEndpoint { url, secret: "s", events, now: 1 }).await.unwrap()
}

fn deliveries(path: &Path) -> i64 {
    let reader = rusqlite::Connection::open(path).unwrap();
    reader.query_row("SELECT count(*) FROM webhook_deliveries", [], |row| row.get(0)).unwrap()
}

/// What a receiver hears of, in the order it was queued.
fn heard(claimed: &[QueuedDelivery]) -> Vec<(String, String)> {
    let address = |d: &QueuedDelivery| d.email.clone().unwrap_or_else(|| "(erased)".into());
    claimed.iter().map(|d| (address(d), d.event.clone())).collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected.iter().map(|(a, e)| ((*a).to_owned(), (*e).to_owned())).collect()
}

/// The migration's own rules, on a bare connection: the insert queues nothing; moving the
/// cursor queues, per row, `created` for each endpoint that wants it and, for a row added
/// confirmed, `confirmed` after all of the step's created events.
#[tokio::test]
async fn moving_the_cursor_queues_created_then_confirmed_for_each_endpoint_that_wants_them() {
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
    let queued = || async {
        let mut c = SqliteConnection::connect(&url).await.unwrap();
        let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT email, event, endpoint_id, occurred_at FROM webhook_deliveries ORDER BY id",
        )
        .fetch_all(&mut c)
        .await
        .unwrap();
        rows
    };
    assert!(queued().await.is_empty(), "queued in the insert's commit");
    let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM created_events_unqueued")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(waiting, 10);

    sqlx::query("UPDATE created_events_queued SET up_to = (SELECT max(id) FROM subscribers)")
        .execute(&mut c)
        .await
        .unwrap();
    let queued = queued().await;
    let queued: Vec<_> =
        queued.iter().map(|(e, k, id, at)| (e.as_str(), k.as_str(), *id, *at)).collect();
    assert_eq!(
        queued,
        [
            ("in@x.example", "subscriber.created", 1, 5),
            ("in@x.example", "subscriber.created", 2, 5),
            ("pending@x.example", "subscriber.created", 1, 6),
            ("pending@x.example", "subscriber.created", 2, 6),
            ("imported@x.example", "subscriber.created", 1, 7),
            ("imported@x.example", "subscriber.created", 2, 7),
            ("in@x.example", "subscriber.confirmed", 1, 5),
            ("in@x.example", "subscriber.confirmed", 4, 5),
            ("imported@x.example", "subscriber.confirmed", 1, 7),
            ("imported@x.example", "subscriber.confirmed", 4, 7),
        ]
    );
}

/// A signup writes no delivery; the backlog and the endpoint's queue count its events
/// meanwhile, and the next lease queues and takes them, once.
#[tokio::test]
async fn a_new_rows_events_are_queued_by_the_lease_once() {
    let (_dir, path, store) = server_store().await;
    let id = endpoint(&store, ALL_EVENTS).await;
    add(&store, &SubscriberEmail::parse("new@example.com").unwrap()).await.unwrap();
    assert_eq!(deliveries(&path), 0, "queued in the signup's commit");
    assert_eq!(store.outbox_backlog().await.unwrap(), vec![("webhook".to_owned(), 2, 0)]);
    assert_eq!(store.endpoint(id).await.unwrap().unwrap().queued, 2);

    let claimed = store.claim_deliveries(10, 70, 1, 16).await.unwrap();
    assert_eq!(
        heard(&claimed),
        pairs(&[
            ("new@example.com", "subscriber.created"),
            ("new@example.com", "subscriber.confirmed")
        ])
    );
    assert!(store.claim_deliveries(11, 71, 2, 16).await.unwrap().is_empty(), "leased");
    let again = store.claim_deliveries(100, 160, 3, 16).await.unwrap();
    assert_eq!(again.len(), 2, "the lease ran out");
    assert_eq!(deliveries(&path), 2, "queued once");
    assert_eq!(store.endpoint(id).await.unwrap().unwrap().queued, 2);
}

/// A row changed or removed before its turn is heard of as it happened: `created` first, as
/// it was inserted, then its own event; an erased row leaves nothing but its erasure.
#[tokio::test]
async fn a_row_changed_or_removed_before_its_turn_is_heard_of_in_order() {
    let (_dir, path, store) = server_store().await;
    endpoint(&store, ALL_EVENTS).await;
    ask_confirmation(&store, "pending@example.com", 5).await;
    let left = SubscriberEmail::parse("left@example.com").unwrap();
    add(&store, &left).await.unwrap();
    let erased = SubscriberEmail::parse("erased@example.com").unwrap();
    add(&store, &erased).await.unwrap();
    let writer = rusqlite::Connection::open(&path).unwrap();
    writer.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    writer
        .execute(
            "UPDATE subscribers SET status = 'confirmed', confirmed_at = 6
             WHERE email_key = 'pending@example.com'",
            [],
        )
        .unwrap();
    drop(writer);
    let leaving = |reason| Some(Leaving { address_hash: [9; 32], reason, now: 7 });
    assert!(store.remove_subscriber(&left, leaving(LeaveReason::Unsubscribed)).await.unwrap());
    assert!(store.remove_subscriber(&erased, leaving(LeaveReason::Erased)).await.unwrap());
    add(&store, &SubscriberEmail::parse("later@example.com").unwrap()).await.unwrap();

    // Events queued by the triggers are due from the database's clock.
    let now = crate::session::unix_now() + 10;
    let claimed = store.claim_deliveries(now, now + 60, 1, 64).await.unwrap();
    assert_eq!(claimed.len(), 8);
    let queued: Vec<(String, String, String)> = rusqlite::Connection::open(&path)
        .unwrap()
        .prepare(
            "SELECT coalesce(email, '(erased)'), event, coalesce(status, '-')
             FROM webhook_deliveries ORDER BY id",
        )
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let queued: Vec<(&str, &str, &str)> =
        queued.iter().map(|(a, e, s)| (a.as_str(), e.as_str(), s.as_str())).collect();
    assert_eq!(
        queued,
        [
            ("pending@example.com", "subscriber.created", "pending"),
            ("left@example.com", "subscriber.created", "confirmed"),
            ("left@example.com", "subscriber.confirmed", "confirmed"),
            ("pending@example.com", "subscriber.confirmed", "confirmed"),
            ("left@example.com", "subscriber.unsubscribed", "confirmed"),
            ("(erased)", "subscriber.erased", "-"),
            ("later@example.com", "subscriber.created", "confirmed"),
            ("later@example.com", "subscriber.confirmed", "confirmed"),
        ]
    );
    let address_left: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row(
            "SELECT count(*) FROM webhook_deliveries WHERE email = 'erased@example.com'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(address_left, 0, "an erased address left a delivery behind");
}

/// An endpoint hears of the rows added after it only, however far behind the lease is.
#[tokio::test]
async fn an_endpoint_hears_nothing_of_rows_added_before_it() {
    let (_dir, path, store) = server_store().await;
    add(&store, &SubscriberEmail::parse("before@example.com").unwrap()).await.unwrap();
    endpoint(&store, 1).await;
    add(&store, &SubscriberEmail::parse("after@example.com").unwrap()).await.unwrap();
    let claimed = store.claim_deliveries(10, 70, 1, 64).await.unwrap();
    assert_eq!(heard(&claimed), pairs(&[("after@example.com", "subscriber.created")]));
    assert_eq!(deliveries(&path), 1);
}

/// A lease queues a claim's worth of rows, the rest stay counted, and a restart in between
/// loses none of them.
#[tokio::test]
async fn the_lease_takes_a_claims_worth_and_the_rest_survive_a_restart() {
    let (_dir, path, store) = server_store().await;
    endpoint(&store, 1).await;
    for i in 0..25 {
        add(&store, &SubscriberEmail::parse(&format!("r{i}@example.com")).unwrap()).await.unwrap();
    }
    let first = store.claim_deliveries(10, 70, 1, 10).await.unwrap();
    let first: Vec<String> = first.iter().filter_map(|d| d.email.clone()).collect();
    let expected: Vec<String> = (0..10).map(|i| format!("r{i}@example.com")).collect();
    assert_eq!(first, expected);
    assert_eq!(deliveries(&path), 10);
    assert_eq!(store.outbox_backlog().await.unwrap(), vec![("webhook".to_owned(), 25, 0)]);
    store.close().await;
    drop(store);

    let options = SqliteConnectOptions::new().filename(&path);
    let reopened = SqliteStore::open(options, limits(), Role::Server).await.unwrap();
    let rest = reopened.claim_deliveries(20, 80, 2, 64).await.unwrap();
    let rest: Vec<String> = rest.iter().filter_map(|d| d.email.clone()).collect();
    let expected: Vec<String> = (10..25).map(|i| format!("r{i}@example.com")).collect();
    assert_eq!(rest, expected);
    assert_eq!(deliveries(&path), 25, "no row was queued twice");
}

/// An import queues its batch's events in its own commit, after the signups before it.
#[tokio::test]
async fn an_import_queues_the_events_of_the_rows_before_it_and_its_own() {
    let (_dir, path, store) = server_store().await;
    endpoint(&store, 1).await;
    let evidence = evidence();
    let email = SubscriberEmail::parse("signup@example.com").unwrap();
    let new = NewSubscriber { email: &email, evidence: &evidence, address_hash: [1; 32], now: 3 };
    store.add_subscriber(new).await.unwrap();
    let addresses: Vec<SubscriberEmail> = ["a@example.com", "b@example.com"]
        .iter()
        .map(|address| SubscriberEmail::parse(address).unwrap())
        .collect();
    let rows: Vec<ImportRow> = addresses
        .iter()
        .map(|email| ImportRow { email, address_hash: [2; 32], nonce: None })
        .collect();
    let batch = ImportBatch {
        rows: &rows,
        door: Door::Import,
        status: SubscriberStatus::Confirmed,
        consent: "test",
        confirm_expires_at: None,
        dry_run: false,
        now: 4,
    };
    store.import_batch(batch).await.unwrap();
    assert_eq!(deliveries(&path), 3, "the import left events to the lease");
    let claimed = store.claim_deliveries(10, 70, 1, 64).await.unwrap();
    let order: Vec<String> = claimed.iter().filter_map(|d| d.email.clone()).collect();
    assert_eq!(order, ["signup@example.com", "a@example.com", "b@example.com"]);
}

/// Signups, removals and leases started at once, round after round: every row added is heard
/// of exactly once as created, and before anything else about it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signups_removals_and_leases_at_once_queue_each_created_once_and_first() {
    const ROUNDS: usize = 20;
    const PER_ROUND: usize = 30;
    let (_dir, path, store) = server_store().await;
    endpoint(&store, ALL_EVENTS).await;
    let address = |round: usize, i: usize| format!("r{round}-{i}@example.com");
    for round in 0..ROUNDS {
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(3));
        let (s, b) = (store.clone(), start.clone());
        let signups = tokio::spawn(async move {
            b.wait().await;
            for i in 0..PER_ROUND {
                add(&s, &SubscriberEmail::parse(&address(round, i)).unwrap()).await.unwrap();
            }
        });
        let (s, b) = (store.clone(), start.clone());
        let removals = tokio::spawn(async move {
            b.wait().await;
            // Every third address of this round, whether or not its signup has landed yet.
            for i in (0..PER_ROUND).step_by(3) {
                let email = SubscriberEmail::parse(&address(round, i)).unwrap();
                let reason = [LeaveReason::Unsubscribed, LeaveReason::Erased][i % 2];
                let leaving =
                    (i % 4 != 0).then_some(Leaving { address_hash: [3; 32], reason, now: 5 });
                s.remove_subscriber(&email, leaving).await.unwrap();
            }
        });
        let (s, b) = (store.clone(), start.clone());
        let leases = tokio::spawn(async move {
            b.wait().await;
            for owner in 0..10 {
                s.claim_deliveries(10, 20, owner, 7).await.unwrap();
            }
        });
        for task in [signups, removals, leases] {
            task.await.unwrap();
        }
    }
    // One last lease long enough to pass every row left.
    store.claim_deliveries(10, 20, 99, 10_000).await.unwrap();

    let rows: Vec<(i64, String)> = rusqlite::Connection::open(&path)
        .unwrap()
        .prepare("SELECT subscriber_id, event FROM webhook_deliveries ORDER BY id")
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut heard: std::collections::HashMap<i64, Vec<&str>> = Default::default();
    for (id, event) in &rows {
        heard.entry(*id).or_default().push(event.as_str());
    }
    let erased: std::collections::HashSet<i64> =
        rows.iter().filter(|(_, e)| e == "subscriber.erased").map(|(id, _)| *id).collect();
    for (id, events) in &heard {
        if erased.contains(id) {
            assert_eq!(events, &["subscriber.erased"], "row {id}: an erased row left more");
            continue;
        }
        let first_two = events.get(..2);
        assert_eq!(
            first_two,
            Some(&["subscriber.created", "subscriber.confirmed"][..]),
            "row {id}"
        );
        assert!(
            events.len() == 2
                || events[2..] == ["subscriber.unsubscribed"]
                || events[2..] == ["subscriber.deleted"],
            "row {id}: {events:?}"
        );
    }
    let added = heard.len();
    let on_list: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("SELECT count(*) FROM subscribers", [], |row| row.get(0))
        .unwrap();
    let removed = heard.values().filter(|events| events.len() != 2).count();
    assert_eq!(added - removed, usize::try_from(on_list).unwrap(), "a row was never heard of");
    assert_eq!(added, ROUNDS * PER_ROUND, "rows heard of");
}
