//! One import batch in SQLite: a few multi-row statements inside the writer's transaction.

use std::collections::HashSet;

use anyhow::Context;
use sqlx::{Executor, QueryBuilder, Sqlite, SqliteConnection};

use crate::store::ImportCounts;

/// One address of the batch, owned by the write.
pub(crate) struct OwnedImportRow {
    pub email: String,
    pub key: String,
    pub address_hash: [u8; 32],
    pub nonce: Option<[u8; 16]>,
}

/// SQLite takes at most 32,766 parameters a statement.
const ROWS_PER_STATEMENT: usize = 4_000;

/// What every row of a batch shares.
pub(super) struct Columns<'a> {
    pub source: &'a str,
    pub status: &'a str,
    pub consent: &'a str,
}

/// `?1` is the batch as a JSON array with one element per address: the address itself where its
/// key is the address in ASCII lower case (SQLite's `lower`), else an `[address, key]` pair.
/// Plain strings are what nearly every row is, and SQLite reads them without a second parse.
macro_rules! insert_batch {
    () => {
        "INSERT INTO subscribers (email, email_key, created_at, status, source, consent,
                                  confirmed_at)
         SELECT iif(type = 'text', value, value ->> 0), iif(type = 'text', lower(value), value ->> 1),
                ?2, ?3, ?4, ?5, ?6
         FROM json_each(?1) WHERE true
         ON CONFLICT (email_key) DO NOTHING"
    };
}
const INSERT: &str = insert_batch!();
const INSERT_RETURNING_KEYS: &str = concat!(insert_batch!(), " RETURNING CAST(email_key AS BLOB)");

/// A batch's webhook events are queued in the batch, not left to the webhook lease a claim at a
/// time: this moves the events cursor (migration `created_events_from_rows`) to the newest row,
/// which queues the events of every row it passes, the batch's last, in id order.
const QUEUE_WEBHOOKS: &str =
    "UPDATE created_events_queued SET up_to = (SELECT max(id) FROM subscribers)
    WHERE up_to < (SELECT max(id) FROM subscribers)";

pub(super) async fn run(
    c: &mut SqliteConnection,
    rows: &[OwnedImportRow],
    Columns { source, status, consent }: Columns<'_>,
    confirm_expires_at: Option<i64>,
    now: i64,
) -> anyhow::Result<ImportCounts> {
    // Most lists have few or no suppressions; the batch's hashes are only sent when some exist.
    let any_left: i64 = sqlx::query_scalar("SELECT n FROM subscriber_counts WHERE status = 'left'")
        .fetch_optional(&mut *c)
        .await
        .context("counting suppressions")?
        .unwrap_or(1);
    let suppressed: HashSet<Vec<u8>> = if any_left > 0 {
        let hashes: Vec<String> = rows.iter().map(|row| hex(&row.address_hash)).collect();
        sqlx::query_scalar(
            "SELECT address_hash FROM suppressions
             WHERE address_hash IN (SELECT unhex(value) FROM json_each(?1))",
        )
        .bind(serde_json::to_string(&hashes).context("listing the batch's hashes")?)
        .fetch_all(&mut *c)
        .await
        .context("reading suppressions")?
        .into_iter()
        .collect()
    } else {
        HashSet::new()
    };
    let mut seen = HashSet::new();
    let mut counts = ImportCounts::default();
    let keep: Vec<&OwnedImportRow> = rows
        .iter()
        .filter(|row| {
            if suppressed.contains(&row.address_hash[..]) {
                counts.suppressed += 1;
                false
            } else if !seen.insert(row.key.as_str()) {
                // The same address twice in one file: the second is already on the list.
                counts.existing += 1;
                false
            } else {
                true
            }
        })
        .collect();
    let confirmed_at = (status == "confirmed").then_some(now);
    // Which rows were new matters only for the confirmation mails of a pending import;
    // otherwise the count is enough, and far cheaper than a row back per address.
    let want_keys = confirm_expires_at.is_some();
    let mut added: HashSet<Vec<u8>> = HashSet::new();
    // The batch's addresses as one JSON parameter: SQLite reads it faster than it takes
    // thousands of separate binds.
    let addresses: Vec<Address> = keep
        .iter()
        .map(|row| {
            if row.key.bytes().eq(row.email.bytes().map(|b| b.to_ascii_lowercase())) {
                Address::Plain(&row.email)
            } else {
                Address::Keyed([&row.email, &row.key])
            }
        })
        .collect();
    let addresses = serde_json::to_string(&addresses).context("listing the batch")?;
    let insert = if want_keys { INSERT_RETURNING_KEYS } else { INSERT };
    let insert = sqlx::query(insert)
        .bind(addresses)
        .bind(now)
        .bind(status)
        .bind(source)
        .bind(consent)
        .bind(confirmed_at);
    if want_keys {
        let new = insert.fetch_all(&mut *c).await.context("adding subscribers")?;
        for row in new {
            added.insert(sqlx::Row::try_get(&row, 0).context("reading an added key")?);
        }
        counts.added += added.len() as u64;
    } else {
        counts.added += c.execute(insert).await.context("adding subscribers")?.rows_affected();
    }
    counts.existing += keep.len() as u64 - counts.added;
    if counts.added > 0 {
        // No trigger counts inserted rows (migration `signup_counts_by_the_writer`).
        sqlx::query("UPDATE subscriber_counts SET n = n + ?1 WHERE status = ?2")
            .bind(i64::try_from(counts.added).context("counting added rows")?)
            .bind(status)
            .execute(&mut *c)
            .await
            .context("counting added subscribers")?;
    }
    if counts.added > 0 {
        sqlx::query(QUEUE_WEBHOOKS)
            .execute(&mut *c)
            .await
            .context("queuing webhook events for the batch")?;
    }
    if let Some(expires_at) = confirm_expires_at {
        let mail: Vec<&&OwnedImportRow> = keep
            .iter()
            .filter(|row| row.nonce.is_some() && added.contains(row.key.as_bytes()))
            .collect();
        for chunk in mail.chunks(ROWS_PER_STATEMENT) {
            // Imported confirmations wait behind the ones people are waiting for on a page.
            let mut queue = QueryBuilder::<Sqlite>::new(
                "INSERT INTO outbox (purpose, priority, subscriber_id, nonce, expires_at, \
                 next_attempt_at, created_at) SELECT 'confirm', 1, s.id, v.column2, ",
            );
            queue.push_bind(expires_at).push(", ").push_bind(now).push(", ").push_bind(now);
            queue.push(" FROM (");
            queue.push_values(chunk, |mut values, row| {
                values.push_bind(row.key.as_str()).push_bind(row.nonce.map(|n| n.to_vec()));
            });
            queue.push(") AS v JOIN subscribers AS s ON s.email_key = v.column1");
            c.execute(queue.build()).await.context("queuing confirmation mails")?;
        }
    }
    Ok(counts)
}

/// One element of the batch's JSON array (see `insert_batch!`).
#[derive(serde::Serialize)]
#[serde(untagged)]
enum Address<'a> {
    Plain(&'a str),
    Keyed([&'a str; 2]),
}

/// For SQLite's `unhex`.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    out
}
