//! The disk's durable-commit ceiling: single-row INSERT transactions, one after another, on SQLite
//! in WAL mode with synchronous=FULL (an fsync per commit). No HTTP, no batching: the number
//! group commit is measured against.

use std::str::FromStr;
use std::time::{Duration, Instant};

use clap::Parser;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Executor};

#[derive(Parser)]
struct Args {
    /// A file on the disk to measure (it is replaced).
    #[arg(long)]
    file: String,
    /// How long to keep committing.
    #[arg(long, default_value = "5")]
    seconds: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", args.file));
    }
    let mut connection = SqliteConnectOptions::from_str(&format!("sqlite://{}", args.file))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .connect()
        .await?;
    connection.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, email TEXT NOT NULL)").await?;
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut commits = 0u64;
    while Instant::now() < deadline {
        sqlx::query("INSERT INTO t (email) VALUES (?)")
            .bind(format!("ceiling{commits}@bench.example"))
            .execute(&mut connection)
            .await?;
        commits += 1;
    }
    let per_second = commits as f64 / started.elapsed().as_secs_f64();
    println!("{per_second:.0}");
    Ok(())
}
