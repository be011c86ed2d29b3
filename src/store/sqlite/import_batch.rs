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

pub(super) async fn run(
    c: &mut SqliteConnection,
    rows: &[OwnedImportRow],
    Columns { source, status, consent }: Columns<'_>,
    confirm_expires_at: Option<i64>,
    now: i64,
) -> anyhow::Result<ImportCounts> {
    let mut suppressed = HashSet::new();
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut select = QueryBuilder::<Sqlite>::new(
            "SELECT address_hash FROM suppressions WHERE address_hash IN (",
        );
        let mut list = select.separated(", ");
        for row in chunk {
            list.push_bind(&row.address_hash[..]);
        }
        select.push(")");
        let found: Vec<Vec<u8>> =
            select.build_query_scalar().fetch_all(&mut *c).await.context("reading suppressions")?;
        suppressed.extend(found);
    }
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
    for chunk in keep.chunks(ROWS_PER_STATEMENT) {
        let mut insert = QueryBuilder::<Sqlite>::new(
            "INSERT INTO subscribers (email, email_key, created_at, status, source, consent, \
             confirmed_at) ",
        );
        insert.push_values(chunk, |mut values, row| {
            values
                .push_bind(row.email.as_str())
                .push_bind(row.key.as_str())
                .push_bind(now)
                .push_bind(status)
                .push_bind(source)
                .push_bind(consent)
                .push_bind(confirmed_at);
        });
        insert.push(" ON CONFLICT (email_key) DO NOTHING");
        if want_keys {
            insert.push(" RETURNING CAST(email_key AS BLOB)");
            let new: Vec<Vec<u8>> = insert
                .build_query_scalar()
                .fetch_all(&mut *c)
                .await
                .context("adding subscribers")?;
            counts.added += new.len() as u64;
            added.extend(new);
        } else {
            let done = c.execute(insert.build()).await.context("adding subscribers")?;
            counts.added += done.rows_affected();
        }
    }
    counts.existing += keep.len() as u64 - counts.added;
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
