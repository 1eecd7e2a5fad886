//! The worker against a real vault on 127.0.0.1: chunks uploaded the Kerberos way come back as
//! detection results; a broken chunk goes to the dead-letter topic; re-deliveries are not
//! analysed twice.

use osprey_bus::{Bus, Consumer, EmbeddedBus};
use osprey_core::{
    DeadLetter, DetectionResult, ManualClock, SystemClock, TOPIC_CHUNKS, TOPIC_CHUNKS_DLQ, TOPIC_DETECTIONS,
};
use osprey_media::Sampling;
use osprey_testkit::{ffmpeg, kerberos_fragmented, kerberos_verify_file, mp4_like_bytes, repo_root};
use osprey_vault::AccountConfig;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

async fn upload(base: &str, name: &str, body: Vec<u8>) -> serde_json::Value {
    reqwest::Client::new()
        .post(format!("{base}/storage"))
        .header("Content-Type", "video/mp4")
        .header("X-Kerberos-Storage-AccessKey", "worker-test")
        .header("X-Kerberos-Storage-SecretAccessKey", "worker-test-secret")
        .header("X-Kerberos-Storage-Provider", "local")
        .header("X-Kerberos-Storage-FileName", name)
        .header("X-Kerberos-Storage-Device", "cam-7")
        .header("X-Kerberos-Storage-Directory", "test")
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn next(consumer: &mut dyn Consumer, within: Duration) -> Option<serde_json::Value> {
    let m = tokio::time::timeout(within, consumer.recv()).await.ok()?.unwrap();
    consumer.commit(&m).await.unwrap();
    Some(serde_json::from_slice(&m.payload).unwrap())
}

fn vault_config(dir: &std::path::Path) -> osprey_vault::Setup {
    let mut config = osprey_vault::Setup::new(dir);
    config.vault.listen = "127.0.0.1:0".parse().unwrap();
    config.vault.fsync = false;
    config.vault.accounts = vec![AccountConfig::new("test", "worker-test", "worker-test-secret")];
    config
}

fn worker_config() -> osprey_worker::Setup {
    let mut config = osprey_worker::Setup::default();
    config.detect.sampling = Sampling::Fps(1.0);
    config.worker.retry_backoff = Duration::from_millis(50);
    config
}

/// A vault and a worker on an embedded bus, with a consumer of the results.
struct Running {
    dir: tempfile::TempDir,
    bus: Arc<dyn Bus>,
    vault: osprey_vault::Vault,
    base: String,
    results: Box<dyn Consumer>,
    shutdown: CancellationToken,
    worker: tokio::task::JoinHandle<osprey_core::Result<()>>,
}

/// A vault on an embedded bus, and its address.
async fn start_vault(dir: &std::path::Path) -> (osprey_vault::Vault, Arc<dyn Bus>, String) {
    let config = vault_config(dir);
    let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::in_memory().await.unwrap());
    let providers = config.providers().unwrap();
    let vault = osprey_vault::Vault::start(config, bus.clone(), providers, Arc::new(SystemClock)).await.unwrap();
    let base = format!("http://{}", vault.addr);
    (vault, bus, base)
}

