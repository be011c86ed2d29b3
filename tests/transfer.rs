//! Getting the list out and in: the CSV export (admin page and CLI) and the import (CLI and the
//! admin page's upload), with suppression, idempotence, invalid lines and the SQLite lock.

#[macro_use]
mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::smtp::SmtpServer;
use common::{
    Backend, Visitor, assert_is_redirect_to, browser, form_token, spawn_app, spawn_app_with,
};
use reqwest::StatusCode;

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn last_line(output: &Output) -> String {
    stderr(output).trim().lines().last().unwrap_or_default().to_owned()
}

async fn csv_of(admin: &Visitor, path: &str) -> String {
    let response = admin.get(path).await;
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    assert_eq!(response.headers()["content-type"], "text/csv; charset=utf-8");
    assert!(response.headers()["content-disposition"].to_str().unwrap().starts_with("attachment"));
    response.text().await.unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Presses Import on the admin page with this file.
async fn upload(
    admin: &Visitor,
    name: &str,
    bytes: Vec<u8>,
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let token = form_token(&admin.get_html("/admin").await).expect("a form token");
    let mut form = reqwest::multipart::Form::new().text("csrf_token", token);
    for (key, value) in extra {
        form = form.text(key.to_string(), value.to_string());
    }
    let part = reqwest::multipart::Part::bytes(bytes)
        .file_name(name.to_owned())
        .mime_str("text/csv")
        .unwrap();
    form = form.part("file", part);
    admin
        .client
        .post(admin.url("/admin/import"))
        .headers(admin.same_origin())
        .multipart(form)
        .send()
        .await
        .unwrap()
}

/// `n123@bulk.example,...` -> 123
fn number_of(row: &str) -> u32 {
    row.strip_prefix('n')
        .and_then(|rest| rest.split('@').next())
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("not a bulk row: {row}"))
}

