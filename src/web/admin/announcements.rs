//! Announcements on the admin page: write one, preview it, send a test, send it to everyone
//! confirmed (after a page that says how many), watch it go, pause, resume or cancel it.

use axum::extract::{Path, State};
use axum::http::HeaderValue;
use axum::http::header::CONTENT_SECURITY_POLICY;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};

use super::timestamps;
use crate::announce::{Outcome, Progress};
use crate::domain::{AnnouncementAction, AnnouncementState, AnnouncementText, SubscriberEmail};
use crate::mail::Preview;
use crate::session::{Notice, Session};
use crate::store::AnnouncementRecord;
use crate::web::error::AppError;
use crate::web::extract::Form;
use crate::web::public::TokenForm;
use crate::web::{AppState, messages};

/// Past announcements listed on their page.
const LISTED: u32 = 100;

/// The HTML part of a preview is the mail's own page: its inline styles may apply, nothing may
/// run, load a script, or send a form.
const PREVIEW_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src https: http: \
     data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

#[derive(Serialize)]
struct Row {
    id: i64,
    subject: String,
    state: AnnouncementState,
    started: Option<String>,
    audience: i64,
    sent: i64,
    failed: i64,
}

impl From<&AnnouncementRecord> for Row {
    fn from(a: &AnnouncementRecord) -> Self {
        Self {
            id: a.id,
            subject: a.subject.clone(),
            state: a.state,
            started: a.started_at.map(|t| timestamps(t).1),
            audience: a.audience,
            sent: a.sent,
            failed: a.failed,
        }
    }
}

#[derive(Serialize)]
struct ListPage {
    announcements: Vec<Row>,
    mail_on: bool,
    notice: Option<Notice>,
    form_token: Option<String>,
}

pub async fn announcements_page(
    State(app): State<AppState>,
    session: Session,
) -> Result<Html<String>, AppError> {
    let announcements = app.announcements.list(LISTED).await?;
    let page = ListPage {
        announcements: announcements.iter().map(Row::from).collect(),
        mail_on: app.announcements.mail_on(),
        notice: session.take_admin_notice().await?,
        form_token: session.form_token().await?,
    };
    Ok(Html(app.templates.render("admin_announcements.html", page)?))
}

#[derive(Deserialize)]
pub struct TextForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    body: String,
}

impl TextForm {
    fn text(&self) -> Result<AnnouncementText, AppError> {
        AnnouncementText::parse(&self.subject, &self.body)
            .map_err(|e| AppError::Unprocessable(e.to_string()))
    }
}

pub async fn create_announcement(
    State(app): State<AppState>,
    session: Session,
    Form(form): Form<TextForm>,
) -> Result<Redirect, AppError> {
    session.verify_form_token(&form.csrf_token).await?;
    let id = app.announcements.draft(&form.text()?).await?;
    session.set_admin_notice(messages::announcement_saved()).await?;
    Ok(Redirect::to(&format!("/admin/announcements/{id}")))
}

pub async fn update_announcement(
    State(app): State<AppState>,
    session: Session,
    Path(id): Path<i64>,
    Form(form): Form<TextForm>,
) -> Result<Redirect, AppError> {
    session.verify_form_token(&form.csrf_token).await?;
    outcome(app.announcements.edit(id, &form.text()?).await?)?;
    session.set_admin_notice(messages::announcement_saved()).await?;
    Ok(Redirect::to(&format!("/admin/announcements/{id}")))
}

#[derive(Serialize)]
struct AnnouncementPage {
    announcement: AnnouncementView,
    progress: Progress,
    preview: Preview,
    mail_on: bool,
    /// While it is going out, the page reloads itself.
    live: bool,
    notice: Option<Notice>,
    form_token: Option<String>,
}

#[derive(Serialize)]
struct AnnouncementView {
    id: i64,
    subject: String,
    body: String,
    state: AnnouncementState,
    draft: bool,
    created: String,
    started: Option<String>,
    finished: Option<String>,
    eta: Option<String>,
}

