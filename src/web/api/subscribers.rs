//! The list through the API: read, search, add and delete, with the same rules as the admin
//! page (search of any length, suppression honoured, the owner's add never changes a row).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderValue;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::ApiCaller;
use super::json::{self, ApiJson};
use super::{ApiStatus, Problem};
use crate::domain::{Door, Rfc3339, SearchTerm, SubscriberEmail};
use crate::signup::{OwnerAdd, OwnerAdded, owner_add};
use crate::store::{Subscriber, SubscriberRecord, SubscriberRow};
use crate::web::AppState;
use crate::web::admin::find;
use crate::web::error::{AppError, created, no_content};
use crate::web::extract::Query;

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 500;
/// As the admin search box; checked before trimming, as the document says.
const MAX_SEARCH_CHARS: usize = 254;

/// One row of a listing.
#[derive(Serialize, ToSchema)]
pub struct SubscriberSummary {
    id: i64,
    email: String,
    status: ApiStatus,
    /// RFC 3339, UTC.
    #[schema(value_type = String, format = DateTime)]
    signed_up_at: Rfc3339,
}

impl From<Subscriber> for SubscriberSummary {
    fn from(row: Subscriber) -> Self {
        Self {
            id: row.id,
            email: row.email,
            status: row.status.into(),
            signed_up_at: Rfc3339(row.created_at),
        }
    }
}

/// One subscriber, with how they came.
#[derive(Serialize, ToSchema)]
pub struct SubscriberDetail {
    id: i64,
    email: String,
    status: ApiStatus,
    #[schema(value_type = String, format = DateTime)]
    signed_up_at: Rfc3339,
    #[schema(value_type = Option<String>, format = DateTime)]
    confirmed_at: Option<Rfc3339>,
    /// The way in: `form`, `api`, `import` or `admin`.
    source: String,
}

impl From<SubscriberRecord> for SubscriberDetail {
    fn from(record: SubscriberRecord) -> Self {
        Self {
            id: record.id,
            email: record.email,
            status: record.status.into(),
            signed_up_at: Rfc3339(record.created_at),
            confirmed_at: record.confirmed_at.map(Rfc3339),
            source: record.source,
        }
    }
}

/// A page of the list, newest first.
#[derive(Serialize, ToSchema)]
pub struct SubscriberPage {
    subscribers: Vec<SubscriberSummary>,
    /// Pass as `before` for the next (older) page; `null` on the last page. A search of one or
    /// two characters looks through at most 100,000 addresses per page, so such a page may
    /// hold fewer rows than `limit`, even none, while this is set.
    next_before: Option<i64>,
}

/// A [`SubscriberPage`] written as its rows arrive, byte for byte what its derived `Serialize`
/// writes (a test holds the two equal): the keys as they are, and an address copied whole when
/// it needs no escape. serde_json checks every byte of every key and value, a tenth of the
/// list's time, and a page written from rows the store lends copies no address.
struct PageJson {
    out: Vec<u8>,
    limit: usize,
    written: usize,
    last_id: i64,
    /// A row came past `limit`: there is an older page.
    more: bool,
}

