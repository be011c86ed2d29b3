//! enlist: a self-hosted email-list signup service.
//!
//! [`Server::build`] turns checked [`config::Settings`] into a bound, ready server; the binary and
//! the black-box tests both go through it.

pub mod announce;
pub mod cli;
pub mod config;
pub mod domain;
pub mod export;
pub mod import;
pub mod mail;
pub mod metrics;
pub mod outbox;
pub mod security;
pub mod session;
pub mod signup;
pub mod store;
pub mod tokens;
pub mod web;
pub mod webhooks;

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::{Router, ServiceExt};
use tokio::net::TcpListener;
use url::Url;

use crate::announce::Announcements;
use crate::config::{DatabaseUrl, SettingError, Settings};
use crate::domain::AdminPassword;
use crate::mail::{Composer, Mailer};
use crate::metrics::Metrics;
use crate::outbox::{Announcer, OutboxBell, OutboxWorker};
use crate::security::{AdminCredentials, Limits, Links, SecretKey, resolve_admin_credential};
use crate::session::{SessionConfig, SessionLayerState, unix_now};
use crate::signup::{CONFIRMATION_WINDOW, DoubleOptIn, SignupPolicy};
use crate::store::{PoolLimits, SEARCH_INDEX_STEP, Store};
use crate::web::{
    AppParts, AppState, CrossOrigin, MetricsAccess, RequestGauge, Templates, TrustedProxies,
};
use crate::webhooks::WebhookWorker;

