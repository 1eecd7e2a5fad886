//! Osprey's configuration: one TOML file, every key overridable by an `OSPREY_*` environment
//! variable (`OSPREY_VAULT__LISTEN=0.0.0.0:8080` sets `vault.listen`; `__` separates levels).
//!
//! Unknown keys are refused, so a typo never silently falls back to a default.

use crate::{Error, Result};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A secret from the config (a key, a password, a signing secret). Its value is reachable only
/// through [`Secret::expose`]; `Debug`, `Display` and `Serialize` (so `osprey config show`) print
/// `<hidden>`, an empty one prints empty.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

const HIDDEN: &str = "<hidden>";

/// A URL (a database's) without its password, for messages and `config show`.
pub fn without_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            u.set_password(Some("***")).ok();
            u.to_string()
        }
        _ => url.to_string(),
    }
}

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    fn shown(&self) -> &'static str {
        if self.0.is_empty() {
            ""
        } else {
            HIDDEN
        }
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_string())
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({})", self.shown())
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.shown())
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.shown())
    }
}

pub const ENV_PREFIX: &str = "OSPREY_";
/// `OSPREY_*` variables that configure the command line, not the config: `OSPREY_LOG` (log
/// filter) and `OSPREY_CONFIG_FILE` (the `--config` path).
const ENV_NOT_CONFIG: [&str; 2] = ["log", "config_file"];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where local state lives: the SQLite database, the embedded bus log, local storage.
    pub data_dir: PathBuf,
    pub vault: VaultConfig,
    pub bus: BusConfig,
    /// Storage providers by name. Accounts name the ones they may write to.
    pub providers: BTreeMap<String, ProviderConfig>,
    pub detect: DetectConfig,
    pub worker: WorkerConfig,
    pub notify: NotifyConfig,
    pub agent: AgentConfig,
    /// Where `osprey worker`, `agent` and `notify` serve Prometheus `/metrics`; off when unset.
    /// (The vault serves its own on `vault.listen`.)
    pub metrics_listen: Option<SocketAddr>,
}

