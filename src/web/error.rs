//! The one place that decides what a client sees when something is not a plain success: the
//! status code, and the page (or, under `/api/`, the problem document). Causes go to the log here, once; clients get a short page.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use pin_project_lite::pin_project;
use serde::Serialize;
use tower::{Layer, Service};

use super::messages;
use super::render::Templates;
use crate::domain::{EmailError, SearchTermError};
use crate::session::BadFormToken;
use crate::signup::SignupError;
use crate::store::StoreError;

/// A new resource at `location` (the API's add).
pub fn created(location: String, body: impl IntoResponse) -> Response {
    (StatusCode::CREATED, [(LOCATION, location)], body).into_response()
}

/// Done, nothing to say (the API's delete, a CORS preflight).
pub fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// A request that outlived the request timeout: our slowness, so a 503 with the generic page.
pub const TIMED_OUT: StatusCode = StatusCode::SERVICE_UNAVAILABLE;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The signup form again, with the reason beside the field and the typed value kept.
    #[error("invalid address: {error}")]
    InvalidEmail { typed: String, error: EmailError },
    /// The login form again, with one message for every kind of failure.
    #[error("wrong admin password")]
    WrongPassword,
    /// The signup form again, with when to try again.
    #[error("signup limit reached")]
    SignupThrottled { typed: String, retry_after: Duration, by_address: bool },
    /// The login form again, with when to try again.
    #[error("login throttled")]
    LoginThrottled { retry_after: Duration },
    /// A mailed link (confirm, unsubscribe) that is not ours, or whose row is gone: its own page.
    #[error("unknown link")]
    LinkUnknown { page: &'static str },
    #[error("expired link")]
    LinkExpired { page: &'static str },
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("cross-site or stale form")]
    BadFormToken,
    #[error("not found")]
    NotFound,
    #[error("unprocessable: {0}")]
    Unprocessable(String),
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("payload too large")]
    PayloadTooLarge,
    #[error("cookies too large")]
    CookiesTooLarge,
    /// The API without a valid bearer token.
    #[error("no valid token")]
    Unauthorized,
    #[error("read-only token")]
    ReadOnlyToken,
    /// `/metrics` from a client that may not read it.
    #[error("metrics refused")]
    MetricsRefused,
    /// The API's body was not JSON at all.
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// The API's body was JSON, but not what the operation takes.
    #[error("invalid body: {0}")]
    InvalidBody(String),
    #[error("already on the list")]
    AlreadyListed,
    /// The thing exists but is not in a state the request applies to.
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("the address left the list")]
    Suppressed,
    #[error("mail is not configured")]
    MailOff,
    #[error("storage unavailable")]
    Unavailable(#[from] StoreError),
    #[error("unexpected error")]
    Unexpected(#[from] anyhow::Error),
}

impl AppError {
    /// An upload whose body broke off: over its size limit, or cut short.
    pub fn upload_broke_off(error: &axum::extract::multipart::MultipartError) -> Self {
        if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::PayloadTooLarge
        } else {
            Self::BadRequest("The upload broke off. Try again.".into())
        }
    }

    /// What a refused signup looks like to the client who sent `typed`.
    pub fn from_signup(error: SignupError, typed: String) -> Self {
        match error {
            SignupError::Invalid(error) => Self::InvalidEmail { typed, error },
            SignupError::ClientLimit(t) => {
                Self::SignupThrottled { typed, retry_after: t.retry_after, by_address: false }
            }
            SignupError::AddressLimit(t) => {
                Self::SignupThrottled { typed, retry_after: t.retry_after, by_address: true }
            }
            SignupError::Storage(e) => Self::Unavailable(e),
        }
    }
}

/// What the API says about an error (RFC 9457): a stable type, and a sentence for people.
#[derive(Debug, Clone)]
struct Problem {
    kind: &'static str,
    detail: Option<String>,
}

