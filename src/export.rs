//! The list as CSV (RFC 4180): `email,status,signed_up_at,confirmed_at,source`, newest first,
//! times in RFC 3339 UTC. Read from the database in chunks along the primary key, so memory stays
//! flat whatever the size of the list, and a reader that goes away stops the reading.

use std::sync::Arc;

use anyhow::Context;
use axum::body::Bytes;
use futures_util::Stream;

use crate::domain::SubscriberStatus;
use crate::store::{Store, StoreError};

/// Rows per database read: large enough to amortise the query, small enough to stream.
const CHUNK: u32 = 20_000;

pub const HEADER: &[u8] = b"email,status,signed_up_at,confirmed_at,source\r\n";

/// The CSV, chunk by chunk: the header, then one chunk of rows per database read.
pub fn csv_chunks(
    store: Arc<dyn Store>,
    status: Option<SubscriberStatus>,
) -> impl Stream<Item = Result<Bytes, StoreError>> + Send + 'static {
    futures_util::stream::unfold(Some(None), move |cursor: Option<Option<i64>>| {
        let store = store.clone();
        async move {
            let before = cursor?;
            let chunk = match store.export_chunk(status, before, CHUNK).await {
                Ok(chunk) => chunk,
                Err(e) => return Some((Err(e), None)),
            };
            let csv = chunk.csv.unwrap_or_default();
            let mut out = Vec::with_capacity(csv.len() + HEADER.len());
            if before.is_none() {
                out.extend_from_slice(HEADER);
            }
            out.extend_from_slice(csv.as_bytes());
            // A full chunk may have more behind it; after a short one comes nothing.
            let next = (chunk.rows == i64::from(CHUNK)).then_some(chunk.last_id).flatten();
            Some((Ok(Bytes::from(out)), next.map(Some)))
        }
    })
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
