//! The agent's loop: record chunks from the source into the spool at the pace they close, and
//! drain the spool in order into the first vault that takes them.

use crate::chunk::{mux, Frame};
use crate::config::{Config, RecordMode};
use crate::recorder::{MotionSettings, Recorder, Recording};
use crate::source::{Session, SourceSpec};
use crate::spool::{Spool, Spooled};
use osprey_core::{Backoff, Clock, Error, ErrorKind, Result, SystemClock};
use osprey_kerberos::{Client, FileName, Upload, UploadAnswer, VaultTarget};
use osprey_media::{MotionDetector, MotionOptions};
use retina::client::Transport;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub source: SourceSpec,
    pub camera: String,
    /// Longest chunk; chunks are cut at keyframes.
    pub chunk_secs: f64,
    pub mode: RecordMode,
    /// What motion mode watches for and keeps around it.
    pub motion: MotionOptions,
    /// When the source ends: play a file again, reconnect to a camera. Cameras are always
    /// reconnected to after a failure while this is set.
    pub loop_source: bool,
    /// Pace a file source like a camera; else read it as fast as possible.
    pub realtime: bool,
    pub transport: Transport,
    /// Primary first, then fallbacks.
    pub vaults: Vec<VaultTarget>,
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
    /// Told of every chunk recorded and uploaded (`osprey up` prints from these).
    pub events: Option<mpsc::UnboundedSender<AgentEvent>>,
    /// What reconnects and upload retries wait on.
    pub clock: Arc<dyn Clock>,
}

/// Reconnecting to a camera that went away.
const RECONNECT: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
/// Retrying the oldest spooled chunk while no vault takes it.
const UPLOAD: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));

impl AgentOptions {
    pub fn new(source: SourceSpec, camera: &str, vaults: Vec<VaultTarget>, spool_dir: PathBuf) -> AgentOptions {
        AgentOptions {
            source,
            camera: camera.to_string(),
            chunk_secs: 10.0,
            mode: RecordMode::Continuous,
            motion: MotionOptions::default(),
            loop_source: false,
            realtime: true,
            transport: Transport::default(),
            vaults,
            spool_dir,
            spool_max_bytes: 1 << 30,
            events: None,
            clock: Arc::new(SystemClock),
        }
    }

    /// The options `[agent]` gives for recording `source`; the spool under `data_dir` unless the
    /// config names one. A camera is reconnected to unless `loop_source` says otherwise.
    pub fn from_config(config: &Config, source: SourceSpec, data_dir: &Path) -> AgentOptions {
        let is_camera = matches!(source, SourceSpec::Rtsp(_));
        let spool_dir = config.spool_dir.clone().unwrap_or_else(|| data_dir.join("spool"));
        AgentOptions {
            chunk_secs: config.chunk_secs,
            mode: config.mode,
            motion: config.motion.clone(),
            loop_source: config.loop_source.unwrap_or(is_camera),
            realtime: config.realtime,
            transport: config.transport.to_retina(),
            spool_max_bytes: config.spool_max_bytes,
            ..AgentOptions::new(source, &config.camera, config.targets(), spool_dir)
        }
    }
}

#[derive(Debug, Clone)]
pub enum AgentEvent {
    Recorded { file_name: String, start_secs: f64, duration_secs: f64, frames: usize, trigger_secs: Option<f64> },
    Uploaded { file_name: String, answer: UploadAnswer },
    Rejected { file_name: String, error: String },
}

/// Records and uploads until the source ends (and the spool is drained) or `shutdown`.
pub async fn run(options: AgentOptions, shutdown: CancellationToken) -> Result<()> {
    if options.vaults.is_empty() {
        return Err(Error::invalid("agent: no vault to upload to"));
    }
    if options.chunk_secs.is_nan() || options.chunk_secs <= 0.0 {
        return Err(Error::invalid("agent: chunk_secs must be above 0"));
    }
    if options.mode == RecordMode::Motion {
        options.motion.validate().map_err(|e| Error::invalid(format!("agent: {e}")))?;
    }
    let spool = Arc::new(Mutex::new(Spool::open(&options.spool_dir, options.spool_max_bytes)?));
    let wake = Arc::new(Notify::new());
    let recorded = CancellationToken::new();
    let recorder =
        tokio::spawn(record(options.clone(), spool.clone(), wake.clone(), shutdown.clone(), recorded.clone()));
    // One try per vault: the spool's loop retries the chunk, on the next vault first.
    let clients: Vec<Client> = options
        .vaults
        .iter()
        .cloned()
        .map(|v| Client::new(v, Backoff::once()).with_clock(options.clock.clone()))
        .collect();
    drain(&clients, &options, &spool, &wake, &shutdown, &recorded).await?;
    recorder.await.map_err(|e| Error::internal("recorder task failed").with_source(e))?
}

