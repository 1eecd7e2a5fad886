//! The vault's metric names (`osprey_vault_*`); `osprey_runtime::telemetry` records and serves them.

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

/// Detection results the index took, by `result` (indexed, unknown_chunk, invalid).
pub const INDEX_RESULTS: &str = "osprey_vault_index_results_total";
/// Tracks joined to a track of a neighbouring chunk.
pub const INDEX_JOINS: &str = "osprey_vault_index_joins_total";
/// Re-analysis jobs still queueing recordings.
pub const REANALYSE_RUNNING: &str = "osprey_vault_reanalyse_running_jobs";
/// Key checks that failed (wrong keys), wherever they were tried.
pub const AUTH_FAILURES: &str = "osprey_vault_auth_failures_total";
/// Requests refused by the failure limiter (429) without checking their keys.
pub const AUTH_LIMITED: &str = "osprey_vault_auth_limited_total";
/// Live streams refused at a cap, by `cap` (account, session).
pub const LIVE_REFUSED: &str = "osprey_vault_live_refused_total";
