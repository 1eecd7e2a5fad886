//! Hostile chunks that reached storage by other means (an old vault, a bucket written to
//! directly) fed to a real worker over Kafka (the tansu broker): each is dead-lettered with its
//! reason, none hangs or aborts the worker, and the chunk after them is analysed. A chunk that
//! takes longer than `worker.chunk_deadline_secs` is dead-lettered too, and frees its slot.

use osprey_bus::{Bus, Consumer, KafkaBus, KafkaConfig};
use osprey_core::{DeadLetter, DetectionResult, SystemClock, TOPIC_CHUNKS, TOPIC_CHUNKS_DLQ, TOPIC_DETECTIONS};
use osprey_media::Sampling;
use osprey_testkit::{ffmpeg, repo_root, Broker};
use std::collections::BTreeMap;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Python's own HTTP file server over `dir`: where the worker downloads the chunks from.
struct FileServer(Child, u16);

impl FileServer {
    fn start(dir: &std::path::Path) -> FileServer {
        let port = osprey_testkit::free_port();
        let mut child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string(), "--directory"])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 runs http.server");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return FileServer(child, port);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.kill().ok();
        child.wait().ok();
        panic!("http.server did not start");
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

fn event(n: usize, url: &str, size: usize) -> Vec<u8> {
    let event = serde_json::json!({
        "date": 1700000000 + n, "events": ["analysis"], "provider": "kstorage", "source": "local", "request": "persist",
        "chunk_id": format!("{n:032x}"), "traceId": "t",
        "payload": {"key": format!("test/{}_6-967003_hall_0-0-768-576_3_{n}.mp4", 1700000000 + n), "fileSize": size,
            "is_fragmented": false, "bytes_ranges": "", "bytes_range_on_time": null, "signedUrl": url,
            "metadata": {"event-timestamp": "1700000000", "event-instancename": "hall", "productid": "cam-7",
                "event-regioncoordinates": "", "event-numberofchanges": "", "uploadtime": "1700000001",
                "duration": "", "fps": "", "capture": "IPCamera"}}
    });
    serde_json::to_vec(&event).unwrap()
}

async fn next<T: serde::de::DeserializeOwned>(consumer: &mut dyn Consumer, within: Duration) -> Option<T> {
    let m = tokio::time::timeout(within, consumer.recv()).await.ok()?.unwrap();
    consumer.commit(&m).await.unwrap();
    Some(serde_json::from_slice(&m.payload).unwrap())
}

struct Kafka {
    _broker: Broker,
    bus: Arc<dyn Bus>,
}

async fn kafka() -> Option<Kafka> {
    let broker = Broker::start()?;
    let config = KafkaConfig { brokers: broker.address(), ..KafkaConfig::default() };
    let bus: Arc<dyn Bus> = Arc::new(KafkaBus::new(&config).unwrap());
    for topic in [TOPIC_CHUNKS, TOPIC_CHUNKS_DLQ, TOPIC_DETECTIONS] {
        bus.create_topic(topic, 1).await.unwrap();
    }
    Some(Kafka { _broker: broker, bus })
}

fn worker_config(sampling: Sampling) -> osprey_worker::Setup {
    let mut config = osprey_worker::Setup::default();
    config.detect.sampling = sampling;
    config.worker.retry_backoff = Duration::from_millis(50);
    config.worker.max_attempts = 2;
    config
}

/// A worker on Kafka, the chunks it is sent served from a directory, and consumers of its dead
/// letters and results.
struct Rig {
    kafka: Kafka,
    server: FileServer,
    dead: Box<dyn Consumer>,
    results: Box<dyn Consumer>,
    shutdown: CancellationToken,
    worker: tokio::task::JoinHandle<osprey_core::Result<()>>,
}

