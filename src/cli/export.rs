//! `enlist export [--output FILE] [--status pending|confirmed]`

use std::path::Path;

use anyhow::Context;
use tokio::io::{AsyncWriteExt, BufWriter};

use super::{ToolError, open_store};
use crate::config::Settings;
use crate::domain::SubscriberStatus;

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
            let mut out = BufWriter::with_capacity(1 << 16, file);
            let rows = crate::export::write_all(store.clone(), status, &mut out).await?;
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
