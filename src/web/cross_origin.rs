//! Which sites' pages may send what. Every form and write refuses other sites (the
//! `Sec-Fetch-Site`/`Origin` check); the owner's `--allowed-origins` are let through for the
//! two signup doors only, and only the public API signup answers CORS, so an allowed site's
//! `fetch()` can read its answer. Admin and token routes stay closed to every other site.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use axum::extract::Request;
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use axum::http::{HeaderValue, Method};
use axum::response::Response;
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tower_http::csrf::{CsrfLayer, ResponseFuture};
use url::Url;

use crate::config::Origin;

/// The signup form's target and the public API signup: the doors an owner's site may use.
const EMBEDDABLE: [&str; 2] = ["/signup", "/api/v1/signup"];
const CORS_PATH: &str = "/api/v1/signup";

#[derive(Clone)]
pub struct CrossOrigin {
    strict: CsrfLayer,
    embeddable: CsrfLayer,
    allowed: Arc<[HeaderValue]>,
}

impl CrossOrigin {
    /// `public_url`: behind a proxy that rewrites Host, the browser's Origin still names it.
    pub fn new(public_url: Option<&Url>, allowed: &[Origin]) -> anyhow::Result<Self> {
        let mut strict = CsrfLayer::new();
        if let Some(url) = public_url {
            strict = strict.add_trusted_origin(url.origin().ascii_serialization())?;
        }
        let mut embeddable = strict.clone();
        for origin in allowed {
            embeddable = embeddable.add_trusted_origin(origin.as_str())?;
        }
        let allowed = allowed
            .iter()
            .map(|o| HeaderValue::from_str(o.as_str()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { strict, embeddable, allowed: allowed.into() })
    }

    fn allows(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        origin.filter(|o| self.allowed.contains(o)).cloned()
    }

    pub fn allowed_origins(&self) -> Vec<String> {
        self.allowed.iter().filter_map(|o| o.to_str().ok().map(str::to_owned)).collect()
    }

    /// Whether `url` may be a signup's `redirect`: absolute, on an allowed origin.
    pub fn may_redirect_to(&self, url: &Url) -> bool {
        let origin = url.origin().ascii_serialization();
        self.allowed.iter().any(|allowed| allowed.as_bytes() == origin.as_bytes())
    }
}

/// The check as a plain tower layer: a `from_fn` one cloned and boxed the stack below it, and
/// its future, on every request, page views included, which the check lets through unread.
impl<S> Layer<S> for CrossOrigin {
    type Service = CrossOriginCheck<S>;

    fn layer(&self, inner: S) -> CrossOriginCheck<S> {
        CrossOriginCheck { inner, policy: Arc::new(self.clone()) }
    }
}

#[derive(Clone)]
pub struct CrossOriginCheck<S> {
    inner: S,
    policy: Arc<CrossOrigin>,
}

impl<S> Service<Request> for CrossOriginCheck<S>
where
    S: Service<Request, Response = Response> + Clone,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Checked<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let path = request.uri().path();
        let cors = path == CORS_PATH;
        if !cors && is_safe(request.method()) {
            return Checked::Passed { inner: self.inner.call(request) };
        }
        let allowed_origin =
            if cors { self.policy.allows(request.headers().get(ORIGIN)) } else { None };
        if cors
            && request.method() == Method::OPTIONS
            && request.headers().contains_key(ACCESS_CONTROL_REQUEST_METHOD)
        {
            return Checked::Answered { response: Some(preflight(allowed_origin)) };
        }
        let policy = &self.policy;
        let layer = if EMBEDDABLE.contains(&path) { &policy.embeddable } else { &policy.strict };
        // The readied service goes into the check; a clone waits for the next request.
        let waiting = self.inner.clone();
        let readied = std::mem::replace(&mut self.inner, waiting);
        Checked::Verified {
            inner: layer.layer(readied).call(request),
            cors: cors.then_some(allowed_origin),
        }
    }
}

/// The methods the check lets through unread: they change nothing here.
fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

pin_project! {
    #[project = CheckedProjection]
    pub enum Checked<F: Future> {
        Passed { #[pin] inner: F },
        /// `cors`: on the API signup, the origin to allow, if it is allowed.
        Verified { #[pin] inner: ResponseFuture<F>, cors: Option<Option<HeaderValue>> },
        Answered { response: Option<Response> },
    }
}

impl<F, E> Future for Checked<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            CheckedProjection::Passed { inner } => inner.poll(cx),
            CheckedProjection::Verified { inner, cors } => {
                let mut response = ready!(inner.poll(cx))?;
                if let Some(allowed_origin) = cors.take() {
                    let headers = response.headers_mut();
                    headers.append(VARY, HeaderValue::from_static("origin"));
                    if let Some(origin) = allowed_origin {
                        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
                    }
                }
                Poll::Ready(Ok(response))
            }
            CheckedProjection::Answered { response } => {
                Poll::Ready(Ok(response.take().expect("an answer is polled once")))
            }
        }
    }
}

/// A browser asking whether a page of another site may post JSON here. An origin that is not
/// allowed gets no CORS headers, and the browser then sends nothing.
fn preflight(allowed_origin: Option<HeaderValue>) -> Response {
    let mut response = super::error::no_content();
    let headers = response.headers_mut();
    headers.insert(VARY, HeaderValue::from_static("origin"));
    if let Some(origin) = allowed_origin {
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST"));
        headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("content-type"));
        headers.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    }
    response
}
