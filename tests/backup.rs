//! `enlist backup`: a consistent copy taken while the server keeps writing, which passes
//! SQLite's integrity check, holds every signup acknowledged before the backup began, and
//! serves as the database of a new server.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::{Backend, bare_client, spawn_app};

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_write_load_is_whole_and_restores() {
    let app = spawn_app(Backend::Sqlite).await;
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    // Four writers, each a new visitor per signup, as fast as the server answers.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (address, acknowledged, stop) =
                (app.visitor.address.clone(), acknowledged.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let email = format!("load{w}-{n}@backup.example");
                    let response = bare_client()
                        .post(format!("{address}/signup"))
                        .header("origin", &address)
                        .header("sec-fetch-site", "same-origin")
                        .form(&[("email", email.as_str())])
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), reqwest::StatusCode::SEE_OTHER);
                    acknowledged.lock().unwrap().push(email);
                    n += 1;
                }
            })
        })
        .collect();
    while acknowledged.lock().unwrap().len() < 300 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let before: BTreeSet<String> = acknowledged.lock().unwrap().iter().cloned().collect();
    let copy = app.dir.path().join("copy.db");
    let copy_arg = copy.display().to_string();
    let backup = tokio::task::spawn_blocking({
        let command = app.tool_command(&["backup", &copy_arg]).output();
        move || command
    });
    let output = backup.await.unwrap().unwrap();
    let during = acknowledged.lock().unwrap().len();
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).starts_with("backup: ") && stderr(&output).contains("integrity ok"));
    assert!(during > before.len(), "the server kept writing while the backup ran");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&copy).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "a backup is personal data");

    let copied = rows_read_by_python(&copy).await;
    for email in &before {
        assert!(
            copied.contains(email),
            "{email} was acknowledged before the backup and is missing"
        );
    }

    // Restoring is pointing --database-url at the copy (with the same key): enlist opens it
    // and has every row.
    let key = app.dir.path().join("enlist.key").display().to_string();
    let export = std::process::Command::new(env!("CARGO_BIN_EXE_enlist"))
        .args([
            "export",
            "--database-url",
            &format!("sqlite://{copy_arg}"),
            "--secret-key-file",
            &key,
        ])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(export.status.success(), "{}", stderr(&export));
    let exported: BTreeSet<String> = String::from_utf8_lossy(&export.stdout)
        .lines()
        .skip(1)
        .map(|line| line.split(',').next().unwrap().to_owned())
        .collect();
    assert_eq!(exported, copied);

    // Never over an existing file.
    let again = app.tool(&["backup", &copy_arg]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("exists already"), "{}", stderr(&again));
}

#[tokio::test]
async fn postgres_is_backed_up_with_pg_dump() {
    let Some(backend) = Backend::postgres() else { return };
    let app = spawn_app(backend).await;
    let output = app.tool(&["backup", &app.dir.path().join("x.db").display().to_string()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("pg_dump"), "{}", stderr(&output));
}

/// The addresses in a SQLite file, read with the sqlite3 module of the standard Python, which
/// also runs the integrity check: a reader nobody here wrote.
async fn rows_read_by_python(path: &std::path::Path) -> BTreeSet<String> {
    let script = "import sqlite3, sys\n\
        db = sqlite3.connect(sys.argv[1])\n\
        assert db.execute('PRAGMA integrity_check').fetchone()[0] == 'ok'\n\
        for (email,) in db.execute('SELECT email FROM subscribers'): print(email)";
    let output = std::process::Command::new("python3")
        .args(["-c", script, &path.display().to_string()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned).collect()
}