impl Running {
    async fn start() -> Running {
        let dir = tempfile::tempdir().unwrap();
        let (vault, bus, base) = start_vault(dir.path()).await;
        let results = bus.subscribe(TOPIC_DETECTIONS, "test").await.unwrap();
        let shutdown = CancellationToken::new();
        let worker =
            tokio::spawn(osprey_worker::run(worker_config(), bus.clone(), Arc::new(SystemClock), shutdown.clone()));
        Running { dir, bus, vault, base, results, shutdown, worker }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.worker).await.expect("worker stops").unwrap().unwrap();
        self.vault.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn chunks_become_results_and_broken_ones_dead_letters() {
    let mut running = Running::start().await;
    let (dir, bus, base) = (running.dir.path().to_path_buf(), running.bus.clone(), running.base.clone());
    let mut dead = bus.subscribe(TOPIC_CHUNKS_DLQ, "test").await.unwrap();

    let clip = dir.join("clip.mp4");
    let sample = repo_root().join("samples/vtest.mp4");
    ffmpeg(&["-ss", "20", "-t", "4", "-i", sample.to_str().unwrap(), "-c", "copy"], &clip);
    let good = upload(&base, "1700000000_6-967003_hall_0-0-768-576_3_1.mp4", std::fs::read(&clip).unwrap()).await;
    let broken = upload(&base, "1700000010_6-967003_hall_0-0-768-576_3_2.mp4", mp4_like_bytes(5000, 1)).await;

    let result: DetectionResult =
        serde_json::from_value(next(&mut *running.results, Duration::from_secs(60)).await.expect("a result")).unwrap();
    assert_eq!(result.event.chunk_id.as_str(), good["chunk_id"].as_str().unwrap());
    assert_eq!(result.operation, "detection");
    assert_eq!(result.event.payload.metadata.product_id, "cam-7");
    assert_eq!((result.data.width, result.data.height), (768, 576));
    assert!((4..=6).contains(&result.data.frames_analyzed), "{}", result.data.frames_analyzed);
    assert!(result.data.object_count["person"] >= 3, "{:?}", result.data.object_count);

    let letter: DeadLetter =
        serde_json::from_value(next(&mut *dead, Duration::from_secs(60)).await.expect("a dead letter")).unwrap();
    assert_eq!(letter.chunk_id.unwrap().as_str(), broken["chunk_id"].as_str().unwrap());
    assert!(letter.error.starts_with("mp4:"), "{}", letter.error);
    assert_eq!(letter.attempts, 1, "a corrupt chunk is not retried: it would fail the same way");
    assert_eq!(letter.original["payload"]["key"], "test/1700000010_6-967003_hall_0-0-768-576_3_2.mp4");

    // Garbage on the topic is dead-lettered too, and does not stop the worker.
    bus.publish(TOPIC_CHUNKS, "x", b"{not json").await.unwrap();
    let letter: DeadLetter = serde_json::from_value(next(&mut *dead, Duration::from_secs(30)).await.unwrap()).unwrap();
    assert!(letter.error.contains("not a chunk event") && letter.chunk_id.is_none(), "{letter:?}");
    assert_eq!(letter.original, serde_json::json!("{not json"));

    // A re-delivered event for a chunk just analysed yields no second result.
    let again = serde_json::to_vec(&result.event).unwrap();
    bus.publish(TOPIC_CHUNKS, "cam-7", &again).await.unwrap();
    assert!(next(&mut *running.results, Duration::from_secs(3)).await.is_none(), "duplicate analysed again");
    running.stop().await;
}

/// Recordings as a Kerberos agent writes them: its fragmented MP4 (`ftyp moov sidx free moof
/// mdat ...`, timescale 1000) and its Verify file (QuickTime, `mdat` before `moov`, the AAC track
/// first) are stored and analysed on their video track.
#[tokio::test(flavor = "multi_thread")]
async fn recordings_as_the_kerberos_agent_writes_them_are_analysed() {
    let mut running = Running::start().await;
    let (dir, base) = (running.dir.path().to_path_buf(), running.base.clone());
    let sample = repo_root().join("samples/vtest.mp4");
    let (fragmented, verify) = (dir.join("fragmented.mp4"), dir.join("verify.mp4"));
    kerberos_fragmented(&sample, "20", "4", &fragmented);
    kerberos_verify_file(&sample, &verify);
    let mut expected = std::collections::BTreeMap::new();
    for (name, file) in [
        ("1700000000_3-120_hall_0-0-0-0_-1_4000.mp4", &fragmented),
        ("1700000100_6-967003_hall_200-200-400-400_24_769.mp4", &verify),
    ] {
        let answer = upload(&base, name, std::fs::read(file).unwrap()).await;
        let chunk_id = answer["chunk_id"].as_str().unwrap_or_else(|| panic!("{name} refused: {answer}")).to_string();
        expected.insert(chunk_id, name);
    }
    for _ in 0..expected.len() {
        let result: DetectionResult =
            serde_json::from_value(next(&mut *running.results, Duration::from_secs(90)).await.expect("a result"))
                .unwrap();
        let name = expected.remove(result.event.chunk_id.as_str()).expect("a result for an uploaded chunk");
        assert_eq!((result.data.width, result.data.height), (768, 576), "{name}");
        assert!(result.data.frames_analyzed >= 3, "{name}: {}", result.data.frames_analyzed);
        assert!(
            result.data.object_count.get("person").copied().unwrap_or(0) >= 1,
            "{name}: {:?}",
            result.data.object_count
        );
        let fragmented = name.contains("_-1_");
        assert_eq!(result.event.payload.is_fragmented, fragmented, "{name}");
    }
    running.stop().await;
}

fn chunk_of(result: serde_json::Value) -> String {
    serde_json::from_value::<DetectionResult>(result).unwrap().event.chunk_id.to_string()
}

/// A group told to start at the latest chunk (a model added to a running system) skips what was
/// uploaded before it first joined, and analyses what comes after.
#[tokio::test(flavor = "multi_thread")]
async fn a_group_starting_at_the_latest_skips_the_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let (vault, bus, base) = start_vault(dir.path()).await;
    let clip = dir.path().join("clip.mp4");
    let sample = repo_root().join("samples/vtest.mp4");
    ffmpeg(&["-ss", "20", "-t", "2", "-i", sample.to_str().unwrap(), "-c", "copy"], &clip);
    let clip = std::fs::read(&clip).unwrap();
    let backlog = upload(&base, "1700000000_6-967003_hall_0-0-0-0_3_1.mp4", clip.clone()).await;
    let backlog = backlog["chunk_id"].as_str().unwrap_or_else(|| panic!("{backlog}")).to_string();

