//! Routes and the layer stack, in one readable place.

mod admin;
pub mod api;
mod archive;
mod body;
mod client_ip;
mod cross_origin;
mod error;
mod extract;
mod headers;
mod links;
mod messages;
mod metrics;
mod pages;
mod public;
mod render;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::{Request, Response};
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use tower::{Service, ServiceBuilder};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::map_response_body::MapResponseBodyLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;
use url::Url;

pub use client_ip::{ClientIp, TrustedProxies};
pub use cross_origin::CrossOrigin;
pub use error::AppError;
pub use metrics::MetricsAccess;
pub use render::Templates;

use crate::security::{AdminCredentials, Limits};
use crate::session::SessionLayerState;
use crate::signup::SignupPolicy;
use crate::store::Store;

/// A time as the tools print it (RFC 3339, UTC).
pub fn admin_time(unix_seconds: i64) -> String {
    crate::domain::Rfc3339(unix_seconds).to_string()
}

/// Request bodies larger than this are refused with 413 before anything reads them.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// JSON bodies of the API.
pub const MAX_API_BODY_BYTES: usize = 64 * 1024;
/// The CSV upload's own limit; it is read as a stream, never whole into memory.
pub const MAX_UPLOAD_BYTES: usize = 64 * 1024 * 1024;
const UPLOAD_PATH: &str = "/admin/import";

/// What every handler can reach: one shared allocation, because extractors and layers clone it
/// for every request, and a struct of a dozen `Arc`s costs a dozen contended reference counts
/// each time (4% of a remembered visitor's page view in the profile).
#[derive(Clone)]
pub struct AppState(Arc<AppParts>);

impl AppState {
    pub fn new(parts: AppParts) -> Self {
        Self(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.0
    }
}

pub struct AppParts {
    pub store: Arc<dyn Store>,
    pub limits: Arc<Limits>,
    pub templates: Arc<Templates>,
    pub admin: Arc<AdminCredentials>,
    pub signups: Arc<SignupPolicy>,
    pub in_flight: RequestGauge,
    pub api_tokens: Arc<api::TokenUses>,
    pub cross_origin: CrossOrigin,
    /// Where visitors reach this service (`--public-url`, or the bind address).
    pub public_url: Arc<Url>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub metrics_access: MetricsAccess,
    /// Where webhook endpoints may point.
    pub webhooks: crate::webhooks::WebhookPolicy,
    pub announcements: Arc<crate::announce::Announcements>,
    /// `--public-archive`: sent announcements at `/archive`.
    pub public_archive: bool,
    pub rendered_pages: pages::RenderedPages,
}

/// How many requests are being answered right now: background work (the outbox, webhooks)
/// yields while visitors are waiting.
#[derive(Debug, Clone)]
pub struct RequestGauge(Arc<Gauge>);

#[derive(Debug)]
struct Gauge {
    now: std::sync::atomic::AtomicUsize,
    /// When the count last reached [`RequestGauge::BUSY`], in milliseconds since `epoch`.
    busy_at: std::sync::atomic::AtomicU64,
    epoch: std::time::Instant,
}

impl Default for RequestGauge {
    fn default() -> Self {
        Self(Arc::new(Gauge {
            now: Default::default(),
            busy_at: Default::default(),
            epoch: std::time::Instant::now(),
        }))
    }
}

impl RequestGauge {
    /// This many requests in progress at once means visitors are waiting on this instance.
    pub const BUSY: usize = 16;
    /// How long a moment at [`Self::BUSY`] counts as busy. Requests waiting on a group commit
    /// are all answered at once, and background work that wakes on that same commit would
    /// otherwise look at the count just then, find it low, and never see the load.
    const BUSY_SPELL: std::time::Duration = std::time::Duration::from_millis(250);

    fn current(&self) -> usize {
        self.0.now.load(Ordering::Relaxed)
    }

    /// Whether visitors are waiting, or were within the last [`Self::BUSY_SPELL`].
    pub fn busy(&self) -> bool {
        let busy_at = self.0.busy_at.load(Ordering::Relaxed);
        self.current() >= Self::BUSY
            || (busy_at != 0
                && self.millis().saturating_sub(busy_at) < Self::BUSY_SPELL.as_millis() as u64)
    }

