//! `osprey up`: the whole pipeline in one process on the embedded defaults (local disk, SQLite,
//! embedded bus): a vault, a worker, the notifier (its rules from `[[notify.rules]]`), and an
//! agent that records a camera or a video file into chunks and uploads them. Each chunk's
//! detections are printed as they arrive. Without `--once` it then keeps serving, and says where
//! the web app is and which keys sign in to it: once every chunk of a file has a result, or at
//! the start for a camera, whose recording never ends.

use anyhow::Context;
use osprey_agent::{AgentEvent, SourceSpec, VaultTarget};

use osprey_cli::Config;
use osprey_core::{DeadLetter, DetectionResult, SystemClock, TOPIC_CHUNKS_DLQ, TOPIC_DETECTIONS};
use osprey_vault::AccountConfig;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::mpsc;

#[derive(clap::Args)]
pub struct Args {
    /// What to record: rtsp://[user:password@]host[:port]/path (H.264) or an H.264 MP4 file;
    /// default: the bundled samples/vtest.mp4.
    #[arg(long, alias = "file")]
    source: Option<String>,
    /// Record the source once and exit when every chunk has a result (a camera: until its
    /// stream ends).
    #[arg(long)]
    once: bool,
    /// Longest chunk, in seconds (chunks are cut at keyframes).
    #[arg(long, default_value_t = 10.0)]
    chunk_secs: f64,
    /// Camera name the chunks are recorded under.
    #[arg(long, default_value = "sample")]
    camera: String,
}

/// Where a recorded chunk lies in the source, for printing.
#[derive(Clone, Copy)]
struct Span {
    index: usize,
    start: f64,
    end: f64,
}

