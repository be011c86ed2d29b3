//! One subscriber as the admin sees them: the evidence of consent and every mail sent.

use axum::extract::{Path, State};
use axum::response::Html;
use serde::Serialize;

use super::timestamps;
use crate::session::{Notice, Session};
use crate::store::{MailRecord, SubscriberRecord};
use crate::web::AppState;
use crate::web::error::AppError;

#[derive(Serialize)]
struct SubscriberView {
    id: i64,
    email: String,
    status: &'static str,
    signed_up_at: String,
    signed_up_display: String,
    source: String,
    signup_ip: Option<String>,
    signup_agent: Option<String>,
    consent: Option<String>,
    confirmed_at: Option<String>,
    confirmed_display: Option<String>,
    confirm_ip: Option<String>,
    confirm_agent: Option<String>,
}

impl From<SubscriberRecord> for SubscriberView {
    fn from(record: SubscriberRecord) -> Self {
        let (signed_up_at, signed_up_display) = timestamps(record.created_at);
        let confirmed = record.confirmed_at.map(timestamps);
        Self {
            id: record.id,
            email: record.email,
            status: record.status.as_str(),
            signed_up_at,
            signed_up_display,
            source: record.source,
            signup_ip: record.signup_ip,
            signup_agent: record.signup_agent,
            consent: record.consent,
            confirmed_display: confirmed.as_ref().map(|(_, human)| human.clone()),
            confirmed_at: confirmed.map(|(machine, _)| machine),
            confirm_ip: record.confirm_ip,
            confirm_agent: record.confirm_agent,
        }
    }
}

#[derive(Serialize)]
struct MailView {
    purpose: &'static str,
    status: String,
    attempts: i64,
    last_error: Option<String>,
    queued_at: String,
    queued_display: String,
}

impl From<MailRecord> for MailView {
    fn from(mail: MailRecord) -> Self {
        let (queued_at, queued_display) = timestamps(mail.created_at);
        let purpose = match mail.purpose.as_str() {
            "confirm" => "confirmation",
            "welcome" => "welcome",
            _ => "other",
        };
        Self {
            purpose,
            status: mail.status,
            attempts: mail.attempts,
            last_error: mail.last_error,
            queued_at,
            queued_display,
        }
    }
}

#[derive(Serialize)]
struct SubscriberPage {
    subscriber: SubscriberView,
    mails: Vec<MailView>,
    notice: Option<Notice>,
    form_token: Option<String>,
    mail_on: bool,
}

pub async fn subscriber_page(
    State(app): State<AppState>,
    session: Session,
    Path(id): Path<i64>,
) -> Result<Html<String>, AppError> {
    let record = app.store.subscriber(id).await?.ok_or(AppError::NotFound)?;
    let mails = app.store.mails_to(id).await?;
    let page = SubscriberPage {
        subscriber: record.into(),
        mails: mails.into_iter().map(MailView::from).collect(),
        notice: session.take_admin_notice().await?,
        form_token: session.form_token().await?,
        mail_on: app.signups.double_opt_in.is_some(),
    };
    Ok(Html(app.templates.render("admin_subscriber.html", page)?))
}