    /// Milliseconds since the gauge was made; never zero, which `busy_at` keeps for "never".
    fn millis(&self) -> u64 {
        u64::try_from(self.0.epoch.elapsed().as_millis()).unwrap_or(u64::MAX).max(1)
    }

    /// Counts one more request until the guard drops.
    fn enter(&self) -> InFlight {
        if self.0.now.fetch_add(1, Ordering::Relaxed) + 1 >= Self::BUSY {
            self.0.busy_at.store(self.millis(), Ordering::Relaxed);
        }
        InFlight(self.clone())
    }
}

struct InFlight(RequestGauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        (self.0).0.now.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The whole application, before it is assembled: the binary serves its layered stack as it is,
/// and in-process users (fuzzing, property tests) drive it as a [`Router`].
pub struct App {
    pub state: AppState,
    pub sessions: SessionLayerState,
    pub trusted_proxies: TrustedProxies,
}

impl App {
    /// The application as a router, for callers that drive it in-process.
    pub fn into_router(self) -> Router {
        Router::new().fallback_service(self.into_service())
    }

    /// The layer stack around the routes. Served as it is, not as a router's fallback: a router
    /// clones and boxes its fallback for every request.
    pub fn into_service(
        self,
    ) -> impl Service<
        Request<Body>,
        Response = Response<Body>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static {
        let Self { state, sessions, trusted_proxies } = self;
        // The gate wraps each method's handler, not the route: a method a route does not serve is a
        // 405 with `Allow` for everyone, not a redirect to the login page.
        let gate = from_fn_with_state(state.clone(), admin::require_admin);
        let admin_only = Router::new()
            .route("/admin", get(admin::list).route_layer(gate.clone()))
            .route("/admin/export.csv", get(admin::export).route_layer(gate.clone()))
            .route(
                UPLOAD_PATH,
                post(admin::import)
                    .route_layer(gate.clone())
                    // The multipart extractor's own limit, raised for the upload alone.
                    .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES)),
            )
            .route("/admin/subscribers/{id}", get(admin::subscriber_page).route_layer(gate.clone()))
            .route("/admin/resend", post(admin::resend).route_layer(gate.clone()))
            .route("/admin/delete", post(admin::delete).route_layer(gate.clone()))
            .route("/admin/add", post(admin::add).route_layer(gate.clone()))
            .route("/admin/tokens", post(admin::create_token).route_layer(gate.clone()))
            .route("/admin/tokens/revoke", post(admin::revoke_token).route_layer(gate.clone()))
            .route("/admin/webhooks", post(admin::add_webhook).route_layer(gate.clone()))
            .route("/admin/webhooks/{id}", get(admin::webhook_page).route_layer(gate.clone()))
            .route("/admin/webhooks/{id}/ping", post(admin::ping_webhook).route_layer(gate.clone()))
            .route(
                "/admin/webhooks/{id}/remove",
                post(admin::remove_webhook).route_layer(gate.clone()),
            )
            .route(
                "/admin/announcements",
                get(admin::announcements_page)
                    .post(admin::create_announcement)
                    .route_layer(gate.clone()),
            )
            .route(
                "/admin/announcements/{id}",
                get(admin::announcement_page)
                    .post(admin::update_announcement)
                    .route_layer(gate.clone()),
            )
            .route(
                "/admin/announcements/{id}/preview",
                get(admin::announcement_preview).route_layer(gate.clone()),
            )
            .route(
                "/admin/announcements/{id}/test",
                post(admin::test_announcement).route_layer(gate.clone()),
            )
            .route(
                "/admin/announcements/{id}/send",
                get(admin::send_page).post(admin::send_announcement).route_layer(gate.clone()),
            )
            .route(
                "/admin/announcements/{id}/{action}",
                post(admin::act_on_announcement).route_layer(gate.clone()),
            )
            .route("/admin/delete-selected", post(admin::delete_selected).route_layer(gate.clone()))
            .route(
                "/admin/delete-matching",
                get(admin::delete_matching_page)
                    .post(admin::delete_matching)
                    .route_layer(gate.clone()),
            )
            .route("/admin/logout", post(admin::logout).route_layer(gate));

        let layers = ServiceBuilder::new()
            .layer(metrics::ObserveLayer::new(state.metrics.clone(), state.in_flight.clone()))
            .layer(headers::StandardHeadersLayer::new(trusted_proxies))
            // Request logs are INFO spans and events. Where the filter drops them (`RUST_LOG=warn`)
            // the layer would still time, wrap and describe every request for nothing: 4% of a
            // remembered visitor's page view. Causes of errors are logged where they happen.
            .option_layer(request_logs_kept().then(|| {
                ServiceBuilder::new()
                    .layer(MapResponseBodyLayer::new(axum::body::Body::new))
                    .layer(
                        TraceLayer::new_for_http()
                            // Path only: query strings can hold searched addresses.
                            .make_span_with(|request: &Request<_>| {
                                let id = request
                                    .headers()
                                    .get(headers::X_REQUEST_ID)
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or_default();
                                let client = request.extensions().get::<ClientIp>().map(|c| c.0);
                                tracing::info_span!(
                                    "request",
                                    method = %request.method(),
                                    path = request.uri().path(),
                                    id,
                                    client = client.map(tracing::field::display),
                                )
                            })
                            .on_response(DefaultOnResponse::new().level(Level::INFO)),
                    )
                    .into_inner()
            }))
            .layer(error::ErrorPagesLayer(state.templates.clone()))
            .layer(CatchPanicLayer::new())
            .layer(sessions)
            .layer(state.cross_origin.clone())
            // It decides per route; the extractors' own limit (axum's 2 MB) only backs it up.
            .layer(body::BodyLimitsLayer);

        let routes = Router::new()
            .route("/", get(public::home))
            .route("/signup", post(public::signup))
            .route("/unregister", post(public::unregister))
            .route("/resend", post(public::resend))
            .route("/confirm/{token}", get(links::confirm_page).post(links::confirm))
            .route("/u/{token}", get(links::unsubscribe_page).post(links::unsubscribe))
            .route("/u/{token}/data", post(links::download))
            .route("/u/{token}/erase", post(links::erase))
            .route("/left", get(links::left))
            .route("/erased", get(links::erased))
            .route("/admin/login", get(admin::login_page).post(admin::login))
            .route("/healthz", get(public::healthz))
            .route("/archive", get(archive::archive))
            .route("/archive/{id}", get(archive::archived))
            .route("/metrics", get(metrics::metrics))
            .route("/static/{file}", get(public::static_file))
            .merge(admin_only)
            .merge(api::router())
            .route_layer(metrics::NoteRouteLayer)
            .fallback(public::not_found)
            .with_state(state);
        // One stack around the whole router, rather than `Router::layer`, which wraps every route in
        // its own copy and clones that per request.
        layers.service(routes)
    }
}

