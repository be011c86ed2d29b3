//! Announcements through the API: send one to the list (or a test of it to one address), follow
//! its progress, pause, resume or cancel it. The same path as the admin page.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Problem;
use super::auth::ApiCaller;
use super::json::ApiJson;
use crate::announce::Progress;
use crate::domain::{
    AnnouncementAction, AnnouncementState, AnnouncementText, AnnouncementTextError,
    MAX_SUBJECT_CHARS, Rfc3339, SubscriberEmail,
};
use crate::store::FailureGroup;
use crate::web::AppState;
use crate::web::admin::announcement_outcome;
use crate::web::error::{AppError, created};

/// Announcements listed at most.
const LISTED: u32 = 100;
/// The document promises this bound, and a request inside 64 KiB could pass it.
const MAX_API_BODY_CHARS: usize = 60_000;

/// An announcement and how its send is going.
#[derive(Serialize, ToSchema)]
pub struct Announcement {
    id: i64,
    subject: String,
    state: ApiAnnouncementState,
    #[schema(value_type = String, format = DateTime)]
    created_at: Rfc3339,
    #[schema(value_type = Option<String>, format = DateTime)]
    started_at: Option<Rfc3339>,
    #[schema(value_type = Option<String>, format = DateTime)]
    finished_at: Option<Rfc3339>,
    /// Everyone confirmed when sending started.
    audience: i64,
    /// Mails made so far.
    queued: i64,
    sent: i64,
    failed: i64,
    /// At most this many still to go (fewer if some leave first).
    remaining: i64,
    /// Messages a second, on average, pauses not counted.
    rate: f64,
    /// Seconds left at that rate, while sending.
    eta_seconds: Option<i64>,
    /// The mail servers' answers to the mails that failed for good, most common first.
    failures: Vec<FailureGroup>,
}

impl From<Progress> for Announcement {
    fn from(p: Progress) -> Self {
        Self {
            id: p.id,
            subject: p.subject,
            state: p.state.into(),
            created_at: Rfc3339(p.created_at),
            started_at: p.started_at.map(Rfc3339),
            finished_at: p.finished_at.map(Rfc3339),
            audience: p.audience,
            queued: p.queued,
            sent: p.sent,
            failed: p.failed,
            remaining: p.remaining,
            rate: p.rate,
            eta_seconds: p.eta_secs,
            failures: p.failures,
        }
    }
}

/// Where an announcement stands.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ApiAnnouncementState {
    Draft,
    Sending,
    Paused,
    Cancelled,
    Sent,
}

impl From<AnnouncementState> for ApiAnnouncementState {
    fn from(state: AnnouncementState) -> Self {
        match state {
            AnnouncementState::Draft => Self::Draft,
            AnnouncementState::Sending => Self::Sending,
            AnnouncementState::Paused => Self::Paused,
            AnnouncementState::Cancelled => Self::Cancelled,
            AnnouncementState::Sent => Self::Sent,
        }
    }
}

/// An announcement to send.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAnnouncement {
    /// One line, at most 200 characters, something in it besides spaces.
    // The patterns say what `AnnouncementText::parse` accepts, so that a client's validator
    // agrees with it: no control characters (U+0000–001F, U+007F–009F) and one character that
    // is not Unicode White_Space, spelled out because `\s` differs between regex dialects.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    subject: String,
    /// Markdown (the whole request at most 64 KiB): the plain-text part as written, the HTML
    /// part rendered from it (raw HTML in it arrives as text).
    #[schema(
        min_length = 1,
        max_length = 60_000,
        pattern = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]*[^\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]*$"
    )]
    body: String,
    /// Send only a test, to this address, and keep the announcement as a draft (send it later
    /// with `POST /announcements/{id}/send`). Without it, the announcement goes to everyone
    /// confirmed now.
    #[schema(format = Email, max_length = 254)]
    test_to: Option<String>,
}

/// Announcements, newest first.
#[derive(Serialize, ToSchema)]
pub struct AnnouncementList {
    announcements: Vec<Announcement>,
}

