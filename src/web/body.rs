//! Request bodies, by size and by time: a declared oversize body is refused at once (413), one
//! that streams past its limit is cut off, and a request that is still reading or answering one
//! after `REQUEST_TIMEOUT` gets a 503. A request without a body goes straight through, with no
//! timer: its handler waits only on the store, whose calls carry their own deadlines, and a timer
//! per page view was 3–4% of a remembered visitor's page in the profile.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::http::Request;
use axum::http::header::CONTENT_LENGTH;
use axum::response::{IntoResponse, Response};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower::{Layer, Service};

use super::error::{API_PREFIX, TIMED_OUT};
use super::{AppError, MAX_API_BODY_BYTES, MAX_BODY_BYTES, MAX_UPLOAD_BYTES, UPLOAD_PATH};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The form limit (16 KiB), the API's (64 KiB), or the import upload's (64 MiB).
fn limit_for(path: &str) -> usize {
    if path == UPLOAD_PATH {
        MAX_UPLOAD_BYTES
    } else if path.starts_with(API_PREFIX) {
        MAX_API_BODY_BYTES
    } else {
        MAX_BODY_BYTES
    }
}

#[derive(Clone, Copy, Default)]
pub struct BodyLimitsLayer;

impl<S> Layer<S> for BodyLimitsLayer {
    type Service = BodyLimits<S>;

    fn layer(&self, inner: S) -> BodyLimits<S> {
        BodyLimits { inner }
    }
}

#[derive(Clone)]
pub struct BodyLimits<S> {
    inner: S,
}

impl<S> Service<Request<Body>> for BodyLimits<S>
where
    S: Service<Request<Body>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Bounded<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // hyper knows a request without `Content-Length` or `Transfer-Encoding` has no body.
        if request.body().is_end_stream() {
            return Bounded::Bodiless { inner: self.inner.call(request) };
        }
        let limit = limit_for(request.uri().path());
        let declared = request
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|length| length > limit as u64) {
            return Bounded::Refused { response: Some(AppError::PayloadTooLarge.into_response()) };
        }
        let request = request.map(|body| Body::new(http_body_util::Limited::new(body, limit)));
        Bounded::WithBody {
            inner: self.inner.call(request),
            deadline: tokio::time::sleep(REQUEST_TIMEOUT),
        }
    }
}

pin_project! {
    #[project = BoundedProjection]
    pub enum Bounded<F> {
        Bodiless { #[pin] inner: F },
        WithBody { #[pin] inner: F, #[pin] deadline: Sleep },
        Refused { response: Option<Response> },
    }
}

impl<F, E> Future for Bounded<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            BoundedProjection::Bodiless { inner } => inner.poll(cx),
            BoundedProjection::WithBody { inner, deadline } => {
                if let Poll::Ready(answer) = inner.poll(cx) {
                    return Poll::Ready(answer);
                }
                ready!(deadline.poll(cx));
                tracing::warn!("a request with a body took over {REQUEST_TIMEOUT:?}; answered 503");
                Poll::Ready(Ok(TIMED_OUT.into_response()))
            }
            BoundedProjection::Refused { response } => {
                Poll::Ready(Ok(response.take().expect("a refusal is polled once")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use axum::Router;
    use axum::http::StatusCode;
    use axum::routing::{get, post};
    use tower::ServiceExt;

    use super::*;

    /// `/read` reads the whole body and answers 413 when it was cut off; `/wait` takes twice
    /// the request timeout to answer a bodiless request.
    fn service(handler_ran: Arc<AtomicBool>) -> BodyLimits<Router> {
        let router = Router::new()
            .route(
                "/read",
                post(move |body: Body| async move {
                    handler_ran.store(true, Ordering::Relaxed);
                    let bytes = axum::body::to_bytes(body, usize::MAX)
                        .await
                        .map_err(|_| AppError::PayloadTooLarge)?;
                    Ok::<_, AppError>(bytes.len().to_string())
                }),
            )
            .route(
                "/wait",
                get(|| async {
                    tokio::time::sleep(REQUEST_TIMEOUT * 2).await;
                    "done"
                }),
            );
        BodyLimitsLayer.layer(router)
    }

    fn post_body(body: Body) -> Request<Body> {
        Request::post("/read").body(body).expect("a valid request")
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_arriving_is_answered_503_at_the_timeout() {
        let never_ends = futures_util::stream::pending::<Result<axum::body::Bytes, Infallible>>();
        let started = tokio::time::Instant::now();
        let answer = service(Arc::default()).oneshot(post_body(Body::from_stream(never_ends)));
        let response = tokio::time::timeout(REQUEST_TIMEOUT * 2, answer)
            .await
            .expect("an answer at the timeout, not a request waiting for ever")
            .expect("infallible");
        assert_eq!(response.status(), TIMED_OUT);
        assert_eq!(started.elapsed(), REQUEST_TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_bodiless_request_has_no_timer_of_its_own() {
        let request = Request::get("/wait").body(Body::empty()).expect("a valid request");
        let response = service(Arc::default()).oneshot(request).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn a_declared_oversize_body_is_refused_before_the_handler_runs() {
        let handler_ran = Arc::new(AtomicBool::new(false));
        let request = Request::post("/read")
            .header(CONTENT_LENGTH, MAX_BODY_BYTES + 1)
            .body(Body::from(vec![b'x'; MAX_BODY_BYTES + 1]))
            .expect("a valid request");
        let response = service(handler_ran.clone()).oneshot(request).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(!handler_ran.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn a_body_that_streams_past_its_limit_is_cut_off_and_one_within_it_is_read_whole() {
        let chunks = |total: usize| {
            let chunk = axum::body::Bytes::from(vec![b'x'; 1024]);
            Body::from_stream(futures_util::stream::iter(
                (0..total / 1024).map(move |_| Ok::<_, Infallible>(chunk.clone())),
            ))
        };
        let over = service(Arc::default())
            .oneshot(post_body(chunks(MAX_BODY_BYTES + 1024)))
            .await
            .expect("infallible");
        assert_eq!(over.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let within =
            service(Arc::default()).oneshot(post_body(chunks(MAX_BODY_BYTES))).await.expect("ok");
        assert_eq!(within.status(), StatusCode::OK);
        let read = axum::body::to_bytes(within.into_body(), usize::MAX).await.expect("a body");
        assert_eq!(read, MAX_BODY_BYTES.to_string());
    }
}
