//! What a visitor does: see the form, sign up, be thanked, unregister.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{Html, IntoResponse, Redirect};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::client_ip::ClientIp;
use super::error::AppError;
use super::extract::Form;
use crate::domain::SubscriberEmail;
use crate::session::{Notice, Session};
use crate::signup::{SignupOutcome, SignupRequest, sign_up};

#[derive(Deserialize)]
pub struct SignupForm {
    #[serde(default)]
    email: String,
    /// The honeypot: hidden from people, irresistible to form-filling bots.
    #[serde(default)]
    website: String,
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
    notice: Option<Notice>,
    form_token: Option<String>,
}

pub async fn home(State(app): State<AppState>, session: Session) -> Result<Html<String>, AppError> {
    let notice = session.take_notice().await?;
    let email = session.visitor_email().await?;
    let form_token = match email {
        Some(_) => session.form_token().await?,
        None => None,
    };
    let page = HomePage { email: email.as_ref().map(SubscriberEmail::as_str), notice, form_token };
    Ok(Html(app.templates.render("home.html", page)?))
}

pub async fn signup(
    State(app): State<AppState>,
    Extension(ClientIp(client)): Extension<ClientIp>,
    session: Session,
    Form(form): Form<SignupForm>,
) -> Result<Redirect, AppError> {
    let request = SignupRequest { client, email: &form.email, honeypot: &form.website };
    // Already on the list, new, or a bot caught by the honeypot: the answer is the same, so the
    // form is neither a membership oracle nor a way to learn about the trap.
    match sign_up(app.store.as_ref(), &app.limits, request).await {
        Ok(SignupOutcome::Listed(email)) => session.remember_visitor(email).await?,
        Ok(SignupOutcome::Trapped) => {}
        Err(error) => return Err(AppError::from_signup(error, form.email)),
    }
    Ok(Redirect::to("/"))
}

pub async fn unregister(
    State(app): State<AppState>,
    session: Session,
    Form(form): Form<TokenForm>,
) -> Result<Redirect, AppError> {
    // Only the session's own address can be removed; nothing in the form names one.
    let Some(email) = session.visitor_email().await? else {
        session.set_notice(Notice::error("You haven't submitted an email!")).await?;
        return Ok(Redirect::to("/"));
    };
    session.verify_form_token(&form.csrf_token).await?;
    let notice = if app.store.remove_subscriber(&email).await? {
        Notice::success(format!("We have removed {email} from the list!"))
    } else {
        Notice::error("That address isn't on our list")
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
