//! Importing a list from CSV, for the CLI and the admin page's upload alike. A parser thread
//! reads the file (any size, never whole into memory) and hands batches of rows to the async
//! side, which commits each batch at once: an import stopped half way has committed whole
//! batches, and running the file again finishes the job, since an import never changes a row
//! that exists.
//!
//! The address column is the one headed `email`, `e-mail` or `mail` (any case), else the first;
//! the delimiter is `,`, `;` or tab, whichever the first line holds most of; UTF-8 with or
//! without a BOM; quoted fields. Every address goes through the same parser as the form, and an
//! address that left (a suppression) is never put back.

use std::io::{BufRead, BufReader, Read};

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use tokio::sync::mpsc;

use crate::domain::{Door, SubscriberEmail, SubscriberStatus};
use crate::security::{Links, new_nonce};
use crate::session::unix_now;
use crate::store::{AddressHash, ImportBatch, ImportCounts, ImportRow, Store, StoreError};

/// Rows committed together: what a Ctrl-C or a failure can lose at most, and what one
/// transaction holds.
pub const BATCH: usize = 10_000;
/// Invalid lines reported with their line number and reason; the rest are only counted.
pub const REPORTED_INVALID: usize = 100;

/// What becomes of the imported addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportAs {
    /// The owner asserts that these people consented; that assertion is the evidence.
    Confirmed,
    /// Each gets a confirmation mail and joins the list only by confirming.
    Pending { confirm_ttl_secs: i64 },
}

#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub import_as: ImportAs,
    pub dry_run: bool,
    /// Kept with each row as the evidence: which file the owner vouched for.
    pub file_name: String,
}

/// How an import went, as far as it went.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ImportReport {
    /// Data lines read (not the header).
    pub lines: u64,
    pub added: u64,
    pub already_on_the_list: u64,
    pub suppressed: u64,
    pub invalid: u64,
    /// The first [`REPORTED_INVALID`] invalid lines: line number and reason.
    pub invalid_lines: Vec<(u64, String)>,
    /// The last line of the file committed, when the import stopped before the end.
    pub stopped_after_line: Option<u64>,
    pub dry_run: bool,
}

/// What the parser hands over: addresses that parsed, with their line numbers, and the lines
/// that did not.
struct Parsed {
    rows: Vec<(u64, SubscriberEmail)>,
    invalid: Vec<(u64, String)>,
    last_line: u64,
}

/// Batches committing at once. PostgreSQL runs two side by side on two connections (each
/// batch's rows go in key order, so two batches that share an address wait for each other
/// rather than deadlock); SQLite's one writer starts the second the moment the first commits.
const IN_FLIGHT: usize = 2;

/// Imports everything `reader` holds, calling `progress` after each committed batch, and
/// stopping after the batches already committing once `stop` is set.
pub async fn import(
    store: &dyn Store,
    links: &Links,
    reader: impl Read + Send + 'static,
    options: &ImportOptions,
    stop: &AtomicBool,
    mut progress: impl FnMut(&ImportReport),
) -> anyhow::Result<ImportReport> {
    use futures_util::StreamExt;
    let (batches, mut incoming) = mpsc::channel::<anyhow::Result<Parsed>>(2);
    let parser = tokio::task::spawn_blocking(move || parse(reader, &batches));
    let mut report = ImportReport { dry_run: options.dry_run, ..ImportReport::default() };
    let consent = format!("import of {}", options.file_name);
    let mut committing = futures_util::stream::FuturesOrdered::new();
    let mut reading = true;
    let mut read_failure = None;
    loop {
        let room = reading && committing.len() < IN_FLIGHT && !stop.load(Ordering::Relaxed);
        tokio::select! {
            received = incoming.recv(), if room => match prepare(received, links, options) {
                Ok(Some(prepared)) => {
                    committing.push_back(commit(store, prepared, options, &consent));
                }
                Ok(None) => reading = false,
                Err(e) => {
                    // Reported after the batches read before it are committed.
                    read_failure = Some(e);
                    reading = false;
                }
            },
            Some((parsed, counted)) = committing.next() => {
                let counted = counted.context("importing a batch")?;
                report.added += counted.added;
                report.already_on_the_list += counted.existing;
                report.suppressed += counted.suppressed;
                report.invalid += parsed.invalid.len() as u64;
                report.lines =
                    report.added + report.already_on_the_list + report.suppressed + report.invalid;
                let room = REPORTED_INVALID.saturating_sub(report.invalid_lines.len());
                report.invalid_lines.extend(parsed.invalid.into_iter().take(room));
                progress(&report);
                if stop.load(Ordering::Relaxed) && reading {
                    report.stopped_after_line = Some(parsed.last_line);
                }
            },
            else => break,
        }
    }
    if let Some(e) = read_failure {
        return Err(e);
    }
    drop(incoming);
    // The parser stops at its next hand-over once nobody listens.
    let _ = parser.await;
    Ok(report)
}