impl Default for Config {
    fn default() -> Self {
        let mut providers = BTreeMap::new();
        providers.insert("local".to_string(), ProviderConfig::default());
        Config {
            data_dir: PathBuf::from("osprey-data"),
            vault: VaultConfig::default(),
            bus: BusConfig::default(),
            providers,
            detect: DetectConfig::default(),
            worker: WorkerConfig::default(),
            notify: NotifyConfig::default(),
            agent: AgentConfig::default(),
            metrics_listen: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VaultConfig {
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
    pub event_url_ttl_secs: u64,
    /// Longest lifetime a client may ask for a signed URL, in seconds.
    pub max_url_ttl_secs: u64,
    /// Flush stored chunks to disk (fsync) before acknowledging them.
    pub fsync: bool,
    pub accounts: Vec<AccountConfig>,
    /// Rules that delete old recordings (objects and metadata together).
    pub retention: Vec<RetentionRule>,
    /// Seconds between retention runs.
    pub retention_interval_secs: u64,
    /// Unfinished resumable (tus) uploads are removed this long after they were created.
    pub tus_expiry_secs: u64,
    /// Forward every stored chunk to another (central) vault, as an edge vault does.
    pub forward: Option<ForwardConfig>,
    /// An upload claim lives this long unless its vault renews it (every quarter of it): a
    /// crashed vault's uploads are taken over this soon after it died.
    pub claim_lease_secs: u64,
    /// Seconds between full reconciliations of storage against metadata (objects without rows,
    /// rows without objects, leftovers); stale claims are looked at every `claim_lease_secs`.
    pub reconcile_interval_secs: u64,
    /// A client must send a request's headers within this many seconds.
    pub header_read_timeout_secs: u64,
    /// A connection that sends nothing (no request, no body byte) for this long is closed.
    pub idle_timeout_secs: u64,
    /// Open connections allowed from one client address; more are closed at once.
    pub max_connections_per_client: usize,
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

impl Default for VaultConfig {
    fn default() -> Self {
        VaultConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            database_url: None,
            max_upload_bytes: 512 * 1024 * 1024,
            signing_key: None,
            event_url_ttl_secs: 24 * 3600,
            max_url_ttl_secs: 7 * 24 * 3600,
            fsync: true,
            accounts: Vec::new(),
            retention: Vec::new(),
            retention_interval_secs: 300,
            tus_expiry_secs: 24 * 3600,
            forward: None,
            claim_lease_secs: 10,
            reconcile_interval_secs: 3600,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            max_connections_per_client: 256,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BusKind {
    /// In-process, persisted in the data directory: for one-machine setups.
    Embedded,
    Kafka,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    pub kind: BusKind,
    pub kafka: KafkaConfig,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig { kind: BusKind::Embedded, kafka: KafkaConfig::default() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list.
    pub brokers: String,
    /// Partitions of the topics Osprey creates.
    pub partitions: i32,
    pub replication_factor: i32,
    /// How long a publish may wait for the broker before it fails and is retried, in ms.
    pub message_timeout_ms: u64,
    pub session_timeout_ms: u64,
    /// Extra librdkafka properties, passed as given.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".to_string(),
            partitions: 4,
            replication_factor: 1,
            message_timeout_ms: 10_000,
            session_timeout_ms: 10_000,
            properties: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// A directory on local disk.
    Local,
    /// In memory, lost on exit: for tests.
    Memory,
    /// Amazon S3 or an S3-compatible store (MinIO, Ceph, Storj and R2 gateways).
    S3,
    /// Google Cloud Storage.
    Gcs,
    /// Azure Blob Storage.
    Azure,
}

/// A storage provider. Which keys apply depends on `kind`; credentials left out are taken from
/// the environment the way each cloud's own tools do (AWS_*, GOOGLE_*, AZURE_STORAGE_*).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    /// `local`: directory; defaults to `<data_dir>/storage/<name>`.
    pub path: Option<PathBuf>,
    /// `s3`, `gcs`: bucket; `azure`: container.
    pub bucket: Option<String>,
    /// `s3`: endpoint of an S3-compatible store, e.g. `http://minio:9000`; `azure`: blob endpoint
    /// (Azurite).
    pub endpoint: Option<String>,
    /// `s3`: region; `us-east-1` when unset.
    pub region: Option<String>,
    /// `s3`: access key id; `azure`: storage account name.
    pub access_key_id: Option<String>,
    /// `s3`: secret access key; `azure`: storage account key.
    pub secret_access_key: Option<Secret>,
    /// `s3`: `https://endpoint/bucket/key` addressing (most S3-compatible stores) rather than
    /// `https://bucket.endpoint/key`.
    pub path_style: bool,
    /// Allow plain-HTTP endpoints (a store on a private network).
    pub allow_http: bool,
    /// `gcs`: service account key file.
    pub service_account_path: Option<PathBuf>,
    /// Signed download links from the store itself (S3, GCS, Azure pre-signing) rather than
    /// links to the vault.
    pub presign: bool,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        ProviderConfig {
            kind: ProviderKind::Local,
            path: None,
            bucket: None,
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            path_style: false,
            allow_http: false,
            service_account_path: None,
            presign: true,
        }
    }
}

impl ProviderConfig {
    fn validate(&self, name: &str) -> Result<()> {
        let bad = |what: &str| Err(Error::invalid(format!("invalid config: providers.{name}.{what}")));
        let cloud = matches!(self.kind, ProviderKind::S3 | ProviderKind::Gcs | ProviderKind::Azure);
        if self.kind != ProviderKind::Local && self.path.is_some() {
            return bad("path is only for local providers");
        }
        if cloud && self.bucket.as_deref().is_none_or(str::is_empty) {
            return bad("bucket is needed for s3, gcs and azure providers");
        }
        if !cloud && (self.bucket.is_some() || self.endpoint.is_some() || self.access_key_id.is_some()) {
            return bad("bucket, endpoint and keys are only for s3, gcs and azure providers");
        }
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            return bad("access_key_id and secret_access_key go together");
        }
        if let Some(endpoint) = &self.endpoint {
            if !(endpoint.starts_with("https://") || (self.allow_http && endpoint.starts_with("http://"))) {
                return bad("endpoint must be an https:// URL (http:// with allow_http = true)");
            }
        }
        Ok(())
    }
}

/// Object detection: the model, how to run it and what to keep.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
    /// Model name; "nanodet-416" is the shipped COCO detector.
    pub model: String,
    /// ONNX file; defaults to the shipped `models/<model>.onnx`.
    pub model_path: Option<PathBuf>,
    /// Output decoder of the model family: "nanodet".
    pub decoder: Decoder,
    /// ONNX Runtime shared library; defaults to `ORT_DYLIB_PATH`, then
    /// `third_party/onnxruntime/libonnxruntime.so` (fetched by scripts/fetch-onnxruntime).
    pub onnxruntime: Option<PathBuf>,
    pub score_threshold: f32,
    pub iou_threshold: f32,
    pub max_detections: usize,
    /// COCO labels to keep; empty keeps all.
    pub classes: Vec<String>,
    /// Frames to analyse: "all", "keyframes", "every:N" or frames per second (2 or "2").
    #[serde(deserialize_with = "string_or_number")]
    pub sampling: String,
    /// Inference sessions run in parallel, each on its own thread, shared by every chunk in flight.
    pub workers: usize,
    /// Threads inside each inference session.
    pub threads: usize,
    /// FFmpeg frame threads for decoding.
    pub decode_threads: usize,
    /// Where inference runs: `cpu`, `cuda` (GPU 0), `cuda:N`, or `auto` (the first GPU when the
    /// ONNX Runtime library has CUDA and a GPU answers, else the CPU).
    pub device: Device,
    /// Frames per inference call, gathered from every chunk in flight; defaults to 1 on the CPU
    /// and 16 on a GPU. A model exported with a fixed batch of 1 runs unbatched whatever this says.
    pub max_batch: Option<usize>,
    /// Longest wait for a batch to fill once its first frame is queued.
    pub max_wait_ms: u64,
}

/// How a model's outputs are read into boxes, from `detect.decoder`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decoder {
    #[serde(rename = "nanodet")]
    NanoDet,
}

/// Where a detector runs, from `detect.device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda(i32),
    Auto,
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Auto => f.write_str("auto"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl Serialize for Device {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Device {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse()
            .map_err(|_| serde::de::Error::custom(format!("{text:?} is not a device: use cpu, cuda, cuda:N or auto")))
    }
}

/// A UTC time of day, "HH:MM", held as minutes after midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimeOfDay(u32);

impl TimeOfDay {
    pub fn minutes(self) -> u32 {
        self.0
    }
}

impl std::str::FromStr for TimeOfDay {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        parse_time_of_day(s)
            .map(TimeOfDay)
            .ok_or_else(|| Error::invalid(format!("{s:?} is not a time of day: use HH:MM")))
    }
}

impl std::fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

impl Serialize for TimeOfDay {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TimeOfDay {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(|e: Error| serde::de::Error::custom(e.to_string()))
    }
}

impl std::str::FromStr for Device {
    type Err = Error;

    fn from_str(s: &str) -> Result<Device> {
        match s.trim() {
            "cpu" => Ok(Device::Cpu),
            "auto" => Ok(Device::Auto),
            "cuda" => Ok(Device::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse::<i32>().ok())
                .filter(|n| *n >= 0)
                .map(Device::Cuda)
                .ok_or_else(|| {
                    Error::invalid(format!("invalid config: detect.device {other:?}: use cpu, cuda, cuda:N or auto"))
                }),
        }
    }
}

/// Accepts `2`, `0.5` or `"every:4"`: environment variables holding numbers arrive as numbers.
fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Value {
        Text(String),
        Int(i64),
        Float(f64),
    }
    Ok(match Value::deserialize(d)? {
        Value::Text(s) => s,
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
    })
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            model: "nanodet-416".into(),
            model_path: None,
            decoder: Decoder::NanoDet,
            onnxruntime: None,
            score_threshold: 0.5,
            iou_threshold: 0.6,
            max_detections: 100,
            classes: Vec::new(),
            sampling: "2".into(),
            workers: 2,
            threads: 1,
            decode_threads: 1,
            device: Device::Auto,
            max_batch: None,
            max_wait_ms: 5,
        }
    }
}

