//! The pages behind the links in mail: `/confirm/TOKEN` and `/u/TOKEN`. They need no session:
//! the token is the authority, so they work from any device. A `GET` only ever shows a page
//! with a button; only a `POST` changes anything, so link scanners that fetch every URL in a
//! mail confirm and unsubscribe nobody.

use crate::metrics::UnsubscribeDoor;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::HeaderMap;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Serialize;

use super::AppState;
use super::client_ip::ClientIp;
use super::error::AppError;
use super::extract::user_agent;
use crate::domain::{ClientEvidence, Rfc3339, SubscriberStatus};
use crate::security::LinkToken;
use crate::session::{Session, unix_now};
use crate::store::{ConfirmWrite, Confirmation, Confirmed, LeaveReason, Leaving, SubscriberRecord};

const CONFIRM_PAGE: &str = "confirm.html";
const UNSUBSCRIBE_PAGE: &str = "unsubscribe.html";

#[derive(Serialize)]
struct ConfirmPage<'a> {
    state: &'static str,
    email: &'a str,
    token: &'a str,
}

/// The confirmation this token names, if the token is genuine.
async fn confirmation(app: &AppState, token: &str) -> Result<Confirmation, AppError> {
    let unknown = AppError::LinkUnknown { page: CONFIRM_PAGE };
    let parsed = LinkToken::parse(token).ok_or(AppError::LinkUnknown { page: CONFIRM_PAGE })?;
    let found = app.store.confirmation(parsed.id).await?.ok_or(unknown)?;
    if !app.signups.links.verify_confirm(&parsed, &found.nonce) {
        return Err(AppError::LinkUnknown { page: CONFIRM_PAGE });
    }
    Ok(found)
}

pub async fn confirm_page(
    State(app): State<AppState>,
    Path(token): Path<String>,
) -> Result<Html<String>, AppError> {
    let found = confirmation(&app, &token).await?;
    let state = if found.status == SubscriberStatus::Confirmed {
        "confirmed"
    } else if found.expires_at <= unix_now() {
        return Err(AppError::LinkExpired { page: CONFIRM_PAGE });
    } else {
        "ask"
    };
    let page = ConfirmPage { state, email: &found.email, token: &token };
    Ok(Html(app.templates.render(CONFIRM_PAGE, page)?))
}

pub async fn confirm(
    State(app): State<AppState>,
    Extension(ClientIp(client)): Extension<ClientIp>,
    headers: HeaderMap,
    session: Session,
    Path(token): Path<String>,
) -> Result<Redirect, AppError> {
    let found = confirmation(&app, &token).await?;
    let email_key = found_key(&found)?;
    let client = ClientEvidence::new(client, user_agent(&headers), app.signups.keep_full_ip);
    let welcome = app.signups.double_opt_in.is_some() && app.templates.has("welcome.txt");
    let write = ConfirmWrite {
        confirmation_id: found.id,
        client: &client,
        address_hash: app.signups.links.address_hash(&email_key),
        welcome,
        now: unix_now(),
    };
    match app.store.confirm(write).await? {
        Confirmed::Now => {
            if let Some(opt_in) = app.signups.double_opt_in.as_ref().filter(|_| welcome) {
                opt_in.bell.ring();
            }
            session.visitor_confirmed(&email_key).await?;
        }
        Confirmed::Already => session.visitor_confirmed(&email_key).await?,
        Confirmed::Expired => return Err(AppError::LinkExpired { page: CONFIRM_PAGE }),
        Confirmed::Unknown => return Err(AppError::LinkUnknown { page: CONFIRM_PAGE }),
    }
    // The page now says "confirmed"; a reload asks nothing again.
    Ok(Redirect::to(&format!("/confirm/{token}")))
}

fn found_key(found: &Confirmation) -> Result<String, AppError> {
    let email = crate::domain::SubscriberEmail::parse(&found.email)
        .map_err(|e| AppError::Unexpected(anyhow::anyhow!("a stored address: {e}")))?;
    Ok(email.key().to_owned())
}

/// The subscriber this token names, if the token is genuine and they are still on the list.
async fn subscriber(app: &AppState, token: &str) -> Result<Option<SubscriberRecord>, AppError> {
    let parsed = LinkToken::parse(token).ok_or(AppError::LinkUnknown { page: UNSUBSCRIBE_PAGE })?;
    let Some(found) = app.store.subscriber(parsed.id).await? else {
        return Ok(None);
    };
    if !app.signups.links.verify_unsubscribe(&parsed, &found.email_key) {
        return Err(AppError::LinkUnknown { page: UNSUBSCRIBE_PAGE });
    }
    Ok(Some(found))
}

#[derive(Serialize)]
struct UnsubscribePage<'a> {
    email: &'a str,
    token: &'a str,
}

pub async fn unsubscribe_page(
    State(app): State<AppState>,
    Path(token): Path<String>,
) -> Result<Html<String>, AppError> {
    let found =
        subscriber(&app, &token).await?.ok_or(AppError::LinkUnknown { page: UNSUBSCRIBE_PAGE })?;
    let page = UnsubscribePage { email: &found.email, token: &token };
    Ok(Html(app.templates.render(UNSUBSCRIBE_PAGE, page)?))
}

