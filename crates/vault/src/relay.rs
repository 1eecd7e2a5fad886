//! The outbox relay: publishes events committed with their recordings, then marks them sent.
//! A bus outage only delays events; on restart the relay resumes with what is still pending.

use crate::db::OutboxRow;
use crate::{metrics as m, AppState};
use futures::StreamExt;
use osprey_core::{Backoff, ChunkEvent, Error, ObjectKey, Result};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const BATCH: i64 = 256;
const IN_FLIGHT: usize = 32;
const IDLE_POLL: Duration = Duration::from_secs(1);
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

pub async fn run(state: Arc<AppState>, shutdown: CancellationToken) {
    let clock = state.clock.as_ref();
    let mut retry = BACKOFF.start(clock);
    loop {
        let wait = match relay_batch(&state).await {
            Ok(n) if n > 0 => {
                retry.succeeded(clock);
                continue;
            }
            Ok(_) => IDLE_POLL,
            Err(e) => {
                metrics::counter!(m::PUBLISH_ERRORS).increment(1);
                let wait = retry.failed(clock).expect("the relay retries forever");
                tracing::warn!(error = %e, retry_in = ?wait, "cannot publish chunk events");
                wait
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = state.relay_wake.notified() => {}
            _ = clock.sleep(wait) => {}
        }
    }
}

/// Publishes up to one batch of pending events; returns how many were published.
async fn relay_batch(state: &AppState) -> Result<usize> {
    let rows = state.db.pending_events(BATCH).await?;
    if let Ok(pending) = state.db.pending_count().await {
        metrics::gauge!(m::OUTBOX_PENDING).set(pending as f64);
    }
    if rows.is_empty() {
        return Ok(0);
    }
    let results: Vec<(i64, Result<()>)> = futures::stream::iter(rows)
        .map(|row| async move { (row.id, publish(state, &row).await) })
        .buffered(IN_FLIGHT)
        .collect()
        .await;
    let sent: Vec<i64> = results.iter().filter(|(_, r)| r.is_ok()).map(|(id, _)| *id).collect();
    state.db.mark_sent(&sent, state.clock.timestamp()).await?;
    metrics::counter!(m::PUBLISHED).increment(sent.len() as u64);
    match results.into_iter().find_map(|(_, r)| r.err()) {
        Some(e) => Err(e),
        None => Ok(sent.len()),
    }
}

/// Fills in a fresh signed URL, so a delayed event still carries a usable link.
async fn publish(state: &AppState, row: &OutboxRow) -> Result<()> {
    let mut event: ChunkEvent = serde_json::from_str(&row.payload)
        .map_err(|e| Error::internal(format!("outbox row {} is not a chunk event", row.id)).with_source(e))?;
    let ttl = state.config.vault.event_url_ttl.as_secs();
    event.payload.signed_url =
        state.download_url(&row.chunk_id, &event.source, &ObjectKey::parse(&event.payload.key)?, ttl).await?.0;
    let payload = serde_json::to_vec(&event).expect("events serialise");
    state.bus.publish(&row.topic, &row.msg_key, &payload).await?;
    let latency = state.clock.timestamp().since(row.created_at).as_secs_f64();
    metrics::histogram!(m::PUBLISH_LATENCY).record(latency);
    Ok(())
}
