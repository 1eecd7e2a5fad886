//! The detector worker: consumes chunk events in a consumer group, downloads each chunk into
//! memory by its signed URL, detects objects, publishes the result to `osprey.detections`, then
//! commits. Failures that may pass (download, bus) are retried with backoff a bounded number of
//! times; the rest, and chunks out of tries, go to `osprey.chunks.dlq`, so no chunk blocks the
//! partition. Delivery is at-least-once; a chunk seen again recently is not analysed twice.

pub mod config;
pub mod metrics;

pub use config::{setups, Config, ModelGroup, Setup};

use bytes::Bytes;
use futures::StreamExt;
use osprey_bus::{Bus, Message};
use osprey_core::{
    Backoff, ChunkEvent, ChunkId, Clock, DeadLetter, DetectionResult, Error, ErrorKind, Result, TOPIC_CHUNKS,
    TOPIC_CHUNKS_DLQ, TOPIC_DETECTIONS,
};
use osprey_detect::{analyse, batcher_from_config, Batcher, Options};
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

/// How often the group's lag is measured (`osprey_worker_lag_messages`).
const LAG_EVERY: Duration = Duration::from_secs(5);

/// How long past its deadline an analysis that has not stopped itself is waited for.
const DEADLINE_GRACE: Duration = Duration::from_secs(5);

/// How many recently finished chunk ids are remembered to skip re-deliveries.
const RECENT: usize = 4096;
/// Publishing a dead letter: it must not be lost, so it is tried until the bus takes it.
const DEAD_LETTER_RETRY: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));

struct State {
    config: Setup,
    bus: Arc<dyn Bus>,
    http: reqwest::Client,
    /// The detectors, shared by every chunk in flight; their frames share batches.
    batcher: Arc<Batcher>,
    recent: Mutex<(HashSet<ChunkId>, VecDeque<ChunkId>)>,
    /// A chunk's tries (`worker.max_attempts`, from `worker.retry_backoff_ms`).
    retry: Backoff,
    clock: Arc<dyn Clock>,
}

async fn report_lag(consumer: &mut dyn osprey_bus::Consumer) {
    match consumer.lag().await {
        Ok(lag) => ::metrics::gauge!(crate::metrics::LAG_MESSAGES).set(lag as f64),
        Err(e) => tracing::debug!(error = %e, "cannot measure lag"),
    }
}

/// Runs until `shutdown` is cancelled, then finishes the chunks in flight and returns. Retries
/// wait on `clock`.
pub async fn run(config: Setup, bus: Arc<dyn Bus>, clock: Arc<dyn Clock>, shutdown: CancellationToken) -> Result<()> {
    let batcher = Arc::new(batcher_from_config(&config.detect)?);
    let http = reqwest::Client::builder()
        .timeout(config.worker.fetch_timeout)
        .build()
        .map_err(|e| Error::internal("cannot build http client").with_source(e))?;
    let concurrency = config.worker.concurrency;
    let mut consumer = bus.subscribe_from(TOPIC_CHUNKS, &config.worker.group, config.worker.start).await?;
    let w = &config.worker;
    let retry = Backoff::new(w.retry_backoff, Duration::from_secs(60)).attempts(w.max_attempts);
    let state = Arc::new(State { config, bus, http, batcher, recent: Mutex::default(), retry, clock });
    let (sessions, max_batch) = (state.batcher.workers(), state.batcher.max_batch());
    let model = state.batcher.model().name.clone();
    tracing::info!(group = %state.config.worker.group, %model, concurrency, sessions, max_batch, "worker consuming {TOPIC_CHUNKS}");

    // The re-analysis loop failing stops the worker as the live loop's failure does, rather
    // than leaving requests unread until shutdown.
    let mut again = tokio::spawn(reanalyse(state.clone(), shutdown.clone()));
    let mut failed = None;

    let slots = Arc::new(Semaphore::new(concurrency));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Message>();
    let mut lag_tick = tokio::time::interval(LAG_EVERY);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("semaphore is never closed"),
            Some(done) = done_rx.recv() => { consumer.commit(&done).await?; continue; }
            _ = lag_tick.tick() => { report_lag(&mut *consumer).await; continue; }
            ended = &mut again => { failed = Some(again_ended(ended)); break; }
            _ = shutdown.cancelled() => break,
        };
        let message = tokio::select! {
            message = consumer.recv() => message?,
            Some(done) = done_rx.recv() => { consumer.commit(&done).await?; continue; }
            _ = lag_tick.tick() => { report_lag(&mut *consumer).await; continue; }
            ended = &mut again => { failed = Some(again_ended(ended)); break; }
            _ = shutdown.cancelled() => break,
        };
        let (state, done_tx) = (state.clone(), done_tx.clone());
        tokio::spawn(async move {
            handle(&state, &message).await;
            done_tx.send(message).ok();
            drop(slot);
        });
    }
    // Let the chunks in flight finish, and commit them.
    drop(done_tx);
    while let Some(done) = done_rx.recv().await {
        consumer.commit(&done).await?;
    }
    match failed {
        Some(Err(e)) => return Err(e),
        Some(Ok(())) => {}
        None => again_ended(again.await)?,
    }
    tracing::info!("worker stopped");
    Ok(())
}