/// What the source side hands the chunk writer.
enum Input {
    Frame(Frame, (u32, u32)),
    /// The source ended or was lost: close what is being recorded.
    Break,
}

/// Pulls frames from the source, reconnecting with backoff, and feeds the chunk writer.
async fn record(
    options: AgentOptions,
    spool: Arc<Mutex<Spool>>,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
    recorded: CancellationToken,
) -> Result<()> {
    let _done = recorded.drop_guard();
    let (tx, rx) = mpsc::channel(256);
    let writer = {
        let options = options.clone();
        tokio::task::spawn_blocking(move || write_chunks(&options, rx, &spool, &wake))
    };
    let read = read_source(&options, &tx, &shutdown).await;
    drop(tx);
    let written = writer.await.map_err(|e| Error::internal("chunk writer failed").with_source(e))?;
    read.and(written)
}

async fn read_source(options: &AgentOptions, tx: &mpsc::Sender<Input>, shutdown: &CancellationToken) -> Result<()> {
    let source = options.source.display();
    let clock = options.clock.as_ref();
    let mut reconnect = RECONNECT.start(clock);
    loop {
        let opened = tokio::select! {
            s = Session::open(&options.source, options.realtime, &options.transport) => s,
            _ = shutdown.cancelled() => return Ok(()),
        };
        match opened {
            Ok(mut session) => {
                tracing::info!(%source, size = ?session.size(), "source opened");
                let outcome = loop {
                    let next = tokio::select! {
                        n = session.next() => n,
                        _ = shutdown.cancelled() => break Ok(false),
                    };
                    match next {
                        Ok(Some(frame)) => {
                            reconnect.succeeded(clock);
                            metrics::counter!(crate::metrics::FRAMES_TOTAL).increment(1);
                            if tx.send(Input::Frame(frame, session.size())).await.is_err() {
                                break Ok(false);
                            }
                        }
                        Ok(None) => break Ok(true),
                        Err(e) => break Err(e),
                    }
                };
                tx.send(Input::Break).await.ok();
                match outcome {
                    Ok(false) => return Ok(()),
                    Ok(true) => tracing::info!(%source, "source ended"),
                    Err(e) => tracing::warn!(%source, error = %e, "source lost"),
                }
            }
            Err(e) if e.kind().is_retryable() && options.loop_source => {
                tracing::warn!(%source, error = %e, "cannot open the source");
            }
            Err(e) => return Err(e),
        }
        if !options.loop_source || shutdown.is_cancelled() {
            return Ok(());
        }
        if matches!(options.source, SourceSpec::Rtsp(_)) {
            metrics::counter!(crate::metrics::RECONNECTS_TOTAL).increment(1);
            let wait = reconnect.failed(clock).expect("cameras are reconnected to forever");
            tracing::info!(%source, retry_in = ?wait, "reconnecting");
            tokio::select! {
                _ = clock.sleep(wait) => {}
                _ = shutdown.cancelled() => return Ok(()),
            }
        }
    }
}

/// Decides what to record (motion, chunk length), writes each chunk as an MP4 and spools it.
fn write_chunks(
    options: &AgentOptions,
    mut rx: mpsc::Receiver<Input>,
    spool: &Mutex<Spool>,
    wake: &Notify,
) -> Result<()> {
    let m = &options.motion;
    let new_recorder = || match options.mode {
        RecordMode::Continuous => Recorder::continuous(options.chunk_secs),
        RecordMode::Motion => {
            Recorder::motion(options.chunk_secs, MotionSettings { pre_secs: m.pre_secs, post_secs: m.post_secs })
        }
    };
    let new_detector = || match options.mode {
        RecordMode::Continuous => Ok(None),
        RecordMode::Motion => MotionDetector::h264(m.clone()).map(Some),
    };
    let mut recorder = new_recorder();
    let mut detector = new_detector()?;
    let mut size = None;
    // A source read faster than real time is stamped on its own clock from when recording began,
    // so consecutive chunks are as far apart as in the video; one at its own pace, on arrival.
    let began_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as i64;
    let anchor = (!options.realtime).then_some(began_ms);
    let store = |recordings: Vec<Recording>, size: Option<(u32, u32)>| -> Result<()> {
        for recording in recordings {
            let (w, h) = size.unwrap_or_default();
            spool_chunk(options, spool, wake, &recording, (w, h), anchor)?;
        }
        Ok(())
    };
    while let Some(input) = rx.blocking_recv() {
        match input {
            Input::Frame(frame, frame_size) => {
                if size.is_some_and(|s| s != frame_size) {
                    store(recorder.finish(), size)?;
                }
                size = Some(frame_size);
                let motion = match detector.as_mut() {
                    Some(d) => d.feed(&frame.data, frame.pts).unwrap_or_else(|e| {
                        tracing::debug!(error = %e, "motion: frame skipped");
                        false
                    }),
                    None => false,
                };
                store(recorder.push(frame, motion), size)?;
            }
            Input::Break => {
                store(recorder.finish(), size)?;
                recorder = new_recorder();
                detector = new_detector()?;
            }
        }
    }
    store(recorder.finish(), size)
}

