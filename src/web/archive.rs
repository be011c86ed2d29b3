//! `--public-archive`: what the list has sent, for anyone to read. Subjects and bodies only,
//! never a recipient or a figure; drafts and cancelled sends are not shown.

use axum::extract::{Path, State};
use axum::response::Html;
use serde::Serialize;

use super::AppState;
use super::admin::timestamps;
use super::error::AppError;
use crate::mail::markdown;
use crate::store::AnnouncementRecord;

/// Announcements listed at most.
const LISTED: u32 = 200;

#[derive(Serialize)]
struct Entry {
    id: i64,
    subject: String,
    sent: String,
    sent_display: String,
    html: String,
}

impl Entry {
    fn new(record: &AnnouncementRecord, with_body: bool) -> Self {
        let (sent, sent_display) = timestamps(record.started_at.unwrap_or(record.created_at));
        Self {
            id: record.id,
            subject: record.subject.clone(),
            sent,
            sent_display,
            html: if with_body { markdown::to_html(&record.body) } else { String::new() },
        }
    }
}

#[derive(Serialize)]
struct ArchivePage {
    announcements: Vec<Entry>,
    announcement: Option<Entry>,
}

pub async fn archive(State(app): State<AppState>) -> Result<Html<String>, AppError> {
    if !app.public_archive {
        return Err(AppError::NotFound);
    }
    let announcements = app.announcements.list(LISTED).await?;
    let page = ArchivePage {
        announcements: announcements
            .iter()
            .filter(|a| a.state.was_sent())
            .map(|a| Entry::new(a, false))
            .collect(),
        announcement: None,
    };
    Ok(Html(app.templates.render("archive.html", page)?))
}

pub async fn archived(
    State(app): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Html<String>, AppError> {
    if !app.public_archive {
        return Err(AppError::NotFound);
    }
    let record = app.announcements.get(id).await?.filter(|a| a.state.was_sent());
    let record = record.ok_or(AppError::NotFound)?;
    let page =
        ArchivePage { announcements: Vec::new(), announcement: Some(Entry::new(&record, true)) };
    Ok(Html(app.templates.render("archive.html", page)?))
}
