//! The list as CSV (RFC 4180): `email,status,signed_up_at,confirmed_at,source`, newest first,
//! times in RFC 3339 UTC. Read from the database in chunks along the primary key, so memory stays
//! flat whatever the size of the list, and a reader that goes away stops the reading.

use std::sync::Arc;

use anyhow::Context;
use axum::body::Bytes;
use futures_util::Stream;

use crate::domain::SubscriberStatus;
use crate::store::{ExportRow, Store, StoreError};

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
            let rows = match store.export_chunk(status, before, CHUNK).await {
                Ok(rows) => rows,
                Err(e) => return Some((Err(e), None)),
            };
            let next = (rows.len() == CHUNK as usize).then(|| rows.last().map(|r| r.id)).flatten();
            let mut out = Vec::with_capacity(rows.len() * 96 + HEADER.len());
            if before.is_none() {
                out.extend_from_slice(HEADER);
            }
            for row in &rows {
                write_row(&mut out, row);
            }
            // After the last chunk comes nothing: `None` ends the stream.
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

fn write_row(out: &mut Vec<u8>, row: &ExportRow) {
    field(out, &row.email);
    out.push(b',');
    out.extend_from_slice(row.status.as_bytes());
    out.push(b',');
    rfc3339(out, row.created_at);
    out.push(b',');
    if let Some(confirmed) = row.confirmed_at {
        rfc3339(out, confirmed);
    }
    out.push(b',');
    field(out, &row.source);
    out.extend_from_slice(b"\r\n");
}

/// A field, quoted when RFC 4180 says it must be (a comma, a quote, or a line break in it).
fn field(out: &mut Vec<u8>, value: &str) {
    if value.bytes().any(|b| matches!(b, b',' | b'"' | b'\r' | b'\n')) {
        out.push(b'"');
        for byte in value.bytes() {
            if byte == b'"' {
                out.push(b'"');
            }
            out.push(byte);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(value.as_bytes());
    }
}

/// Unix seconds as `2026-12-01T23:59:59Z`, without an allocation (a million rows have two each).
fn rfc3339(out: &mut Vec<u8>, unix: i64) {
    let (year, month, day) = civil_from_days(unix.div_euclid(86_400));
    let second_of_day = unix.rem_euclid(86_400);
    digits(out, year, 4);
    for (separator, value) in [
        (b'-', month),
        (b'-', day),
        (b'T', second_of_day / 3600),
        (b':', second_of_day % 3600 / 60),
        (b':', second_of_day % 60),
    ] {
        out.push(separator);
        digits(out, value, 2);
    }
    out.push(b'Z');
}

/// `value` in decimal, zero-padded to `width` (times here are never negative).
fn digits(out: &mut Vec<u8>, value: i64, width: u32) {
    let value = value.max(0);
    for place in (0..width).rev() {
        let digit = (value / 10i64.pow(place)) % 10;
        out.push(b'0' + digit as u8);
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(unix: i64) -> String {
        let mut out = Vec::new();
        rfc3339(&mut out, unix);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn times_match_humantime() {
        for unix in [0, 951_782_400, 1_795_651_200, 4_102_444_799, 1_709_164_800, 86_399] {
            let expected = humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix as u64),
            )
            .to_string();
            assert_eq!(time(unix), expected, "{unix}");
        }
    }

    #[test]
    fn fields_are_quoted_only_when_they_must_be() {
        let mut out = Vec::new();
        field(&mut out, "plain@example.com");
        out.push(b'|');
        field(&mut out, "a,b\"c");
        assert_eq!(String::from_utf8(out).unwrap(), "plain@example.com|\"a,b\"\"c\"");
    }
}
