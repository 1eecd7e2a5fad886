//! The whole pipeline from a real RTSP camera: GStreamer's RTSP server on 127.0.0.1 serves the
//! sample video; the agent pulls it, cuts chunks and uploads them; the vault stores them and
//! announces them on the bus; the worker detects; the results are checked for content.

use osprey_agent::{AgentEvent, AgentOptions, RecordMode, SourceSpec, VaultTarget};
use osprey_bus::{Bus, EmbeddedBus};
use osprey_cli::Config;
use osprey_core::{DetectionResult, SystemClock, TOPIC_DETECTIONS};
use osprey_media::{decode_frames, Demuxed, MotionOptions, Sampling};
use osprey_testkit::{ffmpeg, repo_root, RtspServer};
use osprey_vault::AccountConfig;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

struct Pipeline {
    bus: Arc<dyn Bus>,
    vault: osprey_vault::Vault,
    worker: tokio::task::JoinHandle<osprey_core::Result<()>>,
    shutdown: CancellationToken,
}

async fn pipeline(data: &Path) -> Pipeline {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("OSPREY_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init()
        .ok();
    let mut config = Config { data_dir: data.to_path_buf(), ..Config::default() };
    config.vault.listen = "127.0.0.1:0".parse().unwrap();
    config.vault.fsync = false;
    config.vault.accounts = vec![AccountConfig::new("cams", "cam-key", "cam-secret")];
    config.detect.sampling = Sampling::Fps(1.0);
    let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::in_memory().await.unwrap());
    let setup = config.vault_setup();
    let providers = setup.providers().unwrap();
    let vault = osprey_vault::Vault::start(setup, bus.clone(), providers, Arc::new(SystemClock)).await.unwrap();
    let shutdown = CancellationToken::new();
    let worker =
        tokio::spawn(osprey_worker::run(config.worker_setup(), bus.clone(), Arc::new(SystemClock), shutdown.clone()));
    Pipeline { bus, vault, worker, shutdown }
}

impl Pipeline {
    fn agent(&self, source: String, dir: &Path) -> AgentOptions {
        let target = VaultTarget {
            url: format!("http://{}", self.vault.addr),
            access_key: "cam-key".into(),
            secret_key: "cam-secret".into(),
            provider: "local".into(),
            directory: "cams".into(),
        };
        AgentOptions::new(SourceSpec::parse(&source).unwrap(), "porch", vec![target], dir.join("spool"))
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.worker.await.unwrap().unwrap();
        self.vault.stop().await.unwrap();
    }
}

#[derive(Debug, Default)]
struct Recorded {
    /// file name -> (start, duration, trigger)
    chunks: BTreeMap<String, (f64, f64, Option<f64>)>,
    /// chunk id -> file name
    uploaded: BTreeMap<String, String>,
}

fn gather(mut events: mpsc::UnboundedReceiver<AgentEvent>) -> Recorded {
    let mut r = Recorded::default();
    while let Ok(event) = events.try_recv() {
        match event {
            AgentEvent::Recorded { file_name, start_secs, duration_secs, trigger_secs, .. } => {
                r.chunks.insert(file_name, (start_secs, duration_secs, trigger_secs));
            }
            AgentEvent::Uploaded { file_name, answer } => {
                r.uploaded.insert(answer.chunk_id.clone(), file_name);
            }
            AgentEvent::Rejected { file_name, error } => panic!("{file_name} rejected: {error}"),
        }
    }
    r
}

/// Results for `ids`, and any result for the same chunk that arrives within a grace period after.
async fn results_for(bus: &Arc<dyn Bus>, ids: &[&String], within: Duration) -> BTreeMap<String, Vec<DetectionResult>> {
    let mut consumer = bus.subscribe(TOPIC_DETECTIONS, "rtsp-test").await.unwrap();
    let mut got: BTreeMap<String, Vec<DetectionResult>> = BTreeMap::new();
    let deadline = Instant::now() + within;
    let mut grace = None;
    loop {
        if grace.is_none() && ids.iter().all(|id| got.contains_key(id.as_str())) {
            grace = Some(Instant::now() + Duration::from_secs(3));
        }
        let until = grace.unwrap_or(deadline).min(deadline);
        let Ok(m) = tokio::time::timeout_at(until.into(), consumer.recv()).await else { break };
        let m = m.unwrap();
        consumer.commit(&m).await.unwrap();
        let r: DetectionResult = serde_json::from_slice(&m.payload).unwrap();
        got.entry(r.event.chunk_id.as_str().to_string()).or_default().push(r);
    }
    got
}

