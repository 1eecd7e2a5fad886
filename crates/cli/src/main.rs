//! `osprey`: one binary, a subcommand per role.

mod detect;
mod model;
mod reanalyse;
mod search;
mod up;

use clap::{Parser, Subcommand};
use osprey_cli::Config;
use osprey_core::{Clock, SystemClock};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "osprey", version, about = "Video analytics pipeline: record, store, detect, alert")]
struct Cli {
    /// Config file (TOML). Every key can also be set with OSPREY_* environment variables,
    /// e.g. OSPREY_VAULT__LISTEN=0.0.0.0:8080.
    #[arg(long, short, global = true, env = "OSPREY_CONFIG_FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Everything in one process: vault, embedded bus, worker and an agent on a video file
    /// (the bundled sample by default), printing each chunk's detections as they arrive.
    Up(up::Args),
    /// Run the vault: Kerberos-compatible ingest, storage, metadata and chunk events.
    Vault {
        #[command(subcommand)]
        action: Option<VaultAction>,
    },
    /// Run a detector worker: chunk events in, detection results out (see `[worker]`, `[detect]`,
    /// `[[models]]`). Runs every model group, or the one named.
    Worker {
        /// The `[[models]]` group to run alone (a deployment per group).
        #[arg(long)]
        group: Option<String>,
    },
    /// Run an agent: record `[agent].source` into chunks, spool them, upload to `[[agent.vaults]]`.
    Agent {
        /// Source to record (overrides agent.source): rtsp://[user:password@]host[:port]/path or
        /// an H.264 MP4 file.
        #[arg(long)]
        source: Option<String>,
    },
    /// Run the notifier: rules over detection results that call webhooks (see `[[notify.rules]]`).
    Notify,
    /// Apply `[[vault.retention]]` once: delete expired recordings, objects and metadata together
    /// (the vault also does this every `vault.retention_interval_secs`).
    Retention {
        /// List what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Detect objects in an MP4 chunk and print them.
    Detect(detect::Args),
    /// Search the vault's events: objects followed across recordings (a table, or --json lines).
    Search(search::Args),
    /// Send stored recordings of a range to a model group again, follow the job, and compare the
    /// models' events per label.
    Reanalyse(reanalyse::Args),
    /// Check a model directory (ONNX file and model.toml) and run it on a video.
    Model {
        #[command(subcommand)]
        action: ModelAction,
    },
    /// Check or print the configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Subcommand)]
enum VaultAction {
    /// Check storage against metadata: objects without recordings, recordings without objects,
    /// dead vaults' claims, staging/multipart/tus leftovers, events without recordings. Exits 1
    /// when it finds a problem it did not repair, or any lost recording.
    Check {
        /// Remove leftovers and orphans, release dead claims, mark lost recordings.
        #[arg(long)]
        repair: bool,
    },
}

#[derive(Subcommand)]
enum ModelAction {
    /// Validate the manifest and the model against it (exit 2 when they do not hold together),
    /// then print its detections on a video and its speed.
    Check(model::CheckArgs),
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Load and validate the configuration; exit 2 with the offending key on error.
    Check,
    /// Print the effective configuration (defaults, file and environment merged), secrets hidden.
    Show,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("OSPREY_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Config { action: ConfigAction::Check } => return config_check(&config),
        Command::Config { action: ConfigAction::Show } => show(config),
        Command::Vault { action: None } => run_vault(config),
        Command::Vault { action: Some(VaultAction::Check { repair }) } => return vault_check(config, repair),
        Command::Detect(args) => detect::run(args, config),
        Command::Search(args) => search::run(args, config),
        Command::Reanalyse(args) => reanalyse::run(args, config),
        Command::Model { action: ModelAction::Check(args) } => match model::check(args, config) {
            Ok(()) => Ok(()),
            Err(model::Failure::Invalid(e)) => {
                eprintln!("error: {e:#}");
                return ExitCode::from(2);
            }
            Err(model::Failure::Run(e)) => Err(e),
        },
        Command::Worker { group } => run_worker(config, group),
        Command::Up(args) => up::run(args, config),
        Command::Notify => run_notify(config),
        Command::Agent { source } => run_agent(config, source),
        Command::Retention { dry_run } => run_retention(config, dry_run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Secrets print as `<hidden>` (`Secret`'s own `Serialize`); a database URL without its password.
fn show(mut config: Config) -> anyhow::Result<()> {
    config.vault.database_url = config.vault.database_url.as_deref().map(osprey_core::config::without_password);
    print!("{}", toml::to_string_pretty(&config)?);
    Ok(())
}

/// Runs a long-lived role on a runtime; `shutdown` is cancelled on Ctrl-C or SIGTERM.
pub(crate) fn serve<F, Fut>(role: F) -> anyhow::Result<()>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        role(shutdown).await
    })
}

fn run_vault(config: Config) -> anyhow::Result<()> {
    serve(|shutdown| async move {
        let bus = osprey_bus::open(&config.bus, &config.data_dir).await?;
        let setup = config.vault_setup();
        let providers = setup.providers()?;
        let vault = osprey_vault::Vault::start(setup, bus, providers, Arc::new(SystemClock)).await?;
        vault.run_until(shutdown).await?;
        tracing::info!("vault stopped");
        Ok(())
    })
}

/// Serves `/metrics` in the background when `metrics_listen` is set.
async fn serve_metrics(config: &Config, shutdown: &CancellationToken) -> anyhow::Result<()> {
    if let Some(addr) = config.metrics_listen {
        tokio::spawn(osprey_runtime::telemetry::serve(addr, shutdown.clone()).await?);
    }
    Ok(())
}

/// The config, and every model group's model as a worker would load it.
fn config_check(config: &Config) -> ExitCode {
    let mut models = Vec::new();
    for setup in config.worker_setups() {
        let group = if setup.group.is_empty() { String::new() } else { format!("group {}: ", setup.group) };
        match osprey_detect::check_model(&setup.detect) {
            Ok(m) => {
                models.push(format!("{group}{} {} ({}, {} labels)", m.name, m.version, m.family.name(), m.labels.len()))
            }
            Err(e) => {
                eprintln!("error: {group}{e}");
                return ExitCode::from(2);
            }
        }
    }
    println!("config is valid; model {}", models.join("; "));
    ExitCode::SUCCESS
}

fn run_worker(config: Config, group: Option<String>) -> anyhow::Result<()> {
    let mut setups = config.worker_setups();
    if let Some(name) = &group {
        setups.retain(|s| &s.group == name);
        if setups.is_empty() {
            let known: Vec<&str> = config.models.iter().map(|m| m.name.as_str()).collect();
            anyhow::bail!("--group {name:?}: no [[models]] group of that name (there are {known:?})");
        }
    }
    serve(|shutdown| async move {
        serve_metrics(&config, &shutdown).await?;
        let bus = osprey_bus::open(&config.bus, &config.data_dir).await?;
        let loops = setups
            .into_iter()
            .map(|setup| osprey_worker::run(setup, bus.clone(), Arc::new(SystemClock), shutdown.clone()));
        futures::future::try_join_all(loops).await?;
        Ok(())
    })
}

fn run_agent(config: Config, source: Option<String>) -> anyhow::Result<()> {
    let a = &config.agent;
    let source =
        source.or(a.source.clone()).ok_or_else(|| anyhow::anyhow!("no source: set agent.source or pass --source"))?;
    if a.vaults.is_empty() {
        anyhow::bail!("no vault: add an [[agent.vaults]] entry (url, access_key, secret_key)");
    }
    let source = osprey_agent::SourceSpec::parse(&source)?;
    let options = osprey_agent::AgentOptions::from_config(a, source, &config.data_dir);
    tracing::info!(source = %options.source.display(), mode = ?a.mode, chunk_secs = a.chunk_secs, "agent starting");
    serve(|shutdown| async move {
        serve_metrics(&config, &shutdown).await?;
        Ok(osprey_agent::run(options, shutdown).await?)
    })
}

fn vault_check(config: Config, repair: bool) -> ExitCode {
    let report = tokio::runtime::Runtime::new().map_err(anyhow::Error::from).and_then(|rt| {
        Ok(rt.block_on(osprey_vault::reconcile::check_from_config(
            &config.vault_setup(),
            Arc::new(SystemClock),
            repair,
        ))?)
    });
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    if !report.findings.is_empty() {
        println!("{:<20} {:<12} {:<12} what", "problem", "provider", "action");
    }
    for f in &report.findings {
        println!("{:<20} {:<12} {:<12} {}", f.kind.as_str(), f.provider, f.action, f.what);
    }
    if report.foreign > 0 {
        println!("{} objects outside every account's space were left alone", report.foreign);
    }
    let (found, loss, open) = (report.findings.len(), report.loss(), report.unrepaired());
    println!("vault check: {found} problems, {loss} recordings lost, {open} not repaired");
    if loss > 0 || open > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn run_retention(config: Config, dry_run: bool) -> anyhow::Result<()> {
    if config.vault.retention.is_empty() {
        anyhow::bail!("no retention rules: add [[vault.retention]] entries (max_age_days, max_bytes)");
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let report =
        runtime.block_on(osprey_vault::retention::run_from_config(&config.vault_setup(), &SystemClock, dry_run))?;
    let now = SystemClock.timestamp();
    if dry_run {
        println!("{:<34} {:<12} {:<10} {:>10} {:>8}  key", "chunk", "account", "provider", "bytes", "age (d)");
        for e in &report.expired {
            let age = now.since(e.recorded_at).as_secs_f64() / 86_400.0;
            println!(
                "{:<34} {:<12} {:<10} {:>10} {:>8.1}  {}",
                e.chunk_id, e.account, e.provider, e.size, age, e.object_key
            );
        }
        let bytes: i64 = report.expired.iter().map(|e| e.size).sum();
        println!("dry run: {} recordings ({bytes} bytes) would be deleted", report.expired.len());
    } else {
        println!(
            "deleted {} recordings ({} bytes); {} could not be deleted and stay marked for the next run",
            report.deleted, report.deleted_bytes, report.failed
        );
    }
    Ok(())
}

fn run_notify(config: Config) -> anyhow::Result<()> {
    serve(|shutdown| async move {
        serve_metrics(&config, &shutdown).await?;
        let bus = osprey_bus::open(&config.bus, &config.data_dir).await?;
        Ok(osprey_notify::run(&config.notify, bus, Arc::new(SystemClock), shutdown).await?)
    })
}

async fn stop_on_signal(shutdown: CancellationToken) {
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("cannot listen for SIGTERM");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down (a second Ctrl-C stops at once)");
    shutdown.cancel();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("second signal: stopping now, without waiting for work in progress");
    std::process::exit(130);
}
