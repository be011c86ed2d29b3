//! The backlog gauge counts the confirmations and webhook events waiting in their rows from
//! index ranges (migration `backlog_counted_from_indexes`); the rows themselves are the truth.

use std::path::Path;
use std::sync::Arc;

use super::{add, ask_confirmation, evidence, server_store};
use crate::domain::{Door, SubscriberEmail, SubscriberStatus};
use crate::store::sqlite::SqliteStore;
use crate::store::{
    ConfirmWrite, ImportBatch, ImportRow, LeaveReason, Leaving, NewEndpoint, Store,
};

/// Created 1, confirmed 2, and every event.
const CREATED: u32 = 1;
const CONFIRMED: u32 = 2;
const ALL_EVENTS: u32 = 31;

async fn endpoint(store: &SqliteStore, events: u32) -> i64 {
    let url = "http://127.0.0.1:9/hook";
    store.create_endpoint(NewEndpoint { url, secret: "s", events, now: 1 }).await.unwrap()
}

/// Confirmations waiting with their first row's time, then each enabled endpoint's events, as
/// two statements give them.
fn waiting(path: &Path, confirmations: &str, events: &str) -> (i64, Option<i64>, Vec<(i64, i64)>) {
    let c = rusqlite::Connection::open(path).unwrap();
    let (n, oldest) = c.query_row(confirmations, [], |row| Ok((row.get(0)?, row.get(1)?))).unwrap();
    let events = c
        .prepare(events)
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    (n, oldest, events)
}

/// What waits in the rows, counted one row at a time through the views that queue them.
fn counted_row_by_row(path: &Path) -> (i64, Option<i64>, Vec<(i64, i64)>) {
    waiting(
        path,
        "SELECT count(*), (SELECT created_at FROM confirmations_unqueued ORDER BY id LIMIT 1)
         FROM confirmations_unqueued",
        "SELECT e.id, (SELECT count(*) FROM created_events_unqueued AS u
                       WHERE u.endpoint_id = e.id)
         FROM webhook_endpoints AS e WHERE e.disabled_at IS NULL ORDER BY e.id",
    )
}

fn counted_from_indexes(path: &Path) -> (i64, Option<i64>, Vec<(i64, i64)>) {
    waiting(
        path,
        "SELECT n, oldest FROM confirmations_waiting",
        "SELECT endpoint_id, n FROM created_events_waiting ORDER BY endpoint_id",
    )
}

/// The whole gauge as the rows give it: queued mails and deliveries plus what waits in rows.
fn backlog_row_by_row(path: &Path) -> Vec<(String, u64, i64)> {
    let c = rusqlite::Connection::open(path).unwrap();
    c.prepare(
        "SELECT purpose, sum(n), min(oldest) FROM (
             SELECT purpose, count(*) AS n, min(created_at) AS oldest FROM outbox
             WHERE status = 'queued' GROUP BY purpose
             UNION ALL
             SELECT 'confirm', count(*), min(created_at) FROM confirmations_unqueued
             HAVING count(*) > 0
             UNION ALL
             SELECT 'webhook', count(*), min(occurred_at) FROM webhook_deliveries
             HAVING count(*) > 0
             UNION ALL
             SELECT 'webhook', count(*), min(occurred_at) FROM created_events_unqueued
             HAVING count(*) > 0)
         GROUP BY purpose ORDER BY 1",
    )
    .unwrap()
    .query_map([], |row| Ok((row.get(0)?, row.get::<_, i64>(1)?.unsigned_abs(), row.get(2)?)))
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

