//! Which sites' pages may send what. Every form and write refuses other sites (the
//! `Sec-Fetch-Site`/`Origin` check); the owner's `--allowed-origins` are let through for the
//! two signup doors only, and only the public API signup answers CORS, so an allowed site's
//! `fetch()` can read its answer. Admin and token routes stay closed to every other site.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use tower::{Layer, ServiceExt};
use tower_http::csrf::CsrfLayer;
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

/// Takes the policy behind an `Arc`: `from_fn_with_state` clones its state for every request.
pub async fn check(
    State(policy): State<Arc<CrossOrigin>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let cors = path == CORS_PATH;
    let layer = if EMBEDDABLE.contains(&path) { &policy.embeddable } else { &policy.strict };
    let allowed_origin = if cors { policy.allows(request.headers().get(ORIGIN)) } else { None };
    if cors
        && request.method() == Method::OPTIONS
        && request.headers().contains_key(ACCESS_CONTROL_REQUEST_METHOD)
    {
        return preflight(allowed_origin);
    }
    let service = layer.layer(next);
    let mut response = match service.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    if cors {
        let headers = response.headers_mut();
        headers.append(VARY, HeaderValue::from_static("origin"));
        if let Some(origin) = allowed_origin {
            headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        }
    }
    response
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