#[utoipa::path(
    get, path = "/announcements", tag = "announcements",
    operation_id = "listAnnouncements",
    security(("token" = [])),
    responses(
        (status = 200, description = "The last 100 announcements, newest first", body = AnnouncementList),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed token checks", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(app): State<AppState>,
    _caller: ApiCaller,
) -> Result<Json<AnnouncementList>, AppError> {
    let now = crate::session::unix_now();
    let records = app.announcements.list(LISTED).await?;
    let announcements =
        records.iter().map(|r| crate::announce::progress(r, Vec::new(), now).into()).collect();
    Ok(Json(AnnouncementList { announcements }))
}

#[utoipa::path(
    post, path = "/announcements", tag = "announcements",
    operation_id = "sendAnnouncement",
    request_body = NewAnnouncement,
    security(("token" = [])),
    responses(
        (status = 201, description = "Sending to everyone confirmed now (or, with test_to, a draft whose test is on its way)", body = Announcement,
         headers(("Location" = String, description = "The announcement's URL")),
         links(
             ("GetAnnouncement" = (operation_id = "getAnnouncement", parameters(("id" = "$response.body#/id")))),
             ("PauseAnnouncement" = (operation_id = "pauseAnnouncement", parameters(("id" = "$response.body#/id")))),
             ("ResumeAnnouncement" = (operation_id = "resumeAnnouncement", parameters(("id" = "$response.body#/id")))),
             ("CancelAnnouncement" = (operation_id = "cancelAnnouncement", parameters(("id" = "$response.body#/id")))),
             ("SendDraft" = (operation_id = "sendDraft", parameters(("id" = "$response.body#/id")))),
         )),
        (status = 400, description = "The body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A read-only token", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is over 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An empty or over-long subject or text, an unknown field, a test address we do not accept, or no mail configured", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed token checks", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn send(
    State(app): State<AppState>,
    caller: ApiCaller,
    ApiJson(body): ApiJson<NewAnnouncement>,
) -> Result<Response, AppError> {
    caller.may_write()?;
    // The bounds hold for what was sent, before the subject is trimmed.
    if body.subject.chars().count() > MAX_SUBJECT_CHARS {
        return Err(AppError::Unprocessable(AnnouncementTextError::SubjectTooLong.to_string()));
    }
    if body.body.chars().count() > MAX_API_BODY_CHARS {
        return Err(AppError::Unprocessable(
            "The text is too long for the API (at most 60,000 characters).".to_owned(),
        ));
    }
    let text = AnnouncementText::parse(&body.subject, &body.body)
        .map_err(|e| AppError::Unprocessable(e.to_string()))?;
    let test_to = body
        .test_to
        .as_deref()
        .map(SubscriberEmail::parse)
        .transpose()
        .map_err(|error| AppError::InvalidEmail { typed: String::new(), error })?;
    // Checked first: a request that cannot send leaves nothing behind.
    if !app.announcements.mail_on() {
        return Err(AppError::MailOff);
    }
    let id = app.announcements.draft(&text).await?;
    match &test_to {
        Some(to) => announcement_outcome(app.announcements.test(id, to).await?)?,
        None => announcement_outcome(app.announcements.send(id).await?)?,
    }
    let progress = app.announcements.progress(id).await?.ok_or(AppError::NotFound)?;
    Ok(created(format!("/api/v1/announcements/{id}"), Json(Announcement::from(progress))))
}

#[utoipa::path(
    get, path = "/announcements/{id}", tag = "announcements",
    operation_id = "getAnnouncement",
    params(("id" = i64, Path, description = "The announcement's id")),
    security(("token" = [])),
    responses(
        (status = 200, description = "The announcement and its progress", body = Announcement),
        (status = 400, description = "The id is not a number", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such announcement", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed token checks", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_one(
    State(app): State<AppState>,
    _caller: ApiCaller,
    Path(id): Path<String>,
) -> Result<Json<Announcement>, AppError> {
    let id = super::subscribers::parse_id(&id)?;
    current(&app, id).await
}

macro_rules! announcement_action {
    ($name:ident, $path:literal, $operation:literal, $action:expr, $done:literal, $conflict:literal) => {
        #[utoipa::path(
            post, path = $path, tag = "announcements",
            operation_id = $operation,
            params(("id" = i64, Path, description = "The announcement's id")),
            security(("token" = [])),
            responses(
                (status = 200, description = $done, body = Announcement),
                (status = 400, description = "The id is not a number", body = Problem, content_type = "application/problem+json"),
                (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
                (status = 403, description = "A read-only token", body = Problem, content_type = "application/problem+json"),
                (status = 404, description = "No such announcement", body = Problem, content_type = "application/problem+json"),
                (status = 409, description = $conflict, body = Problem, content_type = "application/problem+json"),
                (status = 429, description = "Too many failed token checks", body = Problem, content_type = "application/problem+json"),
            )
        )]
        pub async fn $name(
            State(app): State<AppState>,
            caller: ApiCaller,
            Path(id): Path<String>,
        ) -> Result<Json<Announcement>, AppError> {
            caller.may_write()?;
            let id = super::subscribers::parse_id(&id)?;
            announcement_outcome(app.announcements.act(id, $action).await?)?;
            current(&app, id).await
        }
    };
}

announcement_action!(
    pause,
    "/announcements/{id}/pause",
    "pauseAnnouncement",
    AnnouncementAction::Pause,
    "Paused: no more mails go out until it is resumed",
    "Not sending"
);
announcement_action!(
    resume,
    "/announcements/{id}/resume",
    "resumeAnnouncement",
    AnnouncementAction::Resume,
    "Sending again",
    "Not paused"
);
announcement_action!(
    cancel,
    "/announcements/{id}/cancel",
    "cancelAnnouncement",
    AnnouncementAction::Cancel,
    "Cancelled for good: nobody else receives it",
    "Not sending or paused"
);

#[utoipa::path(
    post, path = "/announcements/{id}/send", tag = "announcements",
    operation_id = "sendDraft",
    params(("id" = i64, Path, description = "The announcement's id")),
    security(("token" = [])),
    responses(
        (status = 200, description = "Sending to everyone confirmed now", body = Announcement),
        (status = 400, description = "The id is not a number", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A read-only token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such announcement", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not a draft: it was sent already", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No mail configured", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed token checks", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn send_draft(
    State(app): State<AppState>,
    caller: ApiCaller,
    Path(id): Path<String>,
) -> Result<Json<Announcement>, AppError> {
    caller.may_write()?;
    let id = super::subscribers::parse_id(&id)?;
    announcement_outcome(app.announcements.send(id).await?)?;
    current(&app, id).await
}

async fn current(app: &AppState, id: i64) -> Result<Json<Announcement>, AppError> {
    let progress = app.announcements.progress(id).await?.ok_or(AppError::NotFound)?;
    Ok(Json(progress.into()))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use crate::domain::AnnouncementText;

    fn published_pattern(field: &str) -> regex::Regex {
        let doc: serde_json::Value =
            serde_json::from_str(&crate::web::api::openapi_json()).unwrap();
        let pattern =
            &doc["components"]["schemas"]["NewAnnouncement"]["properties"][field]["pattern"];
        regex::Regex::new(pattern.as_str().unwrap()).unwrap()
    }

    // Controls, spaces of several kinds, a byte-order mark (not White_Space) and ordinary text.
    const MIX: &str = "[a é\t\r\n\u{0}\u{1f}\u{7f}\u{85}\u{a0}\u{2003}\u{3000}\u{feff}]{0,6}";

    proptest! {
        #[test]
        fn the_documented_patterns_accept_exactly_what_parsing_accepts(text in MIX) {
            let subject = published_pattern("subject");
            let body = published_pattern("body");
            prop_assert_eq!(subject.is_match(&text), AnnouncementText::parse(&text, "x").is_ok());
            prop_assert_eq!(body.is_match(&text), AnnouncementText::parse("s", &text).is_ok());
        }
    }
}
