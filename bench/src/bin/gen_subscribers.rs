//! Makes a database with many subscribers quickly: the schema through enlist's own migrations,
//! then one bulk INSERT … SELECT inside the database (no HTTP, no per-row round trips).

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use enlist::config::DatabaseUrl;
use enlist::store::{PoolLimits, Store};
use sqlx::{ConnectOptions, Connection, Executor};

#[derive(Parser)]
struct Args {
    /// sqlite://FILE or postgres://…
    #[arg(long)]
    database_url: String,
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
}

/// `user<N>.<name>@<one of 100 domains>`: unique, varied enough for search to mean something
/// (`user123456.` matches one row, `mail42.example` about one in a hundred).
const SQLITE_FILL: &str = "
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
    INSERT INTO subscribers (email, email_key, created_at)
    SELECT email, lower(email), ?2 - (?1 - i)
    FROM (SELECT i, 'user' || i || '.' ||
                 substr('annabertcleodaveemmafinngrethugo', 1 + (i % 8) * 4, 4) ||
                 '@mail' || (i % 100) || '.example' AS email FROM n)";

const SQLITE_INDEX: &str = "
    INSERT INTO subscribers_search (rowid, text)
    SELECT id, CASE WHEN lower(email) = email_key THEN email_key ELSE email_key || ' ' || email END
    FROM subscribers WHERE id > (SELECT indexed_up_to FROM search_progress);
    UPDATE search_progress SET indexed_up_to = (SELECT coalesce(max(id), 0) FROM subscribers);
    UPDATE subscriber_counts SET n = (SELECT count(*) FROM subscribers WHERE status = 'confirmed')
    WHERE status = 'confirmed'";

const POSTGRES_FILL: &str = "
    INSERT INTO subscribers (email, email_key, created_at)
    SELECT email, lower(email), $2 - ($1 - i)
    FROM (SELECT i, 'user' || i || '.' ||
                 substr('annabertcleodaveemmafinngrethugo', 1 + (i % 8)::INT * 4, 4) ||
                 '@mail' || (i % 100) || '.example' AS email
          FROM generate_series(1, $1::BIGINT) AS i) AS generated";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let database = DatabaseUrl::parse(&args.database_url).map_err(anyhow::Error::msg)?;
    let limits = PoolLimits {
        pool_size: 1,
        connect_timeout: Duration::from_secs(30),
        statement_timeout: Duration::from_secs(3600),
    };
    // Migrate, then let go of the file before writing to it directly.
    let store: Arc<dyn Store> =
        enlist::store::open(&database, limits, enlist::store::Role::Tool).await?;
    let existing = store.counts().await?.on_list();
    drop(store);
    tokio::time::sleep(Duration::from_millis(200)).await;
    if existing >= args.count {
        println!("already {existing} subscribers");
        return Ok(());
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as i64;
    let count = i64::try_from(args.count)?;
    let started = Instant::now();
    match database {
        DatabaseUrl::Sqlite(options) => {
            let mut connection = options.connect().await?;
            connection.execute("PRAGMA journal_mode = WAL").await?;
            let mut transaction = connection.begin().await?;
            sqlx::query(SQLITE_FILL).bind(count).bind(now).execute(&mut *transaction).await?;
            // As a server leaves it once it has caught up: every row in the search index, and
            // counted (the server counts the rows it adds itself).
            transaction.execute(SQLITE_INDEX).await?;
            transaction.commit().await?;
            connection.execute("PRAGMA optimize").await?;
        }
        DatabaseUrl::Postgres(options) => {
            let mut connection = options.connect().await?;
            // The counter triggers would run on a million-row transition table; add the total once.
            let mut transaction = connection.begin().await?;
            transaction.execute("ALTER TABLE subscribers DISABLE TRIGGER USER").await?;
            sqlx::query(POSTGRES_FILL).bind(count).bind(now).execute(&mut *transaction).await?;
            sqlx::query(
                "UPDATE subscriber_counts SET n = n + $1 WHERE slot = 0 AND status = 'confirmed'",
            )
            .bind(count)
            .execute(&mut *transaction)
            .await?;
            transaction.execute("ALTER TABLE subscribers ENABLE TRIGGER USER").await?;
            transaction.commit().await?;
            connection.execute("VACUUM ANALYZE subscribers").await?;
        }
    }
    println!("{count} subscribers in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}