    let mut results = bus.subscribe(TOPIC_DETECTIONS, "test").await.unwrap();
    let mut config = worker_config();
    config.worker.start = osprey_bus::Start::Latest;
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(osprey_worker::run(config, bus.clone(), Arc::new(SystemClock), shutdown.clone()));
    // The worker joins when it is ready: upload until something is analysed.
    let mut seen = Vec::new();
    for i in 2..30 {
        upload(&base, &format!("{}_6-967003_hall_0-0-0-0_3_{i}.mp4", 1_700_000_000 + i * 10), clip.clone()).await;
        if let Some(r) = next(&mut *results, Duration::from_secs(2)).await {
            seen.push(chunk_of(r));
            break;
        }
    }
    assert!(!seen.is_empty(), "nothing uploaded after the worker started was analysed");
    while let Some(r) = next(&mut *results, Duration::from_secs(3)).await {
        seen.push(chunk_of(r));
    }
    assert!(!seen.contains(&backlog), "the chunk from before the group joined was analysed: {seen:?}");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), worker).await.unwrap().unwrap().unwrap();
    vault.stop().await.unwrap();
}

/// A chunk whose download fails in a way that may pass (the vault is down) is tried
/// `worker.max_attempts` times, waiting with backoff on the worker's clock between tries (a manual
/// clock here, so no time passes), then dead-lettered with the number of tries.
#[tokio::test(flavor = "multi_thread")]
async fn a_chunk_the_vault_cannot_serve_is_retried_on_the_clock_then_dead_lettered() {
    let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::in_memory().await.unwrap());
    let mut dead = bus.subscribe(TOPIC_CHUNKS_DLQ, "test").await.unwrap();
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let mut config = worker_config();
    config.worker.retry_backoff = Duration::from_secs(1);
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(osprey_worker::run(config, bus.clone(), clock.clone(), shutdown.clone()));
    // Nothing listens on the port of a listener just closed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let event = serde_json::json!({
        "date": 1700000000, "events": ["analysis"], "provider": "kstorage", "source": "local", "request": "persist",
        "chunk_id": "ab".repeat(16), "traceId": "t",
        "payload": {"key": "test/1700000000_6-967003_hall_0-0-768-576_3_1.mp4", "fileSize": 10, "is_fragmented": false,
            "bytes_ranges": "", "bytes_range_on_time": null,
            "signedUrl": format!("http://{closed}/api/v1/download/x?expires=1&signature=ab"),
            "metadata": {"event-timestamp": "1700000000", "event-instancename": "hall", "productid": "cam-7",
                "event-regioncoordinates": "", "event-numberofchanges": "", "uploadtime": "1700000001",
                "duration": "", "fps": "", "capture": "IPCamera"}}
    });
    bus.publish(TOPIC_CHUNKS, "cam-7", &serde_json::to_vec(&event).unwrap()).await.unwrap();

    let letter: DeadLetter =
        serde_json::from_value(next(&mut *dead, Duration::from_secs(30)).await.expect("a dead letter")).unwrap();
    assert_eq!(letter.attempts, 3, "worker.max_attempts tries: {letter:?}");
    assert!(letter.error.contains("cannot download chunk"), "{}", letter.error);
    let slept = clock.slept();
    assert_eq!(slept.len(), 2, "a wait between tries, none after the last: {slept:?}");
    let (first, second) = (slept[0].as_secs_f64(), slept[1].as_secs_f64());
    assert!((0.8..=1.2).contains(&first) && (1.6..=2.4).contains(&second), "1 s then 2 s, ±20%: {slept:?}");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), worker).await.expect("worker stops").unwrap().unwrap();
}