/// What the re-analysis loop's end means: `Ok` only when it stopped for shutdown.
fn again_ended(ended: std::result::Result<Result<()>, tokio::task::JoinError>) -> Result<()> {
    let e = match ended {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(e)) => e,
        Err(e) => Error::internal("re-analysis loop failed").with_source(e),
    };
    tracing::error!(error = %e, "re-analysis requests cannot be read; the worker stops");
    Err(e)
}

/// Recordings sent to this group again (`osprey.reanalyse.<group>`), one at a time beside the
/// live chunks, so live analysis keeps most of the detectors. A chunk analysed live a moment ago
/// is analysed again here: that is what was asked.
async fn reanalyse(state: Arc<State>, shutdown: CancellationToken) -> Result<()> {
    let name = match state.config.group.as_str() {
        "" => osprey_core::DEFAULT_MODEL_GROUP,
        name => name,
    };
    let topic = osprey_core::reanalyse_topic(name);
    state.bus.create_topic(&topic, state.bus.partitions()).await?;
    // A consumer group of its own: members of one group on different topics would share its
    // rebalances, and the live group's lag would not be the live topic's alone.
    let group = format!("{}-reanalyse", state.config.worker.group);
    let mut consumer = state.bus.subscribe(&topic, &group).await?;
    tracing::info!(%topic, %group, "worker consuming re-analysis requests");
    loop {
        let message = tokio::select! {
            message = consumer.recv() => message?,
            _ = shutdown.cancelled() => return Ok(()),
        };
        handle_again(&state, &message).await;
        consumer.commit(&message).await?;
    }
}

async fn handle_again(state: &State, message: &Message) {
    let Some(event) = accepted(state, message).await else { return };
    tracing::info!(chunk_id = %event.chunk_id, "re-analysis of a recording");
    let what = format!("re-analysis of chunk {}", event.chunk_id);
    let (outcome, attempt) =
        osprey_core::retry::retry(&state.retry, state.clock.as_ref(), &what, || process(state, &event)).await;
    match outcome {
        Ok(()) => ::metrics::counter!(crate::metrics::CHUNKS_TOTAL, "result" => "reanalysed").increment(1),
        Err(e) => dead_letter(state, message, Some(event.chunk_id), e, attempt).await,
    }
}

/// The message's chunk event when this group analyses its camera; a message that is not one
/// goes to the dead-letter topic.
async fn accepted(state: &State, message: &Message) -> Option<ChunkEvent> {
    let event: ChunkEvent = match serde_json::from_slice(&message.payload) {
        Ok(e) => e,
        Err(e) => {
            dead_letter(state, message, None, Error::invalid(format!("not a chunk event: {e}")), 1).await;
            return None;
        }
    };
    let devices = &state.config.devices;
    if !devices.is_empty() && !devices.contains(&event.payload.metadata.product_id) {
        ::metrics::counter!(crate::metrics::CHUNKS_TOTAL, "result" => "not_this_group").increment(1);
        tracing::debug!(chunk_id = %event.chunk_id, "chunk of a camera this model group does not analyse");
        return None;
    }
    Some(event)
}

/// Processes one message to a result or a dead letter; either way it is then done.
async fn handle(state: &State, message: &Message) {
    let started = Instant::now();
    let Some(event) = accepted(state, message).await else { return };
    if !state.recent.lock().unwrap().0.insert(event.chunk_id.clone()) {
        ::metrics::counter!(crate::metrics::CHUNKS_TOTAL, "result" => "duplicate").increment(1);
        tracing::debug!(chunk_id = %event.chunk_id, "chunk already handled; skipped");
        return;
    }
    let what = format!("chunk {}", event.chunk_id);
    let (outcome, attempt) =
        osprey_core::retry::retry(&state.retry, state.clock.as_ref(), &what, || process(state, &event)).await;
    match outcome {
        Ok(()) => {
            ::metrics::counter!(crate::metrics::CHUNKS_TOTAL, "result" => "published").increment(1);
            ::metrics::histogram!(crate::metrics::CHUNK_SECONDS).record(started.elapsed().as_secs_f64());
            remember(state, event.chunk_id);
        }
        Err(e) => {
            state.recent.lock().unwrap().0.remove(&event.chunk_id);
            dead_letter(state, message, Some(event.chunk_id), e, attempt).await;
        }
    }
}

fn remember(state: &State, id: ChunkId) {
    let mut recent = state.recent.lock().unwrap();
    recent.1.push_back(id);
    if recent.1.len() > RECENT {
        if let Some(old) = recent.1.pop_front() {
            recent.0.remove(&old);
        }
    }
}

