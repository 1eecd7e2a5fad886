//! `osprey reanalyse --model GROUP`: the account's recordings of a range sent to one model
//! group again (`POST /api/v1/reanalyse`), its progress followed until every recording has a
//! result from that group's model, then the models' events per label over the range side by
//! side. The job lives in the vault: stopping this command leaves it running, a stopped vault
//! resumes it, and `--job ID` follows one again. `--list` shows the account's jobs and `--cancel
//! ID` stops one from queueing more.

use crate::search::{when_ms, VaultArgs};
use anyhow::{bail, Context};
use osprey_cli::Config;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(clap::Args)]
pub struct Args {
    /// The model group to run (a `[[models]]` name; `default` without groups).
    #[arg(long, required_unless_present_any = ["job", "list", "cancel"])]
    model: Option<String>,
    /// Only this camera (device id).
    #[arg(long)]
    device: Option<String>,
    /// From: a time ago (7d, 2h) or a date (2026-12-01T08:00:00Z).
    #[arg(long, default_value = "7d")]
    since: String,
    /// Until: a time ago or a date; default now.
    #[arg(long)]
    until: Option<String>,
    /// Recordings sent per second.
    #[arg(long, default_value_t = 2.0)]
    rate: f64,
    /// Follow a job already started instead of starting one.
    #[arg(long, conflicts_with_all = ["model", "list", "cancel"])]
    job: Option<i64>,
    /// List the account's jobs, newest first, and return.
    #[arg(long, conflicts_with_all = ["model", "cancel"])]
    list: bool,
    /// Cancel a running job: no more of its recordings are sent (those sent are still analysed).
    #[arg(long, value_name = "ID", conflicts_with = "model")]
    cancel: Option<i64>,
    /// Return once the job is started (or shown), without waiting for the results.
    #[arg(long)]
    no_wait: bool,
    /// Longest wait for the results, in seconds, after every recording is sent.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
    #[command(flatten)]
    vault: VaultArgs,
}

struct Vault {
    http: reqwest::Client,
    base: String,
    access: String,
    secret: String,
}

impl Vault {
    async fn call(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let resp = request
            .basic_auth(&self.access, Some(&self.secret))
            .send()
            .await
            .with_context(|| format!("cannot reach the vault at {}", self.base))?;
        let status = resp.status();
        let body: Value =
            resp.json().await.with_context(|| format!("the vault at {} did not answer JSON", self.base))?;
        if !status.is_success() {
            bail!("the vault answered {status}: {}", body["error"].as_str().unwrap_or("no reason given"));
        }
        Ok(body)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base.trim_end_matches('/'))
    }
}

pub fn run(args: Args, config: Config) -> anyhow::Result<()> {
    let (base, access, secret) = args.vault.resolve(&config)?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let vault = Vault { http, base, access, secret };
    let rt = tokio::runtime::Runtime::new()?;
    if args.list {
        return rt.block_on(list(&vault));
    }
    if let Some(id) = args.cancel {
        return rt.block_on(cancel(&vault, id));
    }
    rt.block_on(follow(&args, &vault))
}

async fn list(vault: &Vault) -> anyhow::Result<()> {
    let answer = vault.call(vault.http.get(vault.url("/api/v1/reanalyse"))).await?;
    let jobs = answer["jobs"].as_array().map(Vec::as_slice).unwrap_or_default();
    if jobs.is_empty() {
        println!("no re-analysis jobs");
        return Ok(());
    }
    println!("{:>6}  {:<16} {:<10} {:>13}  {:<20} {:<20} device", "job", "group", "state", "queued", "from", "to");
    for job in jobs {
        let queued = format!("{}/{}", job["queued"], job["total"]);
        println!(
            "{:>6}  {:<16} {:<10} {queued:>13}  {:<20} {:<20} {}",
            job["id"].as_i64().unwrap_or_default(),
            job["group"].as_str().unwrap_or(""),
            job["state"].as_str().unwrap_or(""),
            date(&job["from_ms"]),
            date(&job["to_ms"]),
            job["device"].as_str().unwrap_or("(all)")
        );
    }
    Ok(())
}