const EXPIRED_SESSION_SWEEP: Duration = Duration::from_secs(10 * 60);
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(10 * 60);
/// How long new rows wait at most before the background indexer looks for them.
const SEARCH_INDEX_EVERY: Duration = Duration::from_secs(1);
/// What `--pending-ttl` defaults to, for pending rows left from a time mail was on.
const DEFAULT_PENDING_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long requests in flight may take to finish once a shutdown is asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why the server could not start. A bad setting exits with code 2, anything else with 1.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Setting(#[from] SettingError),
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// A server that is bound to its address and ready to run.
pub struct Server {
    listener: TcpListener,
    app: web::App,
    store: Arc<dyn Store>,
    public_url: Url,
    generated_admin_password: Option<AdminPassword>,
    /// Present when mail is configured.
    outbox: Option<OutboxWorker>,
    announcer: Option<Announcer>,
    webhooks: WebhookWorker,
    /// `--metrics-bind`: its own listener, serving `/metrics` only.
    metrics_listener: Option<(TcpListener, Router)>,
    housekeeping: Housekeeping,
}

impl Server {
    pub async fn build(settings: Settings) -> Result<Self, StartError> {
        install_tls_provider();
        let limits = PoolLimits {
            pool_size: settings.database_pool_size,
            connect_timeout: settings.database_connect_timeout,
            statement_timeout: settings.database_statement_timeout,
        };
        let store =
            store::open(&settings.database, limits, store::Role::Server).await.map_err(|e| {
                let message = format!("{e:#}");
                match settings.database {
                    // A SQLite file that cannot be opened is a wrong path or mode: fix the setting.
                    DatabaseUrl::Sqlite(_) => StartError::Setting(SettingError::new(
                        "--database-url (ENLIST_DATABASE_URL)",
                        message,
                    )),
                    // A server that does not answer may just be starting; a supervisor should retry.
                    DatabaseUrl::Postgres(_) => StartError::Failed(anyhow::anyhow!(
                        "--database-url (ENLIST_DATABASE_URL): {message}"
                    )),
                }
            })?;
        Self::with_store(settings, store).await
    }

    /// Builds on a store opened elsewhere (`settings.database` is not used).
    pub async fn with_store(settings: Settings, store: Arc<dyn Store>) -> Result<Self, StartError> {
        let secret = SecretKey::load_or_create(&settings.secret_key_file)
            .map_err(|e| SettingError::new("--secret-key-file (ENLIST_SECRET_KEY_FILE)", e))?;
        let (admin, generated_admin_password) =
            resolve_admin_credential(store.as_ref(), settings.admin_password.clone()).await?;
        let templates = Templates::load(settings.templates_dir.as_deref(), &settings.list_name)
            .map_err(|e| {
                SettingError::new("--templates-dir (ENLIST_TEMPLATES_DIR)", format!("{e:#}"))
            })?;
        let templates = Arc::new(templates);
        let listener = TcpListener::bind(settings.bind)
            .await
            .map_err(|e| SettingError::new("--bind (ENLIST_BIND)", e))?;
        let local_addr = listener.local_addr().context("reading the bound address")?;
        let public_url = match settings.public_url.clone() {
            Some(url) => url,
            None => Url::parse(&format!("http://{local_addr}"))
                .context("building the default public URL")?,
        };

        let links = Links::new(secret.clone());
        let in_flight = RequestGauge::default();
        let metrics = Arc::new(Metrics::default());
        let mut outbox = None;
        let mut announcer = None;
        let double_opt_in = match &settings.mail {
            None => None,
            Some(mail) => {
                if settings.public_url.is_none() {
                    tracing::warn!(
                        "mail is on but --public-url is not set: links in mail will point at \
                         {public_url}, which only works on this machine"
                    );
                }
                let mailer = Mailer::new(mail).map_err(|e| {
                    SettingError::new("--smtp-url (ENLIST_SMTP_URL)", format!("{e:#}"))
                })?;
                let composer = Arc::new(Composer::new(
                    templates.clone(),
                    links.clone(),
                    mail.from.clone(),
                    settings.list_name.clone(),
                    public_url.clone(),
                ));
                let bell = OutboxBell::default();
                outbox = Some(OutboxWorker {
                    store: store.clone(),
                    composer: composer.clone(),
                    mailer: Arc::new(mailer),
                    bell: bell.clone(),
                    retry_base: settings.outbox_retry_base,
                    visitors: in_flight.clone(),
                    metrics: metrics.clone(),
                    announcements: Default::default(),
                });
                announcer =
                    Some(Announcer { store: store.clone(), bell: bell.clone(), rate: mail.rate });
                Some(DoubleOptIn { confirm_ttl: mail.confirm_ttl, composer, bell })
            }
        };
        let signups = SignupPolicy {
            links,
            list_name: settings.list_name.clone(),
            consent: templates.consent_version().to_owned(),
            keep_full_ip: settings.keep_full_ip,
            double_opt_in,
            metrics: metrics.clone(),
        };
        let webhooks = WebhookWorker::new(
            store.clone(),
            settings.webhooks,
            metrics.clone(),
            in_flight.clone(),
        )
        .context("building the webhook client")?;
        let housekeeping = Housekeeping {
            store: store.clone(),
            pending_ttl: settings.mail.as_ref().map_or(DEFAULT_PENDING_TTL, |m| m.pending_ttl),
        };

        let secure_cookie = public_url.scheme() == "https";
        let sessions = SessionLayerState {
            store: store.clone(),
            config: Arc::new(SessionConfig {
                cookie_name: SessionConfig::cookie_name_for(secure_cookie),
                secure_cookie,
                visitor_ttl: settings.visitor_session_ttl,
                admin_idle_timeout: settings.admin_idle_timeout,
                admin_absolute_timeout: settings.admin_absolute_timeout,
                secret,
            }),
        };
        let limits = Limits::new(
            settings.signup_limit_per_ip,
            settings.signup_limit_per_address,
            settings.login_limit,
        )
        .counted_in(metrics.clone());
        let cross_origin =
            CrossOrigin::new(settings.public_url.as_ref(), &settings.allowed_origins)
                .map_err(|e| SettingError::new("--allowed-origins (ENLIST_ALLOWED_ORIGINS)", e))?;
        let announcements = Announcements {
            store: store.clone(),
            templates: templates.clone(),
            list_name: settings.list_name.clone(),
            public_url: public_url.clone(),
            outbox: double_opt_in_bell(&signups),
        };
        let state = AppState::new(AppParts {
            announcements: Arc::new(announcements),
            public_archive: settings.public_archive,
            rendered_pages: Default::default(),
            limits: Arc::new(limits),
            store: store.clone(),
            templates,
            admin: Arc::new(AdminCredentials::new(store.clone(), admin)),
            signups: Arc::new(signups),
            in_flight,
            api_tokens: Arc::default(),
            cross_origin,
            public_url: Arc::new(public_url.clone()),
            metrics,
            webhooks: settings.webhooks,
            metrics_access: MetricsAccess {
                token: settings.metrics_token.as_deref().map(Arc::from),
                separate_listener: settings.metrics_bind.is_some(),
            },
        });
        let metrics_listener = match settings.metrics_bind {
            None => None,
            Some(address) => {
                let listener = TcpListener::bind(address)
                    .await
                    .map_err(|e| SettingError::new("--metrics-bind (ENLIST_METRICS_BIND)", e))?;
                Some((listener, web::metrics_app(state.clone())))
            }
        };
        let trusted_proxies = TrustedProxies::new(settings.trusted_proxies.clone());
        let app = web::App { state, sessions, trusted_proxies };
        Ok(Self {
            listener,
            app,
            metrics_listener,
            store,
            public_url,
            generated_admin_password,
            outbox,
            announcer,
            webhooks,
            housekeeping,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    pub fn public_url(&self) -> &Url {
        &self.public_url
    }

    /// The application without its listener, to drive in-process (fuzzing, property tests).
    pub fn into_router(self) -> Router {
        self.app.into_router()
    }

    /// The admin password made up on first start, to be shown to the operator exactly once.
    pub fn generated_admin_password(&self) -> Option<&AdminPassword> {
        self.generated_admin_password.as_ref()
    }

    /// Serves until `shutdown` completes, then lets requests in flight finish (for at most
    /// `SHUTDOWN_GRACE`), and waits until every write is committed.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let sweeper = tokio::spawn(sweep_expired_sessions(self.store.clone()));
        let indexer = tokio::spawn(index_for_search(self.store.clone()));
        let metrics_server = self.metrics_listener.map(|(listener, router)| {
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, router).await {
                    tracing::error!(error = format!("{e:#}"), "the metrics listener stopped");
                }
            })
        });
        let housekeeper = tokio::spawn(self.housekeeping.run());
        let (stop_workers, workers_stopped) = tokio::sync::watch::channel(false);
        let outbox = self.outbox.map(|worker| {
            let mut stopped = workers_stopped;
            tokio::spawn(worker.run(async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            }))
        });
        let announcer = self.announcer.map(|announcer| {
            let mut stopped = stop_workers.subscribe();
            tokio::spawn(announcer.run(async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            }))
        });
        let mut webhooks_stopped = stop_workers.subscribe();
        let webhooks = tokio::spawn(self.webhooks.run(async move {
            let _ = webhooks_stopped.wait_for(|stop| *stop).await;
        }));
        let (stopping, stop_requested) = tokio::sync::oneshot::channel::<()>();
        let app = self.app.into_service().into_make_service_with_connect_info::<SocketAddr>();
        let serve = axum::serve(self.listener, app).with_graceful_shutdown(async move {
            shutdown.await;
            let _ = stopping.send(());
        });
        let grace = async move {
            match stop_requested.await {
                Ok(()) => tokio::time::sleep(SHUTDOWN_GRACE).await,
                Err(_) => std::future::pending().await,
            }
        };
        let served = tokio::select! {
            served = serve.into_future() => served.context("serving HTTP"),
            () = grace => {
                tracing::warn!("requests still running after {SHUTDOWN_GRACE:?}; stopping anyway");
                Ok(())
            }
        };
        sweeper.abort();
        indexer.abort();
        housekeeper.abort();
        if let Some(metrics_server) = metrics_server {
            metrics_server.abort();
        }
        let _ = stop_workers.send(true);
        if let Some(outbox) = outbox {
            let _ = outbox.await;
        }
        if let Some(announcer) = announcer {
            let _ = announcer.await;
        }
        let _ = webhooks.await;
        self.store.close().await;
        served
    }
}

