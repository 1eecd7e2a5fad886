//! Vault ingest throughput beside a raw copy of the same bytes to the same disk, and into an
//! S3-compatible store (s3s-fs on 127.0.0.1, writing to the same disk) when it is installed.
//!
//! `cargo bench -p osprey-vault --bench ingest`. Both sides flush to disk (fsync) before a chunk
//! counts, as the vault does by default. The vault side is the whole path: HTTP on 127.0.0.1,
//! authentication, streaming to staging with SHA-256, commit, and the metadata + outbox
//! transaction in SQLite, with the relay publishing to the embedded bus at the same time.

use bytes::Bytes;
use osprey_core::SystemClock;
use osprey_vault::{AccountConfig, Setup};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ACCESS: &str = "bench-access";
const SECRET: &str = "bench-secret-key";

struct Case {
    label: &'static str,
    size: usize,
    uploaders: usize,
    count: usize,
}

struct Result {
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Result {
    fn per_sec(&self, count: usize) -> f64 {
        count as f64 / self.elapsed.as_secs_f64()
    }
    fn percentile(&self, p: f64) -> f64 {
        let mut l = self.latencies.clone();
        l.sort();
        l[((l.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1000.0
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(run());
}

async fn run() {
    let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let mut config = Setup::new(dir.path().join("vault"));
    config.vault.listen = "127.0.0.1:0".parse().unwrap();
    config.vault.max_upload_bytes = 64 << 20;
    config.vault.accounts = vec![AccountConfig {
        name: "bench".into(),
        access_key: ACCESS.into(),
        secret_key: SECRET.into(),
        providers: vec![],
        main_provider: None,
    }];
    let s3 = osprey_testkit::S3Server::start();
    if let Some(server) = &s3 {
        config.providers.insert("s3".into(), server.provider_config());
    }
    let bus = osprey_bus::open(&Default::default(), &config.data_dir).await.unwrap();
    let providers = config.providers().unwrap();
    let vault = osprey_vault::Vault::start(config, bus, providers, Arc::new(SystemClock)).await.unwrap();
    let base = format!("http://{}", vault.addr);
    let http = reqwest::Client::new();
    let raw_dir = dir.path().join("raw");
    std::fs::create_dir_all(&raw_dir).unwrap();

    let cases = [
        Case { label: "5 MB", size: 5 << 20, uploaders: 1, count: 40 },
        Case { label: "5 MB", size: 5 << 20, uploaders: 8, count: 80 },
        Case { label: "50 MB", size: 50 << 20, uploaders: 1, count: 6 },
        Case { label: "100 KB", size: 100 << 10, uploaders: 1, count: 400 },
        Case { label: "100 KB", size: 100 << 10, uploaders: 8, count: 800 },
    ];
    println!("vault ingest vs raw copy (fsync on both), {} cores, data in {}", num_cpus(), dir.path().display());
    println!(
        "{:<7} {:>9} {:>7} | {:>10} {:>9} | {:>10} {:>9} {:>8} {:>8} | {:>7} | {:>8} {:>9} {:>8}",
        "chunk",
        "uploaders",
        "chunks",
        "raw MB/s",
        "raw f/s",
        "vault MB/s",
        "chunks/s",
        "p50 ms",
        "p99 ms",
        "vs raw",
        "S3 MB/s",
        "chunks/s",
        "p99 ms"
    );
    let mut one_uploader = Vec::new();
    for (n, case) in cases.iter().enumerate() {
        let body = Bytes::from(osprey_testkit::mp4_like_bytes(case.size - 40, 0));
        let raw = raw_copy(&raw_dir, &body, case, n).await;
        let ingest = upload(&http, &base, "local", &body, case, n).await;
        let mb = |r: &Result| r.per_sec(case.count) * case.size as f64 / 1e6;
        if case.uploaders == 1 && case.size >= 5 << 20 {
            one_uploader.push((case.label, case.size, 1.0 / ingest.per_sec(case.count)));
        }
        let to_s3 = match &s3 {
            Some(_) => {
                let r = upload(&http, &base, "s3", &body, case, n).await;
                format!(" | {:>8.1} {:>9.1} {:>8.1}", mb(&r), r.per_sec(case.count), r.percentile(0.99))
            }
            None => " | (s3s-fs not installed)".to_string(),
        };
        println!(
            "{:<7} {:>9} {:>7} | {:>10.1} {:>9.1} | {:>10.1} {:>9.1} {:>8.1} {:>8.1} | {:>6.0}%{to_s3}",
            case.label,
            case.uploaders,
            case.count,
            mb(&raw),
            raw.per_sec(case.count),
            mb(&ingest),
            ingest.per_sec(case.count),
            ingest.percentile(0.5),
            ingest.percentile(0.99),
            100.0 * ingest.per_sec(case.count) / raw.per_sec(case.count),
        );
    }
    let drained = Instant::now();
    loop {
        let health: serde_json::Value = http.get(format!("{base}/healthz")).send().await.unwrap().json().await.unwrap();
        if health["outbox_pending"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("outbox drained {:.2} s after the last upload", drained.elapsed().as_secs_f64());
    vault.stop().await.unwrap();
    mp4_check_cost(&one_uploader);
}

/// What the structural MP4 check (run on every upload while it streams) costs, beside the
/// SHA-256 the vault computes on the same pieces and beside a whole upload of that size.
fn mp4_check_cost(ingest: &[(&str, usize, f64)]) {
    println!();
    println!("{:<7} {:>14} {:>14} {:>18}", "chunk", "check µs", "sha256 µs", "check / ingest");
    for (label, size, ingest_secs) in ingest {
        let body = osprey_testkit::mp4_like_bytes(size - 40, 0);
        let rounds = 20;
        let time = |f: &dyn Fn()| {
            let start = Instant::now();
            for _ in 0..rounds {
                f();
            }
            start.elapsed().as_secs_f64() / rounds as f64
        };
        // Pieces of 64 KiB, as the body arrives from hyper.
        let check = time(&|| {
            let mut c = osprey_core::mp4::Mp4Check::new();
            for piece in body.chunks(64 << 10) {
                c.feed(piece).unwrap();
            }
            c.finish().unwrap();
        });
        let sha = time(&|| {
            use sha2::Digest;
            let mut h = sha2::Sha256::new();
            for piece in body.chunks(64 << 10) {
                h.update(piece);
            }
            std::hint::black_box(h.finalize());
        });
        println!("{:<7} {:>14.1} {:>14.1} {:>17.4}%", label, check * 1e6, sha * 1e6, 100.0 * check / ingest_secs);
    }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Runs `count` jobs on `workers` concurrent tasks; returns wall time and per-job latency.
async fn run_jobs<F, Fut>(workers: usize, count: usize, job: F) -> Result
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let job = Arc::new(job);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (job, next) = (job.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return latencies;
                    }
                    let t = Instant::now();
                    job(i).await;
                    latencies.push(t.elapsed());
                }
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    Result { elapsed: start.elapsed(), latencies }
}

async fn raw_copy(dir: &Path, body: &Bytes, case: &Case, n: usize) -> Result {
    let (dir, body) = (dir.to_path_buf(), body.clone());
    run_jobs(case.uploaders, case.count, move |i| {
        let path: PathBuf = dir.join(format!("{n}-{i}.mp4"));
        let body = body.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                use std::io::Write;
                let mut f = std::fs::File::create(&path).unwrap();
                f.write_all(&body).unwrap();
                f.sync_all().unwrap();
            })
            .await
            .unwrap();
        }
    })
    .await
}

async fn upload(http: &reqwest::Client, base: &str, provider: &str, body: &Bytes, case: &Case, n: usize) -> Result {
    let (http, url, body, provider) = (http.clone(), format!("{base}/storage"), body.clone(), provider.to_string());
    run_jobs(case.uploaders, case.count, move |i| {
        let request = http
            .post(&url)
            .header("Content-Type", "video/mp4")
            .header("X-Kerberos-Storage-AccessKey", ACCESS)
            .header("X-Kerberos-Storage-SecretAccessKey", SECRET)
            .header("X-Kerberos-Storage-Provider", &provider)
            .header("X-Kerberos-Storage-FileName", format!("{}_6-967003_bench_0-0-0-0_0_{i}.mp4", 1_700_000_000 + i))
            .header("X-Kerberos-Storage-Device", format!("camera-{}", i % 16))
            .header("X-Kerberos-Storage-Directory", format!("{provider}{n}"))
            .body(body.clone());
        async move {
            let resp = request.send().await.unwrap();
            assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap_or_default());
        }
    })
    .await
}