async fn process(state: &State, event: &ChunkEvent) -> Result<()> {
    tracing::info!(chunk_id = %event.chunk_id, key = %event.payload.key, "chunk started");
    let t = Instant::now();
    let bytes = fetch(state, event).await?;
    ::metrics::histogram!(crate::metrics::STAGE_SECONDS, "stage" => "fetch").record(t.elapsed().as_secs_f64());

    let t = Instant::now();
    let data = detect(state, bytes, &event.payload.metadata.product_id).await?;
    ::metrics::histogram!(crate::metrics::STAGE_SECONDS, "stage" => "detect").record(t.elapsed().as_secs_f64());
    ::metrics::counter!(crate::metrics::FRAMES_TOTAL).increment(data.frames_analyzed as u64);

    let t = Instant::now();
    let result = DetectionResult { event: event.clone(), operation: "detection".into(), data };
    let key = match event.payload.metadata.product_id.as_str() {
        "" => event.chunk_id.as_str(),
        device => device,
    };
    let payload = serde_json::to_vec(&result).expect("results serialise");
    state.bus.publish(TOPIC_DETECTIONS, key, &payload).await?;
    ::metrics::histogram!(crate::metrics::STAGE_SECONDS, "stage" => "publish").record(t.elapsed().as_secs_f64());
    tracing::info!(chunk_id = %event.chunk_id, frames = result.data.frames_analyzed, objects = ?result.data.object_count, "chunk analysed");
    Ok(())
}

/// Downloads the chunk into memory, refusing more than `worker.max_chunk_bytes`.
async fn fetch(state: &State, event: &ChunkEvent) -> Result<Bytes> {
    let url = &event.payload.signed_url;
    if url.is_empty() {
        return Err(Error::invalid("chunk event has no signedUrl"));
    }
    let unavailable =
        |e: reqwest::Error| Error::unavailable(format!("cannot download chunk {}", event.chunk_id)).with_source(e);
    let response = state.http.get(url).send().await.map_err(unavailable)?;
    let status = response.status();
    if !status.is_success() {
        let kind = if status.is_server_error() { ErrorKind::Unavailable } else { ErrorKind::InvalidInput };
        return Err(Error::new(kind, format!("download of chunk {} answered {status}", event.chunk_id)));
    }
    let max = state.config.worker.max_chunk_bytes;
    let too_large = || {
        Error::new(
            ErrorKind::TooLarge,
            format!("chunk {} is larger than worker.max_chunk_bytes ({max})", event.chunk_id),
        )
    };
    if response.content_length().is_some_and(|len| len > max) {
        return Err(too_large());
    }
    let mut body = Vec::with_capacity(event.payload.file_size.min(max) as usize);
    let mut stream = response.bytes_stream();
    while let Some(piece) = stream.next().await {
        body.extend_from_slice(&piece.map_err(unavailable)?);
        if body.len() as u64 > max {
            return Err(too_large());
        }
    }
    Ok(Bytes::from(body))
}

/// Decodes on a blocking thread; the frames go to the shared batcher. The analysis stops itself
/// at `worker.chunk_deadline_secs` (checked per frame); should it not, the try fails a moment
/// later all the same and the slot is freed.
async fn detect(state: &State, bytes: Bytes, device: &str) -> Result<osprey_core::DetectionData> {
    let batcher = state.batcher.clone();
    let deadline = state.config.worker.chunk_deadline;
    let mut options = Options::from_config(&state.config.detect, device);
    options.deadline = Some(Instant::now() + deadline);
    let task = tokio::task::spawn_blocking(move || analyse(&bytes, &options, &batcher, &|_, _| {}));
    let passed = || {
        Error::unavailable(format!(
            "analysis passed its deadline of {} s (worker.chunk_deadline_secs)",
            deadline.as_secs_f64()
        ))
    };
    match tokio::time::timeout(deadline + DEADLINE_GRACE, task).await {
        Ok(joined) => joined.map_err(|e| Error::internal("detection task failed").with_source(e))?.map_err(|e| match e
            .message()
            .starts_with("analysis passed its deadline")
        {
            true => passed(),
            false => e,
        }),
        Err(_) => Err(passed()),
    }
}

async fn dead_letter(state: &State, message: &Message, chunk_id: Option<ChunkId>, error: Error, attempts: u32) {
    tracing::warn!(chunk_id = ?chunk_id, attempts, error = %error, "chunk sent to {TOPIC_CHUNKS_DLQ}");
    ::metrics::counter!(crate::metrics::CHUNKS_TOTAL, "result" => "dead_letter").increment(1);
    let original = serde_json::from_slice(&message.payload)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&message.payload).into_owned()));
    let letter = DeadLetter { chunk_id, error: error.to_string(), attempts, original };
    let payload = serde_json::to_vec(&letter).expect("dead letters serialise");
    let key = message.key.clone().unwrap_or_default();
    // The dead letter must not be lost either: keep trying, a chunk cannot be dropped silently.
    let clock = state.clock.as_ref();
    let mut retry = DEAD_LETTER_RETRY.start(clock);
    while let Err(e) = state.bus.publish(TOPIC_CHUNKS_DLQ, &key, &payload).await {
        let wait = retry.failed(clock).expect("dead letters are retried forever");
        tracing::warn!(error = %e, retry_in = ?wait, "cannot publish dead letter; retrying");
        clock.sleep(wait).await;
    }
}