/// The real embedded bus, except that its re-analysis topics cannot be read: the inner seam a
/// lost broker connection would break.
struct UnreadableReanalysis(Arc<dyn Bus>);

struct Failing;

#[async_trait::async_trait]
impl Consumer for Failing {
    async fn recv(&mut self) -> osprey_core::Result<osprey_bus::Message> {
        Err(osprey_core::Error::unavailable("the broker went away"))
    }
    async fn commit(&mut self, _: &osprey_bus::Message) -> osprey_core::Result<()> {
        Ok(())
    }
    async fn lag(&mut self) -> osprey_core::Result<u64> {
        Ok(0)
    }
}

#[async_trait::async_trait]
impl Bus for UnreadableReanalysis {
    async fn create_topic(&self, topic: &str, partitions: i32) -> osprey_core::Result<()> {
        self.0.create_topic(topic, partitions).await
    }
    async fn publish(&self, topic: &str, key: &str, payload: &[u8]) -> osprey_core::Result<()> {
        self.0.publish(topic, key, payload).await
    }
    async fn subscribe_from(
        &self,
        topic: &str,
        group: &str,
        start: osprey_bus::Start,
    ) -> osprey_core::Result<Box<dyn Consumer>> {
        match topic.starts_with("osprey.reanalyse.") {
            true => Ok(Box::new(Failing)),
            false => self.0.subscribe_from(topic, group, start).await,
        }
    }
}

/// A worker that cannot read its re-analysis requests stops with the error, as it would for the
/// live topic, instead of running on with the requests unread until someone stops it.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_whose_reanalysis_topic_fails_stops_with_the_error() {
    let inner: Arc<dyn Bus> = Arc::new(EmbeddedBus::in_memory().await.unwrap());
    let bus: Arc<dyn Bus> = Arc::new(UnreadableReanalysis(inner));
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(osprey_worker::run(worker_config(), bus, Arc::new(SystemClock), shutdown.clone()));
    let ended = tokio::time::timeout(Duration::from_secs(30), worker).await;
    shutdown.cancel();
    let error = ended.expect("the worker stops by itself").unwrap().expect_err("with the error");
    assert!(error.to_string().contains("the broker went away"), "{error}");
}
