//! End-to-end latency on one machine: chunk closed (upload starts) -> detection result received,
//! through the vault, the outbox relay, the embedded bus and the worker; and the part of it that
//! is not decode + inference. `cargo bench -p osprey-worker --bench latency`.

use osprey_bus::{Bus, EmbeddedBus};
use osprey_core::{DetectionResult, SystemClock, TOPIC_DETECTIONS};
use osprey_detect::{analyse, batcher_from_config, Options};
use osprey_media::Sampling;
use osprey_testkit::repo_root;
use osprey_vault::AccountConfig;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const CHUNK_SECS: f64 = 5.0;
const CHUNKS: usize = 32;
/// A new chunk closes this often: a few cameras at once.
const PACE: Duration = Duration::from_millis(700);

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let sample = std::fs::read(repo_root().join("samples/vtest.mp4")).unwrap();
        let chunks = osprey_agent::cut(&sample, CHUNK_SECS).unwrap();
        println!("{CHUNKS} chunks of {CHUNK_SECS} s (768x576, 2 fps analysed), one closing every {} ms, 2 cores", PACE.as_millis());
        println!("{:<30} {:>9} {:>9} | {:>13} {:>13}", "setup", "p50 ms", "p99 ms", "other p50 ms", "other p99 ms");
        for (workers, sessions) in [(1, 2), (2, 1)] {
            let detect = osprey_detect::Config {
                workers: sessions,
                threads: 1,
                sampling: Sampling::Fps(2.0),
                ..Default::default()
            };
            let compute = compute_ms(&chunks, &detect);
            let latencies = run(&chunks, workers, detect).await;
            let mut total: Vec<f64> = latencies.iter().map(|(_, l)| *l).collect();
            let mut other: Vec<f64> = latencies.iter().map(|(i, l)| l - compute[i % chunks.len()]).collect();
            total.sort_by(f64::total_cmp);
            other.sort_by(f64::total_cmp);
            let p = |v: &[f64], q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
            println!(
                "{:<30} {:>9.0} {:>9.0} | {:>13.0} {:>13.0}",
                format!("{workers} worker(s) x {sessions} session(s)"),
                p(&total, 0.5),
                p(&total, 0.99),
                p(&other, 0.5),
                p(&other, 0.99)
            );
        }
        println!("'other' = latency minus the same chunk's decode + inference measured alone: upload, storage, outbox relay, bus, download, publish and queueing");
    });
}

/// Decode + inference time of each chunk alone, in ms.
fn compute_ms(chunks: &[osprey_agent::Chunk], detect: &osprey_detect::Config) -> Vec<f64> {
    let batcher = batcher_from_config(detect).unwrap();
    let options = Options { decode_threads: 1, ..Options::from_config(detect, "") };
    chunks
        .iter()
        .map(|c| {
            let t = Instant::now();
            analyse(&c.bytes, &options, &batcher, &|_, _| {}).unwrap();
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect()
}

/// (chunk index, latency ms) for every chunk.
async fn run(chunks: &[osprey_agent::Chunk], workers: usize, detect: osprey_detect::Config) -> Vec<(usize, f64)> {
    let dir = tempfile::tempdir().unwrap();
    let mut config = osprey_vault::Setup::new(dir.path());
    config.vault.listen = "127.0.0.1:0".parse().unwrap();
    config.vault.accounts = vec![AccountConfig::new("b", "b-access", "b-secret-1")];
    let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::in_memory().await.unwrap());
    let providers = config.providers().unwrap();
    let vault = osprey_vault::Vault::start(config, bus.clone(), providers, Arc::new(SystemClock)).await.unwrap();
    let shutdown = CancellationToken::new();
    let worker = osprey_worker::Setup { detect, ..Default::default() };
    let tasks: Vec<_> = (0..workers)
        .map(|_| tokio::spawn(osprey_worker::run(worker.clone(), bus.clone(), Arc::new(SystemClock), shutdown.clone())))
        .collect();
    let mut results = bus.subscribe(TOPIC_DETECTIONS, "bench").await.unwrap();
    let uploader = osprey_agent::Client::new(
        osprey_agent::VaultTarget {
            url: format!("http://{}", vault.addr),
            access_key: "b-access".into(),
            secret_key: "b-secret-1".into(),
            provider: "local".into(),
            directory: "b".into(),
        },
        osprey_agent::UPLOAD_RETRY.attempts(3),
    );
    let closed: Arc<std::sync::Mutex<HashMap<String, (usize, Instant)>>> = Arc::default();
    let agent = {
        let (closed, chunks) = (closed.clone(), chunks.to_vec());
        tokio::spawn(async move {
            for i in 0..CHUNKS {
                let chunk = &chunks[i % chunks.len()];
                let start = Instant::now();
                let name = format!("{}_6-967003_cam{}_0-0-0-0_0_{i}.mp4", 1_700_000_000 + i, i % 4);
                let answer = uploader
                    .upload(&osprey_agent::Upload::named(&format!("cam{}", i % 4), &name, chunk.bytes.clone()))
                    .await
                    .unwrap();
                closed.lock().unwrap().insert(answer.chunk_id.clone(), (i, start));
                tokio::time::sleep(PACE.saturating_sub(start.elapsed())).await;
            }
        })
    };
    let mut latencies = Vec::new();
    while latencies.len() < CHUNKS {
        let m = results.recv().await.unwrap();
        let received = Instant::now();
        results.commit(&m).await.unwrap();
        let r: DetectionResult = serde_json::from_slice(&m.payload).unwrap();
        // The upload's answer may come after the result: wait for it.
        let (i, start) = loop {
            if let Some(v) = closed.lock().unwrap().get(r.event.chunk_id.as_str()).copied() {
                break v;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        latencies.push((i % chunks.len(), (received - start).as_secs_f64() * 1000.0));
    }
    agent.await.unwrap();
    shutdown.cancel();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    vault.stop().await.unwrap();
    latencies
}