pub async fn announcement_page(
    State(app): State<AppState>,
    session: Session,
    Path(id): Path<i64>,
) -> Result<Html<String>, AppError> {
    let record = app.announcements.get(id).await?.ok_or(AppError::NotFound)?;
    let progress = app.announcements.progress(id).await?.ok_or(AppError::NotFound)?;
    let preview = app.announcements.preview(&record)?;
    let live = matches!(record.state, AnnouncementState::Sending | AnnouncementState::Paused);
    let page = AnnouncementPage {
        announcement: AnnouncementView {
            id: record.id,
            subject: record.subject.clone(),
            body: record.body.clone(),
            state: record.state,
            draft: record.state == AnnouncementState::Draft,
            created: timestamps(record.created_at).1,
            started: record.started_at.map(|t| timestamps(t).1),
            finished: record.finished_at.map(|t| timestamps(t).1),
            eta: progress.eta_secs.map(messages::duration_in_words),
        },
        progress,
        preview,
        mail_on: app.announcements.mail_on(),
        live,
        notice: session.take_admin_notice().await?,
        form_token: session.form_token().await?,
    };
    Ok(Html(app.templates.render("admin_announcement.html", page)?))
}

/// The HTML part alone, as the mail reader would show it.
pub async fn announcement_preview(
    State(app): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Response, AppError> {
    let record = app.announcements.get(id).await?.ok_or(AppError::NotFound)?;
    let preview = app.announcements.preview(&record)?;
    let html = preview.html.ok_or(AppError::NotFound)?;
    let mut response = Html(html).into_response();
    response
        .headers_mut()
        .insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(PREVIEW_POLICY));
    Ok(response)
}

#[derive(Deserialize)]
pub struct TestForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    email: String,
}

pub async fn test_announcement(
    State(app): State<AppState>,
    session: Session,
    Path(id): Path<i64>,
    Form(form): Form<TestForm>,
) -> Result<Redirect, AppError> {
    session.verify_form_token(&form.csrf_token).await?;
    let to =
        SubscriberEmail::parse(&form.email).map_err(|e| AppError::Unprocessable(e.to_string()))?;
    outcome(app.announcements.test(id, &to).await?)?;
    session.set_admin_notice(messages::announcement_test_queued(to.as_str())).await?;
    Ok(Redirect::to(&format!("/admin/announcements/{id}")))
}

#[derive(Serialize)]
struct SendPage {
    id: i64,
    subject: String,
    /// Everyone confirmed now: who will receive it.
    audience: u64,
    form_token: Option<String>,
}

/// Asks before sending, saying how many will receive it.
pub async fn send_page(
    State(app): State<AppState>,
    session: Session,
    Path(id): Path<i64>,
) -> Result<Html<String>, AppError> {
    let record = app.announcements.get(id).await?.ok_or(AppError::NotFound)?;
    if record.state != AnnouncementState::Draft {
        return Err(AppError::Conflict(messages::ANNOUNCEMENT_NOT_A_DRAFT.into()));
    }
    if !app.announcements.mail_on() {
        return Err(AppError::MailOff);
    }
    let page = SendPage {
        id,
        subject: record.subject,
        audience: app.store.counts().await?.confirmed,
        form_token: session.form_token().await?,
    };
    Ok(Html(app.templates.render("admin_announcement_send.html", page)?))
}

pub async fn send_announcement(
    State(app): State<AppState>,
    session: Session,
    Path(id): Path<i64>,
    Form(form): Form<TokenForm>,
) -> Result<Redirect, AppError> {
    session.verify_form_token(&form.csrf_token).await?;
    outcome(app.announcements.send(id).await?)?;
    session.set_admin_notice(messages::announcement_sending()).await?;
    Ok(Redirect::to(&format!("/admin/announcements/{id}")))
}

/// Pause, resume, cancel: `/admin/announcements/{id}/{action}`.
pub async fn act_on_announcement(
    State(app): State<AppState>,
    session: Session,
    Path((id, action)): Path<(i64, String)>,
    Form(form): Form<TokenForm>,
) -> Result<Redirect, AppError> {
    session.verify_form_token(&form.csrf_token).await?;
    let action = AnnouncementAction::parse(&action).ok_or(AppError::NotFound)?;
    outcome(app.announcements.act(id, action).await?)?;
    session.set_admin_notice(messages::announcement_changed(action)).await?;
    Ok(Redirect::to(&format!("/admin/announcements/{id}")))
}

/// Every door's outcomes, as the admin pages and the API answer them.
pub(crate) fn outcome(outcome: Outcome) -> Result<(), AppError> {
    match outcome {
        Outcome::Done => Ok(()),
        Outcome::NoMail => Err(AppError::MailOff),
        Outcome::NotFound => Err(AppError::NotFound),
        Outcome::WrongState => Err(AppError::Conflict(messages::ANNOUNCEMENT_WRONG_STATE.into())),
    }
}
