//! What a visitor does: see the form, sign up, be thanked (or asked to confirm), have the link
//! sent again, unregister.

use crate::metrics::UnsubscribeDoor;
use std::time::Instant;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{Html, IntoResponse, Redirect};
use serde::{Deserialize, Serialize};
use url::Url;

use super::client_ip::ClientIp;
use super::error::AppError;
use super::extract::{Form, user_agent};
use super::{AppState, messages};
use crate::domain::{ClientEvidence, Door, Evidence, SubscriberEmail};
use crate::session::{Notice, Session, unix_now};
use crate::signup::{
    SignupError, SignupOutcome, SignupRequest, queue_confirmation, sign_up_remembered,
};
use crate::store::{LeaveReason, Leaving};

#[derive(Deserialize)]
pub struct SignupForm {
    #[serde(default)]
    email: String,
    /// The honeypot: hidden from people, irresistible to form-filling bots.
    #[serde(default)]
    website: String,
    /// Where an embedded form on an allowed site wants the person back (any other value is
    /// ignored: no open redirect).
    #[serde(default)]
    redirect: String,
}

/// A form whose only field is the per-session token.
#[derive(Deserialize)]
pub struct TokenForm {
    #[serde(default)]
    pub csrf_token: String,
}

/// What `home.html` receives (the signup error page adds `error` and `typed`).
#[derive(Serialize)]
struct HomePage<'a> {
    email: Option<&'a str>,
    awaiting_confirmation: bool,
    notice: Option<Notice>,
    form_token: Option<String>,
}

/// The page only changes with what the session stores, so it is rendered once per version of
/// the session (all new visitors share one) and kept, unless a one-time notice is shown.
pub async fn home(State(app): State<AppState>, session: Session) -> Result<Html<Bytes>, AppError> {
    // Pages are kept only when there was no notice to show: a kept page needs no reading of
    // the session at all.
    if let Some(page) = app.rendered_pages.get(&session.stored_version().await?) {
        return Ok(Html(page));
    }
    let notice = session.take_notice().await?;
    let shows_notice = notice.is_some();
    let email = session.visitor_email().await?;
    let (form_token, awaiting_confirmation) = match email {
        Some(_) => (session.form_token().await?, session.visitor_awaits_confirmation().await?),
        None => (None, false),
    };
    let page = HomePage {
        email: email.as_ref().map(SubscriberEmail::as_str),
        awaiting_confirmation,
        notice,
        form_token,
    };
    let page = Bytes::from(app.templates.render("home.html", page)?);
    if !shows_notice {
        app.rendered_pages.keep(session.version().await?, page.clone());
    }
    Ok(Html(page))
}

pub async fn signup(
    State(app): State<AppState>,
    Extension(ClientIp(client)): Extension<ClientIp>,
    headers: HeaderMap,
    session: Session,
    Form(form): Form<SignupForm>,
) -> Result<Redirect, AppError> {
    let request = SignupRequest {
        client,
        user_agent: user_agent(&headers),
        door: Door::Form,
        email: &form.email,
        honeypot: &form.website,
    };
    // Already on the list, new, or a bot caught by the honeypot: the answer is the same, so the
    // form is neither a membership oracle nor a way to learn about the trap.
    let back =
        Url::parse(form.redirect.trim()).ok().filter(|url| app.cross_origin.may_redirect_to(url));
    let remember = |email, awaiting| session.remember_visitor(email, awaiting);
    let signed_up =
        sign_up_remembered(app.store.as_ref(), &app.limits, &app.signups, request, remember);
    let status = match signed_up.await {
        Ok(SignupOutcome::Listed(_)) => "ok",
        Ok(SignupOutcome::AwaitingConfirmation(_)) => "pending",
        Ok(SignupOutcome::Trapped) if app.signups.double_opt_in.is_some() => "pending",
        Ok(SignupOutcome::Trapped) => "ok",
        Err(SignupError::Storage(e)) => return Err(AppError::Unavailable(e)),
        Err(error) => {
            let Some(back) = back else {
                return Err(AppError::from_signup(error, form.email));
            };
            let status = match error {
                SignupError::Invalid(_) => "invalid",
                _ => "limited",
            };
            return Ok(Redirect::to(with_status(back, status).as_str()));
        }
    };
    Ok(match back {
        Some(back) => Redirect::to(with_status(back, status).as_str()),
        None => Redirect::to("/"),
    })
}

