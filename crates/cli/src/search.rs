//! `osprey search`: events from the vault's index, as a table or JSON lines.

use anyhow::{bail, Context};
use osprey_cli::Config;
use serde_json::Value;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(clap::Args)]
pub struct Args {
    /// Only events of this label (person, car, ...).
    label: Option<String>,
    /// Only this camera (device id).
    #[arg(long)]
    device: Option<String>,
    /// Only the events of this model (its manifest's name, e.g. nanodet-416).
    #[arg(long)]
    model: Option<String>,
    /// Only events that entered this zone.
    #[arg(long)]
    zone: Option<String>,
    /// Events that started since: a time ago (30m, 2h, 7d) or a date (2026-12-01T08:00:00Z).
    #[arg(long, default_value = "24h")]
    since: String,
    /// ... and until: a time ago or a date; default now.
    #[arg(long)]
    until: Option<String>,
    /// The least best score.
    #[arg(long)]
    min_score: Option<f64>,
    /// The shortest duration (5s, 1m).
    #[arg(long)]
    min_duration: Option<String>,
    /// Most events to show.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    vault: VaultArgs,
}

/// Which vault a command talks to, and as which account.
#[derive(clap::Args)]
pub struct VaultArgs {
    /// The vault's URL; default `vault.public_url`, else `http://<vault.listen>`.
    #[arg(long)]
    vault: Option<String>,
    /// Account keys; default the first of `[[vault.accounts]]`.
    #[arg(long, env = "OSPREY_ACCESS_KEY")]
    access_key: Option<String>,
    #[arg(long, env = "OSPREY_SECRET_KEY", hide_env_values = true)]
    secret_key: Option<String>,
}

impl VaultArgs {
    /// The vault's base URL and the account's access and secret keys.
    pub fn resolve(&self, config: &Config) -> anyhow::Result<(String, String, String)> {
        let base = self.vault.clone().unwrap_or_else(|| config.vault_setup().public_url());
        let account = config.vault.accounts.first();
        let access = self.access_key.clone().or_else(|| account.map(|a| a.access_key.clone()));
        let secret = self.secret_key.clone().or_else(|| account.map(|a| a.secret_key.expose().to_string()));
        match (access, secret) {
            (Some(access), Some(secret)) => Ok((base, access, secret)),
            _ => bail!("no account keys: pass --access-key and --secret-key, or configure [[vault.accounts]]"),
        }
    }
}

/// A time ago (`2h`) or a date, as unix milliseconds (what `/api/v1` takes in `*_ms`).
pub fn when_ms(text: &str, now: SystemTime) -> anyhow::Result<i64> {
    let at = match humantime::parse_duration(text) {
        Ok(ago) => now.checked_sub(ago).context("too long ago")?,
        Err(_) => humantime::parse_rfc3339_weak(text).with_context(|| {
            format!("{text:?} is neither a time ago (2h, 30m, 7d) nor a date (2026-12-01T08:00:00Z)")
        })?,
    };
    Ok(at.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as i64)
}

pub fn run(args: Args, config: Config) -> anyhow::Result<()> {
    let now = SystemTime::now();
    let mut query: Vec<(&str, String)> = vec![("from_ms", when_ms(&args.since, now)?.to_string())];
    if let Some(until) = &args.until {
        query.push(("to_ms", when_ms(until, now)?.to_string()));
    }
    for (key, value) in [("label", &args.label), ("device", &args.device), ("model", &args.model), ("zone", &args.zone)]
    {
        if let Some(v) = value {
            query.push((key, v.clone()));
        }
    }
    if let Some(score) = args.min_score {
        query.push(("min_score", score.to_string()));
    }
    if let Some(d) = &args.min_duration {
        let d =
            humantime::parse_duration(d).with_context(|| format!("--min-duration {d:?} is not a duration (5s, 1m)"))?;
        query.push(("min_duration", d.as_millis().to_string()));
    }
    if args.limit == 0 {
        bail!("--limit must be above 0");
    }
    let (base, access, secret) = args.vault.resolve(&config)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let events = runtime.block_on(fetch(&base, &access, &secret, query, args.limit))?;
    if args.json {
        for e in &events {
            println!("{e}");
        }
    } else {
        print_table(&events, &base);
    }
    Ok(())
}

/// Pages through `/api/v1/events` until `limit` events are in hand.
async fn fetch(
    base: &str,
    access: &str,
    secret: &str,
    query: Vec<(&str, String)>,
    limit: usize,
) -> anyhow::Result<Vec<Value>> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let mut events = Vec::new();
    let mut cursor: Option<String> = None;
    while events.len() < limit {
        let mut q = query.clone();
        q.push(("limit", (limit - events.len()).min(1000).to_string()));
        if let Some(c) = &cursor {
            q.push(("cursor", c.clone()));
        }
        let url = format!("{}/api/v1/events", base.trim_end_matches('/'));
        let resp = http
            .get(&url)
            .basic_auth(access, Some(secret))
            .query(&q)
            .send()
            .await
            .with_context(|| format!("cannot reach the vault at {base}"))?;
        let status = resp.status();
        let body: Value = resp.json().await.with_context(|| format!("the vault at {base} did not answer JSON"))?;
        if !status.is_success() {
            bail!("the vault answered {status}: {}", body["error"].as_str().unwrap_or("no reason given"));
        }
        events.extend(body["events"].as_array().cloned().unwrap_or_default());
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    Ok(events)
}

fn print_table(events: &[Value], base: &str) {
    if events.is_empty() {
        println!("no events");
        return;
    }
    println!(
        "{:<20}  {:<16}  {:<18}  {:<12}  {:>8}  {:>5}  {:<16}  link",
        "time (UTC)", "camera", "model", "label", "duration", "score", "zones"
    );
    for e in events {
        let start = e["start_ms"].as_i64().unwrap_or(0);
        let time = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(start.max(0) as u64));
        let zones: Vec<&str> = e["zones"].as_array().into_iter().flatten().filter_map(|z| z["zone"].as_str()).collect();
        let duration = format!("{:.1}s", e["duration_ms"].as_i64().unwrap_or(0) as f64 / 1000.0);
        println!(
            "{:<20}  {:<16}  {:<18}  {:<12}  {:>8}  {:>5.2}  {:<16}  {}/api/v1/events/{}",
            time.to_string().trim_end_matches('Z').replace('T', " "),
            e["device"].as_str().unwrap_or(""),
            e["model"].as_str().unwrap_or(""),
            e["label"].as_str().unwrap_or(""),
            duration,
            e["best_score"].as_f64().unwrap_or(0.0),
            if zones.is_empty() { "-".to_string() } else { zones.join(",") },
            base.trim_end_matches('/'),
            e["id"],
        );
    }
}
