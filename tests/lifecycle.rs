//! Restarts, health, and what clients see when storage fails.

#[macro_use]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use clap::Parser;
use common::{ADMIN_PASSWORD, Backend, assert_is_redirect_to, browser, spawn_app};
use enlist::Server;
use enlist::config::{Cli, Command, Settings};
use enlist::domain::{
    AnnouncementAction, AnnouncementText, SearchTerm, SubscriberEmail, SubscriberStatus,
};
use enlist::store::{
    AddressHash, AnnouncementRecord, AttemptRecord, ConfirmWrite, Confirmation, ConfirmationQueued,
    ConfirmationRequest, Confirmed, Counts, DeliveryOutcome, EndpointRecord, Expansion,
    ExportChunk, FailureGroup, ImportBatch, ImportCounts, Leaving, ListFilter, MailOutcome,
    MailRecord, NewEndpoint, NewSubscriber, NewToken, Pace, PoolLimits, QueuedDelivery, QueuedMail,
    Selection, SessionKey, SqliteStore, Store, StoreError, StoreResult, Subscriber,
    SubscriberRecord, TokenRecord, Walk,
};
use reqwest::StatusCode;
use sqlx::sqlite::SqliteConnectOptions;

#[tokio::test]
async fn the_database_is_wal_with_full_sync_and_private() {
    use std::os::unix::fs::PermissionsExt;
    let app = spawn_app(Backend::Sqlite).await;
    app.signup("mode@example.com").await;
    let url = format!("sqlite://{}", app.db_path().display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&pool).await.unwrap();
    assert_eq!(mode, "wal");
    let check: String =
        sqlx::query_scalar("PRAGMA integrity_check").fetch_one(&pool).await.unwrap();
    assert_eq!(check, "ok");
    pool.close().await;
    let file_mode = std::fs::metadata(app.db_path()).unwrap().permissions().mode();
    assert_eq!(file_mode & 0o077, 0, "no access for group or others");
    let key_mode =
        std::fs::metadata(app.dir.path().join("enlist.key")).unwrap().permissions().mode();
    assert_eq!(key_mode & 0o777, 0o600);
}

fn limits() -> PoolLimits {
    PoolLimits {
        pool_size: 4,
        connect_timeout: std::time::Duration::from_secs(5),
        statement_timeout: std::time::Duration::from_secs(5),
    }
}

/// A real SQLite store that can be switched to failing, as a full disk or a lost database would.
#[derive(Clone)]
struct BreakableStore {
    inner: SqliteStore,
    broken: Arc<AtomicBool>,
}

impl BreakableStore {
    fn check(&self) -> StoreResult<()> {
        if self.broken.load(Ordering::SeqCst) {
            Err(StoreError(anyhow::anyhow!("disk I/O error (simulated)")))
        } else {
            Ok(())
        }
    }
}

/// Each method checks the switch, then asks the real store.
macro_rules! breakable {
    ($( async fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty; )+) => {
        #[async_trait]
        impl Store for BreakableStore {
            $(
                async fn $name(&self $(, $arg: $ty)*) -> $ret {
                    self.check()?;
                    self.inner.$name($($arg),*).await
                }
            )+
            async fn close(&self) {
                self.inner.close().await
            }
        }
    };
}