on_both_backends! {
    async fn the_admin_exports_the_list_as_csv(backend: Backend) {
        let app = spawn_app(backend).await;
        for email in ["first@example.com", "Second@Example.com", "o'neil@example.com"] {
            assert_is_redirect_to(&app.other_visitor().signup(email).await, "/");
        }
        assert_is_redirect_to(&app.get("/admin/export.csv").await, "/admin/login");
        let admin = app.other_visitor();
        admin.login_ok().await;
        let csv = csv_of(&admin, "/admin/export.csv").await;
        let lines: Vec<&str> = csv.split("\r\n").collect();
        assert_eq!(lines[0], "email,status,signed_up_at,confirmed_at,source");
        assert!(lines[1].starts_with("o'neil@example.com,confirmed,20"), "newest first: {csv}");
        assert!(lines[2].starts_with("Second@example.com,confirmed,"));
        assert!(lines[3].starts_with("first@example.com,confirmed,"));
        assert_eq!(lines[4], "", "every line ends with CRLF");
        assert_eq!(lines.len(), 5);
        let fields: Vec<&str> = lines[3].split(',').collect();
        assert_eq!(fields.len(), 5);
        assert!(fields[2].ends_with('Z') && fields[2].contains('T') && fields[2].len() == 20, "{}", fields[2]);
        assert_eq!(fields[4], "form");
        let pending = csv_of(&admin, "/admin/export.csv?status=pending").await;
        assert_eq!(pending, "email,status,signed_up_at,confirmed_at,source\r\n");
        assert_eq!(admin.get("/admin/export.csv?status=gone").await.status(), StatusCode::BAD_REQUEST);
    }

    async fn an_export_of_many_rows_streams_them_all_in_order(backend: Backend) {
        let app = spawn_app(backend).await;
        let insert = if app.database.is_postgres() {
            "INSERT INTO subscribers (email, email_key, created_at) SELECT 'n' || i || '@bulk.example', 'n' || i || '@bulk.example', i FROM generate_series(1, 45000) AS i"
        } else {
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 45000) INSERT INTO subscribers (email, email_key, created_at) SELECT 'n' || i || '@bulk.example', 'n' || i || '@bulk.example', i FROM n"
        };
        app.database.execute(insert).await;
        app.database.count_rows_added_by_hand("confirmed", 45000).await;
        let admin = app.other_visitor();
        admin.login_ok().await;
        let csv = csv_of(&admin, "/admin/export.csv").await;
        let rows: Vec<&str> = csv.lines().skip(1).collect();
        assert_eq!(rows.len(), 45000, "more than two chunks of 20,000");
        assert!(rows[0].starts_with("n45000@bulk.example,"));
        assert!(rows[44999].starts_with("n1@bulk.example,confirmed,1970-01-01T00:00:01Z,"));
        let numbers: Vec<u32> = rows.iter().map(|row| number_of(row)).collect();
        assert!(numbers.windows(2).all(|pair| pair[0] == pair[1] + 1), "newest first, row by row");

        // A stretch of deleted ids (a whole chunk's worth) leaves no gap or repeat in the file.
        app.database.execute("DELETE FROM subscribers WHERE id > 15000 AND id <= 42000").await;
        let csv = csv_of(&admin, "/admin/export.csv").await;
        let rows: Vec<&str> = csv.lines().skip(1).collect();
        assert_eq!(rows.len(), 18000);
        assert!(rows[0].starts_with("n45000@bulk.example,"));
        assert!(rows[2999].starts_with("n42001@bulk.example,"));
        assert!(rows[3000].starts_with("n15000@bulk.example,"));
    }

    async fn the_admin_imports_a_file_and_importing_it_again_adds_nothing(backend: Backend) {
        let app = spawn_app(backend).await;
        assert_is_redirect_to(&app.other_visitor().signup("already@example.com").await, "/");
        let admin = app.other_visitor();
        admin.login_ok().await;
        let file = "Name;E-Mail;Since\r\nAda;ada@example.com;2020\r\nAlready;ALREADY@example.com;x\r\nBad;not-an-address;x\r\n;;\r\n\"Quoted; name\";\"bob@example.com\";x\r\nAda again;Ada@Example.com;x\r\n";
        let response = upload(&admin, "people.csv", file.as_bytes().to_vec(), &[]).await;
        assert_eq!(response.status(), StatusCode::OK);
        let page = common::unescape(&response.text().await.unwrap());
        assert!(page.contains("people.csv: 6 rows."), "{page}");
        assert!(page.contains("<dt>Added</dt><dd>2</dd>"), "{page}");
        assert!(page.contains("<dt>Already on the list</dt><dd>2</dd>"), "{page}");
        assert!(page.contains("<dt>Invalid</dt><dd>2</dd>"), "{page}");
        assert!(page.contains("<td>4</td><td>Please enter a complete address"), "{page}");
        assert!(page.contains("<td>5</td><td>Please enter your email address."), "{page}");
        let mut emails = app.subscriber_emails().await;
        emails.sort();
        assert_eq!(emails, ["ada@example.com", "already@example.com", "bob@example.com"]);
        let source = app.database.strings("SELECT source || ' ' || status || ' ' || consent FROM subscribers WHERE email = 'bob@example.com'").await;
        assert_eq!(source, ["import confirmed import of people.csv"]);

        // Again: nothing new.
        let page = upload(&admin, "people.csv", file.as_bytes().to_vec(), &[]).await.text().await.unwrap();
        assert!(page.contains("<dt>Added</dt><dd>0</dd>") && page.contains("<dt>Already on the list</dt><dd>4</dd>"));
        // A dry run counts and writes nothing.
        let page = upload(&admin, "more.csv", b"carol@example.com\ndave@example.com\n".to_vec(), &[("dry_run", "1")]).await.text().await.unwrap();
        assert!(page.contains("Would be added</dt><dd>2</dd>"), "{page}");
        assert_eq!(app.count_rows("subscribers").await, 3);
        // Without the page's token, nothing happens.
        let form = reqwest::multipart::Form::new()
            .text("csrf_token", "forged")
            .part("file", reqwest::multipart::Part::bytes(b"eve@example.com\n".to_vec()).file_name("x.csv"));
        let forged = admin.client.post(admin.url("/admin/import")).headers(admin.same_origin()).multipart(form).send().await.unwrap();
        assert_eq!(forged.status(), StatusCode::FORBIDDEN);
        assert_eq!(app.count_rows("subscribers").await, 3);
        // Not logged in: the login page, and nothing read.
        let stranger = Visitor { address: app.address.clone(), client: browser() };
        let form = reqwest::multipart::Form::new()
            .part("file", reqwest::multipart::Part::bytes(b"eve@example.com\n".to_vec()).file_name("x.csv"));
        let response = stranger.client.post(stranger.url("/admin/import")).headers(stranger.same_origin()).multipart(form).send().await.unwrap();
        assert_is_redirect_to(&response, "/admin/login");
        // Over 64 MiB declared: refused before a byte is read.
        let huge = admin
            .client
            .post(admin.url("/admin/import"))
            .headers(admin.same_origin())
            .header("content-type", "multipart/form-data; boundary=x")
            .header("content-length", (65 * 1024 * 1024).to_string())
            .body(vec![b'x'; 1024])
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        if let Ok(response) = huge {
            assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        }
        // Forms elsewhere keep their 16 KiB limit.
        let big_form = admin.post_form("/signup", &[("email", &"a".repeat(20_000))]).await;
        assert_eq!(big_form.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    async fn an_upload_larger_than_the_extractors_default_limit_is_read_whole(backend: Backend) {
        // 100,000 rows, 3 MB: past axum's 2 MiB default, which only the upload's route raises.
        let app = spawn_app(backend).await;
        let admin = app.other_visitor();
        admin.login_ok().await;
        let file: String = (0..100_000).map(|n| format!("big{n:06}@upload-size.example\n")).collect();
        assert!(file.len() > 2 * 1024 * 1024);
        let response = upload(&admin, "big.csv", file.into_bytes(), &[("dry_run", "1")]).await;
        assert_eq!(response.status(), StatusCode::OK);
        let page = common::unescape(&response.text().await.unwrap());
        assert!(page.contains("big.csv: 100,000 rows."), "{page}");
        assert!(page.contains("Would be added</dt><dd>100,000</dd>"), "{page}");
        assert_eq!(app.count_rows("subscribers").await, 0);
    }

    async fn an_import_never_puts_back_someone_who_left(backend: Backend) {
        let smtp = SmtpServer::start().await;
        let url = smtp.url();
        let app = spawn_app_with(backend, &["--smtp-url", &url, "--mail-from", "news@example.org", "--mail-retry-delay", "1s"]).await;
        // Someone signs up, confirms, and leaves with the link in their mail.
        assert_is_redirect_to(&app.signup("gone@example.com").await, "/");
        let mail = smtp.wait_for(1, Duration::from_secs(15)).await.remove(0);
        let unsubscribe = mail.link(&format!("{}/u/", app.address)).unwrap();
        let path = unsubscribe.strip_prefix(&app.address).unwrap().to_owned();
        assert_is_redirect_to(&app.other_visitor().post_form(&path, &[]).await, "/left");
        let admin = app.other_visitor();
        admin.login_ok().await;
        let page = upload(&admin, "list.csv", b"email\ngone@example.com\nGONE@example.com\nnew@example.com\n".to_vec(), &[]).await.text().await.unwrap();
        assert!(page.contains("<dd>1</dd>") && page.contains("Left the list before (not added back)</dt><dd>2</dd>"), "{page}");
        assert_eq!(app.subscriber_emails().await, ["new@example.com"]);
        // A pending import sends each new address a confirmation mail, through the outbox.
        let page = upload(&admin, "ask.csv", b"ask1@example.com\nask2@example.com\nnew@example.com\n".to_vec(), &[("as", "pending")]).await.text().await.unwrap();
        assert!(page.contains("<dt>Added</dt><dd>2</dd>"), "{page}");
        let mails = smtp.wait_for(3, Duration::from_secs(15)).await;
        let mut to: Vec<String> = mails[1..].iter().map(|m| m.to[0].clone()).collect();
        to.sort();
        assert_eq!(to, ["ask1@example.com", "ask2@example.com"]);
        assert!(mails[1].link(&format!("{}/confirm/", app.address)).is_some());
        let statuses = app.database.strings("SELECT status FROM subscribers WHERE email LIKE 'ask%'").await;
        assert_eq!(statuses, ["pending", "pending"]);
    }

    async fn an_import_whose_batches_repeat_addresses_adds_each_once(backend: Backend) {
        let mut app = spawn_app(backend).await;
        if !app.database.is_postgres() {
            app.stop().await;
        }
        // Two batches of 10,000 hold the same addresses in opposite orders (and letter cases);
        // a third holds new ones.
        let mut text = String::from("email\n");
        for i in 0..10_000 {
            text.push_str(&format!("shared{i}@example.com\n"));
        }
        for i in (0..10_000).rev() {
            text.push_str(&format!("Shared{i}@Example.COM\n"));
        }
        for i in 0..5_000 {
            text.push_str(&format!("new{i}@example.com\n"));
        }
        let file = write(app.dir.path(), "overlap.csv", &text);
        let done = app.tool(&["import", &file]);
        assert!(done.status.success(), "{}", stderr(&done));
        assert_eq!(last_line(&done), "import: 25000 rows: added 15000, already on the list 10000, suppressed 0, invalid 0");
        let again = app.tool(&["import", &file]);
        assert_eq!(last_line(&again), "import: 25000 rows: added 0, already on the list 25000, suppressed 0, invalid 0");
        assert_eq!(app.count_rows("subscribers").await, 15_000);
    }

    async fn batches_committing_at_once_that_share_addresses_never_deadlock(backend: Backend) {
        use enlist::config::DatabaseUrl;
        use enlist::domain::{Door, SubscriberEmail, SubscriberStatus};
        use enlist::store::{ImportBatch, ImportRow, PoolLimits};

        let dir = tempfile::tempdir().unwrap();
        let database = common::TestDatabase::create(&backend, dir.path()).await;
        let limits = PoolLimits {
            pool_size: 4,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
        };
        let url = DatabaseUrl::parse(&database.url).unwrap();
        let store = enlist::store::open(&url, limits, enlist::store::Role::Tool).await.unwrap();
        let now = enlist::session::unix_now();
        for round in 0..5u8 {
            // The same 2,000 addresses, one batch in each order: inserted row by row in the
            // order given, the two would each wait for a row the other holds.
            let emails: Vec<SubscriberEmail> = (0..2_000)
                .map(|i| SubscriberEmail::parse(&format!("r{round}.{i}@example.com")).unwrap())
                .collect();
            let rows = |order: Vec<usize>| -> Vec<ImportRow<'_>> {
                order
                    .into_iter()
                    .map(|i| {
                        let mut hash = [round; 32];
                        hash[..8].copy_from_slice(&(i as u64).to_le_bytes());
                        ImportRow { email: &emails[i], address_hash: hash, nonce: None }
                    })
                    .collect()
            };
            let forward = rows((0..emails.len()).collect());
            let backward = rows((0..emails.len()).rev().collect());
            let batch = |rows| ImportBatch {
                door: Door::Import,
                rows,
                status: SubscriberStatus::Confirmed,
                consent: "import of test.csv",
                confirm_expires_at: None,
                dry_run: false,
                now,
            };
            let (a, b) = tokio::join!(store.import_batch(batch(&forward)), store.import_batch(batch(&backward)));
            let (a, b) = (a.expect("the forward batch"), b.expect("the backward batch"));
            assert_eq!(a.added + b.added, 2_000, "round {round}");
            assert_eq!(a.existing + b.existing, 2_000, "round {round}");
        }
        assert_eq!(database.count("subscribers").await, 10_000);
        store.close().await;
    }

    async fn deletes_racing_the_search_indexer_leave_no_address_behind(backend: Backend) {
        use enlist::config::DatabaseUrl;
        use enlist::domain::{Door, SubscriberEmail, SubscriberStatus};
        use enlist::store::{ImportBatch, ImportRow, PoolLimits};

        let dir = tempfile::tempdir().unwrap();
        let database = common::TestDatabase::create(&backend, dir.path()).await;
        let limits = PoolLimits {
            pool_size: 4,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
        };
        let url = DatabaseUrl::parse(&database.url).unwrap();
        let store = enlist::store::open(&url, limits, enlist::store::Role::Server).await.unwrap();
        let now = enlist::session::unix_now();
        for round in 0..3u8 {
            let emails: Vec<SubscriberEmail> = (0..12_000)
                .map(|i| SubscriberEmail::parse(&format!("race{round}.{i}@example.com")).unwrap())
                .collect();
            let rows: Vec<ImportRow<'_>> = emails
                .iter()
                .enumerate()
                .map(|(i, email)| {
                    let mut hash = [round; 32];
                    hash[..8].copy_from_slice(&(i as u64).to_le_bytes());
                    ImportRow { email, address_hash: hash, nonce: None }
                })
                .collect();
            let batch = ImportBatch {
                door: Door::Import,
                rows: &rows,
                status: SubscriberStatus::Confirmed,
                consent: "import of race.csv",
                confirm_expires_at: None,
                dry_run: false,
                now,
            };
            store.import_batch(batch).await.unwrap();
            let ids: Vec<i64> = database
                .strings(&format!("SELECT CAST(id AS TEXT) FROM subscribers WHERE email LIKE 'race{round}.%' ORDER BY id"))
                .await
                .iter()
                .map(|id| id.parse().unwrap())
                .collect();
            // Every other row goes, in small deletes, while the indexer moves rows at full speed.
            let doomed: Vec<i64> = ids.iter().copied().step_by(2).collect();
            let deleting = async {
                for chunk in doomed.chunks(200) {
                    store.remove_subscribers(chunk).await.unwrap();
                }
            };
            let indexing = async {
                while store.index_for_search().await.unwrap() > 0 {}
            };
            tokio::join!(deleting, indexing);
            while store.index_for_search().await.unwrap() > 0 {}
        }
        if database.is_postgres() {
            let stray = database
                .strings("SELECT CAST(count(*) AS TEXT) FROM subscriber_search AS x WHERE NOT EXISTS (SELECT 1 FROM subscribers AS s WHERE s.id = x.id)")
                .await;
            assert_eq!(stray, ["0"], "an address outlived its row in the index");
            assert_eq!(database.count("search_backlog").await, 0);
            assert_eq!(database.count("subscriber_search").await, 18_000);
        }
        assert_eq!(database.count("subscribers").await, 18_000);
        store.close().await;
    }

    async fn the_cli_imports_and_exports(backend: Backend) {
        let mut app = spawn_app(backend).await;
        assert_is_redirect_to(&app.signup("web@example.com").await, "/");
        let file = write(app.dir.path(), "list.csv", "mail,name\nx1@example.com,a\nweb@example.com,b\nbroken,c\n");
        if !app.database.is_postgres() {
            // The running server owns the SQLite file: the CLI says which ways in to use.
            let refused = app.tool(&["import", &file]);
            assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
            let message = last_line(&refused);
            assert!(message.contains("a running enlist server holds") && message.contains("admin page") && message.contains("API"), "{message}");
            assert_eq!(stderr(&refused).trim().lines().count(), 1);
            let export = app.tool(&["export"]);
            assert!(last_line(&export).contains("Export CSV"), "{}", stderr(&export));
            app.stop().await;
        }
        let dry = app.tool(&["import", &file, "--dry-run"]);
        assert!(dry.status.success(), "{}", stderr(&dry));
        assert_eq!(last_line(&dry), "import: 3 rows: would add 1, already on the list 1, suppressed 0, invalid 1");
        assert!(stderr(&dry).contains("line 4: Please enter a complete address"), "{}", stderr(&dry));
        let done = app.tool(&["import", &file]);
        assert!(done.status.success(), "{}", stderr(&done));
        assert_eq!(last_line(&done), "import: 3 rows: added 1, already on the list 1, suppressed 0, invalid 1");
        let again = app.tool(&["import", &file]);
        assert_eq!(last_line(&again), "import: 3 rows: added 0, already on the list 2, suppressed 0, invalid 1");

        let out = app.dir.path().join("out.csv");
        let export = app.tool(&["export", "--output", &out.display().to_string()]);
        assert!(export.status.success(), "{}", stderr(&export));
        assert_eq!(last_line(&export), "export: 2 rows");
        let csv = std::fs::read_to_string(&out).unwrap();
        assert!(csv.starts_with("email,status,signed_up_at,confirmed_at,source\r\nx1@example.com,confirmed,"), "{csv}");
        assert!(csv.contains("\r\nweb@example.com,confirmed,"));
        let stdout = app.tool(&["export", "--status", "pending"]);
        assert_eq!(String::from_utf8_lossy(&stdout.stdout), "email,status,signed_up_at,confirmed_at,source\r\n");
        let bad = app.tool(&["export", "--status", "left"]);
        assert_eq!(bad.status.code(), Some(2));
        let pending = app.tool(&["import", &file, "--as", "pending"]);
        assert_eq!(pending.status.code(), Some(2), "{}", stderr(&pending));
        assert!(last_line(&pending).contains("--smtp-url"));
        let missing = app.tool(&["import", "/no/such/file.csv"]);
        assert_eq!(missing.status.code(), Some(1));
        assert!(last_line(&missing).contains("/no/such/file.csv"));
    }
}

