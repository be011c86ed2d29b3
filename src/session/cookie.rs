//! The session cookie: reading the id from `Cookie`, and turning what happened to the session
//! into `Set-Cookie`. The only place that touches the cookie itself.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use axum::extract::Request;
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::{CookieChange, Session, SessionConfig, SessionId, secs};
use crate::store::Store;
use crate::web::AppError;

/// Gives every request a [`Session`] and turns what happened to it into `Set-Cookie`. A plain
/// tower layer: a `from_fn` one cloned and boxed the stack below it, and its future, per request.
#[derive(Clone)]
pub struct SessionLayerState {
    pub store: Arc<dyn Store>,
    pub config: Arc<SessionConfig>,
}

impl<S> Layer<S> for SessionLayerState {
    type Service = Sessions<S>;

    fn layer(&self, inner: S) -> Sessions<S> {
        Sessions { inner, state: self.clone() }
    }
}

#[derive(Clone)]
pub struct Sessions<S> {
    inner: S,
    state: SessionLayerState,
}

impl<S> Service<Request> for Sessions<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = WithSession<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let config = &self.state.config;
        let incoming = match session_cookie(request.headers(), config.cookie_name) {
            Ok(incoming) => incoming,
            Err(problem) => {
                return WithSession::Refused { response: Some(refusal(problem).into_response()) };
            }
        };
        let session = Session::new(self.state.store.clone(), config.clone(), incoming);
        request.extensions_mut().insert(session.clone());
        WithSession::Answering { inner: self.inner.call(request), session: Some(session) }
    }
}

fn refusal(problem: CookieProblem) -> AppError {
    match problem {
        CookieProblem::TooLarge => AppError::CookiesTooLarge,
        CookieProblem::Duplicate => AppError::BadRequest(
            "Your browser sent this site's session cookie twice. Clear this site's cookies and \
             try again."
                .into(),
        ),
    }
}

pin_project! {
    #[project = WithSessionProjection]
    pub enum WithSession<F> {
        Answering { #[pin] inner: F, session: Option<Session> },
        Refused { response: Option<Response> },
    }
}

impl<F, E> Future for WithSession<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            WithSessionProjection::Answering { inner, session } => {
                let response = ready!(inner.poll(cx))?;
                let session = session.take().expect("an answer is polled once");
                Poll::Ready(Ok(with_cookie(&session, response)))
            }
            WithSessionProjection::Refused { response } => {
                Poll::Ready(Ok(response.take().expect("a refusal is polled once")))
            }
        }
    }
}

fn with_cookie(session: &Session, mut response: Response) -> Response {
    let config = session.config();
    let cookie = match session.cookie_change() {
        CookieChange::Keep => None,
        CookieChange::Set(id) => {
            Some(cookie_header(config, &id.encode(), secs(config.visitor_ttl)))
        }
        CookieChange::Clear => Some(cookie_header(config, "", 0)),
    };
    if let Some(value) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().append(SET_COOKIE, value);
    }
    response
}

/// Far more than this site ever sets; anything bigger is junk or an attack.
const MAX_COOKIE_BYTES: usize = 8 * 1024;

/// Why a request's cookies were refused outright.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieProblem {
    TooLarge,
    /// Two session cookies: a stale one shadowing the real one, or one planted from a
    /// neighbouring subdomain ("cookie tossing"). Neither may be trusted.
    Duplicate,
}

/// The session id in the `Cookie` header(s): `None` when absent or not one of ours (malformed).
pub fn session_cookie(headers: &HeaderMap, name: &str) -> Result<Option<SessionId>, CookieProblem> {
    let cookies = headers.get_all(COOKIE);
    if cookies.iter().map(|value| value.len()).sum::<usize>() > MAX_COOKIE_BYTES {
        return Err(CookieProblem::TooLarge);
    }
    let mut ours = cookies
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(key, _)| *key == name)
        .map(|(_, value)| value.trim());
    let first = ours.next();
    if ours.next().is_some() {
        return Err(CookieProblem::Duplicate);
    }
    Ok(first.and_then(SessionId::parse))
}

fn cookie_header(config: &SessionConfig, value: &str, max_age: i64) -> String {
    let secure = if config.secure_cookie { "; Secure" } else { "" };
    format!(
        "{}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}",
        config.cookie_name
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_our_cookie_among_others_and_refuses_two() {
        let id = SessionId::generate().unwrap().encode();
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, HeaderValue::from_static("theme=dark; other=1"));
        headers.append(COOKIE, HeaderValue::from_str(&format!("enlist_session={id}")).unwrap());
        let found = session_cookie(&headers, "enlist_session").unwrap().unwrap();
        assert_eq!(found.encode(), id);
        assert_eq!(session_cookie(&headers, "__Host-enlist_session"), Ok(None));
        headers.append(COOKIE, HeaderValue::from_static("enlist_session=garbage"));
        assert_eq!(session_cookie(&headers, "enlist_session"), Err(CookieProblem::Duplicate));
        let mut huge = HeaderMap::new();
        huge.append(COOKIE, HeaderValue::from_str(&"x=1; ".repeat(2000)).unwrap());
        assert_eq!(session_cookie(&huge, "enlist_session"), Err(CookieProblem::TooLarge));
    }
}
