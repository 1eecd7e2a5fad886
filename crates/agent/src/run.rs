//! The agent's loop: record chunks from the source into the spool at the pace they close, and
//! drain the spool in order into the first vault that takes them.

use crate::spool::{Spool, Spooled};
use crate::upload::{Uploader, VaultTarget};
use osprey_core::{Error, ErrorKind, Result};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// An H.264 MP4 file (RTSP sources are still to come).
    pub source: PathBuf,
    pub camera: String,
    pub chunk_secs: f64,
    /// Play the file again when it ends.
    pub loop_source: bool,
    /// Release each chunk when its time has passed, as a camera would; else as fast as possible.
    pub realtime: bool,
    /// Primary first, then fallbacks.
    pub vaults: Vec<VaultTarget>,
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
}

/// Records and uploads until the source ends (and the spool is drained) or `shutdown`.
pub async fn run(options: AgentOptions, shutdown: CancellationToken) -> Result<()> {
    if options.vaults.is_empty() {
        return Err(Error::invalid("agent: no vault to upload to"));
    }
    let spool = Arc::new(Mutex::new(Spool::open(&options.spool_dir, options.spool_max_bytes)?));
    let wake = Arc::new(Notify::new());
    let recorded = CancellationToken::new();
    let recorder = tokio::spawn(record(options.clone(), spool.clone(), wake.clone(), shutdown.clone(), recorded.clone()));
    let uploaders: Vec<Uploader> = options.vaults.iter().cloned().map(|v| Uploader::new(v, 1)).collect();
    drain(&uploaders, &spool, &wake, &shutdown, &recorded).await?;
    recorder.await.map_err(|e| Error::internal("recorder task failed").with_source(e))?
}

async fn record(
    options: AgentOptions,
    spool: Arc<Mutex<Spool>>,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
    recorded: CancellationToken,
) -> Result<()> {
    let _done = recorded.drop_guard();
    let bytes = tokio::fs::read(&options.source)
        .await
        .map_err(|e| Error::invalid(format!("agent: cannot read {}", options.source.display())).with_source(e))?;
    let chunk_secs = options.chunk_secs;
    let chunks = tokio::task::spawn_blocking(move || crate::cut(&bytes, chunk_secs))
        .await
        .map_err(|e| Error::internal("chunking failed").with_source(e))??;
    loop {
        let pass = Instant::now();
        for chunk in &chunks {
            let closes = pass + Duration::from_secs_f64(chunk.start_secs + chunk.duration_secs);
            if options.realtime {
                tokio::select! {
                    _ = tokio::time::sleep_until(closes.into()) => {}
                    _ = shutdown.cancelled() => return Ok(()),
                }
            }
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            let name = format!("{}_6-967003_{}_0-0-0-0_0_{}.mp4", now.as_secs(), options.camera, now.as_micros() % 1_000_000_000);
            spool.lock().unwrap().push(&name, &chunk.bytes)?;
            metrics::counter!("osprey_agent_chunks_recorded_total").increment(1);
            wake.notify_one();
        }
        if !options.loop_source || shutdown.is_cancelled() {
            return Ok(());
        }
    }
}

/// Uploads the oldest chunk until none is left and recording has ended.
async fn drain(
    uploaders: &[Uploader],
    spool: &Mutex<Spool>,
    wake: &Notify,
    shutdown: &CancellationToken,
    recorded: &CancellationToken,
) -> Result<()> {
    let mut backoff = Duration::from_millis(200);
    loop {
        let next = spool.lock().unwrap().oldest()?;
        let Some(chunk) = next else {
            if recorded.is_cancelled() {
                return Ok(());
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = recorded.cancelled() => {}
                _ = shutdown.cancelled() => return Ok(()),
            }
            continue;
        };
        match upload_anywhere(uploaders, &chunk).await {
            Ok(()) => {
                spool.lock().unwrap().remove(&chunk)?;
                metrics::counter!("osprey_agent_chunks_uploaded_total").increment(1);
                backoff = Duration::from_millis(200);
            }
            Err(e) if e.kind() == ErrorKind::Unavailable => {
                tracing::warn!(chunk = %chunk.file_name, error = %e, retry_in = ?backoff, "no vault reachable; chunk stays in the spool");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::error!(chunk = %chunk.file_name, error = %e, "vault refused the chunk; set aside in spool/rejected");
                spool.lock().unwrap().reject(&chunk)?;
            }
        }
    }
}

/// Tries each vault in order; a refusal (4xx) by the primary is final, an outage moves on.
async fn upload_anywhere(uploaders: &[Uploader], chunk: &Spooled) -> Result<()> {
    let bytes = tokio::fs::read(&chunk.path)
        .await
        .map_err(|e| Error::unavailable(format!("cannot read spooled {}", chunk.file_name)).with_source(e))?;
    let camera = chunk.file_name.split('_').nth(2).unwrap_or("camera").to_string();
    let mut last = None;
    for uploader in uploaders {
        match uploader.upload(&camera, &chunk.file_name, &bytes).await {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Unavailable => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("at least one vault"))
}