impl AppError {
    fn problem(&self) -> Problem {
        let (kind, detail) = match self {
            Self::InvalidEmail { error, .. } => ("invalid-email", Some(error.to_string())),
            Self::SignupThrottled { .. } | Self::LoginThrottled { .. } => ("rate-limited", None),
            Self::WrongPassword | Self::Unauthorized => (
                "unauthorized",
                Some("Send a valid API token: Authorization: Bearer enl_...".into()),
            ),
            Self::ReadOnlyToken => {
                ("read-only-token", Some("This token may only read; this call writes.".into()))
            }
            Self::MetricsRefused => ("forbidden", Some(messages::METRICS_REFUSED.into())),
            Self::LinkUnknown { .. } | Self::NotFound => ("not-found", None),
            Self::LinkExpired { .. } => ("expired", None),
            Self::BadRequest(message) => ("bad-request", Some(message.clone())),
            Self::MalformedJson(message) => ("malformed-json", Some(message.clone())),
            Self::InvalidBody(message) => ("invalid-body", Some(message.clone())),
            Self::Unprocessable(message) => ("unprocessable", Some(message.clone())),
            Self::BadFormToken => ("cross-origin", None),
            Self::UnsupportedMediaType => (
                "unsupported-media-type",
                Some("Send the body as JSON, with Content-Type: application/json.".into()),
            ),
            Self::PayloadTooLarge => ("payload-too-large", None),
            Self::CookiesTooLarge => ("headers-too-large", None),
            Self::AlreadyListed => {
                ("already-subscribed", Some("That address is already on the list.".into()))
            }
            Self::Suppressed => (
                "suppressed",
                Some(
                    "That address left the list; only the person can come back, by signing up."
                        .into(),
                ),
            ),
            Self::MailOff => ("mail-not-configured", Some(messages::MAIL_OFF.into())),
            Self::Conflict(message) => ("conflict", Some(message.clone())),
            Self::Unavailable(_) => ("unavailable", None),
            Self::Unexpected(_) => ("internal", None),
        };
        Problem { kind, detail }
    }
}

impl From<BadFormToken> for AppError {
    fn from(_: BadFormToken) -> Self {
        Self::BadFormToken
    }
}

impl From<SearchTermError> for AppError {
    fn from(error: SearchTermError) -> Self {
        Self::BadRequest(error.to_string())
    }
}

