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
