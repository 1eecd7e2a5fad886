//! Forwarding: an edge vault sends every chunk it has stored on to a central vault, with the
//! Kerberos upload and the chunk's metadata in its headers. A chunk is marked forwarded only
//! when the central vault has it (stored, or recognised as already stored), so chunks stored
//! while the central vault is down go when it is back; the central vault's idempotency makes a
//! repeat after a crash harmless.

use crate::db::Recording;
use crate::AppState;
use futures::StreamExt;
use osprey_core::{Backoff, ChunkId, Error, ErrorKind, Result};
use osprey_kerberos::{Client, Upload, UploadHeaders, VaultTarget};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const BATCH: i64 = 64;
/// Idle poll, in case a wake-up was missed.
const IDLE: Duration = Duration::from_secs(5);
/// Between rounds that failed: the central vault may be down for a while.
const BACKOFF: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));

pub(crate) async fn run(state: Arc<AppState>, shutdown: CancellationToken) {
    let Some(config) = state.config.vault.forward.clone() else { return };
    let target = VaultTarget {
        url: config.url.clone(),
        access_key: config.access_key.clone(),
        secret_key: config.secret_key.expose().to_string(),
        provider: config.provider.clone(),
        directory: String::new(),
    };
    // One try per chunk: the loop below backs off and retries the whole batch.
    let client = Client::new(target, Backoff::once());
    tracing::info!(to = %config.url, "forwarding chunks to a central vault");
    let clock = state.clock.as_ref();
    let mut retry = BACKOFF.start(clock);
    loop {
        let wait = match forward_batch(&state, &client, config.concurrency).await {
            Ok(0) => IDLE,
            Ok(_) => {
                retry.succeeded(clock);
                continue;
            }
            Err(e) => {
                let wait = retry.failed(clock).expect("forwarding retries forever");
                tracing::warn!(error = %e, retry_in = ?wait, "forwarding paused");
                wait
            }
        };
        tokio::select! {
            _ = clock.sleep(wait) => {}
            _ = state.forward_wake.notified(), if wait == IDLE => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Forwards the oldest waiting chunks; returns how many went. Fails, leaving the rest waiting,
/// when the central vault cannot take them now.
async fn forward_batch(state: &AppState, client: &Client, concurrency: usize) -> Result<usize> {
    let batch = state.db.to_forward(BATCH).await?;
    let results: Vec<(ChunkId, Result<()>)> = futures::stream::iter(batch)
        .map(|r| async move { (r.chunk_id.clone(), forward_one(state, client, &r).await) })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut sent = 0;
    let mut pause = None;
    for (chunk_id, result) in results {
        match result {
            Ok(()) => {
                state.db.mark_forwarded(chunk_id.as_str(), state.clock.timestamp()).await?;
                metrics::counter!(crate::metrics::FORWARDED_TOTAL, "result" => "sent").increment(1);
                sent += 1;
            }
            // This chunk can never go (the central vault holds other bytes under its name, or
            // refuses it as too large or not an MP4): say so and let the rest through.
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::Conflict | ErrorKind::TooLarge | ErrorKind::UnsupportedMedia | ErrorKind::NotFound
                ) =>
            {
                tracing::error!(%chunk_id, error = %e, "forwarding: chunk refused for good; not forwarded");
                state.db.mark_forwarded(chunk_id.as_str(), state.clock.timestamp()).await?;
                metrics::counter!(crate::metrics::FORWARDED_TOTAL, "result" => "refused").increment(1);
            }
            Err(e) => pause = Some(e),
        }
    }
    match pause {
        Some(e) => Err(e),
        None => Ok(sent),
    }
}

async fn forward_one(state: &AppState, client: &Client, r: &Recording) -> Result<()> {
    let provider = state
        .providers
        .get(&r.provider)
        .ok_or_else(|| Error::unavailable(format!("provider {:?} is not configured", r.provider)))?;
    let bytes = provider.get_bytes(&r.object_key).await?;
    let headers = UploadHeaders {
        file_name: r.object_key.file_name().to_string(),
        directory: Some(r.object_key.directory().to_string()),
        device: Some(r.device.clone()),
        capture: Some(r.capture.clone()).filter(|c| !c.is_empty()),
        fps: r.fps,
        duration_ms: r.duration_ms,
        timestamp_ms: Some(r.recorded_at.millis()),
        ..Default::default()
    };
    match client.upload(&Upload { headers, bytes }).await {
        Ok(_) => Ok(()),
        // Credentials, provider or an outage: the same for every chunk, so wait and retry.
        Err(e) if !matches!(e.kind(), ErrorKind::Conflict | ErrorKind::TooLarge | ErrorKind::UnsupportedMedia) => {
            Err(Error::unavailable(format!("central vault did not take {}", r.object_key)).with_source(e))
        }
        Err(e) => Err(e),
    }
}
