//! The JSON API under `/api/v1`: bearer tokens for the list, a public signup for custom
//! front-ends, problem documents for every error, and an OpenAPI 3.1 document generated from
//! the handlers (a committed copy in `openapi.json` is checked against it by a test).

mod announcements;
mod auth;
pub mod json;
mod signup;
mod subscribers;

use std::sync::Arc;

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::TokenUses;

use super::AppState;
use crate::domain::SubscriberStatus;

pub const API_BASE: &str = "/api/v1";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "enlist",
        description = "The list of a self-hosted signup service: read, search, add and delete \
                       subscribers and mail announcements to the list with a bearer token \
                       (created on the admin page or with `enlist token create`), and sign \
                       people up from your own front-end with no token. Every error is an \
                       RFC 9457 problem document.",
        license(name = "MIT OR Apache-2.0"),
    ),
    servers((url = "/api/v1")),
    modifiers(&BearerToken),
    components(schemas(Problem)),
    tags(
        (name = "subscribers", description = "The list, with a token"),
        (name = "signup", description = "The signup form, for custom front-ends"),
        (name = "announcements", description = "Mail to everyone on the list, with a token"),
    )
)]
struct ApiDoc;

struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "token",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some("An API token, enl_ and 43 more characters"))
                        .build(),
                ),
            );
        }
    }
}

/// An RFC 9457 problem document.
#[derive(Serialize, ToSchema)]
pub struct Problem {
    /// A stable URN naming the kind of problem, e.g. `urn:enlist:problem:invalid-email`.
    #[serde(rename = "type")]
    kind: String,
    title: String,
    status: u16,
    detail: Option<String>,
}

/// Where a subscriber stands.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ApiStatus {
    Pending,
    Confirmed,
}

impl From<SubscriberStatus> for ApiStatus {
    fn from(status: SubscriberStatus) -> Self {
        match status {
            SubscriberStatus::Pending => Self::Pending,
            SubscriberStatus::Confirmed => Self::Confirmed,
        }
    }
}

impl From<ApiStatus> for SubscriberStatus {
    fn from(status: ApiStatus) -> Self {
        match status {
            ApiStatus::Pending => Self::Pending,
            ApiStatus::Confirmed => Self::Confirmed,
        }
    }
}

/// The API's routes and the document that describes them.
fn parts() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(subscribers::list, subscribers::add))
        .routes(routes!(subscribers::get_one, subscribers::delete))
        .routes(routes!(subscribers::stats))
        .routes(routes!(signup::signup))
        .routes(routes!(announcements::list, announcements::send))
        .routes(routes!(announcements::get_one))
        .routes(routes!(announcements::send_draft))
        .routes(routes!(announcements::pause))
        .routes(routes!(announcements::resume))
        .routes(routes!(announcements::cancel))
        .split_for_parts()
}

/// The OpenAPI document, as served and as committed.
pub fn openapi_json() -> String {
    parts().1.to_pretty_json().unwrap_or_default()
}

/// Everything under `/api/v1`, with the document at `/api/v1/openapi.json`.
pub fn router() -> Router<AppState> {
    let (routes, openapi) = parts();
    let document: Arc<str> = openapi.to_pretty_json().unwrap_or_default().into();
    let routes = routes.route(
        "/openapi.json",
        get(move || {
            let document = document.clone();
            async move { ([(CONTENT_TYPE, "application/json")], document.to_string()) }
        }),
    );
    Router::new().nest(API_BASE, routes)
}
