//! The framework's ceiling on this machine: axum answering a constant page, nothing else.

use axum::Router;
use axum::response::Html;
use axum::routing::get;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let bind = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:5002".into());
    let app =
        Router::new().route("/", get(|| async { Html("<!doctype html><p>Hello, world!</p>") }));
    let listener = tokio::net::TcpListener::bind(&bind).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