#[tokio::test(flavor = "multi_thread")]
async fn an_rtsp_camera_is_recorded_chunked_and_detected_once_per_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.mp4");
    ffmpeg(&["-t", "30", "-i", repo_root().join("samples/vtest.mp4").to_str().unwrap(), "-c", "copy"], &clip);
    let Some(camera) = RtspServer::start(Some(&clip)) else { return };
    let p = pipeline(&dir.path().join("data")).await;
    let (tx, events) = mpsc::unbounded_channel();
    let options = AgentOptions { chunk_secs: 6.0, events: Some(tx), ..p.agent(camera.url("file"), dir.path()) };

    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(90), osprey_agent::run(options, CancellationToken::new()))
        .await
        .expect("the stream ends after 30 s")
        .unwrap();
    let recorded = gather(events);
    eprintln!("recorded {} chunks in {:.1} s", recorded.chunks.len(), started.elapsed().as_secs_f64());
    assert!(started.elapsed() >= Duration::from_secs(25), "a camera streams in real time");

    let spans: Vec<(f64, f64, Option<f64>)> = recorded.chunks.values().copied().collect();
    assert!(spans.len() >= 5, "30 s in chunks of at most 6 s: {spans:?}");
    assert!(spans.iter().all(|(_, d, _)| *d <= 6.0 + 1e-6 && *d >= 1.0), "durations honour chunk_secs: {spans:?}");
    let total: f64 = spans.iter().map(|(_, d, _)| d).sum();
    assert!((total - 30.0).abs() < 0.5, "the whole stream is recorded, nothing twice: {total} s in {spans:?}");
    assert_eq!(recorded.uploaded.len(), recorded.chunks.len(), "every chunk uploaded");

    let ids: Vec<&String> = recorded.uploaded.keys().collect();
    let results = results_for(&p.bus, &ids, Duration::from_secs(180)).await;
    for id in &ids {
        let r = results.get(id.as_str()).unwrap_or_else(|| panic!("no result for {id}"));
        assert_eq!(r.len(), 1, "exactly one result for {id}");
        let r = &r[0];
        assert_eq!(r.event.payload.metadata.product_id, "porch");
        assert_eq!((r.data.width, r.data.height), (768, 576));
        assert!(
            r.data.object_count.get("person").copied().unwrap_or(0) >= 1,
            "people walk in {id}: {:?}",
            r.data.object_count
        );
    }
    assert_eq!(results.len(), ids.len(), "no result for a chunk that was not uploaded");
    p.stop().await;
}

/// Still for 6 s (the first frame), 10 s of people walking, still for 8 s (the last frame);
/// keyframes every 2 s.
fn still_motion_still(out: &Path) {
    let sample = repo_root().join("samples/vtest.mp4");
    ffmpeg(
        &[
            "-i", sample.to_str().unwrap(),
            "-vf", "trim=end_frame=100,setpts=PTS-STARTPTS,tpad=start_mode=clone:start_duration=6:stop_mode=clone:stop_duration=8",
            "-r", "10", "-c:v", "libx264", "-preset", "veryfast", "-g", "20", "-keyint_min", "20", "-sc_threshold", "0",
            "-bf", "0", "-pix_fmt", "yuv420p", "-an",
        ],
        out,
    );
}

/// Frames at the start of an MP4 that do not change from the one before.
fn leading_still_frames(mp4: &[u8]) -> usize {
    let video = Demuxed::parse(mp4).unwrap();
    let mut previous: Option<Vec<u8>> = None;
    let mut still = 0;
    let mut moving = false;
    decode_frames(&video, mp4, Sampling::All, 1, |f| {
        let (w, h, stride) = (f.frame.width() as usize, f.frame.height() as usize, f.frame.stride(0));
        let luma: Vec<u8> = (0..h).flat_map(|y| f.frame.data(0)[y * stride..y * stride + w].to_vec()).collect();
        if let Some(prev) = &previous {
            let diff =
                prev.iter().zip(&luma).map(|(a, b)| a.abs_diff(*b) as u64).sum::<u64>() as f64 / luma.len() as f64;
            moving |= diff > 1.0;
            if !moving {
                still += 1;
            }
        }
        previous = Some(luma);
        Ok(())
    })
    .unwrap();
    still + 1
}

