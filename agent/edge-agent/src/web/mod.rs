//! The agent's HTTP side: the status page (`/`), its JSON and live endpoints (`/api/…`) and
//! Prometheus' `/metrics`, on axum. Read-only: no endpoint changes anything.
//!
//! Bounded like the small responder it replaced: at most [`MAX_CONNECTIONS`] at a time (more
//! are closed at once), request heads of at most [`MAX_REQUEST`] bytes (hyper answers 431 past
//! that), [`HEADER_TIMEOUT`] to send one, and a connection lives at most [`MAX_LIFETIME`] (a page
//! reconnects its live stream by itself). HTTP/1.1 only; TLS belongs to a reverse proxy.

mod auth;
mod routes;
mod settings;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::health::Health;
use crate::view::Hub;
pub use auth::{AuthError, Credentials};
pub use settings::{WebAuth, WebSettings};

pub const MAX_CONNECTIONS: usize = 16;
pub const MAX_REQUEST: usize = 8192;
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
pub const MAX_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// What the handlers share.
#[derive(Clone)]
pub struct Web {
    health: Arc<Health>,
    hub: Arc<Hub>,
    metrics: Arc<prometheus_client::registry::Registry>,
    /// Each pipeline's last JPEG, by frame number: one encoding however many pages look.
    jpegs: Arc<Mutex<std::collections::HashMap<String, (u64, axum::body::Bytes)>>>,
    frame_width: u32,
    cancel: CancellationToken,
}

impl Web {
    pub fn new(health: Arc<Health>, hub: Arc<Hub>, frame_width: u32, cancel: CancellationToken) -> Web {
        let metrics = Arc::new(crate::metrics::registry(health.clone()));
        Web { health, hub, metrics, jpegs: Default::default(), frame_width, cancel }
    }
}

/// The page, its endpoints and `/metrics`.
pub fn router(web: Web, credentials: Option<Credentials>) -> Router {
    Router::new()
        .route("/", get(routes::page))
        .route("/page.js", get(routes::script))
        .route("/page.css", get(routes::style))
        .route("/metrics", get(routes::metrics))
        .route("/api/status", get(routes::status))
        .route("/api/events", get(routes::events))
        .route("/api/stream", get(routes::stream))
        .route("/api/pipelines/{name}/latest.jpg", get(routes::latest_jpg))
        .route("/api/pipelines/{name}/latest", get(routes::latest))
        .fallback(routes::not_found)
        .with_state(web)
        .layer(axum::middleware::from_fn_with_state(credentials, auth::require))
}

/// `/metrics` alone (the older `agent.metrics_listen`).
pub fn metrics_router(health: Arc<Health>) -> Router {
    let registry = Arc::new(crate::metrics::registry(health));
    Router::new().route("/metrics", get(move || routes::metrics_of(registry.clone()))).fallback(routes::not_found)
}

/// Serves `app` on `listener` until `cancel`.
pub async fn serve(listener: TcpListener, app: Router, cancel: CancellationToken) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = cancel.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "web: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "web: too many connections; closing");
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_REQUEST)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let ended = tokio::select! {
                r = conn.as_mut() => Some(r),
                _ = tokio::time::sleep(MAX_LIFETIME) => None,
                _ = cancel.cancelled() => None,
            };
            match ended {
                Some(Err(e)) => tracing::debug!(%peer, error = %e, "web: connection ended"),
                Some(Ok(())) => {}
                None => {
                    conn.as_mut().graceful_shutdown();
                    // a live stream never finishes by itself: give a response in flight a moment
                    tokio::time::timeout(Duration::from_secs(1), conn).await.ok();
                }
            }
        });
    }
}

/// Binds `addr` and serves `app` in a task; the bound address (a port 0 gets one).
pub async fn start(
    addr: std::net::SocketAddr,
    app: Router,
    cancel: CancellationToken,
) -> std::io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(serve(listener, app, cancel));
    Ok(bound)
}

/// Never fails: a type for streams that cannot.
pub(crate) type NoError = Infallible;