pub fn run(args: Args, mut config: Config) -> anyhow::Result<()> {
    let source = match &args.source {
        Some(s) => s.clone(),
        None => osprey_core::find_bundled("samples/vtest.mp4")
            .context("the bundled sample samples/vtest.mp4 was not found; pass --source")?
            .display()
            .to_string(),
    };
    if args.chunk_secs.is_nan() || args.chunk_secs <= 0.0 {
        anyhow::bail!("--chunk-secs must be above 0");
    }
    let (account, generated) = agent_account(&mut config)?;
    crate::serve(|shutdown| async move {
        let bus = osprey_bus::open(&config.bus, &config.data_dir).await?;
        let setup = config.vault_setup();
        let providers = setup.providers()?;
        let provider = providers.iter().next().map(|p| p.name().to_string()).context("no storage provider")?;
        let vault = osprey_vault::Vault::start(setup, bus.clone(), providers, Arc::new(SystemClock)).await?;
        println!("osprey up: vault on http://{}, data in {}", vault.addr, config.data_dir.display());

        let mut results = bus.subscribe(TOPIC_DETECTIONS, "osprey-up").await?;
        let mut dead = bus.subscribe(TOPIC_CHUNKS_DLQ, "osprey-up").await?;
        // One worker loop per model group; a chunk is done when every group that analyses its
        // camera has answered.
        let setups = config.worker_setups();
        let groups = setups.iter().filter(|s| s.devices.is_empty() || s.devices.contains(&args.camera)).count();
        let several = setups.len() > 1;
        let workers: Vec<_> = setups
            .into_iter()
            .map(|setup| tokio::spawn(osprey_worker::run(setup, bus.clone(), Arc::new(SystemClock), shutdown.clone())))
            .collect();
        let notifier = {
            let (config, bus, shutdown) = (config.notify.clone(), bus.clone(), shutdown.clone());
            tokio::spawn(async move { osprey_notify::run(&config, bus, Arc::new(SystemClock), shutdown).await })
        };

        let target = VaultTarget {
            url: format!("http://{}", vault.addr),
            access_key: account.access_key.clone(),
            secret_key: account.secret_key.expose().to_string(),
            provider,
            directory: account.name.clone(),
        };
        let (tx, mut events) = mpsc::unbounded_channel();
        let mut options =
            osprey_agent::AgentOptions::from_config(&config.agent, SourceSpec::parse(&source)?, &config.data_dir);
        options.vaults = vec![target];
        let is_file = matches!(options.source, SourceSpec::File(_));
        options.camera = args.camera.clone();
        options.chunk_secs = args.chunk_secs;
        // A file is read as fast as it can be analysed; a camera comes at its own pace.
        options.realtime = false;
        options.loop_source &= !args.once;
        options.events = Some(tx);
        println!("osprey up: recording {} ({})", options.source.display(), if is_file { "file" } else { "camera" });
        let app = WebApp { url: format!("http://{}/", vault.addr), account: account.clone(), generated };
        if !is_file && !args.once {
            app.announce();
        }
        let mut agent = tokio::spawn(osprey_agent::run(options, shutdown.clone()));

        let mut analysed: Vec<String> = Vec::new();
        let mut recorded: BTreeMap<String, Span> = BTreeMap::new();
        // Chunks waiting for results, and how many model groups are still to answer.
        let mut pending: BTreeMap<String, (Span, usize)> = BTreeMap::new();
        let (mut total, mut finished) = (None::<usize>, 0usize);
        let mut agent_running = true;
        let mut announced = false;
        loop {
            if total == Some(finished) && !announced {
                if !analysed.is_empty() {
                    print_objects(&config, &analysed, &shutdown).await?;
                }
                println!("osprey up: {finished} chunks analysed");
                if args.once {
                    break;
                }
                app.announce();
                announced = true;
            }
            tokio::select! {
                Some(event) = events.recv() => on_agent_event(event, &mut recorded, &mut pending, &mut finished, groups),
                ended = &mut agent, if agent_running => {
                    agent_running = false;
                    ended.context("agent task")??;
                    while let Ok(event) = events.try_recv() {
                        on_agent_event(event, &mut recorded, &mut pending, &mut finished, groups);
                    }
                    total = Some(recorded.len());
                }
                m = results.recv() => {
                    let m = m?;
                    results.commit(&m).await?;
                    if let Ok(r) = serde_json::from_slice::<DetectionResult>(&m.payload) {
                        let id = r.event.chunk_id.as_str();
                        if let Some((span, left)) = pending.get_mut(id) {
                            print_result(*span, &r, several);
                            *left -= 1;
                            if *left == 0 {
                                pending.remove(id);
                                analysed.push(id.to_string());
                                finished += 1;
                            }
                        }
                    }
                }
                m = dead.recv() => {
                    let m = m?;
                    dead.commit(&m).await?;
                    if let Ok(d) = serde_json::from_slice::<DeadLetter>(&m.payload) {
                        if let Some((span, _)) = d.chunk_id.as_ref().and_then(|id| pending.remove(id.as_str())) {
                            println!("chunk {:>3}  failed: {}", span.index, d.error);
                            finished += 1;
                        }
                    }
                }
                _ = shutdown.cancelled() => break,
            }
        }
        shutdown.cancel();
        if agent_running {
            agent.await.context("agent task")??;
        }
        for worker in workers {
            worker.await.context("worker task")??;
        }
        notifier.await.context("notifier task")??;
        vault.stop().await?;
        Ok(())
    })
}

fn on_agent_event(
    event: AgentEvent,
    recorded: &mut BTreeMap<String, Span>,
    pending: &mut BTreeMap<String, (Span, usize)>,
    finished: &mut usize,
    groups: usize,
) {
    let index = recorded.len();
    match event {
        AgentEvent::Recorded { file_name, start_secs, duration_secs, .. } => {
            recorded.insert(file_name, Span { index, start: start_secs, end: start_secs + duration_secs });
        }
        AgentEvent::Uploaded { file_name, answer } => {
            // A chunk left in the spool by an earlier run is reported like any other.
            let span = *recorded.entry(file_name).or_insert(Span { index, start: 0.0, end: 0.0 });
            if answer.duplicate || groups == 0 {
                let why =
                    if groups == 0 { "no model group analyses this camera" } else { "already stored and analysed" };
                println!("chunk {:>3}  {why}", span.index);
                *finished += 1;
            } else {
                pending.insert(answer.chunk_id, (span, groups));
            }
        }
        AgentEvent::Rejected { file_name, error } => {
            eprintln!("{file_name}: the vault refused it: {error}");
            recorded.entry(file_name).or_insert(Span { index, start: 0.0, end: 0.0 });
            *finished += 1;
        }
    }
}

