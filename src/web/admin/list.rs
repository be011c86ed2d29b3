//! The admin list: newest first, 50 a page, with a search of any length and a status filter.

use axum::extract::State;
use axum::response::Html;
use serde::{Deserialize, Serialize};

use super::timestamps;
use super::tokens::TokenRow;
use super::webhooks::{EndpointRow, event_choices};
use crate::domain::{SearchTerm, SubscriberStatus};
use crate::session::{Notice, Session};
use crate::store::{Counts, ListFilter, Subscriber};
use crate::web::AppState;
use crate::web::error::AppError;
use crate::web::extract::Query;

const PAGE_SIZE: usize = 50;
/// Counting every match of a common term in a huge list costs more than the number is worth.
const MATCH_COUNT_CAP: u64 = 1_000;
/// How many addresses a page of a one- or two-character search looks through: about 20 ms of
/// scanning on either backend (see BENCHMARKS.md), whatever the size of the list.
const SHORT_SEARCH_WALK: u32 = 100_000;

/// How many addresses match a search, exactly up to the cap ("1,000+" beyond).
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

#[derive(Deserialize)]
pub struct ListParams {
    #[serde(default)]
    q: String,
    #[serde(default)]
    status: String,
    before: Option<i64>,
}

/// What `admin.html` receives.
#[derive(Serialize)]
struct ListPage<'a> {
    rows: Vec<Row>,
    /// Addresses on the list (pending and confirmed), or of the chosen status.
    total: u64,
    counts: CountsView,
    /// Set only while searching.
    matching: Option<MatchCount>,
    /// Set when a short search stopped before the end of the list.
    walked: Option<Walked>,
    /// The `before` value of the next (older) page, if there is one.
    next_before: Option<i64>,
    notice: Option<Notice>,
    form_token: Option<String>,
    q: &'a str,
    status: Option<SubscriberStatus>,
    first_page: bool,
    mail_on: bool,
    tokens: Vec<TokenRow>,
    webhooks: Vec<EndpointRow>,
    webhook_events: Vec<&'static str>,
    embed: Embed,
}

/// What the Embed section needs to write a form for the owner's site.
#[derive(Serialize)]
struct Embed {
    signup_url: String,
    api_url: String,
    allowed_origins: Vec<String>,
}

#[derive(Serialize)]
struct CountsView {
    pending: u64,
    confirmed: u64,
    left: u64,
}

/// How far a short search looked.
#[derive(Serialize)]
struct Walked {
    addresses: u32,
}

#[derive(Serialize)]
struct Row {
    id: i64,
    email: String,
    status: SubscriberStatus,
    signed_up_at: String,
    signed_up_display: String,
}

pub async fn list(
    State(app): State<AppState>,
    session: Session,
    Query(params): Query<ListParams>,
) -> Result<Html<String>, AppError> {
    let search = SearchTerm::parse(&params.q)?;
    let status = status_filter(&params.status)?;
    let found = find(&app, search.as_ref(), status, params.before, PAGE_SIZE).await?;
    let counts = app.store.counts().await?;
    let rows: Vec<Row> = found
        .rows
        .into_iter()
        .map(|s| {
            let (signed_up_at, signed_up_display) = timestamps(s.created_at);
            Row { id: s.id, email: s.email, status: s.status, signed_up_at, signed_up_display }
        })
        .collect();
    let notice = session.take_admin_notice().await?;
    let form_token = session.form_token().await?;
    let page = ListPage {
        rows,
        total: total(&counts, status),
        counts: CountsView {
            pending: counts.pending,
            confirmed: counts.confirmed,
            left: counts.left,
        },
        matching: found.matching,
        walked: found.walked,
        next_before: found.next_before,
        notice,
        form_token,
        q: params.q.trim(),
        status,
        first_page: params.before.is_none(),
        mail_on: app.signups.double_opt_in.is_some(),
        tokens: app.store.tokens().await?.into_iter().map(TokenRow::from).collect(),
        webhooks: app.store.endpoints().await?.into_iter().map(EndpointRow::from).collect(),
        webhook_events: event_choices(),
        embed: Embed {
            signup_url: endpoint(&app, "/signup"),
            api_url: endpoint(&app, "/api/v1/signup"),
            allowed_origins: app.cross_origin.allowed_origins(),
        },
    };
    Ok(Html(app.templates.render("admin.html", page)?))
}

