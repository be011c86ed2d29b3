//! What the admin does: log in, list and search, delete, log out. Everything but the login page
//! sits behind [`require_admin`], applied once at the router.

use std::time::Instant;

use anyhow::Context;
use axum::Extension;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::client_ip::ClientIp;
use super::error::AppError;
use super::extract::{Form, Query};
use super::public::TokenForm;
use crate::domain::{SearchTerm, SubscriberEmail};
use crate::security::{AdminCredential, verify_password};
use crate::session::{AdminStatus, Notice, Session};
use crate::store::Subscriber;

const PAGE_SIZE: usize = 50;
/// How many addresses a page of a one- or two-character search looks through: about 20 ms of
/// scanning on either backend (see BENCHMARKS.md), whatever the size of the list.
const SHORT_SEARCH_WALK: u32 = 100_000;
/// Counting every match of a common term in a huge list costs more than the number is worth.
const MATCH_COUNT_CAP: u64 = 1_000;

/// How many addresses match a search, exactly up to the cap ("10000+" beyond).
#[derive(Serialize)]
struct MatchCount {
    count: u64,
    more: bool,
}

impl MatchCount {
    fn new(counted: u64) -> Self {
        Self { count: counted.min(MATCH_COUNT_CAP), more: counted > MATCH_COUNT_CAP }
    }
}

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

#[derive(Deserialize)]
pub struct ListParams {
    #[serde(default)]
    q: String,
    before: Option<i64>,
}

/// What `admin.html` receives.
#[derive(Serialize)]
struct ListPage<'a> {
    rows: Vec<Row>,
    total: u64,
    /// Set only while searching.
    matching: Option<MatchCount>,
    /// Set when a short search stopped before the end of the list.
    walked: Option<Walked>,
    /// The `before` value of the next (older) page, if there is one.
    next_before: Option<i64>,
    notice: Option<Notice>,
    form_token: Option<String>,
    q: &'a str,
    first_page: bool,
}

/// How far a short search looked.
#[derive(Serialize)]
struct Walked {
    addresses: u32,
}

#[derive(Serialize)]
struct Row {
    email: String,
    signed_up_at: String,
    signed_up_display: String,
}

pub async fn list(
    State(app): State<AppState>,
    session: Session,
    Query(params): Query<ListParams>,
) -> Result<Html<String>, AppError> {
    let search = SearchTerm::parse(&params.q)?;
    let found = match &search {
        Some(term) if !term.has_trigrams() => walk(&app, term, params.before).await?,
        _ => indexed(&app, search.as_ref(), params.before).await?,
    };
    let total = app.store.count_subscribers().await?;
    let rows: Vec<Row> = found
        .rows
        .into_iter()
        .map(|s| {
            let (signed_up_at, signed_up_display) = timestamps(s.created_at);
            Row { email: s.email, signed_up_at, signed_up_display }
        })
        .collect();
    let notice = session.take_admin_notice().await?;
    let form_token = session.form_token().await?;
    let page = ListPage {
        rows,
        total,
        matching: found.matching,
        walked: found.walked,
        next_before: found.next_before,
        notice,
        form_token,
        q: params.q.trim(),
        first_page: params.before.is_none(),
    };
    Ok(Html(app.templates.render("admin.html", page)?))
}

/// One page of the list, or of a search.
struct Found {
    rows: Vec<Subscriber>,
    matching: Option<MatchCount>,
    walked: Option<Walked>,
    next_before: Option<i64>,
}

/// The whole list, or a search through the trigram indexes.
async fn indexed(
    app: &AppState,
    search: Option<&SearchTerm>,
    before: Option<i64>,
) -> Result<Found, AppError> {
    let mut rows = app.store.list_subscribers(search, before, (PAGE_SIZE + 1) as u32).await?;
    let next_before = (rows.len() > PAGE_SIZE).then(|| rows[PAGE_SIZE - 1].id);
    rows.truncate(PAGE_SIZE);
    let matching = match search {
        Some(term) => {
            Some(MatchCount::new(app.store.count_matching(term, MATCH_COUNT_CAP + 1).await?))
        }
        None => None,
    };
    Ok(Found { rows, matching, walked: None, next_before })
}

/// A term too short for the trigram indexes: walk the newest addresses, at most
/// `SHORT_SEARCH_WALK` of them per page, so the page stays fast on any size of list.
async fn walk(app: &AppState, term: &SearchTerm, before: Option<i64>) -> Result<Found, AppError> {
    let walk = app
        .store
        .walk_matching(term, before, SHORT_SEARCH_WALK, (MATCH_COUNT_CAP + 1) as u32)
        .await?;
    let mut rows = walk.rows;
    let matching = Some(MatchCount::new(rows.len() as u64));
    let next_before = if rows.len() > PAGE_SIZE {
        Some(rows[PAGE_SIZE - 1].id)
    } else {
        // Every match of this stretch is on the page: "older" continues below the stretch.
        walk.stopped_at.map(|id| id.saturating_add(1))
    };
    rows.truncate(PAGE_SIZE);
    let walked = walk.stopped_at.map(|_| Walked { addresses: SHORT_SEARCH_WALK });
    Ok(Found { rows, matching, walked, next_before })
}

/// RFC 3339 for the `datetime` attribute, and a shorter form for people.
fn timestamps(unix_seconds: i64) -> (String, String) {
    let time = std::time::UNIX_EPOCH
        + std::time::Duration::from_secs(u64::try_from(unix_seconds).unwrap_or(0));
    let machine = humantime::format_rfc3339_seconds(time).to_string();
    let human = format!(
        "{} UTC",
        machine.replace('T', " ").trim_end_matches('Z').get(..16).unwrap_or(&machine)
    );
    (machine, human)
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
    let notice = if app.store.remove_subscriber(&email).await? {
        Notice::success(format!("We have removed {email} from the list."))
    } else {
        Notice::error(format!("{email} isn't on the list."))
    };
    session.set_admin_notice(notice).await?;
    Ok(Redirect::to("/admin"))
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
