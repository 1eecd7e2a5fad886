//! The process's Prometheus recorder, and the small server that exposes it for the roles that
//! have no HTTP server of their own (worker, agent, notifier). Each crate names its metrics in its
//! own `metrics.rs`; this module only records and serves them.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use osprey_core::{Error, Result};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::OnceLock;
use tokio_util::sync::CancellationToken;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once; later calls reuse it.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let buckets = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0];
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("seconds".into()), &buckets)
            .expect("buckets are not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
        }
        handle
    })
}

/// Every metric recorded so far, in Prometheus's text format.
pub fn render() -> String {
    install().render()
}

/// The `/metrics` response.
pub async fn metrics_handler() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], render())
}

/// Binds `addr` now (so a taken port fails at start), then serves `/metrics` and `/healthz` until
/// `shutdown`.
pub async fn serve(addr: SocketAddr, shutdown: CancellationToken) -> Result<impl Future<Output = ()>> {
    install();
    let app = axum::Router::new().route("/metrics", get(metrics_handler)).route("/healthz", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::invalid(format!("cannot listen on {addr} for metrics")).with_source(e))?;
    tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "serving /metrics");
    Ok(async move {
        let served = axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await;
        if let Err(e) = served {
            tracing::error!(error = %e, "metrics server failed");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_what_was_recorded() {
        let shutdown = CancellationToken::new();
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let server = tokio::spawn(serve(addr, shutdown.clone()).await.unwrap());
        metrics::counter!("osprey_runtime_test_total").increment(2);
        let body = reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap();
        assert!(body.contains("osprey_runtime_test_total 2"), "{body}");
        assert!(serve(addr, shutdown.clone()).await.is_err(), "a taken port is refused at start");
        shutdown.cancel();
        server.await.unwrap();
    }
}
