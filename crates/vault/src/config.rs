//! The vault's typed config, the `[vault]` section of the file, and [`Setup`], the sections a vault
//! reads.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use osprey_core::config::Secret;
use osprey_core::{Error, Result};
use osprey_store::ProviderConfig;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub listen: SocketAddr,
    /// Base URL put in signed download links; defaults to `http://<listen>`.
    pub public_url: Option<String>,
    /// Metadata database URL; defaults to `sqlite://<data_dir>/osprey.db`.
    pub database_url: Option<String>,
    /// Largest accepted upload, in bytes.
    pub max_upload_bytes: u64,
    /// Hex key (at least 32 bytes) for signing download URLs; generated into the data directory
    /// when absent.
    pub signing_key: Option<Secret>,
    /// Lifetime of the signed URL carried in chunk events, in seconds.
    #[serde(rename = "event_url_ttl_secs", with = "osprey_core::config::secs")]
    pub event_url_ttl: Duration,
    /// Longest lifetime a client may ask for a signed URL, in seconds.
    #[serde(rename = "max_url_ttl_secs", with = "osprey_core::config::secs")]
    pub max_url_ttl: Duration,
    /// Flush stored chunks to disk (fsync) before acknowledging them.
    pub fsync: bool,
    pub accounts: Vec<AccountConfig>,
    /// Rules that delete old recordings (objects and metadata together).
    pub retention: Vec<RetentionRule>,
    /// Seconds between retention runs.
    #[serde(rename = "retention_interval_secs", with = "osprey_core::config::secs")]
    pub retention_interval: Duration,
    /// Unfinished resumable (tus) uploads are removed this long after they were created.
    #[serde(rename = "tus_expiry_secs", with = "osprey_core::config::secs")]
    pub tus_expiry: Duration,
    /// Forward every stored chunk to another (central) vault, as an edge vault does.
    pub forward: Option<ForwardConfig>,
    /// An upload claim lives this long unless its vault renews it (every quarter of it): a
    /// crashed vault's uploads are taken over this soon after it died.
    #[serde(rename = "claim_lease_secs", with = "osprey_core::config::secs")]
    pub claim_lease: Duration,
    /// Seconds between full reconciliations of storage against metadata (objects without rows,
    /// rows without objects, leftovers); stale claims are looked at every `claim_lease_secs`.
    #[serde(rename = "reconcile_interval_secs", with = "osprey_core::config::secs")]
    pub reconcile_interval: Duration,
    /// A client must send a request's headers within this many seconds.
    #[serde(rename = "header_read_timeout_secs", with = "osprey_core::config::secs")]
    pub header_read_timeout: Duration,
    /// A connection that sends nothing (no request, no body byte) for this long is closed.
    #[serde(rename = "idle_timeout_secs", with = "osprey_core::config::secs")]
    pub idle_timeout: Duration,
    /// Open connections allowed from one client address; more are closed at once.
    pub max_connections_per_client: usize,
    /// Reverse proxies in front of the vault whose `X-Forwarded-For` is believed: the failure
    /// limiter then counts the client the proxy names, not the proxy. Empty: the peer is the client.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Live streams (`GET /api/v1/live`) one account may hold open; more are answered 429.
    pub live_streams_per_account: usize,
    /// Live streams one web session may hold open (a few tabs).
    pub live_streams_per_session: usize,
    /// Live streams one client address may hold open, whatever its accounts (the one behind
    /// `vault.trusted_proxies` when it names one).
    pub live_streams_per_client: usize,
    /// How often an open live stream checks that its session is still good (signed out,
    /// expired, keys rotated or removed: the stream ends).
    #[serde(rename = "live_recheck_secs", with = "osprey_core::config::secs")]
    pub live_recheck: Duration,
    /// The results index: what the workers found, as events and search (`[vault.index]`).
    pub index: IndexConfig,
}

/// `[vault.index]`: consuming `osprey.detections` into events.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IndexConfig {
    pub enabled: bool,
    /// The index's consumer group on `osprey.detections`.
    pub group: String,
    /// Tracks of consecutive chunks are joined when one ends at most this long before the other
    /// starts (same camera, model and label), and each is this close to its chunk's edge.
    #[serde(rename = "join_gap_ms", with = "osprey_core::config::millis")]
    pub join_gap: Duration,
    /// ... and their boxes, moved on by their velocities across the gap, overlap by this IoU.
    pub join_iou: f32,
    /// Most results indexed in one transaction.
    pub batch: usize,
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig {
            enabled: true,
            group: "osprey-index".into(),
            join_gap: Duration::from_millis(2000),
            join_iou: 0.1,
            batch: 256,
        }
    }
}