/// The outbox's bell, when there is mail to send with.
fn double_opt_in_bell(signups: &SignupPolicy) -> Option<OutboxBell> {
    signups.double_opt_in.as_ref().map(|mail| mail.bell.clone())
}

/// sqlx's PostgreSQL TLS goes through rustls; pin its crypto provider once, before any
/// connection, so a second provider pulled in elsewhere cannot make the choice ambiguous.
pub(crate) fn install_tls_provider() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

async fn sweep_expired_sessions(store: Arc<dyn Store>) {
    let mut interval = tokio::time::interval(EXPIRED_SESSION_SWEEP);
    loop {
        interval.tick().await;
        match store.delete_expired_sessions(unix_now()).await {
            Ok(0) => {}
            Ok(removed) => tracing::debug!(removed, "removed expired sessions"),
            Err(e) => tracing::warn!(error = format!("{e:#}"), "could not remove expired sessions"),
        }
    }
}

/// Keeps the search index up with new rows (PostgreSQL; SQLite's writer does it itself): a step
/// after another while there is a backlog, else one look a second.
async fn index_for_search(store: Arc<dyn Store>) {
    loop {
        match store.index_for_search().await {
            Ok(indexed) if indexed >= SEARCH_INDEX_STEP.unsigned_abs() => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = format!("{e:#}"), "indexing for search failed"),
        }
        tokio::time::sleep(SEARCH_INDEX_EVERY).await;
    }
}

/// Removes what consent rules say must not be kept: unconfirmed signups past the pending TTL,
/// and the per-address count of confirmation mails once it is a day old.
struct Housekeeping {
    store: Arc<dyn Store>,
    pending_ttl: Duration,
}

impl Housekeeping {
    /// Often enough that a stale signup lives at most a quarter longer than the TTL.
    fn interval(&self) -> Duration {
        HOUSEKEEPING_EVERY.min((self.pending_ttl / 4).max(Duration::from_secs(1)))
    }

    async fn run(self) {
        let mut interval = tokio::time::interval(self.interval());
        loop {
            interval.tick().await;
            let now = unix_now();
            let pending_before =
                now - i64::try_from(self.pending_ttl.as_secs()).unwrap_or(i64::MAX);
            let requests_before = now - i64::try_from(CONFIRMATION_WINDOW.as_secs()).unwrap_or(0);
            match self.store.purge_stale(pending_before, requests_before).await {
                Ok(0) => {}
                Ok(removed) => {
                    tracing::info!(removed, "removed unconfirmed signups past their time")
                }
                Err(e) => {
                    tracing::warn!(error = format!("{:#}", e.0), "could not purge stale signups")
                }
            }
        }
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
