//! `enlist import FILE [--as confirmed|pending] [--dry-run]`

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{ToolError, open_store};
use crate::config::Settings;
use crate::import::{ImportAs, ImportOptions, ImportReport, import};
use crate::security::{Links, SecretKey};

const INSTEAD: &str = "import through the admin page (Import, on /admin) or the API";

/// Imports the file, showing progress on stderr; returns the report (also after a Ctrl-C).
pub async fn run(
    settings: &Settings,
    file: &Path,
    pending: bool,
    dry_run: bool,
) -> Result<ImportReport, ToolError> {
    let import_as = match (pending, &settings.mail) {
        (false, _) => ImportAs::Confirmed,
        (true, Some(mail)) => ImportAs::Pending {
            confirm_ttl_secs: i64::try_from(mail.confirm_ttl.as_secs()).unwrap_or(i64::MAX),
        },
        (true, None) => {
            return Err(ToolError::Setting(crate::config::SettingError::new(
                "--as pending",
                "sends a confirmation mail to each address, so it needs --smtp-url and --mail-from",
            )));
        }
    };
    let reader =
        std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let secret = SecretKey::load_or_create(&settings.secret_key_file).map_err(|e| {
        crate::config::SettingError::new("--secret-key-file (ENLIST_SECRET_KEY_FILE)", e)
    })?;
    let links = Links::new(secret);
    let store = open_store(settings, INSTEAD).await?;
    let options = ImportOptions {
        import_as,
        dry_run,
        file_name: file
            .file_name()
            .map_or_else(|| "a file".into(), |n| n.to_string_lossy().into_owned()),
    };

    // Ctrl-C: finish the batch in hand, then stop and say how far the import got.
    let stop = Arc::new(AtomicBool::new(false));
    let interrupted = stop.clone();
    let ctrl_c = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            interrupted.store(true, Ordering::Relaxed);
        }
    });
    let mut progress = Progress::new(file);
    let report =
        import(store.as_ref(), &links, reader, &options, &stop, |r| progress.update(r)).await;
    ctrl_c.abort();
    progress.finish();
    store.close().await;
    Ok(report?)
}

/// An indicatif bar on a terminal; otherwise a plain line at most once a second.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    started: Instant,
    last_line: Instant,
}

impl Progress {
    fn new(file: &Path) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            // The lines are counted first (a few milliseconds for a million), so the bar can
            // say how far along it is and how long is left.
            let lines = count_lines(file).unwrap_or(0).saturating_sub(1);
            let bar = indicatif::ProgressBar::new(lines);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {human_pos}/{human_len} rows, ETA {eta}, {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self { bar, started: Instant::now(), last_line: Instant::now() }
    }

    fn update(&mut self, report: &ImportReport) {
        match &self.bar {
            Some(bar) => {
                let rate = report.lines as f64 / self.started.elapsed().as_secs_f64().max(0.001);
                bar.set_position(report.lines);
                bar.set_message(format!("{rate:.0} rows/s, {} added", report.added));
            }
            None if self.last_line.elapsed() >= Duration::from_secs(1) => {
                self.last_line = Instant::now();
                let rate = report.lines as f64 / self.started.elapsed().as_secs_f64().max(0.001);
                eprintln!(
                    "import: {} rows read, {} added ({rate:.0} rows/s)",
                    report.lines, report.added
                );
            }
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn count_lines(file: &Path) -> std::io::Result<u64> {
    use std::io::Read;
    let mut reader = std::fs::File::open(file)?;
    let mut buffer = vec![0u8; 1 << 20];
    let mut lines = 0u64;
    loop {
        let read = reader.read(&mut buffer)?;
        if read == 0 {
            return Ok(lines);
        }
        lines += buffer[..read].iter().filter(|&&b| b == b'\n').count() as u64;
    }
}