fn spool_chunk(
    options: &AgentOptions,
    spool: &Mutex<Spool>,
    wake: &Notify,
    recording: &Recording,
    (w, h): (u32, u32),
    anchor_ms: Option<i64>,
) -> Result<()> {
    let chunk = mux(recording, w, h)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let started_ms = match anchor_ms {
        Some(anchor) => anchor + (recording.start_secs * 1000.0).round() as i64,
        None => ((now.as_secs_f64() - recording.duration_secs) * 1000.0) as i64,
    };
    // Named as a current Kerberos agent names a closed recording (start and duration in ms). Two
    // chunks closed in the same millisecond (a file read faster than real time) would share a
    // name: the start moves on by a millisecond instead.
    static LAST_START: AtomicI64 = AtomicI64::new(0);
    let unique = |last: i64| Some(started_ms.max(last + 1));
    let last =
        LAST_START.fetch_update(Ordering::Relaxed, Ordering::Relaxed, unique).expect("unique always gives a value");
    let started_ms = started_ms.max(last + 1);
    let duration_ms = (recording.duration_secs * 1000.0).round() as i64;
    let name = FileName::continuous(started_ms, &options.camera, duration_ms).to_string();
    spool.lock().unwrap().push(&name, &chunk.bytes)?;
    metrics::counter!(crate::metrics::CHUNKS_RECORDED_TOTAL).increment(1);
    tracing::debug!(chunk = %name, start = recording.start_secs, duration = recording.duration_secs, frames = chunk.frames, "chunk recorded");
    if let Some(events) = &options.events {
        events
            .send(AgentEvent::Recorded {
                file_name: name,
                start_secs: recording.start_secs,
                duration_secs: recording.duration_secs,
                frames: chunk.frames,
                trigger_secs: recording.trigger_secs,
            })
            .ok();
    }
    wake.notify_one();
    Ok(())
}

/// Uploads the oldest chunk until none is left and recording has ended.
async fn drain(
    clients: &[Client],
    options: &AgentOptions,
    spool: &Mutex<Spool>,
    wake: &Notify,
    shutdown: &CancellationToken,
    recorded: &CancellationToken,
) -> Result<()> {
    let tell = |event: AgentEvent| {
        if let Some(events) = &options.events {
            events.send(event).ok();
        }
    };
    let clock = options.clock.as_ref();
    let mut retry = UPLOAD.start(clock);
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
        match upload_anywhere(clients, &options.camera, &chunk).await {
            Ok(answer) => {
                spool.lock().unwrap().remove(&chunk)?;
                tell(AgentEvent::Uploaded { file_name: chunk.file_name.clone(), answer });
                metrics::counter!(crate::metrics::CHUNKS_UPLOADED_TOTAL).increment(1);
                retry.succeeded(clock);
            }
            Err(e) if e.kind().is_retryable() => {
                let wait = retry.failed(clock).expect("the spool is retried forever");
                tracing::warn!(chunk = %chunk.file_name, error = %e, retry_in = ?wait, "no vault reachable; chunk stays in the spool");
                tokio::select! {
                    _ = clock.sleep(wait) => {}
                    _ = shutdown.cancelled() => return Ok(()),
                }
            }
            Err(e) => {
                tracing::error!(chunk = %chunk.file_name, error = %e, "vault refused the chunk; set aside in spool/rejected");
                spool.lock().unwrap().reject(&chunk)?;
                tell(AgentEvent::Rejected { file_name: chunk.file_name.clone(), error: e.to_string() });
            }
        }
    }
}

/// Tries each vault in order; a refusal (4xx) by the primary is final, an outage moves on.
/// The camera travels as a field: a file name is never split to find it (a camera may have `_`
/// in its name).
async fn upload_anywhere(clients: &[Client], camera: &str, chunk: &Spooled) -> Result<UploadAnswer> {
    let bytes = tokio::fs::read(&chunk.path)
        .await
        .map_err(|e| Error::unavailable(format!("cannot read spooled {}", chunk.file_name)).with_source(e))?;
    let mut last = None;
    let upload = Upload::named(camera, &chunk.file_name, bytes);
    for client in clients {
        match client.upload(&upload).await {
            Ok(answer) => return Ok(answer),
            Err(e) if e.kind() == ErrorKind::Unavailable => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("at least one vault"))
}