/// What the error page renderer should show; attached to the response by `AppError`.
#[derive(Debug, Clone)]
enum ErrorPage {
    Signup {
        typed: String,
        message: String,
    },
    Login {
        message: String,
    },
    /// A link page (`confirm.html`, `unsubscribe.html`) in the state it names.
    Link {
        page: &'static str,
        state: &'static str,
    },
    Generic {
        message: Option<String>,
    },
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let retry_after = match &self {
            Self::SignupThrottled { retry_after, .. } | Self::LoginThrottled { retry_after } => {
                Some(retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0))
            }
            _ => None,
        };
        let problem = self.problem();
        let (status, page) = match self {
            Self::InvalidEmail { typed, error } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorPage::Signup { typed, message: error.to_string() },
            ),
            Self::WrongPassword => (
                StatusCode::UNAUTHORIZED,
                ErrorPage::Login { message: messages::WRONG_PASSWORD.into() },
            ),
            Self::SignupThrottled { typed, retry_after, by_address } => {
                let message =
                    messages::signup_throttled(by_address, &messages::wait_in_words(retry_after));
                (StatusCode::TOO_MANY_REQUESTS, ErrorPage::Signup { typed, message })
            }
            Self::LoginThrottled { retry_after } => {
                let message = messages::login_throttled(&messages::wait_in_words(retry_after));
                (StatusCode::TOO_MANY_REQUESTS, ErrorPage::Login { message })
            }
            Self::LinkUnknown { page } => {
                (StatusCode::NOT_FOUND, ErrorPage::Link { page, state: "unknown" })
            }
            Self::LinkExpired { page } => {
                (StatusCode::GONE, ErrorPage::Link { page, state: "expired" })
            }
            Self::BadRequest(message) => {
                (StatusCode::BAD_REQUEST, ErrorPage::Generic { message: Some(message) })
            }
            Self::BadFormToken => (StatusCode::FORBIDDEN, ErrorPage::Generic { message: None }),
            Self::NotFound => (StatusCode::NOT_FOUND, ErrorPage::Generic { message: None }),
            Self::Unprocessable(message) => {
                (StatusCode::UNPROCESSABLE_ENTITY, ErrorPage::Generic { message: Some(message) })
            }
            Self::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, ErrorPage::Generic { message: None })
            }
            Self::CookiesTooLarge => {
                (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, ErrorPage::Generic { message: None })
            }
            Self::PayloadTooLarge => {
                (StatusCode::PAYLOAD_TOO_LARGE, ErrorPage::Generic { message: None })
            }
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, ErrorPage::Generic { message: None }),
            Self::ReadOnlyToken => (StatusCode::FORBIDDEN, ErrorPage::Generic { message: None }),
            Self::MetricsRefused => (
                StatusCode::FORBIDDEN,
                ErrorPage::Generic { message: Some(messages::METRICS_REFUSED.into()) },
            ),
            Self::MalformedJson(_) => {
                (StatusCode::BAD_REQUEST, ErrorPage::Generic { message: None })
            }
            Self::InvalidBody(_) | Self::Suppressed => {
                (StatusCode::UNPROCESSABLE_ENTITY, ErrorPage::Generic { message: None })
            }
            Self::MailOff => (
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorPage::Generic { message: Some(messages::MAIL_OFF.into()) },
            ),
            Self::AlreadyListed => (StatusCode::CONFLICT, ErrorPage::Generic { message: None }),
            Self::Conflict(message) => {
                (StatusCode::CONFLICT, ErrorPage::Generic { message: Some(message) })
            }
            Self::Unavailable(cause) => {
                tracing::error!(error = format!("{:#}", cause.0), "storage failed");
                (StatusCode::SERVICE_UNAVAILABLE, ErrorPage::Generic { message: None })
            }
            Self::Unexpected(cause) => {
                tracing::error!(error = format!("{cause:#}"), "request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, ErrorPage::Generic { message: None })
            }
        };
        let mut response = status.into_response();
        response.extensions_mut().insert(page);
        response.extensions_mut().insert(problem);
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = retry_after.map(|s| s.max(1)) {
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// A title and a next step for every error status a client can meet.
fn describe(status: StatusCode) -> (&'static str, &'static str) {
    match status.as_u16() {
        400 => (
            "Bad request",
            "The request could not be read. Go back, check what you entered and try again.",
        ),
        401 => ("Not logged in", "Log in to see this page."),
        403 => (
            "Request refused",
            "This form did not come from this site, or it has expired. Go back, reload the page and try again.",
        ),
        409 => ("Already there", "What you asked to add exists already."),
        410 => ("Link expired", "This link has expired. Go to the signup page to start again."),
        404 => (
            "Page not found",
            "There is nothing at this address. Check the link, or go to the signup page.",
        ),
        405 => (
            "Not allowed",
            "This address does not accept that kind of request. Use the buttons on the site's pages.",
        ),
        408 => ("Too slow", "The request took too long to arrive. Please try again."),
        413 => (
            "Too large",
            "What you sent is larger than this site accepts. Send less and try again.",
        ),
        415 => (
            "Unsupported form",
            "Forms must be sent as application/x-www-form-urlencoded, as browsers do.",
        ),
        431 => (
            "Cookies too large",
            "Your browser sent more cookies than this site accepts. Clear this site's cookies and try again.",
        ),
        422 => {
            ("Check your input", "Something you entered could not be used. Go back and correct it.")
        }
        429 => ("Slow down", "Too many requests. Wait a little, then try again."),
        503 => (
            "Temporarily unavailable",
            "The service cannot answer right now. Please try again in a moment.",
        ),
        500.. => {
            ("Something went wrong", "Something failed on our side. Please try again in a moment.")
        }
        _ => ("Request failed", "The request could not be completed. Go back and try again."),
    }
}

/// Where the JSON API lives: its errors are problem documents, not pages.
pub const API_PREFIX: &str = "/api/";
/// Problem types are URNs: stable names that promise no page behind them.
const PROBLEM_TYPE_PREFIX: &str = "urn:enlist:problem:";

#[derive(Serialize)]
struct ProblemDocument<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

/// The kind of a bare error from the router or a middleware.
fn problem_for_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad-request",
        401 => "unauthorized",
        403 => "cross-origin",
        404 => "not-found",
        405 => "method-not-allowed",
        408 => "request-timeout",
        413 => "payload-too-large",
        415 => "unsupported-media-type",
        422 => "unprocessable",
        429 => "rate-limited",
        431 => "headers-too-large",
        503 => "unavailable",
        _ => "internal",
    }
}

