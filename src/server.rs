//! The operator's HTTP endpoints: `/metrics` (Prometheus text format), `/livez` and `/readyz`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;

/// What `/readyz` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Readiness {
    /// Starting, or the leader's caches are still filling: not ready.
    Starting = 0,
    /// Waiting for the leader Lease: a healthy standby, ready to take over.
    Standby = 1,
    /// Leading, with every watch cache synced.
    Serving = 2,
    /// Shutting down: not ready, so no new scrapes are routed here.
    Stopping = 3,
}

/// Shared between the controllers (who set it) and the probes (who read it).
#[derive(Debug, Default)]
pub struct Health(AtomicU8);

impl Health {
    pub fn set(&self, readiness: Readiness) {
        self.0.store(readiness as u8, Ordering::SeqCst);
    }

    pub fn get(&self) -> Readiness {
        match self.0.load(Ordering::SeqCst) {
            1 => Readiness::Standby,
            2 => Readiness::Serving,
            3 => Readiness::Stopping,
            _ => Readiness::Starting,
        }
    }
}

#[derive(Clone)]
struct Endpoints {
    registry: Arc<Registry>,
    health: Arc<Health>,
}

/// Serves the endpoints on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(Endpoints { registry, health });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds `addr` (start-up: a taken port is a configuration error worth failing on).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

async fn metrics(State(endpoints): State<Endpoints>) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &endpoints.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(error) => {
            tracing::warn!(%error, "could not encode metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn readyz(State(endpoints): State<Endpoints>) -> (StatusCode, &'static str) {
    match endpoints.health.get() {
        Readiness::Serving => (StatusCode::OK, "ok"),
        Readiness::Standby => (StatusCode::OK, "standby: waiting for the leader lease"),
        Readiness::Starting => (StatusCode::SERVICE_UNAVAILABLE, "caches not synced yet"),
        Readiness::Stopping => (StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
    }
}