async fn check(store: &SqliteStore, path: &Path, when: &str) {
    assert_eq!(counted_from_indexes(path), counted_row_by_row(path), "{when}");
    assert_eq!(store.outbox_backlog().await.unwrap(), backlog_row_by_row(path), "{when}");
    for record in store.endpoints().await.unwrap() {
        let own: i64 = rusqlite::Connection::open(path)
            .unwrap()
            .query_row(
                "SELECT (SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = ?1)
                      + (SELECT count(*) FROM created_events_unqueued WHERE endpoint_id = ?1)",
                [record.id],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(record.queued, own, "{when}: endpoint {}", record.id);
    }
}

/// A pending row with no link: an address that asked three times in the window, its row
/// withdrawn each time, asks again, and its new row is refused a mail.
async fn refused_request(store: &SqliteStore, address: &str, now: i64) {
    let email = SubscriberEmail::parse(address).unwrap();
    let hash = [address.len() as u8; 32];
    for _ in 0..3 {
        ask_confirmation(store, address, now).await;
        assert!(store.remove_pending(&email, hash).await.unwrap());
    }
    let fourth = ask_confirmation(store, address, now).await;
    assert_eq!(fourth, crate::store::ConfirmationQueued::LimitReached);
}

async fn import_pending(store: &SqliteStore, round: usize, now: i64) {
    let addresses: Vec<SubscriberEmail> = (0..5)
        .map(|i| SubscriberEmail::parse(&format!("import{round}-{i}@example.com")).unwrap())
        .collect();
    let rows: Vec<ImportRow> = addresses
        .iter()
        .map(|email| ImportRow { email, address_hash: [4; 32], nonce: None })
        .collect();
    let batch = ImportBatch {
        rows: &rows,
        door: Door::Import,
        status: SubscriberStatus::Pending,
        consent: "test",
        confirm_expires_at: None,
        dry_run: false,
        now,
    };
    store.import_batch(batch).await.unwrap();
}

/// Every kind of write that adds, changes, removes or queues rows, started at once behind a
/// barrier, round after round: signups pending and confirmed, repeated addresses (whose
/// ignored inserts leave gaps in the ids), refused requests, withdrawals and removals,
/// confirmations, imports of pending rows, endpoints added and disabled, and both leases a few
/// rows at a time. After each round the counts from index ranges equal the rows' own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backlog_from_index_ranges_equals_the_rows_own_count_through_every_write() {
    const ROUNDS: usize = 20;
    const PER_ROUND: usize = 12;
    let (_dir, path, store) = server_store().await;
    endpoint(&store, ALL_EVENTS).await;
    endpoint(&store, CONFIRMED).await;
    let address = |round: usize, i: usize| format!("r{round}-{i}@example.com");
    for round in 0..ROUNDS {
        let now = 1_000 + 100 * i64::try_from(round).unwrap();
        let start = Arc::new(tokio::sync::Barrier::new(3));
        let (s, b) = (store.clone(), start.clone());
        let signups = tokio::spawn(async move {
            b.wait().await;
            for i in 0..PER_ROUND {
                if i % 4 == 3 {
                    add(&s, &SubscriberEmail::parse(&address(round, i)).unwrap()).await.unwrap();
                } else {
                    ask_confirmation(&s, &address(round, i), now).await;
                }
            }
            // The same addresses again: no new row, but an id taken by each ignored insert.
            ask_confirmation(&s, &address(round, 0), now).await;
            add(&s, &SubscriberEmail::parse(&address(round, 3)).unwrap()).await.unwrap();
            if round % 4 == 1 {
                refused_request(&s, &format!("limit-{round}@example.com"), now).await;
            }
        });
        let (s, b) = (store.clone(), start.clone());
        let removals = tokio::spawn(async move {
            b.wait().await;
            // Whether or not the signup has landed yet.
            for i in (0..PER_ROUND).step_by(5) {
                let email = SubscriberEmail::parse(&address(round, i)).unwrap();
                s.remove_pending(&email, [address(round, i).len() as u8; 32]).await.unwrap();
            }
            let email = SubscriberEmail::parse(&address(round, 7)).unwrap();
            let leaving =
                Some(Leaving { address_hash: [3; 32], reason: LeaveReason::Unsubscribed, now });
            s.remove_subscriber(&email, leaving).await.unwrap();
            if round % 5 == 2 {
                import_pending(&s, round, now).await;
            }
        });
        let (s, b, file) = (store.clone(), start.clone(), path.clone());
        let leases = tokio::spawn(async move {
            b.wait().await;
            for owner in 0..4 {
                let mails = s.claim_mail(now, now + 50, owner, 3).await.unwrap();
                if let Some(mail) = mails.iter().find(|m| m.purpose == "confirm") {
                    let client = evidence().client;
                    let hash = [mail.email.len() as u8; 32];
                    let write = ConfirmWrite {
                        confirmation_id: mail.id,
                        client: &client,
                        address_hash: hash,
                        welcome: false,
                        now,
                    };
                    s.confirm(write).await.unwrap();
                }
                s.claim_deliveries(now, now + 50, owner, 5).await.unwrap();
            }
            match round % 6 {
                3 => {
                    endpoint(&s, CREATED).await;
                }
                5 => {
                    let writer = rusqlite::Connection::open(file).unwrap();
                    writer.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
                    writer
                        .execute(
                            "UPDATE webhook_endpoints SET disabled_at = 1
                             WHERE id = (SELECT max(id) FROM webhook_endpoints
                                         WHERE disabled_at IS NULL)",
                            [],
                        )
                        .unwrap();
                }
                _ => {}
            }
        });
        for task in [signups, removals, leases] {
            task.await.unwrap();
        }
        check(&store, &path, &format!("round {round}")).await;
    }
    // New rows between ignored inserts, with nothing else moving the cursors: ids past them
    // have gaps, which the counts must not take for rows.
    for i in 0..6 {
        ask_confirmation(&store, &format!("gap{i}@example.com"), 4_000).await;
        add(&store, &SubscriberEmail::parse("gap0@example.com").unwrap()).await.unwrap();
        add(&store, &SubscriberEmail::parse(&format!("confirmed-gap{i}@example.com")).unwrap())
            .await
            .unwrap();
    }
    check(&store, &path, "after rows with gaps between them").await;
    let (confirmations, _, events) = counted_from_indexes(&path);
    assert!(confirmations > 0 && events.iter().all(|(_, n)| *n > 0), "nothing was left waiting");

    // Leases long enough to pass every row left: nothing waits in a row any more.
    store.claim_mail(5_000, 5_050, 99, 10_000).await.unwrap();
    store.claim_deliveries(5_000, 5_050, 99, 10_000).await.unwrap();
    check(&store, &path, "after the last leases").await;
    let (confirmations, oldest, events) = counted_from_indexes(&path);
    assert_eq!((confirmations, oldest), (0, None));
    assert!(events.iter().all(|(_, n)| *n == 0), "{events:?}");
}