/// Ctrl-C during a long import: the batch in hand is committed, the last line says how far it
/// got, and running the same file again adds exactly the rest. Without a terminal, progress is
/// a plain line about once a second.
#[tokio::test]
async fn ctrl_c_stops_an_import_after_a_batch_and_running_it_again_finishes() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let app = common::prepare_app(Backend::Sqlite, &[], None).await;
    let mut csv = String::from("email\n");
    for n in 0..200_000 {
        csv.push_str(&format!("bulk{n}@big.example\n"));
    }
    let file = write(app.dir.path(), "big.csv", &csv);
    let mut child = app
        .tool_command(&["import", &file])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(
        first.starts_with("import: ") && first.contains("rows read") && first.contains("rows/s"),
        "{first}"
    );
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(child.wait().unwrap().success(), "an interrupted import is not a failure: {rest:?}");
    let last = rest.last().cloned().unwrap_or_default();
    assert!(
        last.contains("stopped after line") && last.contains("run the same file again"),
        "{last}"
    );
    let added: u64 =
        last.split("added ").nth(1).unwrap().split(',').next().unwrap().parse().unwrap();
    assert!(added > 0 && added < 200_000, "{last}");
    assert_eq!(added % enlist::import::BATCH as u64, 0, "whole batches only: {last}");
    assert_eq!(app.count_rows("subscribers").await as u64, added);

    let again = app.tool(&["import", &file]);
    assert!(again.status.success(), "{}", stderr(&again));
    let expected = format!(
        "import: 200000 rows: added {}, already on the list {added}, suppressed 0, invalid 0",
        200_000 - added
    );
    assert_eq!(last_line(&again), expected);
    assert_eq!(app.count_rows("subscribers").await, 200_000);
}
