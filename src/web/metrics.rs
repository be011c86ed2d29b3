//! `/metrics` and the per-request counting behind it.

use std::sync::Arc;
use std::time::Instant;

use axum::Extension;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::{AppError, AppState, ClientIp};
use crate::metrics::{Metrics, Snapshot};
use crate::session::unix_now;

/// Who may read `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct MetricsAccess {
    /// `--metrics-token`: anyone who sends it as a bearer token.
    pub token: Option<Arc<str>>,
    /// `--metrics-bind`: served on that listener instead of the main one.
    pub separate_listener: bool,
}

/// The route that answered, carried on the response to the counting layer outside the router.
#[derive(Clone)]
struct AnsweredBy(MatchedPath);

/// Inside the router, on every route: notes the route's template.
pub async fn note_route(matched: Option<MatchedPath>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    if let Some(matched) = matched {
        response.extensions_mut().insert(AnsweredBy(matched));
    }
    response
}

/// Outside everything: counts each answer by route template, method and status, and its time.
pub async fn count_request(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let response = next.run(request).await;
    let route = response.extensions().get::<AnsweredBy>().map_or("unmatched", |r| r.0.as_str());
    metrics.request(route, &method, response.status().as_u16(), started.elapsed());
    response
}

/// `GET /metrics` on the main listener.
pub async fn metrics(
    State(app): State<AppState>,
    Extension(ClientIp(client)): Extension<ClientIp>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    if app.metrics_access.separate_listener {
        return Err(AppError::NotFound);
    }
    match &app.metrics_access.token {
        Some(token) => check_token(token, &headers)?,
        // The client as resolved through --trusted-proxies: a proxy on loopback does not make
        // the world local.
        None if client.is_loopback() => {}
        None => return Err(AppError::MetricsRefused),
    }
    exposition(&app).await
}

/// `GET /metrics` on the `--metrics-bind` listener.
pub async fn metrics_on_own_listener(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    if let Some(token) = &app.metrics_access.token {
        check_token(token, &headers)?;
    }
    exposition(&app).await
}

fn check_token(token: &str, headers: &HeaderMap) -> Result<(), AppError> {
    let sent = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if bool::from(sent.as_bytes().ct_eq(token.as_bytes())) {
        Ok(())
    } else {
        Err(AppError::Unauthorized)
    }
}

async fn exposition(app: &AppState) -> Result<Response, AppError> {
    let counts = app.store.counts().await?;
    let now = unix_now();
    let outbox = app
        .store
        .outbox_backlog()
        .await?
        .into_iter()
        .map(|(kind, queued, oldest)| {
            (kind, queued, u64::try_from(now.saturating_sub(oldest)).unwrap_or_default())
        })
        .collect();
    let (connections_in_use, connections_idle) = app.store.connections().await?;
    let snapshot = Snapshot {
        pending: counts.pending,
        confirmed: counts.confirmed,
        outbox,
        connections_in_use,
        connections_idle,
    };
    let body = app.metrics.render(&snapshot);
    let content_type = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
    Ok(([(CONTENT_TYPE, content_type)], body).into_response())
}
