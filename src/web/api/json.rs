//! The API's JSON body: `application/json` only, strictly parsed, with each failure its own
//! problem type (415 not JSON, 400 unreadable, 422 the wrong shape).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use serde::de::DeserializeOwned;

use crate::web::error::AppError;

pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = AppError;

    async fn from_request(request: Request, state: &S) -> Result<Self, AppError> {
        let is_json = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|essence| essence.trim().to_ascii_lowercase())
            .is_some_and(|essence| essence == "application/json");
        if !is_json {
            return Err(AppError::UnsupportedMediaType);
        }
        let body = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                AppError::PayloadTooLarge
            } else {
                AppError::MalformedJson("The body could not be read.".into())
            }
        })?;
        serde_json::from_slice(&body).map(ApiJson).map_err(|e| {
            if e.is_data() {
                AppError::InvalidBody(e.to_string())
            } else {
                AppError::MalformedJson(e.to_string())
            }
        })
    }
}

/// Writes `text` as a JSON string, byte for byte as serde_json would. Only quotes, backslashes
/// and control characters need escapes, and an address almost never holds one: such text is
/// copied whole, after a check of eight bytes at a time (a byte at a time, the check was
/// nearly half of what writing a row of the API's list cost).
pub fn write_string(out: &mut Vec<u8>, text: &str) {
    if needs_no_escape(text.as_bytes()) {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else if serde_json::to_writer(&mut *out, text).is_err() {
        // Writing a string into a Vec cannot fail; were it to, the page must still be JSON.
        out.extend_from_slice(b"null");
    }
}

/// No byte below 0x20, no `"` and no `\`. Bytes of UTF-8 sequences (0x80 and up) need none.
fn needs_no_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH_BITS: u64 = ONES << 7;
    // Whether any byte of `word` is below `limit` (at most 0x80): a byte below it borrows
    // through its own high bit, which `!word` keeps only where that byte's bit was clear.
    let any_below =
        |word: u64, limit: u8| word.wrapping_sub(ONES * u64::from(limit)) & !word & HIGH_BITS != 0;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let Ok(eight) = <[u8; 8]>::try_from(chunk) else { return false };
        let word = u64::from_le_bytes(eight);
        if any_below(word, 0x20)
            || any_below(word ^ (ONES * u64::from(b'"')), 1)
            || any_below(word ^ (ONES * u64::from(b'\\')), 1)
        {
            return false;
        }
    }
    chunks.remainder().iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\')
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn written(text: &str) -> String {
        let mut out = Vec::new();
        write_string(&mut out, text);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn an_escape_is_found_at_each_place_in_a_word_and_nothing_else_is() {
        for len in 0..20 {
            let plain = "u1.anna@bücher.example-of-some-length";
            let plain = &plain[..plain.char_indices().nth(len).map_or(plain.len(), |(i, _)| i)];
            assert!(needs_no_escape(plain.as_bytes()), "{plain:?}");
        }
        for special in (0u8..0x20).chain([b'"', b'\\']) {
            for at in 0..20 {
                let mut text = vec![b'a'; 20];
                text[at] = special;
                assert!(!needs_no_escape(&text), "{special:#x} at {at}");
                let text = String::from_utf8(text).unwrap();
                assert_eq!(written(&text), serde_json::to_string(&text).unwrap());
            }
        }
        for kept in [b' ', b'!', b'#', b'[', b']', 0x7f] {
            assert!(needs_no_escape(&[kept; 16]), "{kept:#x}");
        }
    }

    proptest! {
        #[test]
        fn written_as_serde_writes_it(text in any::<String>()) {
            prop_assert_eq!(written(&text), serde_json::to_string(&text).unwrap());
        }

        #[test]
        fn addresses_with_awkward_bytes_as_serde_writes_them(
            text in "[a-z0-9.@\"\\\\\\x00-\\x1f\\x7f\u{80}-\u{10ffff}]{0,40}",
        ) {
            prop_assert_eq!(written(&text), serde_json::to_string(&text).unwrap());
        }
    }
}
