//! What the admin does by hand: add one address, delete the selected rows, delete every row a
//! search matches (after a page that says how many).

use axum::extract::State;
use axum::response::{Html, Redirect};
use serde::{Deserialize, Serialize};

use super::list::status_filter;
use crate::domain::{Door, SearchTerm, SubscriberEmail, SubscriberStatus};
use crate::session::Session;
use crate::signup::{OwnerAdd, OwnerAdded, owner_add};
use crate::store::{ListFilter, Selection, newest_id};
use crate::web::error::AppError;
use crate::web::extract::{Form, FormPairs, Query};
use crate::web::{AppState, messages};

/// At most this many rows are deleted by one "delete selected" (a page shows 50).
const MAX_SELECTED: usize = 500;

#[derive(Deserialize)]
pub struct AddForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    email: String,
    #[serde(default, rename = "as")]
    add_as: String,
}

pub async fn add(
    State(app): State<AppState>,
    session: Session,
    Form(form): Form<AddForm>,
) -> Result<Redirect, AppError> {
    session.verify_form_token(&form.csrf_token).await?;
    let email =
        SubscriberEmail::parse(&form.email).map_err(|e| AppError::Unprocessable(e.to_string()))?;
    let status = match form.add_as.as_str() {
        "" | "confirmed" => OwnerAdd::Confirmed,
        "pending" => OwnerAdd::Pending,
        _ => return Err(AppError::Unprocessable("Add it as confirmed or pending.".into())),
    };
    let added =
        owner_add(app.store.as_ref(), &app.signups, &email, status, Door::Admin, "the admin")
            .await?;
    let notice = match added {
        OwnerAdded::Added => messages::admin_added(email.as_str(), status == OwnerAdd::Pending),
        OwnerAdded::AlreadyOnTheList => messages::admin_already_listed(email.as_str()),
        OwnerAdded::Suppressed => messages::admin_suppressed(email.as_str()),
        OwnerAdded::NoMail => messages::admin_no_mail(),
    };
    session.set_admin_notice(notice).await?;
    Ok(Redirect::to("/admin"))
}

pub async fn delete_selected(
    State(app): State<AppState>,
    session: Session,
    form: FormPairs,
) -> Result<Redirect, AppError> {
    session.verify_form_token(form.value("csrf_token").unwrap_or_default()).await?;
    let ids = form
        .values("id")
        .map(|id| id.parse::<i64>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| AppError::BadRequest("A selected row could not be read.".into()))?;
    if ids.len() > MAX_SELECTED {
        return Err(AppError::Unprocessable(format!(
            "Select at most {MAX_SELECTED} rows at a time, or delete by search."
        )));
    }
    let notice = if ids.is_empty() {
        messages::admin_none_selected()
    } else {
        messages::admin_removed_many(app.store.remove_subscribers(&ids).await?)
    };
    session.set_admin_notice(notice).await?;
    Ok(Redirect::to(&back_to_list(
        form.value("q").unwrap_or_default(),
        form.value("status").unwrap_or_default(),
    )))
}

#[derive(Deserialize)]
pub struct MatchingParams {
    #[serde(default)]
    q: String,
    #[serde(default)]
    status: String,
}

/// What `admin_delete_matching.html` receives.
#[derive(Serialize)]
struct MatchingPage<'a> {
    q: &'a str,
    status: Option<SubscriberStatus>,
    count: u64,
    up_to_id: i64,
    form_token: Option<String>,
}

pub async fn delete_matching_page(
    State(app): State<AppState>,
    session: Session,
    Query(params): Query<MatchingParams>,
) -> Result<Html<String>, AppError> {
    let (search, status) = searched(&params.q, &params.status)?;
    let up_to_id = newest_id(app.store.as_ref()).await?;
    let filter = ListFilter { search: search.as_ref(), status };
    let count = app.store.count_selection(Selection { filter, up_to_id }).await?;
    let page = MatchingPage {
        q: params.q.trim(),
        status,
        count,
        up_to_id,
        form_token: session.form_token().await?,
    };
    Ok(Html(app.templates.render("admin_delete_matching.html", page)?))
}

#[derive(Deserialize)]
pub struct DeleteMatchingForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    q: String,
    #[serde(default)]
    status: String,
    up_to_id: Option<i64>,
}

pub async fn delete_matching(
    State(app): State<AppState>,
    session: Session,
    Form(form): Form<DeleteMatchingForm>,
) -> Result<Redirect, AppError> {
    session.verify_form_token(&form.csrf_token).await?;
    let (search, status) = searched(&form.q, &form.status)?;
    let up_to_id = form
        .up_to_id
        .ok_or_else(|| AppError::BadRequest("The confirmation could not be read.".into()))?;
    let filter = ListFilter { search: search.as_ref(), status };
    let removed = app.store.remove_selection(Selection { filter, up_to_id }).await?;
    session.set_admin_notice(messages::admin_removed_many(removed)).await?;
    Ok(Redirect::to("/admin"))
}

/// What the admin searched for, as the list page reads it.
fn searched(
    q: &str,
    status: &str,
) -> Result<(Option<SearchTerm>, Option<SubscriberStatus>), AppError> {
    Ok((SearchTerm::parse(q)?, status_filter(status)?))
}

/// The list page with the search the admin came from.
fn back_to_list(q: &str, status: &str) -> String {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("q", q)
        .append_pair("status", status)
        .finish();
    format!("/admin?{query}")
}
