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
    let total_bytes = reader.metadata().map(|m| m.len()).unwrap_or(0);
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
    let mut progress = Progress::new(total_bytes);
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
    fn new(_total_bytes: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {elapsed_precise} {human_pos} rows ({per_sec}) {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self { bar, started: Instant::now(), last_line: Instant::now() }
    }

    fn update(&mut self, report: &ImportReport) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(report.lines);
                bar.set_message(format!("{} added", report.added));
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
