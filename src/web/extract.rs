//! Extractors whose rejections become `AppError`s, so a malformed request gets the same kind of
//! page as every other error instead of axum's plain-text default.

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use super::error::AppError;

const UNREADABLE_FORM: &str = "The form could not be read. Go back and send it again.";

/// An `application/x-www-form-urlencoded` body, decoded strictly: browsers always encode
/// correctly, so a stray `%`, a bad escape or bytes that are not UTF-8 mean a broken or hostile
/// client, and get a 400 rather than a best guess at what was meant.
#[derive(Debug)]
pub struct Form<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Form<T> {
    type Rejection = AppError;

    async fn from_request(request: Request, state: &S) -> Result<Self, AppError> {
        let body = form_body(request, state).await?;
        serde_urlencoded::from_bytes(&body)
            .map(Form)
            .map_err(|_| AppError::BadRequest(UNREADABLE_FORM.into()))
    }
}

/// A form body as its name and value pairs, for forms that repeat a name (checkboxes).
#[derive(Debug)]
pub struct FormPairs(pub Vec<(String, String)>);

impl FormPairs {
    pub fn value(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter(move |(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

impl<S: Send + Sync> FromRequest<S> for FormPairs {
    type Rejection = AppError;

    async fn from_request(request: Request, state: &S) -> Result<Self, AppError> {
        let body = form_body(request, state).await?;
        Ok(Self(url::form_urlencoded::parse(&body).into_owned().collect()))
    }
}

async fn form_body<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, AppError> {
    if !is_form(request.headers()) {
        return Err(AppError::UnsupportedMediaType);
    }
    let body = Bytes::from_request(request, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AppError::PayloadTooLarge
        } else {
            AppError::BadRequest(UNREADABLE_FORM.into())
        }
    })?;
    if !is_well_encoded(&body) {
        return Err(AppError::BadRequest(UNREADABLE_FORM.into()));
    }
    Ok(body)
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|essence| {
            essence.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// Every `%` starts a two-digit hex escape, and every name and value decodes to UTF-8.
fn is_well_encoded(body: &[u8]) -> bool {
    body.split(|&b| b == b'&').flat_map(|pair| pair.split(|&b| b == b'=')).all(|part| {
        let mut decoded = Vec::with_capacity(part.len());
        let mut bytes = part.iter();
        while let Some(&byte) = bytes.next() {
            match byte {
                b'%' => {
                    let (Some(high), Some(low)) = (bytes.next(), bytes.next()) else {
                        return false;
                    };
                    let (Some(high), Some(low)) = (hex(*high), hex(*low)) else { return false };
                    decoded.push(high << 4 | low);
                }
                b'+' => decoded.push(b' '),
                other => decoded.push(other),
            }
        }
        std::str::from_utf8(&decoded).is_ok()
    })
}

fn hex(digit: u8) -> Option<u8> {
    char::from(digit).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// The client's `User-Agent`, if it sent a readable one (kept, bounded, as consent evidence).
pub fn user_agent(headers: &HeaderMap) -> Option<&str> {
    headers.get(axum::http::header::USER_AGENT).and_then(|v| v.to_str().ok())
}

/// A query string.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(AppError))]
pub struct Query<T>(pub T);

impl From<QueryRejection> for AppError {
    fn from(_: QueryRejection) -> Self {
        Self::BadRequest("The address has parameters this page does not understand.".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_decoding() {
        for good in [&b""[..], b"email=a%40example.com", b"a=1&b=", b"q=caf%C3%A9+au+lait", b"=&&"]
        {
            assert!(is_well_encoded(good), "{:?}", String::from_utf8_lossy(good));
        }
        for bad in
            [&b"email=%zz"[..], b"email=%4", b"email=100%", b"email=%ff%fe", b"a=\xff", b"%G1=x"]
        {
            assert!(!is_well_encoded(bad), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