/// Commits one batch; hands back what was parsed with what the store counted.
async fn commit(
    store: &dyn Store,
    Prepared { parsed, hashes, nonces }: Prepared,
    options: &ImportOptions,
    consent: &str,
) -> (Parsed, Result<ImportCounts, StoreError>) {
    let now = unix_now();
    let rows: Vec<ImportRow> = parsed
        .rows
        .iter()
        .zip(hashes)
        .zip(nonces)
        .map(|(((_, email), address_hash), nonce)| ImportRow { email, address_hash, nonce })
        .collect();
    let batch = ImportBatch {
        door: Door::Import,
        rows: &rows,
        status: match options.import_as {
            ImportAs::Confirmed => SubscriberStatus::Confirmed,
            ImportAs::Pending { .. } => SubscriberStatus::Pending,
        },
        consent,
        confirm_expires_at: match options.import_as {
            ImportAs::Pending { confirm_ttl_secs } => Some(now.saturating_add(confirm_ttl_secs)),
            ImportAs::Confirmed => None,
        },
        dry_run: options.dry_run,
        now,
    };
    let counted = store.import_batch(batch).await;
    drop(rows);
    (parsed, counted)
}

/// A parsed batch with what its rows need from the secret key and the random source.
struct Prepared {
    parsed: Parsed,
    hashes: Vec<AddressHash>,
    nonces: Vec<Option<[u8; 16]>>,
}