fn endpoint(app: &AppState, path: &str) -> String {
    app.public_url.join(path).map(String::from).unwrap_or_else(|_| path.to_owned())
}

/// The status filter of a page or a form: empty for any.
pub(crate) fn status_filter(raw: &str) -> Result<Option<SubscriberStatus>, AppError> {
    match raw {
        "" => Ok(None),
        other => SubscriberStatus::parse(other).map(Some).ok_or_else(|| {
            AppError::BadRequest("The status filter is pending or confirmed.".into())
        }),
    }
}

fn total(counts: &Counts, status: Option<SubscriberStatus>) -> u64 {
    match status {
        None => counts.on_list(),
        Some(SubscriberStatus::Pending) => counts.pending,
        Some(SubscriberStatus::Confirmed) => counts.confirmed,
    }
}

/// One page of the list, or of a search.
pub(crate) struct Found {
    pub rows: Vec<Subscriber>,
    matching: Option<MatchCount>,
    walked: Option<Walked>,
    pub next_before: Option<i64>,
}

/// A page of `page_size` rows below `before`: the whole list (of one status, perhaps), or a
/// search, as the admin page and the API both show it.
pub(crate) async fn find(
    app: &AppState,
    search: Option<&SearchTerm>,
    status: Option<SubscriberStatus>,
    before: Option<i64>,
    page_size: usize,
) -> Result<Found, AppError> {
    match search {
        Some(term) if !term.has_trigrams() => walk(app, term, status, before, page_size).await,
        _ => indexed(app, ListFilter { search, status }, before, page_size).await,
    }
}

/// The whole list (of one status, perhaps), or a search through the trigram indexes.
async fn indexed(
    app: &AppState,
    filter: ListFilter<'_>,
    before: Option<i64>,
    page_size: usize,
) -> Result<Found, AppError> {
    let fetch = u32::try_from(page_size + 1).unwrap_or(u32::MAX);
    let mut rows = app.store.list_subscribers(filter, before, fetch).await?;
    let next_before = (rows.len() > page_size).then(|| rows[page_size - 1].id);
    rows.truncate(page_size);
    let matching = match filter.search {
        Some(_) => {
            Some(MatchCount::new(app.store.count_matching(filter, MATCH_COUNT_CAP + 1).await?))
        }
        None => None,
    };
    Ok(Found { rows, matching, walked: None, next_before })
}

/// A term too short for the trigram indexes: walk the newest addresses, at most
/// `SHORT_SEARCH_WALK` of them per page, so the page stays fast on any size of list.
async fn walk(
    app: &AppState,
    term: &SearchTerm,
    status: Option<SubscriberStatus>,
    before: Option<i64>,
    page_size: usize,
) -> Result<Found, AppError> {
    let cap = u32::try_from(page_size).unwrap_or(u32::MAX).max(MATCH_COUNT_CAP as u32) + 1;
    let walk = app.store.walk_matching(term, status, before, SHORT_SEARCH_WALK, cap).await?;
    let mut rows = walk.rows;
    let matching = Some(MatchCount::new(rows.len() as u64));
    let next_before = if rows.len() > page_size {
        Some(rows[page_size - 1].id)
    } else {
        // Every match of this stretch is on the page: "older" continues below the stretch.
        walk.stopped_at.map(|id| id.saturating_add(1))
    };
    rows.truncate(page_size);
    let walked = walk.stopped_at.map(|_| Walked { addresses: SHORT_SEARCH_WALK });
    Ok(Found { rows, matching, walked, next_before })
}