/// Where an edge vault forwards its chunks: the central vault's URL and an account there.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardConfig {
    pub url: String,
    pub access_key: String,
    pub secret_key: Secret,
    /// Provider on the central vault.
    pub provider: String,
    /// Chunks sent at once.
    #[serde(default = "default_forward_concurrency")]
    pub concurrency: usize,
}

fn default_forward_concurrency() -> usize {
    2
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            database_url: None,
            max_upload_bytes: 512 * 1024 * 1024,
            signing_key: None,
            event_url_ttl: Duration::from_secs(24 * 3600),
            max_url_ttl: Duration::from_secs(7 * 24 * 3600),
            fsync: true,
            accounts: Vec::new(),
            retention: Vec::new(),
            retention_interval: Duration::from_secs(300),
            tus_expiry: Duration::from_secs(24 * 3600),
            forward: None,
            claim_lease: Duration::from_secs(10),
            reconcile_interval: Duration::from_secs(3600),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections_per_client: 256,
            trusted_proxies: Vec::new(),
            live_streams_per_account: 16,
            live_streams_per_session: 4,
            live_streams_per_client: 64,
            live_recheck: Duration::from_secs(5),
            index: IndexConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    pub name: String,
    pub access_key: String,
    pub secret_key: Secret,
    /// Providers this account may store to; empty means all.
    #[serde(default)]
    pub providers: Vec<String>,
    /// Where an upload that names no provider goes (Kerberos agents may leave it empty); by
    /// default the first of `providers`, or the first configured provider by name.
    #[serde(default)]
    pub main_provider: Option<String>,
}

/// A retention rule: over the recordings of one account and/or provider (all when unset),
/// delete those older than `max_age_days`, then the oldest while the rest exceed `max_bytes`.
impl AccountConfig {
    /// An account that may use every provider.
    pub fn new(name: &str, access_key: &str, secret_key: &str) -> Self {
        AccountConfig {
            name: name.to_string(),
            access_key: access_key.to_string(),
            secret_key: secret_key.into(),
            providers: Vec::new(),
            main_provider: None,
        }
    }