/// Detector workers: consumers of `osprey.chunks`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Consumer group; workers in one group share the chunks.
    pub group: String,
    /// Chunks decoded at once; their frames share the detector sessions (`detect.workers`).
    pub concurrency: usize,
    /// Tries for a chunk whose failure may pass (download, bus); then it goes to the dead-letter topic.
    pub max_attempts: u32,
    /// Wait before the first retry, doubled for each further one.
    pub retry_backoff_ms: u64,
    pub fetch_timeout_secs: u64,
    /// Largest chunk a worker downloads into memory.
    pub max_chunk_bytes: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            group: "osprey-detectors".into(),
            concurrency: 1,
            max_attempts: 3,
            retry_backoff_ms: 1000,
            fetch_timeout_secs: 60,
            max_chunk_bytes: 512 * 1024 * 1024,
        }
    }
}

/// The agent: records a source into chunks and uploads them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// `rtsp://[user:password@]host[:port]/path` (H.264), or an H.264 MP4 file.
    pub source: Option<String>,
    pub camera: String,
    /// `continuous` records everything; `motion` records around motion (see `[agent.motion]`).
    pub mode: RecordMode,
    /// Longest chunk; chunks are cut at keyframes.
    pub chunk_secs: f64,
    /// When the source ends: play a file again, reconnect to a camera. Default: true for RTSP,
    /// false for files.
    pub loop_source: Option<bool>,
    /// Pace a file source like a camera.
    pub realtime: bool,
    /// RTP over the RTSP connection (`tcp`, the default) or over `udp`.
    pub transport: RtspTransport,
    pub motion: MotionConfig,
    /// Where chunks wait for a vault; defaults to `<data_dir>/spool`.
    pub spool_dir: Option<PathBuf>,
    pub spool_max_bytes: u64,
    /// The primary vault first, then fallbacks.
    pub vaults: Vec<AgentVaultConfig>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            source: None,
            camera: "camera".into(),
            mode: RecordMode::Continuous,
            chunk_secs: 10.0,
            loop_source: None,
            realtime: true,
            transport: RtspTransport::Tcp,
            motion: MotionConfig::default(),
            spool_dir: None,
            spool_max_bytes: 1 << 30,
            vaults: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordMode {
    Continuous,
    Motion,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RtspTransport {
    Tcp,
    Udp,
}

/// Motion recording: a frame difference on a small grey copy of the picture.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MotionConfig {
    /// Seconds kept from before the motion (rounded out to keyframes).
    pub pre_secs: f64,
    /// Seconds recorded after the last motion (rounded out to keyframes).
    pub post_secs: f64,
    /// The sensitivity: motion when at least this share (percent) of the watched pixels changed.
    /// Lower is more sensitive.
    pub min_area_percent: f64,
    /// A pixel changed when its brightness moved by more than this (0-255).
    pub pixel_threshold: u8,
    /// Part of the picture to watch, as fractions: `[left, top, right, bottom]`; all by default.
    pub region: Option<[f64; 4]>,
    /// Most frames compared per second.
    pub fps: f64,
}

