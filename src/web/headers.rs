//! What every request is given on arrival (an id, the client's address) and every answer carries
//! on leaving (the standard headers, the same id), in one plain tower layer with values made
//! once. Nine layers did this before, the client's address among them as a `from_fn` layer that
//! cloned the whole stack below it and boxed it, and its future, on every request.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::http::{HeaderName, HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::TrustedProxies;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

const POLICY: HeaderValue = HeaderValue::from_static(
    "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'; \
     form-action 'self'",
);

/// Adds the headers; keeps an `x-request-id` the client (or a proxy) sent, else numbers the
/// request, and answers with the same id.
#[derive(Clone)]
pub struct StandardHeadersLayer {
    next_id: Arc<AtomicU64>,
    trusted_proxies: TrustedProxies,
}

impl StandardHeadersLayer {
    pub fn new(trusted_proxies: TrustedProxies) -> Self {
        Self { next_id: Arc::default(), trusted_proxies }
    }
}

impl<S> Layer<S> for StandardHeadersLayer {
    type Service = StandardHeaders<S>;

    fn layer(&self, inner: S) -> StandardHeaders<S> {
        StandardHeaders {
            inner,
            next_id: self.next_id.clone(),
            trusted_proxies: self.trusted_proxies.clone(),
        }
    }
}

#[derive(Clone)]
pub struct StandardHeaders<S> {
    inner: S,
    next_id: Arc<AtomicU64>,
    trusted_proxies: TrustedProxies,
}

impl<S, B, RB> Service<Request<B>> for StandardHeaders<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = WithHeaders<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        self.trusted_proxies.mark(&mut request);
        let id = match request.headers().get(X_REQUEST_ID) {
            Some(sent) => sent.clone(),
            None => {
                let id = request_id(self.next_id.fetch_add(1, Ordering::Relaxed));
                request.headers_mut().insert(X_REQUEST_ID, id.clone());
                id
            }
        };
        WithHeaders { inner: self.inner.call(request), id: Some(id) }
    }
}

/// `HeaderValue::from(u64)` allocates twice (a growing buffer, then its exact copy); digits
/// copied once are one allocation.
fn request_id(n: u64) -> HeaderValue {
    HeaderValue::from_str(itoa::Buffer::new().format(n)).expect("digits are a valid header value")
}

pin_project! {
    pub struct WithHeaders<F> {
        #[pin]
        inner: F,
        id: Option<HeaderValue>,
    }
}

impl<F, RB, E> Future for WithHeaders<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
{
    type Output = Result<Response<RB>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.inner.poll(cx))?;
        let headers = response.headers_mut();
        // Room for all of them at once, rather than a rehash half way through.
        headers.reserve(7);
        headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        headers.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
        // A response may bring a stricter policy of its own (an announcement's preview).
        headers.entry(CONTENT_SECURITY_POLICY).or_insert(POLICY);
        // Pages are personal (a thanked visitor's address, the admin list): no cache may keep
        // them. Static files set their own lifetime.
        headers.entry(CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
        headers
            .entry(CONTENT_TYPE)
            .or_insert(HeaderValue::from_static("text/plain; charset=utf-8"));
        if let Some(id) = this.id.take() {
            headers.entry(X_REQUEST_ID).or_insert(id);
        }
        Poll::Ready(Ok(response))
    }
}
