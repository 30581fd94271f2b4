//! The diagnostics HTTP server: `/healthz`, `/readyz` and `/metrics`.
//!
//! It owns nothing but its listener: it reads the shared [`Metrics`] and never touches storage or
//! keys, so it stays answerable while the rest of the process is busy or degraded.

use std::net::SocketAddr;
use std::sync::Arc;

use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::sync::watch;

use crate::Metrics;

/// Why the diagnostics server stopped or never started: the address cannot be bound (taken, or
/// not this host's: the configuration's), or serving failed.
#[derive(Debug, thiserror::Error)]
pub enum DiagError {
    #[error("cannot listen on diagnostics address {addr}: {cause}")]
    Bind {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error(transparent)]
    Serve(#[from] std::io::Error),
}

#[derive(Clone)]
struct DiagState {
    metrics: Arc<Metrics>,
    proxy_expected: bool,
}

/// Binds the diagnostics address and serves until `shutdown` flips to true.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    proxy_expected: bool,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), DiagError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|cause| DiagError::Bind { addr, cause })?;
    tracing::info!(%addr, "diagnostics listening (/healthz, /readyz, /metrics)");
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(DiagState {
            metrics,
            proxy_expected,
        });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            hop_platform::signals::until_shutdown(&mut shutdown).await;
        })
        .await?;
    Ok(())
}

async fn readyz(State(s): State<DiagState>) -> impl IntoResponse {
    let age = s
        .metrics
        .admission_age()
        .map(|a| format!("admission snapshot age: {}s\n", a.as_secs()))
        .unwrap_or_default();
    let backend = if s.metrics.backend_reachable.load(Ordering::Acquire) {
        ""
    } else {
        "cluster state unreachable: existing identities are decided from the kept snapshot; new \
         logins fail\n"
    };
    if s.metrics.is_ready(s.proxy_expected) {
        (StatusCode::OK, format!("ready\n{age}"))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready\n{backend}{age}"),
        )
    }
}

async fn metrics_text(State(s): State<DiagState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
}