impl Rig {
    /// Serves `dir` and starts a worker with `config`; `None` without the test broker.
    async fn start(dir: &std::path::Path, config: osprey_worker::Setup) -> Option<Rig> {
        let kafka = kafka().await?;
        let server = FileServer::start(dir);
        // A consumer group per topic: members of one group on different topics share its
        // rebalances, and the test broker then left the results consumer without its partition.
        let dead = kafka.bus.subscribe(TOPIC_CHUNKS_DLQ, "test-dead-letters").await.unwrap();
        let results = kafka.bus.subscribe(TOPIC_DETECTIONS, "test-results").await.unwrap();
        let shutdown = CancellationToken::new();
        let worker =
            tokio::spawn(osprey_worker::run(config, kafka.bus.clone(), Arc::new(SystemClock), shutdown.clone()));
        Some(Rig { kafka, server, dead, results, shutdown, worker })
    }

    /// Announces the served file `name` as chunk `n`.
    async fn send(&self, n: usize, name: &str, size: usize) {
        let url = format!("http://127.0.0.1:{}/{name}", self.server.1);
        self.kafka.bus.publish(TOPIC_CHUNKS, "cam-7", &event(n, &url, size)).await.unwrap();
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.worker).await.expect("worker stops").unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_chunks_are_dead_lettered_and_the_next_chunk_is_analysed() {
    let dir = tempfile::tempdir().unwrap();
    let hostile = osprey_testkit::hostile_mp4s();
    for (name, bytes) in &hostile {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    let sample = repo_root().join("samples/vtest.mp4");
    ffmpeg(&["-ss", "20", "-t", "3", "-i", sample.to_str().unwrap(), "-c", "copy"], &dir.path().join("good.mp4"));
    let Some(mut rig) = Rig::start(dir.path(), worker_config(Sampling::Fps(1.0))).await else { return };
    for (n, (name, bytes)) in hostile.iter().enumerate() {
        rig.send(n, name, bytes.len()).await;
    }
    let good = hostile.len();
    rig.send(good, "good.mp4", 1).await;

    let mut letters = BTreeMap::new();
    while letters.len() < hostile.len() {
        let letter: DeadLetter =
            next(&mut *rig.dead, Duration::from_secs(90)).await.expect("a dead letter per hostile chunk");
        assert!(letter.error.starts_with("mp4:"), "{letter:?}");
        assert_eq!(letter.attempts, 1, "a malformed chunk is not retried: {letter:?}");
        letters.insert(letter.chunk_id.unwrap().as_str().to_string(), letter.error);
    }
    let result: DetectionResult =
        next(&mut *rig.results, Duration::from_secs(90)).await.expect("the good chunk's result");
    assert_eq!(result.event.chunk_id.as_str(), format!("{good:032x}"));
    assert!(result.data.frames_analyzed >= 2, "{:?}", result.data);
    assert!(!rig.worker.is_finished(), "the worker runs on");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chunk_past_its_deadline_is_dead_lettered_and_frees_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let sample = repo_root().join("samples/vtest.mp4");
    std::fs::copy(&sample, dir.path().join("long.mp4")).unwrap();
    ffmpeg(&["-ss", "20", "-t", "1", "-i", sample.to_str().unwrap(), "-c", "copy"], &dir.path().join("short.mp4"));
    // Every frame of the 80 s sample (about 800) takes far longer than 3 s; one second of it does not.
    let mut config = worker_config(Sampling::All);
    config.worker.chunk_deadline = Duration::from_secs(3);
    config.worker.concurrency = 1;
    let Some(mut rig) = Rig::start(dir.path(), config).await else { return };
    rig.send(1, "long.mp4", 1).await;
    rig.send(2, "short.mp4", 1).await;

    let letter: DeadLetter = next(&mut *rig.dead, Duration::from_secs(60)).await.expect("the long chunk's dead letter");
    assert_eq!(letter.chunk_id.unwrap().as_str(), format!("{:032x}", 1));
    assert!(letter.error.contains("passed its deadline of 3 s"), "{}", letter.error);
    assert_eq!(letter.attempts, 2, "retried within worker.max_attempts");
    let result: DetectionResult =
        next(&mut *rig.results, Duration::from_secs(60)).await.expect("the short chunk's result");
    assert_eq!(result.event.chunk_id.as_str(), format!("{:032x}", 2));
    rig.stop().await;
}