fn print_result(Span { index, start, end }: Span, r: &DetectionResult, with_model: bool) {
    let objects: Vec<String> = r.data.object_count.iter().map(|(label, n)| format!("{label} x{n}")).collect();
    let objects = if objects.is_empty() { "nothing detected".to_string() } else { objects.join(", ") };
    let model = if with_model { format!("  [{}]", r.data.model) } else { String::new() };
    println!(
        "chunk {index:>3}  {}-{}  {:>3} frames  {objects}{model}",
        clock(start),
        clock(end),
        r.data.frames_analyzed
    );
}

/// Once the index has taken this run's results: the distinct objects it followed, per label.
async fn print_objects(
    config: &Config,
    chunks: &[String],
    shutdown: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let db = osprey_vault::db::Db::open(&config.vault_setup().database_url()).await?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while osprey_vault::index::indexed(&db, chunks).await? < chunks.len() {
        if std::time::Instant::now() > deadline || shutdown.is_cancelled() {
            println!("osprey up: the index has not taken every result yet; see `osprey search`");
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let objects = osprey_vault::index::objects_in(&db, chunks).await?;
    let total: i64 = objects.values().sum();
    let per_label: Vec<String> = objects.iter().map(|(label, n)| format!("{label} x{n}")).collect();
    println!("osprey up: {total} distinct objects tracked across the chunks: {}", per_label.join(", "));
    Ok(())
}

fn clock(secs: f64) -> String {
    let s = secs.round() as u64;
    format!("{:02}:{:02}", s / 60, s % 60)
}

/// Where the web app is and how to sign in to it.
struct WebApp {
    url: String,
    account: AccountConfig,
    /// The account was made by `osprey up`, so its secret is shown: nobody else knows it.
    generated: bool,
}

impl WebApp {
    fn announce(&self) {
        let key = &self.account.access_key;
        let secret = if self.generated {
            format!("secret key {}", self.account.secret_key.expose())
        } else {
            format!("the secret key of account {:?} in your config", self.account.name)
        };
        println!(
            "osprey up: the web app is on {} (sign in with access key {key} and {secret}); Ctrl-C stops",
            self.url
        );
    }
}

/// The account the built-in agent uploads with: the first configured one, or else one made on
/// the first run and kept in the data directory (so a bookmark and a signed-in browser still work
/// after a restart). The flag says which.
fn agent_account(config: &mut Config) -> anyhow::Result<(AccountConfig, bool)> {
    if let Some(account) = config.vault.accounts.first() {
        return Ok((account.clone(), false));
    }
    let file = config.data_dir.join("osprey-up.secret");
    let secret = match std::fs::read_to_string(&file) {
        Ok(s) if is_secret(s.trim()) => s.trim().to_string(),
        Ok(_) => anyhow::bail!("{} does not hold a secret key; remove it to make a new one", file.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = hex::encode(rand::random::<[u8; 16]>());
            write_private(&file, &secret).with_context(|| format!("cannot write {}", file.display()))?;
            secret
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
    };
    let account = AccountConfig::new("osprey-up", "osprey-up", &secret);
    config.vault.accounts.push(account.clone());
    Ok((account, true))
}

fn is_secret(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Writes a file only its owner can read.
fn write_private(file: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    options.open(file)?.write_all(text.as_bytes())
}