impl PageJson {
    fn new(limit: usize) -> Self {
        // About 110 bytes a row: one buffer of the right size, not one doubled from 128 bytes.
        let mut out = Vec::with_capacity(64 + 128 * limit);
        out.extend_from_slice(br#"{"subscribers":["#);
        Self { out, limit, written: 0, last_id: 0, more: false }
    }

    /// Writes the row, or notes that the page is full and another follows.
    fn push(&mut self, row: SubscriberRow<'_>) {
        if self.written == self.limit {
            self.more = true;
            return;
        }
        let out = &mut self.out;
        if self.written > 0 {
            out.push(b',');
        }
        out.extend_from_slice(br#"{"id":"#);
        out.extend_from_slice(itoa::Buffer::new().format(row.id).as_bytes());
        out.extend_from_slice(br#","email":"#);
        json::write_string(out, row.email);
        let status: &[u8] = match ApiStatus::from(row.status) {
            ApiStatus::Pending => br#","status":"pending","signed_up_at":""#,
            ApiStatus::Confirmed => br#","status":"confirmed","signed_up_at":""#,
        };
        out.extend_from_slice(status);
        out.extend_from_slice(&Rfc3339(row.created_at).bytes());
        out.extend_from_slice(br#""}"#);
        self.written += 1;
        self.last_id = row.id;
    }

    /// Where the next page starts, when rows came past this one's end.
    fn next_before(&self) -> Option<i64> {
        self.more.then_some(self.last_id)
    }

    fn finish(mut self, next_before: Option<i64>) -> Vec<u8> {
        self.out.extend_from_slice(br#"],"next_before":"#);
        match next_before {
            Some(id) => self.out.extend_from_slice(itoa::Buffer::new().format(id).as_bytes()),
            None => self.out.extend_from_slice(b"null"),
        }
        self.out.push(b'}');
        self.out
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only this status.
    status: Option<ApiStatus>,
    /// A case-insensitive part of the address, of any length, as in the admin search.
    #[param(max_length = 254, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    q: Option<String>,
    /// Only rows older than this id (the `next_before` of the previous page).
    #[param(minimum = 1)]
    before: Option<i64>,
    /// Rows per page.
    #[param(minimum = 1, maximum = 500, default = 100)]
    limit: Option<u32>,
}

#[utoipa::path(
    get, path = "/subscribers", tag = "subscribers",
    operation_id = "listSubscribers",
    params(ListParams),
    security(("token" = [])),
    responses(
        (status = 200, description = "A page of subscribers, newest first", body = SubscriberPage),
        (status = 400, description = "A parameter out of range", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed token checks", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(app): State<AppState>,
    _caller: ApiCaller,
    Query(params): Query<ListParams>,
) -> Result<Response, AppError> {
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(AppError::BadRequest(format!("limit is 1 to {MAX_LIMIT}.")));
    }
    if params.before.is_some_and(|before| before < 1) {
        return Err(AppError::BadRequest("before is an id, 1 or more.".into()));
    }
    let q = params.q.as_deref().unwrap_or_default();
    if q.chars().count() > MAX_SEARCH_CHARS {
        return Err(AppError::BadRequest(format!("q is at most {MAX_SEARCH_CHARS} characters.")));
    }
    let search = SearchTerm::parse(q)?;
    let status = params.status.map(Into::into);
    let mut page = PageJson::new(limit as usize);
    let next_before = match search {
        // The whole list: one row more than the page says whether another follows.
        None => {
            let mut push = |row: SubscriberRow<'_>| page.push(row);
            app.store.each_subscriber(status, params.before, limit + 1, &mut push).await?;
            page.next_before()
        }
        Some(term) => {
            let found = find(&app, Some(&term), status, params.before, limit as usize).await?;
            found.rows.iter().for_each(|row| page.push(row.as_row()));
            found.next_before
        }
    };
    Ok(([(CONTENT_TYPE, HeaderValue::from_static("application/json"))], page.finish(next_before))
        .into_response())
}

#[utoipa::path(
    get, path = "/subscribers/{id}", tag = "subscribers",
    operation_id = "getSubscriber",
    params(("id" = i64, Path, description = "The subscriber's id")),
    security(("token" = [])),
    responses(
        (status = 200, description = "The subscriber", body = SubscriberDetail),
        (status = 400, description = "The id is not a number", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such subscriber", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed token checks", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_one(
    State(app): State<AppState>,
    _caller: ApiCaller,
    Path(id): Path<String>,
) -> Result<Json<SubscriberDetail>, AppError> {
    let id = parse_id(&id)?;
    let record = app.store.subscriber(id).await?.ok_or(AppError::NotFound)?;
    Ok(Json(record.into()))
}

/// A subscriber to add.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSubscriberBody {
    /// Checked by the same parser as the signup form.
    #[schema(format = Email, max_length = 254)]
    email: String,
    /// `confirmed` (the default) records your assertion of consent; `pending` mails a
    /// confirmation link (needs mail).
    status: Option<ApiStatus>,
}

#[utoipa::path(
    post, path = "/subscribers", tag = "subscribers",
    operation_id = "addSubscriber",
    request_body = NewSubscriberBody,
    security(("token" = [])),
    responses(
        (status = 201, description = "Added", body = SubscriberDetail,
         headers(("Location" = String, description = "The new subscriber's URL")),
         links(
             ("GetSubscriber" = (operation_id = "getSubscriber", parameters(("id" = "$response.body#/id")))),
             ("DeleteSubscriber" = (operation_id = "deleteSubscriber", parameters(("id" = "$response.body#/id")))),
         )),
        (status = 400, description = "The body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A read-only token", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already on the list", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is over 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not an address we accept, an unknown field, an address that left the list (only the person can bring it back), or pending with no mail configured", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed token checks", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn add(
    State(app): State<AppState>,
    caller: ApiCaller,
    ApiJson(body): ApiJson<NewSubscriberBody>,
) -> Result<Response, AppError> {
    caller.may_write()?;
    let email = SubscriberEmail::parse(&body.email)
        .map_err(|error| AppError::InvalidEmail { typed: String::new(), error })?;
    let status = match body.status {
        None | Some(ApiStatus::Confirmed) => OwnerAdd::Confirmed,
        Some(ApiStatus::Pending) => OwnerAdd::Pending,
    };
    let who = format!("API token {}", caller.token_name);
    match owner_add(app.store.as_ref(), &app.signups, &email, status, Door::Api, &who).await? {
        OwnerAdded::Added => {}
        OwnerAdded::AlreadyOnTheList => return Err(AppError::AlreadyListed),
        OwnerAdded::Suppressed => return Err(AppError::Suppressed),
        OwnerAdded::NoMail => return Err(AppError::MailOff),
    }
    let record = app
        .store
        .subscriber_by_key(email.key())
        .await?
        .ok_or_else(|| AppError::Unexpected(anyhow::anyhow!("an added row is missing")))?;
    let location = format!("/api/v1/subscribers/{}", record.id);
    Ok(created(location, Json(SubscriberDetail::from(record))))
}

#[utoipa::path(
    delete, path = "/subscribers/{id}", tag = "subscribers",
    operation_id = "deleteSubscriber",
    params(("id" = i64, Path, description = "The subscriber's id")),
    security(("token" = [])),
    responses(
        (status = 204, description = "Deleted (the admin's delete: the address may be added again)"),
        (status = 400, description = "The id is not a number", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A read-only token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such subscriber", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed token checks", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete(
    State(app): State<AppState>,
    caller: ApiCaller,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    caller.may_write()?;
    let id = parse_id(&id)?;
    if app.store.remove_subscriber_by_id(id, None).await? {
        Ok(no_content())
    } else {
        Err(AppError::NotFound)
    }
}

/// Counts by status.
#[derive(Serialize, ToSchema)]
pub struct Stats {
    pending: u64,
    confirmed: u64,
    /// Addresses that unsubscribed or erased themselves and have not come back.
    left: u64,
}

#[utoipa::path(
    get, path = "/stats", tag = "subscribers",
    operation_id = "getStats",
    security(("token" = [])),
    responses(
        (status = 200, description = "Counts by status", body = Stats),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed token checks", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn stats(
    State(app): State<AppState>,
    _caller: ApiCaller,
) -> Result<Json<Stats>, AppError> {
    let counts = app.store.counts().await?;
    Ok(Json(Stats { pending: counts.pending, confirmed: counts.confirmed, left: counts.left }))
}

/// Ids in paths are read here, so a bad one is a problem document like every other error.
pub(super) fn parse_id(raw: &str) -> Result<i64, AppError> {
    raw.parse().map_err(|_| AppError::BadRequest("The id is a whole number.".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::SubscriberStatus;

    fn row(id: i64, email: &str, status: SubscriberStatus, at: i64) -> Subscriber {
        Subscriber { id, email: email.into(), status, created_at: at }
    }

    /// What the derived `Serialize` writes for these rows, and what [`PageJson`] writes.
    fn both(rows: &[Subscriber], next_before: Option<i64>) -> (String, String) {
        let page = SubscriberPage {
            subscribers: rows.iter().cloned().map(Into::into).collect(),
            next_before,
        };
        let mut written = PageJson::new(rows.len());
        rows.iter().for_each(|row| written.push(row.as_row()));
        (
            String::from_utf8(serde_json::to_vec(&page).unwrap()).unwrap(),
            String::from_utf8(written.finish(next_before)).unwrap(),
        )
    }

    #[test]
    fn the_written_page_is_what_serde_writes() {
        let awkward = [
            "plain@example.com",
            "\"quoted local\"@example.com",
            "back\\slash@example.com",
            "tab\there@example.com",
            "nul\u{0}@example.com",
            "unit\u{1f}separator@example.com",
            "del\u{7f}@example.com",
            "ünïcødé@bücher.example",
            "",
        ];
        let statuses = [SubscriberStatus::Pending, SubscriberStatus::Confirmed];
        let rows: Vec<_> = awkward
            .iter()
            .enumerate()
            .map(|(i, email)| row(i as i64 * 7919 - 3, email, statuses[i % 2], i as i64 * 86_399))
            .collect();
        let pages = [
            (rows, Some(i64::MAX)),
            (vec![row(i64::MIN, "a@b.c", SubscriberStatus::Pending, -1)], None),
            (Vec::new(), None),
        ];
        for (rows, next_before) in pages {
            let (expected, written) = both(&rows, next_before);
            assert_eq!(written, expected);
        }
    }

    #[test]
    fn a_row_past_the_limit_is_not_written_and_names_the_next_page() {
        let rows = [
            row(30, "c@example.com", SubscriberStatus::Confirmed, 3),
            row(20, "b@example.com", SubscriberStatus::Pending, 2),
            row(10, "a@example.com", SubscriberStatus::Confirmed, 1),
        ];
        let mut page = PageJson::new(2);
        rows.iter().for_each(|row| page.push(row.as_row()));
        assert_eq!(page.next_before(), Some(20));
        let (expected, _) = both(&rows[..2], Some(20));
        assert_eq!(String::from_utf8(page.finish(Some(20))).unwrap(), expected);

        let mut exact = PageJson::new(3);
        rows.iter().for_each(|row| exact.push(row.as_row()));
        assert_eq!(exact.next_before(), None);
    }
}
