//! `/metrics` and the per-request counting behind it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::Extension;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{self as http, HeaderMap, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use pin_project_lite::pin_project;
use subtle::ConstantTimeEq;
use tower::{Layer, Service};

use super::{AppError, AppState, ClientIp, InFlight, RequestGauge};
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

/// Inside the router, on every route: notes the route's template on the response. A plain
/// tower layer, not `from_fn`: no boxed future, no clone of the route per request.
#[derive(Clone, Copy, Default)]
pub struct NoteRouteLayer;

impl<S> Layer<S> for NoteRouteLayer {
    type Service = NoteRoute<S>;

    fn layer(&self, inner: S) -> NoteRoute<S> {
        NoteRoute { inner }
    }
}

#[derive(Clone)]
pub struct NoteRoute<S> {
    inner: S,
}

impl<S, B, RB> Service<Request<B>> for NoteRoute<S>
where
    S: Service<Request<B>, Response = http::Response<RB>>,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = Noted<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let route = request.extensions().get::<MatchedPath>().cloned();
        Noted { inner: self.inner.call(request), route }
    }
}

pin_project! {
    pub struct Noted<F> {
        #[pin]
        inner: F,
        route: Option<MatchedPath>,
    }
}

impl<F, RB, E> Future for Noted<F>
where
    F: Future<Output = Result<http::Response<RB>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut answer = ready!(this.inner.poll(cx));
        if let (Ok(response), Some(route)) = (&mut answer, this.route.take()) {
            response.extensions_mut().insert(AnsweredBy(route));
        }
        Poll::Ready(answer)
    }
}

/// Outside everything, one layer for the two things every request is counted in: the requests
/// in progress (the outbox yields to visitors), and, once answered, the count by route
/// template, method and status, with its time.
#[derive(Clone)]
pub struct ObserveLayer {
    metrics: Arc<Metrics>,
    in_flight: RequestGauge,
}

impl ObserveLayer {
    pub fn new(metrics: Arc<Metrics>, in_flight: RequestGauge) -> Self {
        Self { metrics, in_flight }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe { inner, watch: self.clone() }
    }
}

#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    watch: ObserveLayer,
}

impl<S, B, RB> Service<Request<B>> for Observe<S>
where
    S: Service<Request<B>, Response = http::Response<RB>>,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = Observed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let method = request.method().clone();
        let in_flight = self.watch.in_flight.enter();
        Observed {
            inner: self.inner.call(request),
            started: Instant::now(),
            method,
            metrics: self.watch.metrics.clone(),
            _in_flight: in_flight,
        }
    }
}

pin_project! {
    pub struct Observed<F> {
        #[pin]
        inner: F,
        started: Instant,
        method: Method,
        metrics: Arc<Metrics>,
        _in_flight: InFlight,
    }
}

impl<F, RB, E> Future for Observed<F>
where
    F: Future<Output = Result<http::Response<RB>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let answer = ready!(this.inner.poll(cx));
        if let Ok(response) = &answer {
            let route =
                response.extensions().get::<AnsweredBy>().map_or("unmatched", |r| r.0.as_str());
            let status = response.status().as_u16();
            this.metrics.request(route, this.method, status, this.started.elapsed());
        }
        Poll::Ready(answer)
    }
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