    pub fn may_use(&self, provider: &str) -> bool {
        self.providers.is_empty() || self.providers.iter().any(|p| p == provider)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionRule {
    pub account: Option<String>,
    pub provider: Option<String>,
    pub max_age_days: Option<f64>,
    pub max_bytes: Option<u64>,
}

impl Config {
    /// Checks `[vault]` against itself and the providers it names.
    pub fn validate(&self, providers: &BTreeMap<String, ProviderConfig>) -> Result<()> {
        if self.max_upload_bytes == 0 {
            return Err(Error::invalid("invalid config: vault.max_upload_bytes must be above 0"));
        }
        for (i, account) in self.accounts.iter().enumerate() {
            if account.name.is_empty() || account.access_key.is_empty() {
                return Err(Error::invalid(format!(
                    "invalid config: vault.accounts[{i}] needs a name and an access_key"
                )));
            }
            // The name is the account's storage namespace: the first segment of its object keys.
            if account.name.contains('/') || osprey_core::ObjectKey::new(&account.name, "x").is_err() {
                return Err(Error::invalid(format!(
                    "invalid config: vault.accounts[{i}].name {:?} may use only letters, digits and . - + = @ , (not first: _ .)",
                    account.name
                )));
            }
            if account.secret_key.len() < 8 {
                return Err(Error::invalid(format!(
                    "invalid config: vault.accounts[{i}].secret_key must be at least 8 characters"
                )));
            }
            if let Some(p) = account.providers.iter().find(|p| !providers.contains_key(*p)) {
                return Err(Error::invalid(format!(
                    "invalid config: vault.accounts[{i}].providers names unknown provider {p:?}"
                )));
            }
            if let Some(p) =
                account.main_provider.as_ref().filter(|p| !account.may_use(p) || !providers.contains_key(*p))
            {
                return Err(Error::invalid(format!(
                    "invalid config: vault.accounts[{i}].main_provider {p:?} is not a provider this account may use"
                )));
            }
            let dup = self.accounts[..i].iter().any(|a| a.access_key == account.access_key || a.name == account.name);
            if dup {
                return Err(Error::invalid(format!(
                    "invalid config: vault.accounts[{i}] repeats another account's name or access_key"
                )));
            }
        }
        for (i, rule) in self.retention.iter().enumerate() {
            let bad = |what: &str| Err(Error::invalid(format!("invalid config: vault.retention[{i}]: {what}")));
            if rule.max_age_days.is_none() && rule.max_bytes.is_none() {
                return bad("set max_age_days, max_bytes or both");
            }
            if rule.max_age_days.is_some_and(|d| d.is_nan() || d <= 0.0) {
                return bad("max_age_days must be above 0");
            }
            if rule.account.as_ref().is_some_and(|a| !self.accounts.iter().any(|x| &x.name == a)) {
                return bad("account names no configured account");
            }
            if rule.provider.as_ref().is_some_and(|p| !providers.contains_key(p)) {
                return bad("provider names no configured provider");
            }
        }
        if let Some(f) = &self.forward {
            if !(f.url.starts_with("http://") || f.url.starts_with("https://")) {
                return Err(Error::invalid("invalid config: vault.forward.url must be an http(s) URL"));
            }
            if f.concurrency == 0 || f.access_key.is_empty() || f.provider.is_empty() {
                return Err(Error::invalid(
                    "invalid config: vault.forward needs access_key, provider and a concurrency above 0",
                ));
            }
        }
        let zero = [
            ("retention_interval_secs", self.retention_interval.as_secs()),
            ("claim_lease_secs", self.claim_lease.as_secs()),
            ("reconcile_interval_secs", self.reconcile_interval.as_secs()),
            ("header_read_timeout_secs", self.header_read_timeout.as_secs()),
            ("idle_timeout_secs", self.idle_timeout.as_secs()),
            ("max_connections_per_client", self.max_connections_per_client as u64),
            ("live_streams_per_account", self.live_streams_per_account as u64),
            ("live_streams_per_session", self.live_streams_per_session as u64),
            ("live_streams_per_client", self.live_streams_per_client as u64),
            ("live_recheck_secs", self.live_recheck.as_secs()),
        ];
        if self.live_streams_per_client >= self.max_connections_per_client {
            return Err(Error::invalid(
                "invalid config: vault.live_streams_per_client must be below vault.max_connections_per_client, so streams leave connections for API calls",
            ));
        }
        if self.index.group.is_empty() || self.index.batch == 0 || !(0.0..=1.0).contains(&self.index.join_iou) {
            return Err(Error::invalid(
                "invalid config: vault.index needs a group, a batch above 0 and join_iou within 0..1",
            ));
        }
        if let Some((name, _)) = zero.iter().find(|(_, value)| *value == 0) {
            return Err(Error::invalid(format!("invalid config: vault.{name} must be above 0")));
        }
        Ok(())
    }
}

/// What a vault reads of the whole file: `[vault]`, `[providers]` and the data directory (the
/// default database and the signing key live there).
#[derive(Debug, Clone)]
pub struct Setup {
    pub data_dir: PathBuf,
    pub vault: Config,
    pub providers: BTreeMap<String, ProviderConfig>,
    /// The model groups recordings may be sent to again (`[[models]]` names; `default`).
    pub model_groups: Vec<String>,
}

impl Setup {
    /// The defaults, with one local provider (`local`) in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Setup {
        Setup {
            data_dir: data_dir.into(),
            vault: Config::default(),
            providers: ProviderConfig::defaults(),
            model_groups: vec![osprey_core::DEFAULT_MODEL_GROUP.into()],
        }
    }

    /// The providers' checks, then the vault's against them.
    pub fn validate(&self) -> Result<()> {
        if self.providers.is_empty() {
            return Err(Error::invalid("invalid config: at least one provider is needed"));
        }
        for (name, provider) in &self.providers {
            provider.validate(name)?;
        }
        self.vault.validate(&self.providers)
    }

    /// `vault.database_url`, else SQLite in the data directory.
    pub fn database_url(&self) -> String {
        self.vault
            .database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("osprey.db").display()))
    }

    /// The base of signed links: `vault.public_url`, else `http://<listen>`.
    pub fn public_url(&self) -> String {
        let url = self.vault.public_url.clone().unwrap_or_else(|| format!("http://{}", self.vault.listen));
        url.trim_end_matches('/').to_string()
    }

    pub fn providers(&self) -> Result<osprey_store::Providers> {
        osprey_store::Providers::from_config(&self.providers, &self.data_dir, self.vault.fsync)
    }
}