fn prepare(
    received: Option<anyhow::Result<Parsed>>,
    links: &Links,
    options: &ImportOptions,
) -> anyhow::Result<Option<Prepared>> {
    let Some(parsed) = received.transpose()? else { return Ok(None) };
    let hashes = parsed.rows.iter().map(|(_, email)| links.address_hash(email.key())).collect();
    let nonces = parsed
        .rows
        .iter()
        .map(|_| match options.import_as {
            ImportAs::Pending { .. } => new_nonce().map(Some),
            ImportAs::Confirmed => Ok(None),
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Some(Prepared { parsed, hashes, nonces }))
}

/// The delimiter the first line holds most of, outside quotes; `,` when it holds none.
fn sniff_delimiter(first_line: &[u8]) -> u8 {
    let mut counts = [(b',', 0usize), (b';', 0), (b'\t', 0)];
    let mut quoted = false;
    for &byte in first_line {
        if byte == b'"' {
            quoted = !quoted;
        } else if !quoted && let Some(entry) = counts.iter_mut().find(|(d, _)| *d == byte) {
            entry.1 += 1;
        }
    }
    counts.iter().max_by_key(|(_, n)| *n).filter(|(_, n)| *n > 0).map_or(b',', |(d, _)| *d)
}

const ADDRESS_HEADERS: [&str; 3] = ["email", "e-mail", "mail"];

fn parse(reader: impl Read, batches: &mpsc::Sender<anyhow::Result<Parsed>>) {
    if let Err(e) = parse_into(reader, batches) {
        let _ = batches.blocking_send(Err(e));
    }
}

fn parse_into(
    reader: impl Read,
    batches: &mpsc::Sender<anyhow::Result<Parsed>>,
) -> anyhow::Result<()> {
    let mut input = BufReader::with_capacity(1 << 16, reader);
    let mut column: Option<usize> = None;
    let mut delimiter = b',';
    let mut line_number = 0u64;
    let mut parsed = Parsed { rows: Vec::with_capacity(BATCH), invalid: Vec::new(), last_line: 0 };
    let mut record = Vec::new();
    let mut line = Vec::new();
    loop {
        // One record: a line, or several while a quoted field is still open.
        record.clear();
        let first_line = line_number + 1;
        loop {
            line.clear();
            if input.read_until(b'\n', &mut line).context("reading the file")? == 0 {
                break;
            }
            line_number += 1;
            record.extend_from_slice(&line);
            if quotes_balanced(&record) {
                break;
            }
        }
        if record.is_empty() {
            break;
        }
        if first_line == 1 && record.starts_with(b"\xEF\xBB\xBF") {
            record.drain(..3);
        }
        while matches!(record.last(), Some(b'\n' | b'\r')) {
            record.pop();
        }
        parsed.last_line = line_number;
        if record.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let Some(address_column) = column else {
            delimiter = sniff_delimiter(&record);
            let fields = split_record(&record, delimiter);
            let header = fields.iter().position(|field| {
                let name = String::from_utf8_lossy(field).trim().to_lowercase();
                ADDRESS_HEADERS.contains(&name.as_str())
            });
            column = Some(header.unwrap_or(0));
            // A header names the columns; without one, the first line is data if it holds an
            // address, and a header of other names if it does not.
            let first = fields.first().map(|f| String::from_utf8_lossy(f).into_owned());
            if header.is_some() || SubscriberEmail::parse(&first.unwrap_or_default()).is_err() {
                continue;
            }
            take(&mut parsed, first_line, fields.into_iter().next());
            continue;
        };
        let field = split_record(&record, delimiter).into_iter().nth(address_column);
        take(&mut parsed, first_line, field);
        if parsed.rows.len() >= BATCH {
            let full = std::mem::replace(
                &mut parsed,
                Parsed {
                    rows: Vec::with_capacity(BATCH),
                    invalid: Vec::new(),
                    last_line: line_number,
                },
            );
            if batches.blocking_send(Ok(full)).is_err() {
                return Ok(());
            }
        }
    }
    let _ = batches.blocking_send(Ok(parsed));
    Ok(())
}

/// Parses the address field of the record that starts at `line`.
fn take(parsed: &mut Parsed, line: u64, field: Option<Vec<u8>>) {
    match field.map(String::from_utf8) {
        None => parsed.invalid.push((line, "no address in this line".into())),
        Some(Err(_)) => parsed.invalid.push((line, "the line is not UTF-8".into())),
        Some(Ok(raw)) => match SubscriberEmail::parse(&raw) {
            Ok(email) => parsed.rows.push((line, email)),
            Err(reason) => parsed.invalid.push((line, reason.to_string())),
        },
    }
}

/// Whether every quote opened in `record` is closed (a doubled quote inside counts twice).
fn quotes_balanced(record: &[u8]) -> bool {
    record.iter().filter(|&&b| b == b'"').count() % 2 == 0
}

/// The fields of one RFC 4180 record: quoted fields may hold the delimiter, line breaks and
/// doubled quotes.
fn split_record(record: &[u8], delimiter: u8) -> Vec<Vec<u8>> {
    let mut fields = Vec::new();
    let mut field = Vec::new();
    let mut quoted = false;
    let mut bytes = record.iter().copied().peekable();
    while let Some(byte) = bytes.next() {
        match byte {
            b'"' if quoted && bytes.peek() == Some(&b'"') => {
                field.push(b'"');
                bytes.next();
            }
            b'"' => quoted = !quoted,
            b if b == delimiter && !quoted => fields.push(std::mem::take(&mut field)),
            b => field.push(b),
        }
    }
    fields.push(field);
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    type Lines = Vec<(u64, String)>;

    fn parse_all(text: &[u8]) -> (Lines, Lines) {
        let (tx, mut rx) = mpsc::channel(100);
        parse(std::io::Cursor::new(text.to_vec()), &tx);
        drop(tx);
        let (mut rows, mut invalid) = (Vec::new(), Vec::new());
        while let Ok(batch) = rx.try_recv() {
            let batch = batch.unwrap();
            rows.extend(batch.rows.into_iter().map(|(l, e)| (l, e.as_str().to_owned())));
            invalid.extend(batch.invalid);
        }
        (rows, invalid)
    }

    #[test]
    fn finds_the_address_column_by_header_or_takes_the_first() {
        let (rows, invalid) = parse_all(b"Name;E-Mail\nAda;ada@example.com\nBob;nope\n");
        assert_eq!(rows, [(2, "ada@example.com".to_owned())]);
        assert_eq!(invalid.len(), 1);
        assert_eq!(invalid[0].0, 3);
        let (rows, _) = parse_all(b"\xEF\xBB\xBFa@example.com\tx\nb@example.com\ty\n");
        assert_eq!(
            rows.iter().map(|(_, e)| e.as_str()).collect::<Vec<_>>(),
            ["a@example.com", "b@example.com"]
        );
        let (rows, invalid) =
            parse_all(b"who,when\n\"c@example.com\",today\n\"d,@example.com\",x\n");
        assert_eq!(rows, [(2, "c@example.com".to_owned())]);
        assert_eq!(invalid.len(), 1, "{invalid:?}");
        // A quoted field across lines: the record keeps the number of the line it starts on.
        let (rows, invalid) =
            parse_all(b"email,note\r\na@example.com,\"two\r\nlines\"\r\nb@example.com,x\r\n");
        assert_eq!(rows, [(2, "a@example.com".to_owned()), (4, "b@example.com".to_owned())]);
        assert!(invalid.is_empty());
        let (rows, _) = parse_all(b"\xEF\xBB\xBFEMAIL\r\nx@example.com\r\n");
        assert_eq!(rows, [(2, "x@example.com".to_owned())]);
    }

    #[test]
    fn splits_quoted_fields() {
        assert_eq!(
            split_record(b"a,\"b,c\",\"d\"\"e\"", b','),
            [b"a".to_vec(), b"b,c".to_vec(), b"d\"e".to_vec()]
        );
        assert_eq!(split_record(b"", b','), [Vec::<u8>::new()]);
    }

    #[test]
    fn sniffs_the_delimiter_outside_quotes() {
        assert_eq!(sniff_delimiter(b"a;b;c"), b';');
        assert_eq!(sniff_delimiter(b"a\tb"), b'\t');
        assert_eq!(sniff_delimiter(b"\"x;y;z\",b"), b',');
        assert_eq!(sniff_delimiter(b"single"), b',');
    }
}
