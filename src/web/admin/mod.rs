//! What the admin does: log in, list and search, look at one subscriber, resend a confirmation,
//! delete, log out. Everything but the login page sits behind [`require_admin`], applied once at
//! the router.

mod announcements;
mod by_hand;
mod list;
mod subscriber;
mod tokens;
mod transfer;
mod webhooks;

pub(crate) use announcements::outcome as announcement_outcome;
pub use announcements::{
    act_on_announcement, announcement_page, announcement_preview, announcements_page,
    create_announcement, send_announcement, send_page, test_announcement, update_announcement,
};
pub use by_hand::{add, delete_matching, delete_matching_page, delete_selected};
pub(crate) use list::find;
pub use list::list;
pub use subscriber::subscriber_page;
pub use tokens::{create_token, revoke_token};
pub use transfer::{export, import};
pub use webhooks::{add_webhook, ping_webhook, remove_webhook, webhook_page};

use std::time::Instant;

use anyhow::Context;
use axum::Extension;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};

use super::client_ip::ClientIp;
use super::error::AppError;
use super::extract::{Form, user_agent};
use super::public::TokenForm;
use super::{AppState, messages};
use crate::domain::{ClientEvidence, Door, Evidence, SubscriberEmail};
use crate::security::{AdminCredential, verify_password};
use crate::session::{AdminStatus, Notice, Session};
use crate::signup::queue_confirmation;
use crate::store::ConfirmationQueued;

pub async fn require_admin(
    State(app): State<AppState>,
    session: Session,
    request: Request,
    next: Next,
) -> Result<Response, AppError> {
    match session.admin_status(&app.admin).await? {
        AdminStatus::Active => Ok(next.run(request).await),
        AdminStatus::Expired | AdminStatus::LoggedOut => {
            Ok(Redirect::to("/admin/login").into_response())
        }
    }
}

pub async fn login_page(
    State(app): State<AppState>,
    session: Session,
) -> Result<Response, AppError> {
    if session.admin_status(&app.admin).await? == AdminStatus::Active {
        return Ok(Redirect::to("/admin").into_response());
    }
    let notice = session.take_admin_notice().await?;
    let page = LoginPage { notice, error: None };
    Ok(Html(app.templates.render("admin_login.html", page)?).into_response())
}

/// What `admin_login.html` receives.
#[derive(Serialize)]
struct LoginPage {
    notice: Option<Notice>,
    error: Option<&'static str>,
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    password: String,
}

pub async fn login(
    State(app): State<AppState>,
    Extension(ClientIp(client)): Extension<ClientIp>,
    session: Session,
    Form(form): Form<LoginForm>,
) -> Result<Redirect, AppError> {
    // Checked before the password, so a throttled guess costs the guesser nothing but time.
    app.limits
        .login_allowed(client, Instant::now())
        .map_err(|t| AppError::LoginThrottled { retry_after: t.retry_after })?;
    let mut credential = app.admin.current().await;
    let mut matches = password_matches(&form.password, &credential).await?;
    if !matches && let Some(newer) = app.admin.newer_than(&credential).await? {
        // Another instance has just set a new password; this one may be it.
        credential = newer;
        matches = password_matches(&form.password, &credential).await?;
    }
    if !matches {
        app.limits.login_failed(client, Instant::now());
        return Err(AppError::WrongPassword);
    }
    app.limits.login_succeeded(client);
    session.log_in_admin(credential.fingerprint().to_owned()).await?;
    Ok(Redirect::to("/admin"))
}

async fn password_matches(candidate: &str, credential: &AdminCredential) -> anyhow::Result<bool> {
    let (candidate, hash) = (candidate.to_owned(), credential.hash().clone());
    tokio::task::spawn_blocking(move || verify_password(&candidate, &hash))
        .await
        .context("running the password check")
}

/// RFC 3339 for the `datetime` attribute, and a shorter form for people.
pub(crate) fn timestamps(unix_seconds: i64) -> (String, String) {
    let time = crate::domain::Rfc3339(unix_seconds);
    (time.to_string(), time.for_people())
}

#[derive(Deserialize)]
pub struct DeleteForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    email: String,
}

pub async fn delete(
    State(app): State<AppState>,
    session: Session,
    Form(form): Form<DeleteForm>,
) -> Result<Redirect, AppError> {
    session.verify_form_token(&form.csrf_token).await?;
    let email =
        SubscriberEmail::parse(&form.email).map_err(|e| AppError::Unprocessable(e.to_string()))?;
    // The admin's delete is not the person leaving: no suppression, so they can be added back.
    let notice = if app.store.remove_subscriber(&email, None).await? {
        messages::admin_removed(email.as_str())
    } else {
        messages::admin_not_on_list(email.as_str())
    };
    session.set_admin_notice(notice).await?;
    Ok(Redirect::to("/admin"))
}

#[derive(Deserialize)]
pub struct ResendForm {
    #[serde(default)]
    csrf_token: String,
    id: Option<i64>,
}

/// Sends a pending subscriber a fresh confirmation link, within the same per-address limit as
/// the visitor's own Resend.
pub async fn resend(
    State(app): State<AppState>,
    Extension(ClientIp(client)): Extension<ClientIp>,
    headers: HeaderMap,
    session: Session,
    Form(form): Form<ResendForm>,
) -> Result<Redirect, AppError> {
    session.verify_form_token(&form.csrf_token).await?;
    let id = form.id.ok_or_else(|| AppError::Unprocessable("No subscriber was chosen.".into()))?;
    let record = app.store.subscriber(id).await?.ok_or(AppError::NotFound)?;
    let back = Redirect::to(&format!("/admin/subscribers/{id}"));
    let Some(opt_in) = &app.signups.double_opt_in else {
        session.set_admin_notice(messages::admin_no_mail()).await?;
        return Ok(back);
    };
    let email = SubscriberEmail::parse(&record.email).context("a stored address")?;
    let evidence = Evidence {
        door: Door::Admin,
        client: ClientEvidence::new(client, user_agent(&headers), app.signups.keep_full_ip),
        consent: app.signups.consent.clone(),
    };
    let notice =
        match queue_confirmation(app.store.as_ref(), &app.signups, opt_in, &email, &evidence)
            .await?
        {
            ConfirmationQueued::Queued => messages::admin_resent(email.as_str()),
            ConfirmationQueued::LimitReached => messages::admin_resend_limited(email.as_str()),
            ConfirmationQueued::AlreadyConfirmed => {
                messages::admin_already_confirmed(email.as_str())
            }
        };
    session.set_admin_notice(notice).await?;
    Ok(back)
}

pub async fn logout(session: Session, Form(form): Form<TokenForm>) -> Result<Redirect, AppError> {
    session.verify_form_token(&form.csrf_token).await?;
    session.log_out().await?;
    Ok(Redirect::to("/"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_are_utc_minutes() {
        let (machine, human) = super::timestamps(1_795_651_200);
        assert_eq!(machine, "2026-11-26T00:00:00Z");
        assert_eq!(human, "2026-11-26 00:00 UTC");
    }
}
