//! Getting the list out (and, with import, in): CSV over HTTP for the admin.

use std::sync::atomic::AtomicBool;

use axum::body::{Body, Bytes};
use axum::extract::{Multipart, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{Html, IntoResponse, Response};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::domain::SubscriberStatus;
use crate::export::csv_chunks;
use crate::import::{ImportAs, ImportOptions, ImportReport};
use crate::session::Session;
use crate::web::AppState;
use crate::web::error::AppError;
use crate::web::extract::Query;

#[derive(Deserialize)]
pub struct ExportParams {
    #[serde(default)]
    status: String,
}

/// `GET /admin/export.csv`: streamed from the database chunk by chunk; a client that goes away
/// stops the reading.
pub async fn export(
    State(app): State<AppState>,
    Query(params): Query<ExportParams>,
) -> Result<Response, AppError> {
    let status = match params.status.as_str() {
        "" => None,
        other => Some(SubscriberStatus::parse(other).ok_or_else(|| {
            AppError::BadRequest("The status filter is pending or confirmed.".into())
        })?),
    };
    let chunks = csv_chunks(app.store.clone(), status).map(|chunk| {
        chunk.map_err(|e| {
            // The status line is gone already: all that is left is to cut the download short.
            tracing::error!(error = format!("{:#}", e.0), "the export stopped");
            std::io::Error::other("the export stopped")
        })
    });
    let name = match status {
        Some(status) => format!("attachment; filename=\"subscribers-{status}.csv\""),
        None => "attachment; filename=\"subscribers.csv\"".to_owned(),
    };
    Ok((
        [(CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()), (CONTENT_DISPOSITION, name)],
        Body::from_stream(chunks),
    )
        .into_response())
}

/// `POST /admin/import`: a multipart upload (field order: `csrf_token`, `as`, `dry_run`, then
/// `file`), read as a stream and parsed as it arrives; never whole in memory.
pub async fn import(
    State(app): State<AppState>,
    session: Session,
    mut form: Multipart,
) -> Result<Html<String>, AppError> {
    let mut token = None;
    let mut pending = false;
    let mut dry_run = false;
    let unreadable = |_| AppError::BadRequest("The upload could not be read. Try again.".into());
    while let Some(field) = form.next_field().await.map_err(unreadable)? {
        match field.name().unwrap_or_default() {
            "csrf_token" => token = Some(field.text().await.map_err(unreadable)?),
            "as" => pending = field.text().await.map_err(unreadable)? == "pending",
            "dry_run" => dry_run = !field.text().await.map_err(unreadable)?.is_empty(),
            "file" => {
                session.verify_form_token(token.as_deref().unwrap_or_default()).await?;
                let file_name = field
                    .file_name()
                    .map(|n| n.chars().filter(|c| !c.is_control()).take(200).collect())
                    .unwrap_or_else(|| "an upload".to_owned());
                let import_as = match (pending, &app.signups.double_opt_in) {
                    (false, _) => ImportAs::Confirmed,
                    (true, Some(opt_in)) => ImportAs::Pending {
                        confirm_ttl_secs: i64::try_from(opt_in.confirm_ttl.as_secs())
                            .unwrap_or(i64::MAX),
                    },
                    (true, None) => {
                        return Err(AppError::Unprocessable(
                            "Pending imports send confirmation mails, and mail is not configured."
                                .into(),
                        ));
                    }
                };
                let options = ImportOptions { import_as, dry_run, file_name: file_name.clone() };
                let report = import_stream(&app, field, &options).await?;
                if pending
                    && !dry_run
                    && let Some(opt_in) = &app.signups.double_opt_in
                {
                    opt_in.bell.ring();
                }
                let page = ImportPage { report, file_name };
                return Ok(Html(app.templates.render("admin_import.html", page)?));
            }
            _ => {}
        }
    }
    Err(AppError::Unprocessable("Choose a CSV file to import.".into()))
}

#[derive(Serialize)]
struct ImportPage {
    report: ImportReport,
    file_name: String,
}

/// Feeds the upload to the parser as it arrives, with back-pressure, while the batches it
/// yields are committed.
async fn import_stream(
    app: &AppState,
    mut field: axum::extract::multipart::Field<'_>,
    options: &ImportOptions,
) -> Result<ImportReport, AppError> {
    let (chunks, reader) = ChannelReader::new();
    let feeding = async move {
        loop {
            match field.chunk().await {
                Ok(Some(chunk)) => {
                    if chunks.send(Ok(chunk)).await.is_err() {
                        return Ok(());
                    }
                }
                Ok(None) => return Ok(()),
                Err(e) => {
                    let _ = chunks.send(Err(std::io::Error::other("the upload broke off"))).await;
                    return Err(AppError::upload_broke_off(&e));
                }
            }
        }
    };
    let stop = AtomicBool::new(false);
    let importing = crate::import::import(
        app.store.as_ref(),
        &app.signups.links,
        reader,
        options,
        &stop,
        |_| {},
    );
    let (fed, imported) = tokio::join!(feeding, importing);
    fed?;
    imported.map_err(|e| match e.downcast::<crate::store::StoreError>() {
        Ok(store) => AppError::Unavailable(store),
        Err(other) => AppError::Unexpected(other),
    })
}

/// A blocking reader over chunks sent from async code: what lets the one CSV parser read an
/// upload as it streams in.
struct ChannelReader {
    incoming: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
}

impl ChannelReader {
    fn new() -> (tokio::sync::mpsc::Sender<std::io::Result<Bytes>>, Self) {
        let (sender, incoming) = tokio::sync::mpsc::channel(8);
        (sender, Self { incoming, current: Bytes::new() })
    }
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.incoming.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len());
        out[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}
