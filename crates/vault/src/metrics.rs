//! Prometheus metrics. Names are `osprey_vault_*`.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

pub const UPLOADS: &str = "osprey_vault_uploads_total";
pub const UPLOAD_BYTES: &str = "osprey_vault_upload_bytes_total";
pub const OUTBOX_PENDING: &str = "osprey_vault_outbox_pending";
pub const PUBLISHED: &str = "osprey_vault_events_published_total";
pub const PUBLISH_ERRORS: &str = "osprey_vault_publish_errors_total";
pub const PUBLISH_LATENCY: &str = "osprey_vault_publish_latency_seconds";
pub const CONNECTIONS_REFUSED: &str = "osprey_vault_connections_refused_total";
/// Problems reconciliation found, by `kind` (orphan_object, missing_object, stale_claim,
/// staged_leftover, multipart_leftover, tus_leftover, orphan_event).
pub const RECONCILE_FOUND: &str = "osprey_vault_reconcile_found_total";
/// What reconciliation repaired, by `kind`.
pub const RECONCILE_REPAIRED: &str = "osprey_vault_reconcile_repaired_total";

/// Chunks forwarded to the central vault, by `result` (sent, refused).
pub const FORWARDED_TOTAL: &str = "osprey_vault_forwarded_total";
/// Recordings retention deleted.
pub const RETENTION_DELETED_TOTAL: &str = "osprey_vault_retention_deleted_total";
/// Bytes retention deleted.
pub const RETENTION_DELETED_BYTES_TOTAL: &str = "osprey_vault_retention_deleted_bytes_total";
/// Recordings retention could not delete (retried next run).
pub const RETENTION_FAILED_TOTAL: &str = "osprey_vault_retention_failed_total";
/// Resumable uploads created.
pub const TUS_UPLOADS_CREATED_TOTAL: &str = "osprey_vault_tus_uploads_created_total";
/// Resumable uploads stored.
pub const TUS_UPLOADS_COMPLETED_TOTAL: &str = "osprey_vault_tus_uploads_completed_total";

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

pub fn render() -> String {
    install().render()
}

/// Serves `/metrics` (and `/healthz`) on `addr` until `shutdown`: for the roles that have no
/// HTTP server of their own (worker, agent, notifier).
pub async fn serve(
    addr: std::net::SocketAddr,
    shutdown: tokio_util::sync::CancellationToken,
) -> osprey_core::Result<()> {
    use axum::routing::get;
    install();
    let app = axum::Router::new().route("/metrics", get(crate::api::metrics)).route("/healthz", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| osprey_core::Error::invalid(format!("cannot listen on {addr} for metrics")).with_source(e))?;
    tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "serving /metrics");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .map_err(|e| osprey_core::Error::internal("metrics server failed").with_source(e))
}
