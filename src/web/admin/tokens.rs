//! API tokens on the admin page: create (the token is shown once, on the page that answers the
//! form, and never stored in a session), and revoke.

use axum::extract::State;
use axum::response::{Html, Redirect};
use serde::{Deserialize, Serialize};

use super::timestamps;
use crate::domain::TokenName;
use crate::session::Session;
use crate::store::TokenRecord;
use crate::web::error::AppError;
use crate::web::extract::Form;
use crate::web::{AppState, messages};

/// One token as the admin page lists it.
#[derive(Serialize)]
pub(super) struct TokenRow {
    name: String,
    read_only: bool,
    created: String,
    last_used: Option<String>,
}

impl From<TokenRecord> for TokenRow {
    fn from(token: TokenRecord) -> Self {
        Self {
            name: token.name,
            read_only: token.read_only,
            created: timestamps(token.created_at).1,
            last_used: token.last_used_at.map(|t| timestamps(t).1),
        }
    }
}

#[derive(Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    read_only: String,
}

#[derive(Serialize)]
struct CreatedPage<'a> {
    name: &'a str,
    token: &'a str,
    read_only: bool,
}

pub async fn create_token(
    State(app): State<AppState>,
    session: Session,
    Form(form): Form<CreateForm>,
) -> Result<Html<String>, AppError> {
    session.verify_form_token(&form.csrf_token).await?;
    let name = TokenName::parse(&form.name).map_err(|e| AppError::Unprocessable(e.to_string()))?;
    let read_only = !form.read_only.is_empty();
    let token = crate::tokens::issue(app.store.as_ref(), &name, read_only)
        .await?
        .ok_or_else(|| AppError::Unprocessable(messages::token_name_taken(name.as_str())))?;
    let page = CreatedPage { name: name.as_str(), token: &token, read_only };
    Ok(Html(app.templates.render("admin_token_created.html", page)?))
}

#[derive(Deserialize)]
pub struct RevokeForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    name: String,
}

pub async fn revoke_token(
    State(app): State<AppState>,
    session: Session,
    Form(form): Form<RevokeForm>,
) -> Result<Redirect, AppError> {
    session.verify_form_token(&form.csrf_token).await?;
    let notice = if app.store.revoke_token(form.name.trim()).await? {
        messages::token_revoked(form.name.trim())
    } else {
        messages::no_such_token(form.name.trim())
    };
    session.set_admin_notice(notice).await?;
    Ok(Redirect::to("/admin"))
}
