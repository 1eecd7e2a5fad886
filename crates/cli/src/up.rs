//! `osprey up`: the whole pipeline in one process on the embedded defaults (local disk, SQLite,
//! embedded bus): a vault, a worker, the notifier (its rules from `[[notify.rules]]`), and an
//! agent that cuts a video file into chunks and uploads them. Each chunk's detections are printed
//! as they arrive.

use anyhow::Context;
use osprey_agent::{Uploader, VaultTarget};

use osprey_core::config::{AccountConfig, Config};
use osprey_core::{DeadLetter, DetectionResult, SystemClock, TOPIC_CHUNKS_DLQ, TOPIC_DETECTIONS};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::mpsc;

#[derive(clap::Args)]
pub struct Args {
    /// Video file to record from (H.264 MP4); default: the bundled samples/vtest.mp4.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Process the input once and exit when every chunk has a result.
    #[arg(long)]
    once: bool,
    /// Longest chunk, in seconds (chunks are cut at keyframes).
    #[arg(long, default_value_t = 10.0)]
    chunk_secs: f64,
    /// Camera name the chunks are recorded under.
    #[arg(long, default_value = "sample")]
    camera: String,
}

/// What the agent tells the printer.
enum Uploaded {
    Chunk { chunk_id: String, index: usize, start: f64, end: f64 },
    /// Stored and analysed before: the vault announces nothing new for it.
    Duplicate(usize),
    /// An upload the vault refused for good.
    Failed,
    Done(usize),
}

pub fn run(args: Args, mut config: Config) -> anyhow::Result<()> {
    let file = match &args.file {
        Some(f) => f.clone(),
        None => osprey_core::find_bundled("samples/vtest.mp4")
            .context("the bundled sample samples/vtest.mp4 was not found; pass --file")?,
    };
    if !(args.chunk_secs > 0.0) {
        anyhow::bail!("--chunk-secs must be above 0");
    }
    let account = agent_account(&mut config);
    crate::serve(|shutdown| async move {
        let bus = osprey_bus::open(&config).await?;
        let providers = osprey_store::Providers::from_config(&config)?;
        let provider = providers.iter().next().map(|p| p.name().to_string()).context("no storage provider")?;
        let vault = osprey_vault::Vault::start(config.clone(), bus.clone(), providers, Arc::new(SystemClock)).await?;
        println!("osprey up: vault on http://{}, data in {}", vault.addr, config.data_dir.display());

        let mut results = bus.subscribe(TOPIC_DETECTIONS, "osprey-up").await?;
        let mut dead = bus.subscribe(TOPIC_CHUNKS_DLQ, "osprey-up").await?;
        let worker = tokio::spawn(osprey_worker::run(config.clone(), bus.clone(), shutdown.clone()));
        let notifier = {
            let (config, bus, shutdown) = (config.clone(), bus.clone(), shutdown.clone());
            tokio::spawn(async move { osprey_notify::run(&config, bus, Arc::new(SystemClock), shutdown).await })
        };

        let target = VaultTarget {
            url: format!("http://{}", vault.addr),
            access_key: account.access_key.clone(),
            secret_key: account.secret_key.clone(),
            provider,
            directory: account.name.clone(),
        };
        let (tx, mut uploads) = mpsc::unbounded_channel();
        let agent = tokio::spawn(record(file, args.chunk_secs, args.camera.clone(), Uploader::new(target, 5), tx));

        let mut pending: BTreeMap<String, (usize, f64, f64)> = BTreeMap::new();
        let (mut total, mut finished) = (None::<usize>, 0usize);
        loop {
            if args.once && total == Some(finished) {
                break;
            }
            tokio::select! {
                Some(u) = uploads.recv() => match u {
                    Uploaded::Chunk { chunk_id, index, start, end } => { pending.insert(chunk_id, (index, start, end)); }
                    Uploaded::Duplicate(index) => { println!("chunk {index:>3}  already stored and analysed"); finished += 1; }
                    Uploaded::Failed => finished += 1,
                    Uploaded::Done(n) => total = Some(n),
                },
                m = results.recv() => {
                    let m = m?;
                    results.commit(&m).await?;
                    if let Ok(r) = serde_json::from_slice::<DetectionResult>(&m.payload) {
                        if let Some(chunk) = pending.remove(r.event.chunk_id.as_str()) {
                            print_result(chunk, &r);
                            finished += 1;
                        }
                    }
                }
                m = dead.recv() => {
                    let m = m?;
                    dead.commit(&m).await?;
                    if let Ok(d) = serde_json::from_slice::<DeadLetter>(&m.payload) {
                        if let Some((index, _, _)) = d.chunk_id.as_ref().and_then(|id| pending.remove(id.as_str())) {
                            println!("chunk {index:>3}  failed: {}", d.error);
                            finished += 1;
                        }
                    }
                }
                _ = shutdown.cancelled() => break,
            }
        }
        shutdown.cancel();
        agent.abort();
        worker.await.context("worker task")??;
        notifier.await.context("notifier task")??;
        vault.stop().await?;
        if args.once {
            println!("osprey up: {finished} chunks analysed");
        }
        Ok(())
    })
}

