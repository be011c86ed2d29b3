//! Webhook endpoints on the admin page: add (the secret is shown once, on the page that answers
//! the form), send a ping, look at the last attempts, remove.

use axum::extract::{Path, State};
use axum::response::{Html, Redirect};
use serde::{Deserialize, Serialize};

use super::timestamps;
use crate::session::{Notice, Session};
use crate::store::{AttemptRecord, EndpointRecord};
use crate::web::error::AppError;
use crate::web::extract::Form;
use crate::web::public::TokenForm;
use crate::web::{AppState, messages};
use crate::webhooks::{AddRefused, Event, EventSet, add_endpoint};

/// One endpoint as the admin page lists it.
#[derive(Serialize)]
pub(super) struct EndpointRow {
    id: i64,
    url: String,
    events: Vec<&'static str>,
    created: String,
    disabled: Option<String>,
    disabled_reason: Option<String>,
    queued: i64,
}

impl From<EndpointRecord> for EndpointRow {
    fn from(endpoint: EndpointRecord) -> Self {
        Self {
            id: endpoint.id,
            url: endpoint.url,
            events: EventSet::from_bits(endpoint.events).names(),
            created: timestamps(endpoint.created_at).1,
            disabled: endpoint.disabled_at.map(|t| timestamps(t).1),
            disabled_reason: endpoint.disabled_reason,
            queued: endpoint.queued,
        }
    }
}

/// The events a form may ask for, by the name of their checkbox.
pub(super) fn event_choices() -> Vec<&'static str> {
    Event::ALL.iter().map(|e| e.name()).collect()
}

#[derive(Deserialize)]
pub struct AddForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    url: String,
    #[serde(default, rename = "subscriber.created")]
    created: String,
    #[serde(default, rename = "subscriber.confirmed")]
    confirmed: String,
    #[serde(default, rename = "subscriber.unsubscribed")]
    unsubscribed: String,
    #[serde(default, rename = "subscriber.deleted")]
    deleted: String,
    #[serde(default, rename = "subscriber.erased")]
    erased: String,
}

impl AddForm {
    fn events(&self) -> EventSet {
        let ticked = [
            (Event::Created, &self.created),
            (Event::Confirmed, &self.confirmed),
            (Event::Unsubscribed, &self.unsubscribed),
            (Event::Deleted, &self.deleted),
            (Event::Erased, &self.erased),
        ];
        let names = ticked.into_iter().filter(|(_, v)| !v.is_empty()).map(|(e, _)| e.name());
        // Only known names reach `parse`; none ticked means every event.
        EventSet::parse(names).unwrap_or_else(|_| EventSet::all())
    }
}

#[derive(Serialize)]
struct CreatedPage<'a> {
    id: i64,
    url: &'a str,
    secret: &'a str,
}

pub async fn add_webhook(
    State(app): State<AppState>,
    session: Session,
    Form(form): Form<AddForm>,
) -> Result<Html<String>, AppError> {
    session.verify_form_token(&form.csrf_token).await?;
    let added = add_endpoint(app.store.as_ref(), &app.webhooks, &form.url, form.events())
        .await
        .map_err(|e| match e {
            AddRefused::Invalid(reason) => {
                AppError::Unprocessable(messages::webhook_refused(&reason))
            }
            AddRefused::Store(e) => e.into(),
        })?;
    let page = CreatedPage { id: added.id, url: form.url.trim(), secret: &added.secret };
    Ok(Html(app.templates.render("admin_webhook_created.html", page)?))
}

#[derive(Serialize)]
struct AttemptView {
    delivery_id: i64,
    event: String,
    at: String,
    at_display: String,
    http_status: Option<i32>,
    duration_ms: i64,
    outcome: String,
    error: Option<String>,
}

impl From<AttemptRecord> for AttemptView {
    fn from(attempt: AttemptRecord) -> Self {
        let (at, at_display) = timestamps(attempt.at);
        Self {
            delivery_id: attempt.delivery_id,
            event: attempt.event,
            at,
            at_display,
            http_status: attempt.http_status,
            duration_ms: attempt.duration_ms,
            outcome: attempt.outcome,
            error: attempt.error,
        }
    }
}

#[derive(Serialize)]
struct EndpointPage {
    endpoint: EndpointRow,
    attempts: Vec<AttemptView>,
    notice: Option<Notice>,
    form_token: Option<String>,
}

pub async fn webhook_page(
    State(app): State<AppState>,
    session: Session,
    Path(id): Path<i64>,
) -> Result<Html<String>, AppError> {
    let endpoint = app.store.endpoint(id).await?.ok_or(AppError::NotFound)?;
    let attempts = app.store.webhook_attempts(id).await?;
    let page = EndpointPage {
        endpoint: endpoint.into(),
        attempts: attempts.into_iter().map(AttemptView::from).collect(),
        notice: session.take_admin_notice().await?,
        form_token: session.form_token().await?,
    };
    Ok(Html(app.templates.render("admin_webhook.html", page)?))
}

pub async fn ping_webhook(
    State(app): State<AppState>,
    session: Session,
    Path(id): Path<i64>,
    Form(form): Form<TokenForm>,
) -> Result<Redirect, AppError> {
    session.verify_form_token(&form.csrf_token).await?;
    let notice = if app.store.queue_ping(id, crate::session::unix_now()).await? {
        messages::webhook_ping_queued()
    } else if app.store.endpoint(id).await?.is_some() {
        messages::webhook_disabled()
    } else {
        return Err(AppError::NotFound);
    };
    session.set_admin_notice(notice).await?;
    Ok(Redirect::to(&format!("/admin/webhooks/{id}")))
}

pub async fn remove_webhook(
    State(app): State<AppState>,
    session: Session,
    Path(id): Path<i64>,
    Form(form): Form<TokenForm>,
) -> Result<Redirect, AppError> {
    session.verify_form_token(&form.csrf_token).await?;
    if !app.store.remove_endpoint(id).await? {
        return Err(AppError::NotFound);
    }
    session.set_admin_notice(messages::webhook_removed()).await?;
    Ok(Redirect::to("/admin"))
}
