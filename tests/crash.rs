//! Crash safety: visitors sign up and unregister through their own sessions while the server is
//! killed with SIGKILL at random moments and started again. Whatever was acknowledged (a 303)
//! must be there afterwards, and nothing else may be half-done.

#[macro_use]
mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::smtp::{SmtpMode, SmtpServer};
use common::{Backend, TestDatabase, Visitor, browser, form_token};
use reqwest::StatusCode;

const ROUNDS: usize = 15;
const CLIENTS: usize = 6;

fn random_below(limit: u64) -> u64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("randomness");
    u64::from_le_bytes(bytes) % limit
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start(database_url: &str, dir: &Path, port: u16) -> Child {
    start_with(database_url, dir, port, &[])
}

fn start_with(database_url: &str, dir: &Path, port: u16, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_enlist"))
        .args(["--bind", &format!("127.0.0.1:{port}"), "--database-url", database_url])
        .args(extra)
        .args(["--secret-key-file", &dir.join("enlist.key").display().to_string()])
        .args(common::LIMITS_OFF)
        .env("ENLIST_ADMIN_PASSWORD", common::ADMIN_PASSWORD)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the server")
}

async fn wait_healthy(address: &str) {
    let client = common::bare_client();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = client.get(format!("{address}/healthz")).send().await;
        if answer.is_ok_and(|response| response.status() == StatusCode::OK) {
            return;
        }
        assert!(Instant::now() < deadline, "the server did not come back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the clients were told, and what they could not be sure of.
#[derive(Default)]
struct Ledger {
    signed_up: HashSet<String>,
    unregistered: HashSet<String>,
    unsure_unregister: HashSet<String>,
}

/// One visitor: sign up a fresh address, and half the time unregister it again, until stopped.
async fn visitor(id: usize, address: String, stop: Arc<AtomicBool>, ledger: Arc<Mutex<Ledger>>) {
    let visitor = Visitor { address, client: browser() };
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let email = format!("c{id}-{n}-{}@crash.example", random_below(1 << 40));
        let Ok(response) = visitor
            .client
            .post(visitor.url("/signup"))
            .headers(visitor.same_origin())
            .form(&[("email", &email)])
            .send()
            .await
        else {
            continue;
        };
        if response.status() != StatusCode::SEE_OTHER {
            continue;
        }
        ledger.lock().unwrap().signed_up.insert(email.clone());
        if random_below(2) == 0 {
            continue;
        }
        // The button on the page the visitor sees, with its token.
        let Ok(page) = visitor.client.get(visitor.url("/")).send().await else { continue };
        let Some(token) = form_token(&page.text().await.unwrap_or_default()) else { continue };
        let sent = visitor
            .client
            .post(visitor.url("/unregister"))
            .headers(visitor.same_origin())
            .form(&[("csrf_token", &token)])
            .send()
            .await;
        let mut ledger = ledger.lock().unwrap();
        match sent {
            Ok(response) if response.status() == StatusCode::SEE_OTHER => {
                ledger.unregistered.insert(email)
            }
            _ => ledger.unsure_unregister.insert(email),
        };
    }
}

on_both_backends! {
    async fn mail_queued_before_a_sigkill_is_sent_after_the_restart(backend: Backend) {
        let smtp = SmtpServer::start().await;
        smtp.set_mode(SmtpMode::Refuse);
        let dir = tempfile::tempdir().unwrap();
        let database = TestDatabase::create(&backend, dir.path()).await;
        let port = free_port();
        let address = format!("http://127.0.0.1:{port}");
        let url = smtp.url();
        let mail = ["--smtp-url", url.as_str(), "--mail-from", "news@example.org", "--mail-retry-delay", "1s"];
        let mut server = start_with(&database.url, dir.path(), port, &mail);
        wait_healthy(&address).await;
        for i in 0..5 {
            let visitor = Visitor { address: address.clone(), client: browser() };
            let response = visitor.signup(&format!("queued{i}@example.com")).await;
            assert_eq!(response.status(), StatusCode::SEE_OTHER);
        }
        // Killed while every mail waits for its next try (a kill in the middle of a send is the
        // lease's business: that mail goes again once the lease runs out).
        let deadline = Instant::now() + Duration::from_secs(15);
        let waiting = "SELECT CAST(count(*) AS TEXT) FROM outbox \
                       WHERE status = 'queued' AND attempts > 0 AND lease_until = 0";
        while database.strings(waiting).await != ["5"] {
            assert!(Instant::now() < deadline, "the outbox never tried");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.kill().expect("SIGKILL");
        server.wait().expect("reap");
        assert!(smtp.messages().is_empty());

        smtp.set_mode(SmtpMode::Accept);
        let mut server = start_with(&database.url, dir.path(), port, &mail);
        wait_healthy(&address).await;
        smtp.wait_for(5, Duration::from_secs(30)).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut recipients: Vec<String> = smtp.messages().iter().map(|m| m.to[0].clone()).collect();
        recipients.sort();
        let expected: Vec<String> = (0..5).map(|i| format!("queued{i}@example.com")).collect();
        assert_eq!(recipients, expected, "every queued mail once");
        server.kill().expect("SIGKILL");
        server.wait().expect("reap");
    }

    async fn an_announcement_cut_by_sigkill_reaches_everyone_once_after_the_restart(backend: Backend) {
        const RECIPIENTS: usize = 1_500;
        let smtp = SmtpServer::start().await;
        let dir = tempfile::tempdir().unwrap();
        let database = TestDatabase::create(&backend, dir.path()).await;
        let port = free_port();
        let address = format!("http://127.0.0.1:{port}");
        let url = smtp.url();
        let mail = ["--smtp-url", url.as_str(), "--mail-from", "news@example.org", "--mail-rate", "400"];
        let mut server = start_with(&database.url, dir.path(), port, &mail);
        wait_healthy(&address).await;
        database.add_subscribers("k", RECIPIENTS as u32, "confirmed").await;
        let admin = Visitor { address: address.clone(), client: browser() };
        admin.login_ok().await;
        let (id, _) = admin.send_announcement("Killed midway", "Sent once, whatever happens.").await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while smtp.messages().len() < 300 {
            assert!(Instant::now() < deadline, "the send never got going");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        server.kill().expect("SIGKILL");
        server.wait().expect("reap");
        let at_kill = smtp.messages().len();
        assert!(at_kill < RECIPIENTS, "killed mid-send");

        let mut server = start_with(&database.url, dir.path(), port, &mail);
        wait_healthy(&address).await;
        // A lease taken before the kill runs out (on PostgreSQL) before its mails go again.
        let deadline = Instant::now() + Duration::from_secs(150);
        let state = format!("SELECT state FROM announcements WHERE id = {id}");
        while database.strings(&state).await != ["sent"] {
            assert!(Instant::now() < deadline, "the send never finished");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server.kill().expect("SIGKILL");
        server.wait().expect("reap");

        let mut copies: std::collections::HashMap<String, Vec<String>> = Default::default();
        for message in smtp.messages() {
            let message_id = message.header("Message-ID").expect("a Message-ID");
            copies.entry(message.to[0].clone()).or_default().push(message_id);
        }
        let expected: HashSet<String> = (1..=RECIPIENTS).map(|i| format!("k{i}@bulk.example")).collect();
        assert_eq!(copies.keys().cloned().collect::<HashSet<_>>(), expected, "everyone, once at least");
        // The one repeat possible: a mail accepted by the server just before the kill, before
        // it was recorded. It goes again with the same Message-ID, which receivers drop.
        let repeated: Vec<_> = copies.iter().filter(|(_, ids)| ids.len() > 1).collect();
        for (to, ids) in &repeated {
            assert!(ids.iter().all(|id| id == &ids[0]), "{to} got two different mails: {ids:?}");
            assert_eq!(ids.len(), 2, "{to}");
        }
        assert!(repeated.len() <= 64, "repeats are bounded by the mails in flight: {}", repeated.len());
    }

    async fn acknowledged_work_survives_sigkill(backend: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let database = TestDatabase::create(&backend, dir.path()).await;
        let port = free_port();
        let address = format!("http://127.0.0.1:{port}");
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let started = Instant::now();
        let enough_work = |ledger: &Mutex<Ledger>| {
            let ledger = ledger.lock().unwrap();
            ledger.signed_up.len() >= 50 && !ledger.unregistered.is_empty()
        };
        // At least ROUNDS kills, and more on a machine too busy to do enough work in those.
        let mut round = 0;
        while round < ROUNDS || (!enough_work(&ledger) && started.elapsed() < Duration::from_secs(150)) {
            round += 1;
            let mut server = start(&database.url, dir.path(), port);
            wait_healthy(&address).await;
            let stop = Arc::new(AtomicBool::new(false));
            let clients: Vec<_> = (0..CLIENTS)
                .map(|id| tokio::spawn(visitor(id, address.clone(), stop.clone(), ledger.clone())))
                .collect();
            tokio::time::sleep(Duration::from_millis(150 + random_below(450))).await;
            server.kill().expect("SIGKILL");
            server.wait().expect("reap");
            stop.store(true, Ordering::Relaxed);
            for client in clients {
                client.await.unwrap();
            }
        }
        assert!(started.elapsed() < Duration::from_secs(180), "bounded to three minutes");

        let ledger = std::mem::take(&mut *ledger.lock().unwrap());
        assert!(ledger.signed_up.len() >= 50, "too little work to prove anything: {}", ledger.signed_up.len());
        assert!(!ledger.unregistered.is_empty());
        let stored: HashSet<String> =
            database.strings("SELECT email FROM subscribers").await.into_iter().collect();
        for email in &ledger.signed_up {
            if !ledger.unregistered.contains(email) && !ledger.unsure_unregister.contains(email) {
                assert!(stored.contains(email), "acknowledged signup of {email} was lost");
            }
        }
        for email in &ledger.unregistered {
            assert!(!stored.contains(email), "acknowledged unregister of {email} was undone");
        }
        let duplicates = database
            .strings("SELECT email_key FROM subscribers GROUP BY email_key HAVING count(*) > 1")
            .await;
        assert!(duplicates.is_empty(), "{duplicates:?}");
        let counted = database.count("subscribers").await;
        let on_list = database
            .strings("SELECT CAST(sum(n) AS TEXT) FROM subscriber_counts WHERE status <> 'left'")
            .await;
        assert_eq!(on_list[0].parse::<i64>().unwrap(), counted, "the maintained count");
        let left = database
            .strings("SELECT CAST(sum(n) AS TEXT) FROM subscriber_counts WHERE status = 'left'")
            .await;
        assert_eq!(left[0].parse::<i64>().unwrap(), database.count("suppressions").await, "who left");
        if !database.is_postgres() {
            assert_eq!(database.strings("PRAGMA integrity_check").await, ["ok"]);
            let indexed = database.strings("SELECT CAST(count(*) AS TEXT) FROM subscribers_search").await;
            // The index trails the list by the rows the writer had not reached yet.
            let due = database
                .strings(
                    "SELECT CAST(count(*) AS TEXT) FROM subscribers
                     WHERE id <= (SELECT indexed_up_to FROM search_progress)",
                )
                .await;
            assert_eq!(indexed[0], due[0], "the search index");
        } else {
            // Every row waits in the backlog or is in the index, never both, never neither; and
            // neither holds a row that is gone.
            let misplaced = database
                .strings(
                    "SELECT CAST(count(*) AS TEXT) FROM subscribers AS s
                     WHERE (SELECT count(*) FROM search_backlog AS b WHERE b.id = s.id)
                         + (SELECT count(*) FROM subscriber_search AS x WHERE x.id = s.id) <> 1",
                )
                .await;
            assert_eq!(misplaced, ["0"], "rows in the search backlog and index");
            let stray = database
                .strings(
                    "SELECT CAST(count(*) AS TEXT) FROM search_backlog AS b
                     WHERE NOT EXISTS (SELECT 1 FROM subscribers AS s WHERE s.id = b.id)",
                )
                .await;
            assert_eq!(stray, ["0"], "backlog rows of deleted subscribers");
            let orphans = database
                .strings(
                    "SELECT CAST(count(*) AS TEXT) FROM subscriber_search AS x
                     WHERE NOT EXISTS (SELECT 1 FROM subscribers AS s WHERE s.id = x.id)",
                )
                .await;
            assert_eq!(orphans, ["0"], "indexed addresses of deleted subscribers");
        }
    }
}