/// Whether the logger keeps a request's span (this module's INFO) or its answer's line (the trace
/// layer's INFO event), as `RUST_LOG` decides once at start.
fn request_logs_kept() -> bool {
    tracing::enabled!(Level::INFO)
        || tracing::enabled!(target: "tower_http::trace::on_response", Level::INFO)
}

/// `--metrics-bind`: a listener that serves `/metrics` and nothing else.
pub fn metrics_app(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics::metrics_on_own_listener))
        .layer(error::ErrorPagesLayer(state.templates.clone()))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::RequestGauge;

    #[test]
    fn busy_while_many_wait_and_for_a_spell_after() {
        let gauge = RequestGauge::default();
        assert!(!gauge.busy(), "a new instance is idle");
        let few: Vec<_> = (0..RequestGauge::BUSY - 1).map(|_| gauge.enter()).collect();
        assert!(!gauge.busy(), "fewer than BUSY requests is not busy");
        let one_more = gauge.enter();
        assert!(gauge.busy());
        drop((few, one_more));
        assert_eq!(gauge.current(), 0);
        assert!(gauge.busy(), "all answered at once by one commit: still busy for a moment");
        std::thread::sleep(RequestGauge::BUSY_SPELL + std::time::Duration::from_millis(50));
        assert!(!gauge.busy(), "quiet for a spell: idle again");
    }
}