/// The owner's page, told how the signup went.
fn with_status(mut url: Url, status: &str) -> Url {
    url.query_pairs_mut().append_pair("status", status);
    url
}

/// Another confirmation link for the address this browser signed up.
pub async fn resend(
    State(app): State<AppState>,
    Extension(ClientIp(client)): Extension<ClientIp>,
    headers: HeaderMap,
    session: Session,
    Form(form): Form<TokenForm>,
) -> Result<Redirect, AppError> {
    let Some(email) = session.visitor_email().await? else {
        session.set_notice(messages::no_address_yet()).await?;
        return Ok(Redirect::to("/"));
    };
    session.verify_form_token(&form.csrf_token).await?;
    let Some(opt_in) = &app.signups.double_opt_in else {
        return Ok(Redirect::to("/"));
    };
    // Each resend is a signup's worth of work for the mail server: the same per-client limit.
    if let Err(too_many) = app.limits.signup_from(client, Instant::now()) {
        let wait = messages::wait_in_words(too_many.retry_after);
        session.set_notice(messages::resend_throttled(&wait)).await?;
        return Ok(Redirect::to("/"));
    }
    let evidence = Evidence {
        door: Door::Form,
        client: ClientEvidence::new(client, user_agent(&headers), app.signups.keep_full_ip),
        consent: app.signups.consent.clone(),
    };
    queue_confirmation(app.store.as_ref(), &app.signups, opt_in, &email, &evidence).await?;
    session.set_notice(messages::confirmation_resent(&email)).await?;
    Ok(Redirect::to("/"))
}

pub async fn unregister(
    State(app): State<AppState>,
    session: Session,
    Form(form): Form<TokenForm>,
) -> Result<Redirect, AppError> {
    // Only the session's own address can be removed; nothing in the form names one.
    let Some(email) = session.visitor_email().await? else {
        session.set_notice(messages::no_address_yet()).await?;
        return Ok(Redirect::to("/"));
    };
    session.verify_form_token(&form.csrf_token).await?;
    let notice = if session.visitor_awaits_confirmation().await? {
        // Typing an address proves nothing: from here, only an unconfirmed signup can go.
        let address_hash = app.signups.links.address_hash(email.key());
        if app.store.remove_pending(&email, address_hash).await? {
            messages::unregistered(&email)
        } else {
            messages::no_longer_pending(&email)
        }
    } else {
        let leaving = Leaving {
            address_hash: app.signups.links.address_hash(email.key()),
            reason: LeaveReason::Unsubscribed,
            now: unix_now(),
        };
        if app.store.remove_subscriber(&email, Some(leaving)).await? {
            app.metrics.unsubscribe(UnsubscribeDoor::Unregister);
            messages::unregistered(&email)
        } else {
            messages::not_on_the_list()
        }
    };
    session.forget_visitor(notice).await?;
    Ok(Redirect::to("/"))
}

pub async fn healthz(State(app): State<AppState>) -> Result<&'static str, AppError> {
    app.store.ping().await?;
    Ok("ok")
}

/// The stylesheet, under its content-addressed name (cached for a year) or its plain name
/// (cached for an hour, for hand-written templates that link to it).
pub async fn static_file(
    State(app): State<AppState>,
    Path(file): Path<String>,
) -> Result<impl IntoResponse, AppError> {
    let stylesheet = app.templates.stylesheet();
    let cache = if stylesheet.fingerprinted_path.strip_prefix("/static/") == Some(file.as_str()) {
        "public, max-age=31536000, immutable"
    } else if file == "style.css" {
        "public, max-age=3600"
    } else {
        return Err(AppError::NotFound);
    };
    Ok((
        [(CONTENT_TYPE, "text/css; charset=utf-8"), (CACHE_CONTROL, cache)],
        stylesheet.css.clone(),
    ))
}

pub async fn not_found() -> AppError {
    AppError::NotFound
}