/// The agent's side: cut the file into chunks and upload each as a Kerberos Agent would.
async fn record(file: PathBuf, chunk_secs: f64, camera: String, uploader: Uploader, tx: mpsc::UnboundedSender<Uploaded>) -> anyhow::Result<()> {
    let bytes = tokio::fs::read(&file).await.with_context(|| format!("cannot read {}", file.display()))?;
    let chunks = tokio::task::spawn_blocking(move || osprey_agent::cut(&bytes, chunk_secs)).await??;
    let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let total = chunks.len();
    for chunk in chunks {
        // Kerberos file name: timestamp_size-microseconds_instance_region_changes_token.mp4
        let name = format!("{}_6-967003_{camera}_0-0-0-0_0_{}.mp4", started + chunk.start_secs as u64, chunk.index);
        match uploader.upload(&camera, &name, &chunk.bytes).await {
            Ok(answer) if answer["duplicate"] == true => {
                tx.send(Uploaded::Duplicate(chunk.index)).ok();
            }
            Ok(answer) => {
                let chunk_id = answer["chunk_id"].as_str().unwrap_or_default().to_string();
                let (start, end) = (chunk.start_secs, chunk.start_secs + chunk.duration_secs);
                tx.send(Uploaded::Chunk { chunk_id, index: chunk.index, start, end }).ok();
            }
            Err(e) => {
                eprintln!("chunk {}: upload failed: {e}", chunk.index);
                tx.send(Uploaded::Failed).ok();
            }
        }
    }
    tx.send(Uploaded::Done(total)).ok();
    Ok(())
}

fn print_result((index, start, end): (usize, f64, f64), r: &DetectionResult) {
    let objects: Vec<String> = r.data.object_count.iter().map(|(label, n)| format!("{label} x{n}")).collect();
    let objects = if objects.is_empty() { "nothing detected".to_string() } else { objects.join(", ") };
    println!(
        "chunk {index:>3}  {}-{}  {:>3} frames  {objects}",
        clock(start),
        clock(end),
        r.data.frames_analyzed
    );
}

fn clock(secs: f64) -> String {
    let s = secs.round() as u64;
    format!("{:02}:{:02}", s / 60, s % 60)
}

/// The account the built-in agent uploads with: the first configured one, or a fresh one.
fn agent_account(config: &mut Config) -> AccountConfig {
    if let Some(account) = config.vault.accounts.first() {
        return account.clone();
    }
    let secret: [u8; 16] = rand::random();
    let account = AccountConfig {
        name: "osprey-up".into(),
        access_key: "osprey-up".into(),
        secret_key: hex::encode(secret),
        providers: Vec::new(),
    };
    config.vault.accounts.push(account.clone());
    account
}
