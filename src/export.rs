//! The list as CSV (RFC 4180): `email,status,signed_up_at,confirmed_at,source`, newest first,
//! times in RFC 3339 UTC. Read from the database in chunks along the primary key, so memory stays
//! flat whatever the size of the list, and a reader that goes away stops the reading.

use std::sync::Arc;

use anyhow::Context;
use axum::body::Bytes;
use futures_util::Stream;

use crate::domain::SubscriberStatus;
use crate::store::{Store, StoreError, newest_id};

/// Ids per database read: about 20,000 rows on a list with few deletions; large enough to
/// amortise the query, small enough to stream.
const CHUNK: i64 = 20_000;
/// Chunks read at once: one per core of a small machine, while the previous one is sent.
const READ_AHEAD: usize = 2;

pub const HEADER: &[u8] = b"email,status,signed_up_at,confirmed_at,source\r\n";

/// The CSV, chunk by chunk: the header, then one chunk per id range, newest first. The ranges
/// are fixed at the start (rows that arrive later are not part of this export), which lets two
/// of them be read at once.
pub fn csv_chunks(
    store: Arc<dyn Store>,
    status: Option<SubscriberStatus>,
) -> impl Stream<Item = Result<Bytes, StoreError>> + Send + 'static {
    use futures_util::StreamExt;
    let newest = {
        let store = store.clone();
        async move { newest_id(store.as_ref()).await }
    };
    futures_util::stream::once(newest)
        .map(move |newest| {
            let store = store.clone();
            let ranges: Box<dyn Iterator<Item = (i64, i64)> + Send> = match newest {
                Ok(newest) => Box::new(
                    (0..=newest / CHUNK)
                        .rev()
                        .map(move |n| (((n + 1) * CHUNK).min(newest + 1), n * CHUNK)),
                ),
                Err(_) => Box::new(std::iter::empty()),
            };
            let first =
                futures_util::stream::once(
                    async move { newest.map(|_| Bytes::from_static(HEADER)) },
                );
            let rows = futures_util::stream::iter(ranges)
                .map(move |(below, from)| {
                    let store = store.clone();
                    async move {
                        let chunk = store.export_chunk(status, below, from).await?;
                        Ok(Bytes::from(chunk.csv.unwrap_or_default()))
                    }
                })
                .buffered(READ_AHEAD);
            first.chain(rows)
        })
        .flatten()
}

/// Writes the whole export to `out`, returning how many rows it held.
pub async fn write_all(
    store: Arc<dyn Store>,
    status: Option<SubscriberStatus>,
    out: &mut (impl tokio::io::AsyncWrite + Unpin),
) -> anyhow::Result<u64> {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    let mut rows = 0u64;
    let mut chunks = std::pin::pin!(csv_chunks(store, status));
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| e.0)?;
        rows += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
        out.write_all(&chunk).await.context("writing the export")?;
    }
    out.flush().await.context("writing the export")?;
    Ok(rows.saturating_sub(1))
}
