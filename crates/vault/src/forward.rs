//! Forwarding: an edge vault sends every chunk it has stored on to a central vault, with the
//! Kerberos upload and the chunk's metadata in its headers. A chunk is marked forwarded only
//! when the central vault has it (stored, or recognised as already stored), so chunks stored
//! while the central vault is down go when it is back; the central vault's idempotency makes a
//! repeat after a crash harmless.

use crate::db::Recording;
use crate::AppState;
use futures::StreamExt;
use osprey_core::config::ForwardConfig;
use osprey_core::{Error, ErrorKind, ObjectKey, Result};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const BATCH: i64 = 64;
/// Idle poll, in case a wake-up was missed.
const IDLE: Duration = Duration::from_secs(5);

pub(crate) async fn run(state: Arc<AppState>, shutdown: CancellationToken) {
    let Some(config) = state.config.vault.forward.clone() else { return };
    let http = match reqwest::Client::builder().timeout(Duration::from_secs(300)).build() {
        Ok(h) => h,
        Err(e) => return tracing::error!(error = %e, "forwarding: cannot build an http client"),
    };
    tracing::info!(to = %config.url, "forwarding chunks to a central vault");
    let mut backoff = Duration::from_secs(1);
    loop {
        let wait = match forward_batch(&state, &http, &config).await {
            Ok(0) => IDLE,
            Ok(_) => {
                backoff = Duration::from_secs(1);
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "forwarding paused");
                let wait = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(60));
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = state.forward_wake.notified(), if wait == IDLE => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Forwards the oldest waiting chunks; returns how many went. Fails, leaving the rest waiting,
/// when the central vault cannot take them now.
async fn forward_batch(state: &AppState, http: &reqwest::Client, config: &ForwardConfig) -> Result<usize> {
    let batch = state.db.to_forward(BATCH).await?;
    let results: Vec<(String, Result<()>)> = futures::stream::iter(batch)
        .map(|r| async move { (r.chunk_id.clone(), forward_one(state, http, config, &r).await) })
        .buffer_unordered(config.concurrency)
        .collect()
        .await;
    let mut sent = 0;
    let mut pause = None;
    for (chunk_id, result) in results {
        match result {
            Ok(()) => {
                state.db.mark_forwarded(&chunk_id, state.clock.unix_secs()).await?;
                metrics::counter!("osprey_vault_forwarded_total", "result" => "sent").increment(1);
                sent += 1;
            }
            // This chunk can never go (the central vault holds other bytes under its name, or
            // refuses it as too large or not an MP4): say so and let the rest through.
            Err(e) if matches!(e.kind(), ErrorKind::Conflict | ErrorKind::TooLarge | ErrorKind::UnsupportedMedia | ErrorKind::NotFound) => {
                tracing::error!(%chunk_id, error = %e, "forwarding: chunk refused for good; not forwarded");
                state.db.mark_forwarded(&chunk_id, state.clock.unix_secs()).await?;
                metrics::counter!("osprey_vault_forwarded_total", "result" => "refused").increment(1);
            }
            Err(e) => pause = Some(e),
        }
    }
    match pause {
        Some(e) => Err(e),
        None => Ok(sent),
    }
}

async fn forward_one(state: &AppState, http: &reqwest::Client, config: &ForwardConfig, r: &Recording) -> Result<()> {
    let provider = state
        .providers
        .get(&r.provider)
        .ok_or_else(|| Error::unavailable(format!("provider {:?} is not configured", r.provider)))?;
    let bytes = provider.get_bytes(&ObjectKey::parse(&r.object_key)?).await?;
    let (directory, file_name) = r.object_key.rsplit_once('/').unwrap_or(("", &r.object_key));
    let mut request = http
        .post(format!("{}/storage", config.url.trim_end_matches('/')))
        .header("Content-Type", "video/mp4")
        .header("X-Kerberos-Storage-AccessKey", &config.access_key)
        .header("X-Kerberos-Storage-SecretAccessKey", &config.secret_key)
        .header("X-Kerberos-Storage-Provider", &config.provider)
        .header("X-Kerberos-Storage-FileName", file_name)
        .header("X-Kerberos-Storage-Directory", directory)
        .header("X-Kerberos-Storage-Device", &r.device)
        .header("X-Kerberos-Storage-Timestamp", r.recorded_at.to_string());
    if !r.capture.is_empty() {
        request = request.header("X-Kerberos-Storage-Capture", &r.capture);
    }
    if let Some(ms) = r.duration_ms {
        request = request.header("X-Kerberos-Storage-Duration", (ms as f64 / 1000.0).to_string());
    }
    if let Some(fps) = r.fps {
        request = request.header("X-Kerberos-Storage-Fps", fps.to_string());
    }
    let response = request
        .body(bytes)
        .send()
        .await
        .map_err(|e| Error::unavailable(format!("cannot reach central vault {}", config.url)).with_source(e))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    let message = format!("central vault refused {}: {status} {}", r.object_key, body["error"].as_str().unwrap_or(""));
    let kind = match status.as_u16() {
        409 => ErrorKind::Conflict,
        413 => ErrorKind::TooLarge,
        415 => ErrorKind::UnsupportedMedia,
        // Credentials, provider or an outage: the same for every chunk, so wait and retry.
        _ => ErrorKind::Unavailable,
    };
    Err(Error::new(kind, message))
}
