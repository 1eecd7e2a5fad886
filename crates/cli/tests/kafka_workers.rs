//! Two `osprey worker` processes in one consumer group on a real Kafka-protocol broker: they
//! share the chunks, and when one is killed mid-chunk the other finishes its work. 0 lost.

use osprey_bus::{Bus, KafkaBus};
use osprey_bus::{BusKind, KafkaConfig};
use osprey_cli::Config;
use osprey_core::{DetectionResult, SystemClock, TOPIC_DETECTIONS};
use osprey_testkit::{repo_root, Broker};
use osprey_vault::AccountConfig;
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn worker(broker: &Broker, log: &std::path::Path) -> Child {
    let mut c = Command::new(env!("CARGO_BIN_EXE_osprey"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("OSPREY_")) {
        c.env_remove(k);
    }
    c.arg("worker")
        .env("OSPREY_BUS__KIND", "kafka")
        .env("OSPREY_BUS__KAFKA__BROKERS", broker.address())
        .env("OSPREY_BUS__KAFKA__SESSION_TIMEOUT_MS", "6000")
        .env("OSPREY_DETECT__SAMPLING", "2")
        .env("OSPREY_DETECT__WORKERS", "1")
        .env("OSPREY_LOG", "osprey_worker=info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Chunk ids a worker's log says it analysed.
fn analysed(log: &std::path::Path) -> BTreeSet<String> {
    logged(log, "chunk analysed")
}

/// Chunk ids of log lines with `what`.
fn logged(log: &std::path::Path, what: &str) -> BTreeSet<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(what))
        .filter_map(|l| l.split("chunk_id=").nth(1).map(|r| r.split_whitespace().next().unwrap().to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_workers_share_chunks_and_survive_a_kill() {
    let Some(broker) = Broker::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
    config.vault.listen = "127.0.0.1:0".parse().unwrap();
    config.vault.fsync = false;
    config.vault.accounts = vec![AccountConfig::new("k", "k-access", "k-secret-123")];
    config.bus.kind = BusKind::Kafka;
    config.bus.kafka = KafkaConfig {
        brokers: broker.address(),
        session_timeout: Duration::from_secs(6),
        message_timeout: Duration::from_secs(5),
        ..KafkaConfig::default()
    };
    let bus = osprey_bus::open(&config.bus, &config.data_dir).await.unwrap();
    let setup = config.vault_setup();
    let providers = setup.providers().unwrap();
    let vault = osprey_vault::Vault::start(setup, bus.clone(), providers, Arc::new(SystemClock)).await.unwrap();

    let logs = [dir.path().join("worker-a.log"), dir.path().join("worker-b.log")];
    let mut a = worker(&broker, &logs[0]);
    let mut b = worker(&broker, &logs[1]);
    // Let both join the group before work arrives, so the partitions are split between them.
    tokio::time::sleep(Duration::from_secs(8)).await;

    let sample = std::fs::read(repo_root().join("samples/vtest.mp4")).unwrap();
    let chunks = osprey_agent::cut(&sample, 5.0).unwrap();
    let uploader = osprey_agent::Client::new(
        osprey_agent::VaultTarget {
            url: format!("http://{}", vault.addr),
            access_key: "k-access".into(),
            secret_key: "k-secret-123".into(),
            provider: "local".into(),
            directory: "k".into(),
        },
        osprey_agent::UPLOAD_RETRY.attempts(3),
    );
    let mut uploaded = BTreeSet::new();
    for chunk in &chunks {
        // Several cameras, so the chunks spread over the partitions.
        let camera = format!("cam{}", chunk.index % 4);
        let name = format!("{}_6-967003_{camera}_0-0-0-0_0_{}.mp4", 1_700_000_000 + chunk.index, chunk.index);
        let answer = uploader.upload(&osprey_agent::Upload::named(&camera, &name, chunk.bytes.clone())).await.unwrap();
        uploaded.insert(answer.chunk_id.clone());
    }

    let consumer_bus = KafkaBus::new(&config.bus.kafka).unwrap();
    let mut results = consumer_bus.subscribe(TOPIC_DETECTIONS, "kafka-workers-test").await.unwrap();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut interrupted: Option<String> = None;
    let deadline = Instant::now() + Duration::from_secs(240);
    while seen.len() < uploaded.len() {
        assert!(Instant::now() < deadline, "only {} of {} results", seen.len(), uploaded.len());
        // Once A has finished a chunk, kill it while it is in the middle of its next one.
        if interrupted.is_none() && !analysed(&logs[0]).is_empty() {
            let in_progress: Vec<String> =
                logged(&logs[0], "chunk started").difference(&analysed(&logs[0])).cloned().collect();
            if let [chunk] = &in_progress[..] {
                a.kill().unwrap();
                a.wait().unwrap();
                interrupted = Some(chunk.clone());
            }
        }
        let Ok(m) = tokio::time::timeout(Duration::from_millis(20), results.recv()).await else { continue };
        let m = m.unwrap();
        results.commit(&m).await.unwrap();
        let r: DetectionResult = serde_json::from_slice(&m.payload).unwrap();
        assert!(uploaded.contains(r.event.chunk_id.as_str()));
        *seen.entry(r.event.chunk_id.to_string()).or_default() += 1;
    }
    let interrupted = interrupted.expect("worker A was killed mid-chunk");
    let (by_a, by_b) = (analysed(&logs[0]), analysed(&logs[1]));
    for worker in [&mut a, &mut b] {
        worker.kill().ok();
        worker.wait().ok();
    }
    assert_eq!(seen.len(), uploaded.len(), "0 lost");
    assert!(!analysed(&logs[0]).contains(&interrupted), "A did not finish the chunk it was killed in");
    assert!(by_b.contains(&interrupted), "B took over the chunk A was killed in");
    assert!(!by_a.is_empty() && !by_b.is_empty(), "both workers were used: A {} B {}", by_a.len(), by_b.len());
    let repeated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    eprintln!(
        "{} chunks: A analysed {}, B {}; killed A during {interrupted}; repeated results: {repeated:?}",
        uploaded.len(),
        by_a.len(),
        by_b.len()
    );
    // Apart from a chunk whose result A published just before dying, each chunk was analysed once.
    assert!(by_a.intersection(&by_b).count() <= 1, "A {by_a:?} B {by_b:?}");
    vault.stop().await.unwrap();
}
