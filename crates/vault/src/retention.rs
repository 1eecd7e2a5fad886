//! Retention: delete recordings past their rule's age or beyond its total size, objects and rows
//! together. A recording is first marked (the API stops showing it), then its object deleted,
//! then its row; a run that stops half-way is finished by the next one, so there is never a
//! visible row without its object, nor a deleted row whose object stays behind.

use crate::config::{RetentionRule, Setup};
use crate::db::{Db, Expiring};
use osprey_core::{ChunkId, Clock, Result, Timestamp};
use osprey_store::Providers;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What one run found and did.
#[derive(Debug, Default)]
pub struct Report {
    /// Recordings the rules expire, oldest first (with `dry_run`, nothing is deleted).
    pub expired: Vec<Expiring>,
    pub deleted: usize,
    pub deleted_bytes: u64,
    /// Recordings whose object could not be deleted; they stay marked and are retried.
    pub failed: usize,
}

/// Applies the rules once. With `dry_run`, only reports what would go.
pub async fn run_once(
    db: &Db,
    providers: &Providers,
    rules: &[RetentionRule],
    now: Timestamp,
    dry_run: bool,
) -> Result<Report> {
    let mut expired: BTreeMap<ChunkId, Expiring> = BTreeMap::new();
    for rule in rules {
        for e in expire(db, rule, now).await? {
            expired.insert(e.chunk_id.clone(), e);
        }
    }
    let mut expired: Vec<Expiring> = expired.into_values().collect();
    expired.sort_by(|a, b| (a.recorded_at, a.chunk_id.as_str()).cmp(&(b.recorded_at, b.chunk_id.as_str())));
    let mut report = Report { expired, ..Report::default() };
    if dry_run {
        return Ok(report);
    }
    let ids: Vec<&str> = report.expired.iter().map(|e| e.chunk_id.as_str()).collect();
    db.mark_deleting(&ids, now).await?;
    // Everything marked, this run's and any an earlier run left unfinished.
    for doomed in db.deleting().await? {
        match delete_object(providers, &doomed).await {
            Ok(()) => {
                // Its results and events go first: a crash between leaves the marked row, and
                // the next run does both again.
                crate::index::forget_recording(db, doomed.chunk_id.as_str()).await?;
                db.delete_recording(doomed.chunk_id.as_str()).await?;
                report.deleted += 1;
                report.deleted_bytes += doomed.size.max(0) as u64;
            }
            Err(e) => {
                tracing::warn!(chunk_id = %doomed.chunk_id, key = %doomed.object_key, error = %e, "retention: cannot delete object; will retry");
                report.failed += 1;
            }
        }
    }
    metrics::counter!(crate::metrics::RETENTION_DELETED_TOTAL).increment(report.deleted as u64);
    metrics::counter!(crate::metrics::RETENTION_DELETED_BYTES_TOTAL).increment(report.deleted_bytes);
    metrics::counter!(crate::metrics::RETENTION_FAILED_TOTAL).increment(report.failed as u64);
    Ok(report)
}

/// One rule: everything older than the age limit, then the oldest of the rest while they
/// exceed the size limit.
async fn expire(db: &Db, rule: &RetentionRule, now: Timestamp) -> Result<Vec<Expiring>> {
    let rows = db.retention_scope(rule.account.as_deref(), rule.provider.as_deref()).await?;
    let cutoff =
        rule.max_age_days.map(|days| now - Duration::try_from_secs_f64(days * 86_400.0).unwrap_or(Duration::MAX));
    let (mut expired, kept): (Vec<Expiring>, Vec<Expiring>) =
        rows.into_iter().partition(|r| cutoff.is_some_and(|c| r.recorded_at < c));
    if let Some(max) = rule.max_bytes {
        let mut total: u64 = kept.iter().map(|r| r.size.max(0) as u64).sum();
        for r in kept {
            if total <= max {
                break;
            }
            total -= r.size.max(0) as u64;
            expired.push(r);
        }
    }
    Ok(expired)
}

async fn delete_object(providers: &Providers, doomed: &Expiring) -> Result<()> {
    let provider = providers.get(&doomed.provider).ok_or_else(|| {
        osprey_core::Error::unavailable(format!("provider {:?} is not configured any more", doomed.provider))
    })?;
    provider.delete(&doomed.object_key).await
}

/// The vault's background task: a run every `retention_interval_secs` while rules exist.
pub(crate) async fn run(
    db: Db,
    providers: Providers,
    config: Setup,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) {
    if config.vault.retention.is_empty() {
        return;
    }
    let mut every = tokio::time::interval(config.vault.retention_interval);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        match run_once(&db, &providers, &config.vault.retention, clock.timestamp(), false).await {
            Ok(r) if r.deleted + r.failed > 0 => {
                tracing::info!(deleted = r.deleted, bytes = r.deleted_bytes, failed = r.failed, "retention run")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention run failed"),
        }
    }
}

/// `osprey retention`: one run against the configured database and providers.
pub async fn run_from_config(config: &Setup, clock: &dyn Clock, dry_run: bool) -> Result<Report> {
    let db = Db::open(&config.database_url()).await?;
    let providers = config.providers()?;
    run_once(&db, &providers, &config.vault.retention, clock.timestamp(), dry_run).await
}