breakable! {
    async fn ping(&self) -> StoreResult<()>;
    async fn add_subscriber(&self, new: NewSubscriber<'_>) -> StoreResult<()>;
    async fn request_confirmation(&self, request: ConfirmationRequest<'_>) -> StoreResult<ConfirmationQueued>;
    async fn confirmation(&self, id: i64) -> StoreResult<Option<Confirmation>>;
    async fn confirm(&self, write: ConfirmWrite<'_>) -> StoreResult<Confirmed>;
    async fn remove_subscriber(&self, email: &SubscriberEmail, leaving: Option<Leaving>) -> StoreResult<bool>;
    async fn remove_subscriber_by_id(&self, id: i64, leaving: Option<Leaving>) -> StoreResult<bool>;
    async fn remove_pending(&self, email: &SubscriberEmail, address_hash: AddressHash) -> StoreResult<bool>;
    async fn subscriber(&self, id: i64) -> StoreResult<Option<SubscriberRecord>>;
    async fn mails_to(&self, subscriber_id: i64) -> StoreResult<Vec<MailRecord>>;
    async fn list_subscribers(&self, filter: ListFilter<'_>, before: Option<i64>, limit: u32) -> StoreResult<Vec<Subscriber>>;
    async fn walk_matching(&self, term: &SearchTerm, status: Option<SubscriberStatus>, before: Option<i64>, window: u32, limit: u32) -> StoreResult<Walk>;
    async fn import_batch(&self, batch: ImportBatch<'_>) -> StoreResult<ImportCounts>;
    async fn export_chunk(&self, status: Option<SubscriberStatus>, below: i64, from: i64) -> StoreResult<ExportChunk>;
    async fn subscriber_by_key(&self, email_key: &str) -> StoreResult<Option<SubscriberRecord>>;
    async fn remove_subscribers(&self, ids: &[i64]) -> StoreResult<u64>;
    async fn count_selection(&self, selection: Selection<'_>) -> StoreResult<u64>;
    async fn remove_selection(&self, selection: Selection<'_>) -> StoreResult<u64>;
    async fn create_token(&self, token: NewToken<'_>) -> StoreResult<bool>;
    async fn tokens(&self) -> StoreResult<Vec<TokenRecord>>;
    async fn revoke_token(&self, name: &str) -> StoreResult<bool>;
    async fn token_by_hash(&self, hash: &[u8; 32]) -> StoreResult<Option<TokenRecord>>;
    async fn touch_token(&self, id: i64, now: i64) -> StoreResult<()>;
    async fn create_endpoint(&self, endpoint: NewEndpoint<'_>) -> StoreResult<i64>;
    async fn endpoints(&self) -> StoreResult<Vec<EndpointRecord>>;
    async fn endpoint(&self, id: i64) -> StoreResult<Option<EndpointRecord>>;
    async fn remove_endpoint(&self, id: i64) -> StoreResult<bool>;
    async fn queue_ping(&self, endpoint_id: i64, now: i64) -> StoreResult<bool>;
    async fn claim_deliveries(&self, now: i64, lease_until: i64, owner: i64, limit: u32) -> StoreResult<Vec<QueuedDelivery>>;
    async fn record_deliveries(&self, outcomes: &[DeliveryOutcome]) -> StoreResult<()>;
    async fn webhook_attempts(&self, endpoint_id: i64) -> StoreResult<Vec<AttemptRecord>>;
    async fn counts(&self) -> StoreResult<Counts>;
    async fn outbox_backlog(&self) -> StoreResult<Vec<(String, u64, i64)>>;
    async fn connections(&self) -> StoreResult<(u64, u64)>;
    async fn count_matching(&self, filter: ListFilter<'_>, cap: u64) -> StoreResult<u64>;
    async fn create_announcement(&self, text: &AnnouncementText, now: i64) -> StoreResult<i64>;
    async fn update_announcement(&self, id: i64, text: &AnnouncementText, now: i64) -> StoreResult<bool>;
    async fn announcement(&self, id: i64) -> StoreResult<Option<AnnouncementRecord>>;
    async fn announcements(&self, limit: u32) -> StoreResult<Vec<AnnouncementRecord>>;
    async fn start_announcement(&self, id: i64, now_ms: i64) -> StoreResult<bool>;
    async fn change_announcement(&self, id: i64, action: AnnouncementAction, now: i64) -> StoreResult<bool>;
    async fn sending_announcements(&self) -> StoreResult<Vec<i64>>;
    async fn expand_announcement(&self, id: i64, pace: Pace, now_ms: i64) -> StoreResult<Expansion>;
    async fn announcement_failures(&self, id: i64) -> StoreResult<Vec<FailureGroup>>;
    async fn queue_test_mail(&self, id: i64, to: &SubscriberEmail, now: i64) -> StoreResult<bool>;
    async fn claim_mail(&self, now: i64, lease_until: i64, owner: i64, limit: u32) -> StoreResult<Vec<QueuedMail>>;
    async fn record_mail(&self, outcomes: &[MailOutcome]) -> StoreResult<()>;
    async fn purge_stale(&self, pending_before: i64, requests_before: i64) -> StoreResult<u64>;
    async fn admin_password_hash(&self) -> StoreResult<Option<String>>;
    async fn swap_admin_password_hash(&self, expected: Option<&str>, phc: &str, now: i64) -> StoreResult<bool>;
    async fn load_session(&self, key: &SessionKey, now: i64) -> StoreResult<Option<Arc<str>>>;
    async fn create_session(&self, key: &SessionKey, data: &str, remembers: Option<&str>, expires_at: i64) -> StoreResult<bool>;
    async fn save_session(&self, key: &SessionKey, data: &str, remembers: Option<&str>, expires_at: i64) -> StoreResult<()>;
    async fn delete_session(&self, key: &SessionKey) -> StoreResult<()>;
    async fn delete_expired_sessions(&self, now: i64) -> StoreResult<u64>;
}

#[tokio::test]
async fn storage_failures_are_a_generic_503_and_recovery_needs_no_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("enlist.db");
    let inner = SqliteConnectOptions::new().filename(&db);
    let store = BreakableStore {
        inner: SqliteStore::open(inner, limits(), enlist::store::Role::Server).await.unwrap(),
        broken: Arc::new(AtomicBool::new(false)),
    };
    let db_url = format!("sqlite://{}", db.display());
    let Some(Command::Serve(args)) = Cli::try_parse_from([
        "enlist",
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--database-url",
        &db_url,
    ])
    .unwrap()
    .command
    else {
        unreachable!()
    };
    let settings = Settings::from_args(*args, Some(ADMIN_PASSWORD.into())).unwrap();
    let server = Server::with_store(settings, Arc::new(store.clone())).await.unwrap();
    let visitor =
        common::Visitor { address: format!("http://{}", server.local_addr()), client: browser() };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));

    assert_is_redirect_to(&visitor.signup("before@example.com").await, "/");
    store.broken.store(true, Ordering::SeqCst);

    let health = visitor.get("/healthz").await;
    assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE);
    let signup = visitor.signup("during@example.com").await;
    assert_eq!(signup.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = signup.text().await.unwrap();
    assert!(body.contains("Temporarily unavailable"));
    assert!(!body.contains("simulated"), "the cause stays in the log");
    assert_eq!(visitor.get("/").await.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(visitor.login(ADMIN_PASSWORD).await.status(), StatusCode::SERVICE_UNAVAILABLE);

    store.broken.store(false, Ordering::SeqCst);
    assert_eq!(visitor.get("/healthz").await.status(), StatusCode::OK);
    assert!(visitor.get_html("/").await.contains("Thanks for signing up, before@example.com!"));
    let emails: Vec<String> = store
        .inner
        .list_subscribers(ListFilter::default(), None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.email)
        .collect();
    assert_eq!(emails, vec!["before@example.com"], "nothing was half-written");

    let _ = stop.send(());
    running.await.unwrap().unwrap();
}

on_both_backends! {
    async fn data_and_sessions_survive_a_restart(backend: Backend) {
        let mut app = spawn_app(backend).await;
        app.signup("durable@example.com").await;
        let admin = app.other_visitor();
        admin.login_ok().await;
        let key_before = std::fs::read(app.dir.path().join("enlist.key")).unwrap();

        app.restart().await;

        assert!(
            app.get_html("/")
                .await
                .contains("Thanks for signing up, durable@example.com!")
        );
        assert_eq!(app.subscriber_emails().await, vec!["durable@example.com"]);
        let admin = common::Visitor {
            address: app.address.clone(),
            client: admin.client,
        };
        assert!(
            admin
                .get_html("/admin")
                .await
                .contains("durable@example.com")
        );
        assert_eq!(
            std::fs::read(app.dir.path().join("enlist.key")).unwrap(),
            key_before,
            "key reused"
        );
    }

    async fn health_is_ok_while_the_database_answers(backend: Backend) {
        let app = spawn_app(backend).await;
        let response = app.get("/healthz").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.text().await.unwrap(), "ok");
    }
}