impl Default for MotionConfig {
    fn default() -> Self {
        MotionConfig {
            pre_secs: 5.0,
            post_secs: 5.0,
            min_area_percent: 1.0,
            pixel_threshold: 25,
            region: None,
            fps: 5.0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentVaultConfig {
    pub url: String,
    pub access_key: String,
    pub secret_key: Secret,
    #[serde(default = "local_provider")]
    pub provider: String,
    /// Directory on the vault; defaults to the camera name.
    #[serde(default)]
    pub directory: Option<String>,
}

fn local_provider() -> String {
    "local".into()
}

/// The notifier: rules over detection results that call webhooks.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    pub group: Option<String>,
    pub rules: Vec<RuleConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    /// Cameras (instance name or device) the rule watches; empty watches all.
    #[serde(default)]
    pub cameras: Vec<String>,
    /// COCO label, e.g. "person".
    pub label: String,
    /// Fires when a frame holds at least this many such objects.
    #[serde(default = "one")]
    pub min_count: u32,
    #[serde(default = "half")]
    pub min_score: f32,
    /// Active only between these UTC times of day ("HH:MM"); both or neither. May wrap midnight.
    #[serde(default)]
    pub active_from: Option<TimeOfDay>,
    #[serde(default)]
    pub active_to: Option<TimeOfDay>,
    /// After firing for a camera, stay quiet for this long.
    #[serde(default = "five_minutes")]
    pub cooldown_secs: u64,
    /// Where the alert is POSTed.
    pub webhook: String,
    /// Signs the alert body: header `X-Osprey-Signature: sha256=<hex HMAC>`.
    #[serde(default)]
    pub secret: Option<Secret>,
}

fn one() -> u32 {
    1
}
fn half() -> f32 {
    0.5
}
fn five_minutes() -> u64 {
    300
}

/// Minutes after midnight of an "HH:MM" time.
fn parse_time_of_day(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

impl Config {
    /// Loads defaults, then the TOML file (if given), then `OSPREY_*` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Config> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(Error::invalid(format!("config file {} does not exist", file.display())));
            }
            figment = figment.merge(Toml::file(file));
        }
        figment = figment.merge(Env::prefixed(ENV_PREFIX).ignore(&ENV_NOT_CONFIG).split("__"));
        let config: Config =
            figment.extract().map_err(|e| Error::invalid(format!("invalid config: {}", describe(e))))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<()> {
        if self.vault.max_upload_bytes == 0 {
            return Err(Error::invalid("invalid config: vault.max_upload_bytes must be above 0"));
        }
        if self.providers.is_empty() {
            return Err(Error::invalid("invalid config: at least one provider is needed"));
        }
        for (name, provider) in &self.providers {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(Error::invalid(format!(
                    "invalid config: provider name {name:?} may use only letters, digits, - and _"
                )));
            }
            provider.validate(name)?;
        }
        for (i, account) in self.vault.accounts.iter().enumerate() {
            if account.name.is_empty() || account.access_key.is_empty() {
                return Err(Error::invalid(format!(
                    "invalid config: vault.accounts[{i}] needs a name and an access_key"
                )));
            }
            // The name is the account's storage namespace: the first segment of its object keys.
            if account.name.contains('/') || crate::ObjectKey::new(&account.name, "x").is_err() {
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
            if let Some(p) = account.providers.iter().find(|p| !self.providers.contains_key(*p)) {
                return Err(Error::invalid(format!(
                    "invalid config: vault.accounts[{i}].providers names unknown provider {p:?}"
                )));
            }
            if let Some(p) =
                account.main_provider.as_ref().filter(|p| !account.may_use(p) || !self.providers.contains_key(*p))
            {
                return Err(Error::invalid(format!(
                    "invalid config: vault.accounts[{i}].main_provider {p:?} is not a provider this account may use"
                )));
            }
            let dup =
                self.vault.accounts[..i].iter().any(|a| a.access_key == account.access_key || a.name == account.name);
            if dup {
                return Err(Error::invalid(format!(
                    "invalid config: vault.accounts[{i}] repeats another account's name or access_key"
                )));
            }
        }
        for (i, rule) in self.vault.retention.iter().enumerate() {
            let bad = |what: &str| Err(Error::invalid(format!("invalid config: vault.retention[{i}]: {what}")));
            if rule.max_age_days.is_none() && rule.max_bytes.is_none() {
                return bad("set max_age_days, max_bytes or both");
            }
            if rule.max_age_days.is_some_and(|d| d.is_nan() || d <= 0.0) {
                return bad("max_age_days must be above 0");
            }
            if rule.account.as_ref().is_some_and(|a| !self.vault.accounts.iter().any(|x| &x.name == a)) {
                return bad("account names no configured account");
            }
            if rule.provider.as_ref().is_some_and(|p| !self.providers.contains_key(p)) {
                return bad("provider names no configured provider");
            }
        }
        if let Some(f) = &self.vault.forward {
            if !(f.url.starts_with("http://") || f.url.starts_with("https://")) {
                return Err(Error::invalid("invalid config: vault.forward.url must be an http(s) URL"));
            }
            if f.concurrency == 0 || f.access_key.is_empty() || f.provider.is_empty() {
                return Err(Error::invalid(
                    "invalid config: vault.forward needs access_key, provider and a concurrency above 0",
                ));
            }
        }
        let v = &self.vault;
        let zero = [
            ("retention_interval_secs", v.retention_interval_secs),
            ("claim_lease_secs", v.claim_lease_secs),
            ("reconcile_interval_secs", v.reconcile_interval_secs),
            ("header_read_timeout_secs", v.header_read_timeout_secs),
            ("idle_timeout_secs", v.idle_timeout_secs),
            ("max_connections_per_client", v.max_connections_per_client as u64),
        ];
        if let Some((name, _)) = zero.iter().find(|(_, value)| *value == 0) {
            return Err(Error::invalid(format!("invalid config: vault.{name} must be above 0")));
        }
        let d = &self.detect;
        if !(0.0..=1.0).contains(&d.score_threshold) || !(0.0..=1.0).contains(&d.iou_threshold) {
            return Err(Error::invalid(
                "invalid config: detect.score_threshold and detect.iou_threshold must be within 0..1",
            ));
        }
        if d.workers == 0 || d.threads == 0 || d.decode_threads == 0 || d.max_detections == 0 {
            return Err(Error::invalid(
                "invalid config: detect.workers, threads, decode_threads and max_detections must be above 0",
            ));
        }
        if d.max_batch.is_some_and(|b| b == 0 || b > 1024) {
            return Err(Error::invalid("invalid config: detect.max_batch must be within 1..=1024"));
        }
        if d.max_wait_ms > 10_000 {
            return Err(Error::invalid("invalid config: detect.max_wait_ms must be at most 10000 (10 s)"));
        }
        let w = &self.worker;
        if w.concurrency == 0 || w.max_attempts == 0 || w.group.is_empty() {
            return Err(Error::invalid(
                "invalid config: worker.concurrency and worker.max_attempts must be above 0, worker.group not empty",
            ));
        }
        for (i, rule) in self.notify.rules.iter().enumerate() {
            let bad = |what: &str| Error::invalid(format!("invalid config: notify.rules[{i}] ({}): {what}", rule.name));
            if !(rule.webhook.starts_with("http://") || rule.webhook.starts_with("https://")) {
                return Err(bad("webhook must be an http(s) URL"));
            }
            if rule.label.is_empty() || rule.min_count == 0 || !(0.0..=1.0).contains(&rule.min_score) {
                return Err(bad("needs a label, min_count above 0 and min_score within 0..1"));
            }
            if rule.active_from.is_some() != rule.active_to.is_some() {
                return Err(bad("active_from and active_to go together: both HH:MM, or both absent"));
            }
        }
        if self.agent.chunk_secs.is_nan() || self.agent.chunk_secs <= 0.0 || self.agent.camera.is_empty() {
            return Err(Error::invalid("invalid config: agent.chunk_secs must be above 0 and agent.camera not empty"));
        }
        if self.bus.kind == BusKind::Kafka && self.bus.kafka.brokers.trim().is_empty() {
            return Err(Error::invalid("invalid config: bus.kafka.brokers is empty"));
        }
        Ok(())
    }

    pub fn database_url(&self) -> String {
        self.vault
            .database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("osprey.db").display()))
    }

    pub fn provider_path(&self, name: &str) -> PathBuf {
        match self.providers.get(name).and_then(|p| p.path.clone()) {
            Some(path) => path,
            None => self.data_dir.join("storage").join(name),
        }
    }

    pub fn public_url(&self) -> String {
        let url = self.vault.public_url.clone().unwrap_or_else(|| format!("http://{}", self.vault.listen));
        url.trim_end_matches('/').to_string()
    }
}