fn problem_response(mut parts: axum::http::response::Parts, status: StatusCode) -> Response {
    let problem = parts.extensions.remove::<Problem>().unwrap_or(Problem {
        kind: problem_for_status(status),
        detail: (status == StatusCode::FORBIDDEN).then(|| {
            "Browsers on other sites may not call this; send the request from a server.".into()
        }),
    });
    let (title, _) = describe(status);
    let document = ProblemDocument {
        kind: format!("{PROBLEM_TYPE_PREFIX}{}", problem.kind),
        title,
        status: status.as_u16(),
        detail: problem.detail,
    };
    let body = serde_json::to_string(&document).unwrap_or_default();
    parts.headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    parts.headers.remove(CONTENT_LENGTH);
    Response::from_parts(parts, body.into())
}

#[derive(Serialize)]
struct ErrorContext<'a> {
    status: u16,
    title: &'a str,
    message: &'a str,
}

/// Gives every error response a page in the site's look: those from `AppError`, and the bare
/// ones produced by the router and middleware (404, 405, 403 cross-origin, 413, panics...).
/// A plain tower layer: a `from_fn` one would clone and box the stack below it per request.
#[derive(Clone)]
pub struct ErrorPagesLayer(pub Arc<Templates>);

impl<S> Layer<S> for ErrorPagesLayer {
    type Service = ErrorPages<S>;

    fn layer(&self, inner: S) -> ErrorPages<S> {
        ErrorPages { inner, templates: self.0.clone() }
    }
}

#[derive(Clone)]
pub struct ErrorPages<S> {
    inner: S,
    templates: Arc<Templates>,
}

impl<S, B, RB> Service<Request<B>> for ErrorPages<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    RB: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    RB::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = WithErrorPage<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let for_api = request.uri().path().starts_with(API_PREFIX);
        WithErrorPage {
            inner: self.inner.call(request),
            templates: Some(self.templates.clone()),
            for_api,
        }
    }
}

pin_project! {
    pub struct WithErrorPage<F> {
        #[pin]
        inner: F,
        templates: Option<Arc<Templates>>,
        for_api: bool,
    }
}

impl<F, E, RB> Future for WithErrorPage<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
    RB: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    RB::Error: Into<axum::BoxError>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?.map(axum::body::Body::new);
        Poll::Ready(Ok(match this.templates.take() {
            Some(templates) => with_error_page(&templates, *this.for_api, response),
            None => response,
        }))
    }
}

fn with_error_page(templates: &Templates, for_api: bool, response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    if for_api {
        return problem_response(parts, status);
    }
    let page =
        parts.extensions.remove::<ErrorPage>().unwrap_or(ErrorPage::Generic { message: None });
    let (title, default_message) = describe(status);
    let rendered = match &page {
        ErrorPage::Signup { typed, message } => {
            templates.render("home.html", minijinja::context! { error => message, typed => typed })
        }
        ErrorPage::Login { message } => {
            templates.render("admin_login.html", minijinja::context! { error => message })
        }
        ErrorPage::Link { page, state } => {
            templates.render(page, minijinja::context! { state => *state })
        }
        ErrorPage::Generic { message } => templates.render(
            "error.html",
            ErrorContext {
                status: status.as_u16(),
                title,
                message: message.as_deref().unwrap_or(default_message),
            },
        ),
    };
    let (content_type, body) = match rendered {
        Ok(html) => ("text/html; charset=utf-8", html),
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "rendering an error page failed");
            ("text/plain; charset=utf-8", format!("{title}. {default_message}\n"))
        }
    };
    parts.headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    parts.headers.remove(CONTENT_LENGTH);
    Response::from_parts(parts, body.into())
}