async fn cancel(vault: &Vault, id: i64) -> anyhow::Result<()> {
    let job = vault.call(vault.http.delete(vault.url(&format!("/api/v1/reanalyse/{id}")))).await?;
    println!(
        "re-analysis job {id} cancelled: {} of {} recordings were sent and are still analysed",
        job["queued"], job["total"]
    );
    Ok(())
}

/// Unix milliseconds as a UTC date.
fn date(ms: &Value) -> String {
    let Some(ms) = ms.as_u64() else { return String::new() };
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

async fn follow(args: &Args, vault: &Vault) -> anyhow::Result<()> {
    let job = match args.job {
        Some(id) => vault.call(vault.http.get(vault.url(&format!("/api/v1/reanalyse/{id}")))).await?,
        None => vault.call(vault.http.post(vault.url("/api/v1/reanalyse")).json(&request(args)?)).await?,
    };
    let id = job["id"].as_i64().context("the vault's answer has no job id")?;
    println!(
        "re-analysis job {id}: {} recordings to model group {} at {} a second",
        job["total"],
        job["group"].as_str().unwrap_or(""),
        job["rate"]
    );
    if args.no_wait {
        return Ok(());
    }
    let path = format!("/api/v1/reanalyse/{id}");
    let (mut sent_at, mut last_line) = (None::<Instant>, String::new());
    loop {
        let job = vault.call(vault.http.get(vault.url(&path))).await?;
        let total = job["total"].as_i64().unwrap_or(0);
        let analysed = job_model(&job);
        let done = analysed.as_ref().map_or(0, |(_, n)| *n);
        let line = format!("queued {}/{total}, analysed {done}/{total}", job["queued"]);
        if line != last_line {
            println!("{line}");
            last_line = line;
        }
        if job["state"] == "cancelled" {
            print_comparison(&job, analysed.map(|(m, _)| m));
            bail!("re-analysis job {id} was cancelled after sending {} of {total} recordings", job["queued"]);
        }
        if job["state"] == "done" && sent_at.is_none() {
            sent_at = Some(Instant::now());
        }
        if done >= total {
            print_comparison(&job, analysed.map(|(m, _)| m));
            return Ok(());
        }
        if sent_at.is_some_and(|t| t.elapsed() > Duration::from_secs(args.timeout_secs)) {
            bail!("every recording was sent but only {done} of {total} have results after {} s; is a worker of the group running?", args.timeout_secs);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn request(args: &Args) -> anyhow::Result<Value> {
    let now = SystemTime::now();
    let mut body = json!({
        "group": args.model,
        "from_ms": when_ms(&args.since, now)?,
        "rate": args.rate,
    });
    if let Some(until) = &args.until {
        body["to_ms"] = json!(when_ms(until, now)?);
    }
    if let Some(device) = &args.device {
        body["device"] = json!(device);
    }
    Ok(body)
}

/// The model that made most of this job's results, and how many recordings the job has had
/// analysed (by any model: a group may change model mid-job).
fn job_model(job: &Value) -> Option<(String, i64)> {
    let counts: Vec<(&String, i64)> =
        job["analysed"].as_object()?.iter().map(|(m, n)| (m, n.as_i64().unwrap_or(0))).collect();
    let (model, _) = counts.iter().max_by_key(|(_, n)| *n)?;
    Some((model.to_string(), counts.iter().map(|(_, n)| n).sum()))
}

/// Events per label over the range, one column per model.
fn print_comparison(job: &Value, model: Option<String>) {
    let Some(events) = job["events"].as_object() else { return };
    let models: Vec<&String> = events.keys().collect();
    let labels: BTreeSet<&String> = events.values().filter_map(|v| v.as_object()).flat_map(|m| m.keys()).collect();
    println!(
        "\nevents per label over the range{}:",
        model.map(|m| format!(" (re-analysed by {m})")).unwrap_or_default()
    );
    print!("{:<16}", "label");
    for m in &models {
        print!("  {m:>18}");
    }
    println!();
    for label in labels {
        print!("{label:<16}");
        for m in &models {
            print!("  {:>18}", events[m.as_str()][label.as_str()].as_i64().unwrap_or(0));
        }
        println!();
    }
}
