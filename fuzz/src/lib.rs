//! The whole application in-process on a throwaway database, for the fuzz targets.

use std::sync::{LazyLock, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use clap::Parser;
use enlist::Server;
use enlist::config::{Cli, Command, Settings};
use tower::ServiceExt;

struct App {
    runtime: tokio::runtime::Runtime,
    router: Mutex<Router>,
    _dir: tempfile::TempDir,
}

static APP: LazyLock<App> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("enlist.db").display());
    let argv = [
        "enlist", "serve", "--bind", "127.0.0.1:0", "--database-url", &db,
        "--signup-limit-per-ip", "0", "--signup-limit-per-address", "0", "--login-limit", "0",
    ];
    let Some(Command::Serve(args)) = Cli::try_parse_from(argv).unwrap().command else { unreachable!() };
    let settings = Settings::from_args(*args, Some("a fuzzing admin password".into())).unwrap();
    let router = runtime.block_on(Server::build(settings)).unwrap().into_router();
    App { runtime, router: Mutex::new(router), _dir: dir }
});

/// Runs one request through every layer and handler; panics on any 5xx.
pub fn must_not_fail(request: Request<Body>) {
    let router = APP.router.lock().unwrap().clone();
    let status = APP.runtime.block_on(async move { router.oneshot(request).await.unwrap().status() });
    assert!(!status.is_server_error(), "{status}");
}