/// RFC 8058: a mail provider's server posts `List-Unsubscribe=One-Click`, as a form or as
/// multipart; it wants a 2xx and nothing else.
fn is_one_click(headers: &HeaderMap, body: &[u8]) -> bool {
    let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match essence.as_str() {
        "application/x-www-form-urlencoded" => {
            serde_urlencoded::from_bytes::<Vec<(String, String)>>(body).is_ok_and(|pairs| {
                pairs.iter().any(|(k, v)| k == "List-Unsubscribe" && v == "One-Click")
            })
        }
        "multipart/form-data" => {
            let text = String::from_utf8_lossy(body);
            text.contains("name=\"List-Unsubscribe\"") && text.contains("One-Click")
        }
        _ => false,
    }
}

pub async fn unsubscribe(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(token): Path<String>,
    body: Bytes,
) -> Result<Response, AppError> {
    let one_click = is_one_click(&headers, &body);
    match subscriber(&app, &token).await? {
        Some(found) => {
            leave(&app, &found, LeaveReason::Unsubscribed).await?;
            let door = if one_click { UnsubscribeDoor::OneClick } else { UnsubscribeDoor::Link };
            app.metrics.unsubscribe(door);
        }
        // Gone already: leaving twice is still having left.
        None if one_click => {}
        None => return Err(AppError::LinkUnknown { page: UNSUBSCRIBE_PAGE }),
    }
    if one_click {
        return Ok(().into_response());
    }
    Ok(Redirect::to("/left").into_response())
}

pub async fn erase(
    State(app): State<AppState>,
    Path(token): Path<String>,
) -> Result<Redirect, AppError> {
    let found =
        subscriber(&app, &token).await?.ok_or(AppError::LinkUnknown { page: UNSUBSCRIBE_PAGE })?;
    leave(&app, &found, LeaveReason::Erased).await?;
    app.metrics.unsubscribe(UnsubscribeDoor::Erase);
    Ok(Redirect::to("/erased"))
}

/// The row, its links and mails, and the sessions that remember the address go; a keyed hash
/// stays so that an admin add or an import cannot put the address back.
async fn leave(
    app: &AppState,
    found: &SubscriberRecord,
    reason: LeaveReason,
) -> Result<(), AppError> {
    let leaving = Leaving {
        address_hash: app.signups.links.address_hash(&found.email_key),
        reason,
        now: unix_now(),
    };
    app.store.remove_subscriber_by_id(found.id, Some(leaving)).await?;
    Ok(())
}

pub async fn left(State(app): State<AppState>) -> Result<Html<String>, AppError> {
    Ok(Html(app.templates.render("left.html", minijinja::context! { erased => false })?))
}

pub async fn erased(State(app): State<AppState>) -> Result<Html<String>, AppError> {
    Ok(Html(app.templates.render("left.html", minijinja::context! { erased => true })?))
}

/// Everything kept about one person, as they may take it away.
#[derive(Serialize)]
struct PersonalData {
    list: String,
    address: String,
    status: SubscriberStatus,
    signed_up_at: Rfc3339,
    confirmed_at: Option<Rfc3339>,
    evidence: EvidenceData,
    mails: Vec<MailData>,
}

#[derive(Serialize)]
struct EvidenceData {
    source: String,
    signup_network: Option<String>,
    signup_user_agent: Option<String>,
    consent_text_version: Option<String>,
    confirm_network: Option<String>,
    confirm_user_agent: Option<String>,
}

#[derive(Serialize)]
struct MailData {
    purpose: String,
    status: String,
    attempts: i64,
    queued_at: Rfc3339,
    finished_at: Option<Rfc3339>,
    server_answer: Option<String>,
}

pub async fn download(
    State(app): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, AppError> {
    let found =
        subscriber(&app, &token).await?.ok_or(AppError::LinkUnknown { page: UNSUBSCRIBE_PAGE })?;
    let mails = app.store.mails_to(found.id).await?;
    let data = PersonalData {
        list: app.signups.list_name.clone(),
        address: found.email,
        status: found.status,
        signed_up_at: Rfc3339(found.created_at),
        confirmed_at: found.confirmed_at.map(Rfc3339),
        evidence: EvidenceData {
            source: found.source,
            signup_network: found.signup_ip,
            signup_user_agent: found.signup_agent,
            consent_text_version: found.consent,
            confirm_network: found.confirm_ip,
            confirm_user_agent: found.confirm_agent,
        },
        mails: mails
            .into_iter()
            .map(|m| MailData {
                purpose: m.purpose,
                status: m.status,
                attempts: m.attempts,
                queued_at: Rfc3339(m.created_at),
                finished_at: m.sent_at.map(Rfc3339),
                server_answer: m.last_error,
            })
            .collect(),
    };
    let json = serde_json::to_string_pretty(&data)
        .map_err(|e| AppError::Unexpected(anyhow::anyhow!("writing the data as JSON: {e}")))?;
    Ok((
        [
            (CONTENT_TYPE, "application/json"),
            (CONTENT_DISPOSITION, "attachment; filename=\"my-subscription.json\""),
        ],
        json,
    )
        .into_response())
}
