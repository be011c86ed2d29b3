//! `enlist export [--output FILE] [--status pending|confirmed]`

use std::path::Path;

use anyhow::Context;
use tokio::io::{AsyncWriteExt, BufWriter};

use super::{ToolError, open_store};
use crate::config::Settings;
use crate::domain::SubscriberStatus;

const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(200);
const INSTEAD: &str = "export from the admin page (Export CSV, /admin/export.csv) or the API";

/// Writes the CSV to `output` (or stdout); returns the number of rows.
pub async fn run(
    settings: &Settings,
    output: Option<&Path>,
    status: Option<SubscriberStatus>,
) -> Result<u64, ToolError> {
    let store = open_store(settings, INSTEAD).await?;
    let rows = match output {
        Some(path) => {
            // Written beside the target and renamed into place: never half a file under its name.
            let partial = path.with_extension("csv.partial");
            let file = tokio::fs::File::create(&partial)
                .await
                .with_context(|| format!("creating {}", partial.display()))?;
            // Written pages go to disk while the export runs, so the final fsync has little
            // left to do (a million rows are ~90 MB).
            let flusher = file.try_clone().await.context("opening the export twice")?;
            let (done, mut finished) = tokio::sync::oneshot::channel::<()>();
            let flushing = tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = &mut finished => break,
                        () = tokio::time::sleep(FLUSH_EVERY) => {
                            let _ = flusher.sync_data().await;
                        }
                    }
                }
            });
            let mut out = BufWriter::with_capacity(1 << 16, file);
            let written = crate::export::write_all(store.clone(), status, &mut out).await;
            let _ = done.send(());
            let _ = flushing.await;
            let rows = written?;
            out.into_inner().sync_all().await.context("writing the export to disk")?;
            tokio::fs::rename(&partial, path)
                .await
                .with_context(|| format!("moving the export to {}", path.display()))?;
            rows
        }
        None => {
            let mut out = BufWriter::with_capacity(1 << 16, tokio::io::stdout());
            let rows = crate::export::write_all(store.clone(), status, &mut out).await?;
            out.flush().await.context("writing the export")?;
            rows
        }
    };
    store.close().await;
    Ok(rows)
}