/// Names the offending key and where it came from, e.g.
/// `unknown field `listn` for key "vault.listn" in osprey.toml`.
fn describe(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let origin = e.metadata.as_ref().and_then(|m| m.source.as_ref()).map(|s| s.to_string());
            let mut line = e.kind.to_string();
            if !key.is_empty() {
                line.push_str(&format!(" for key {key:?}"));
            }
            if let Some(origin) = origin {
                line.push_str(&format!(" in {origin}"));
            } else if let Some(m) = &e.metadata {
                line.push_str(&format!(" in {}", m.name));
            }
            line
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
// figment's `Jail` closures return figment's own error type, whose size is not ours to choose.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn defaults_are_valid() {
        Jail::expect_with(|_| {
            let c = Config::load(None).unwrap();
            assert_eq!(c.bus.kind, BusKind::Embedded);
            assert!(c.database_url().ends_with("osprey-data/osprey.db"));
            assert_eq!(c.provider_path("local"), PathBuf::from("osprey-data/storage/local"));
            Ok(())
        });
    }

    #[test]
    fn file_then_env_override() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "osprey.toml",
                r#"
                data_dir = "/var/lib/osprey"
                [vault]
                listen = "0.0.0.0:9000"
                [[vault.accounts]]
                name = "alice"
                access_key = "AK"
                secret_key = "secret-secret"
                "#,
            )?;
            jail.set_env("OSPREY_VAULT__MAX_UPLOAD_BYTES", "1000");
            jail.set_env("OSPREY_BUS__KIND", "kafka");
            jail.set_env("OSPREY_BUS__KAFKA__BROKERS", "k1:9092");
            jail.set_env("OSPREY_DETECT__SAMPLING", "1");
            let c = Config::load(Some(Path::new("osprey.toml"))).unwrap();
            assert_eq!(c.vault.listen.port(), 9000);
            assert_eq!(c.vault.max_upload_bytes, 1000);
            assert_eq!(c.bus.kind, BusKind::Kafka);
            assert_eq!(c.bus.kafka.brokers, "k1:9092");
            assert_eq!(c.detect.sampling, "1");
            assert_eq!(c.vault.accounts[0].name, "alice");
            Ok(())
        });
    }

    #[test]
    fn unknown_key_is_named() {
        Jail::expect_with(|jail| {
            jail.create_file("osprey.toml", "[vault]\nlistn = \"0.0.0.0:1\"\n")?;
            let err = Config::load(Some(Path::new("osprey.toml"))).unwrap_err().to_string();
            assert!(err.contains("listn") && err.contains("vault.listn"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn unknown_env_key_is_named() {
        Jail::expect_with(|jail| {
            jail.set_env("OSPREY_VAULT__NOPE", "1");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("vault.nope"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn command_line_variables_are_not_config_keys() {
        Jail::expect_with(|jail| {
            jail.set_env("OSPREY_LOG", "debug");
            jail.set_env("OSPREY_CONFIG_FILE", "/nowhere.toml");
            Config::load(None).unwrap();
            Ok(())
        });
    }

    #[test]
    fn bad_value_is_named() {
        Jail::expect_with(|jail| {
            jail.set_env("OSPREY_VAULT__LISTEN", "not-an-address");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("vault.listen"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn account_with_unknown_provider_is_refused() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "osprey.toml",
                "[[vault.accounts]]\nname='a'\naccess_key='k'\nsecret_key='12345678'\nproviders=['s3']\n",
            )?;
            let err = Config::load(Some(Path::new("osprey.toml"))).unwrap_err().to_string();
            assert!(err.contains("unknown provider \"s3\""), "{err}");
            Ok(())
        });
    }
}