#[tokio::test(flavor = "multi_thread")]
async fn motion_recording_keeps_the_seconds_before_the_trigger() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("motion.mp4");
    still_motion_still(&clip);
    let Some(camera) = RtspServer::start(Some(&clip)) else { return };
    let p = pipeline(&dir.path().join("data")).await;
    let (tx, events) = mpsc::unbounded_channel();
    let motion = MotionOptions { pre_secs: 3.0, post_secs: 2.0, ..MotionOptions::default() };
    let options = AgentOptions {
        chunk_secs: 8.0,
        mode: RecordMode::Motion,
        motion,
        events: Some(tx),
        ..p.agent(camera.url("file"), dir.path())
    };
    tokio::time::timeout(Duration::from_secs(90), osprey_agent::run(options, CancellationToken::new()))
        .await
        .unwrap()
        .unwrap();
    let recorded = gather(events);
    let spans: Vec<(f64, f64, Option<f64>)> = recorded.chunks.values().copied().collect();
    eprintln!("motion chunks (start, duration, trigger): {spans:?}");

    assert!(!spans.is_empty(), "people walking trigger a recording");
    assert!(spans.iter().all(|(_, d, _)| *d <= 8.0 + 1e-6), "no chunk is longer than chunk_secs: {spans:?}");
    let (start, _, trigger) = spans[0];
    let trigger = trigger.expect("the first chunk holds the trigger");
    assert!((5.9..=7.0).contains(&trigger), "motion starts at 6 s: {trigger}");
    assert!(trigger - start >= 3.0, "pre-recording: {start} .. {trigger}");
    let end = spans.iter().map(|(s, d, _)| s + d).fold(0.0, f64::max);
    assert!((17.9..=20.1).contains(&end), "post-recording ends 2 s after motion (16 s), on a keyframe: {end}");
    let recorded_secs: f64 = spans.iter().map(|(_, d, _)| d).sum();
    assert!((recorded_secs - (end - start)).abs() < 0.2, "one unbroken recording: {spans:?}");

    let ids: Vec<&String> = recorded.uploaded.keys().collect();
    let results = results_for(&p.bus, &ids, Duration::from_secs(180)).await;
    let first_id = recorded.uploaded.iter().find(|(_, name)| recorded.chunks[*name].0 == start).unwrap().0;
    let first = &results[first_id][0];
    let bytes = reqwest::get(first.event.payload.signed_url.as_str()).await.unwrap().bytes().await.unwrap();
    let still = leading_still_frames(&bytes);
    assert!(still >= 30, "the chunk starts with at least 3 s (30 frames) of the scene before motion: {still}");
    for id in &ids {
        assert_eq!(results.get(id.as_str()).map(Vec::len), Some(1), "one result for {id}");
    }
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_reconnects_when_the_camera_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut camera) = RtspServer::start(None) else { return };
    let p = pipeline(&dir.path().join("data")).await;
    let (tx, mut events) = mpsc::unbounded_channel();
    let options = AgentOptions {
        chunk_secs: 2.0,
        loop_source: true,
        events: Some(tx),
        ..p.agent(camera.url("pattern"), dir.path())
    };
    let stop = CancellationToken::new();
    let agent = tokio::spawn(osprey_agent::run(options, stop.clone()));

    wait_for_chunk(&mut events, "from the camera").await;
    camera.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    while events.try_recv().is_ok() {}
    camera.restart();
    wait_for_chunk(&mut events, "after the camera came back").await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), agent).await.expect("agent stops").unwrap().unwrap();
    p.stop().await;
}

async fn wait_for_chunk(events: &mut mpsc::UnboundedReceiver<AgentEvent>, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout_at(deadline.into(), events.recv()).await {
            Ok(Some(AgentEvent::Uploaded { .. })) => return,
            Ok(Some(_)) => continue,
            _ => panic!("no chunk {what}"),
        }
    }
}
