//! The worker's typed config, the `[worker]` section of the file, and [`Setup`], the sections a
//! worker reads.

use osprey_bus::Start;
use osprey_core::{Error, Result};
use osprey_detect::{Classes, Device};
use osprey_media::Sampling;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Detector workers: consumers of `osprey.chunks`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Consumer group; workers in one group share the chunks.
    pub group: String,
    /// Chunks decoded at once; their frames share the detector sessions (`detect.workers`). Two
    /// by default: one chunk decodes while the other's frames are in inference, which matters
    /// once int8 makes inference cheaper than decoding (1080p at 1 fps on 2 cores: 27 -> 36
    /// analysed frames/s).
    pub concurrency: usize,
    /// Tries for a chunk whose failure may pass (download, bus); then it goes to the dead-letter topic.
    pub max_attempts: u32,
    /// Wait before the first retry, doubled for each further one.
    #[serde(rename = "retry_backoff_ms", with = "osprey_core::config::millis")]
    pub retry_backoff: Duration,
    #[serde(rename = "fetch_timeout_secs", with = "osprey_core::config::secs")]
    pub fetch_timeout: Duration,
    /// Largest chunk a worker downloads into memory.
    pub max_chunk_bytes: u64,
    /// Longest one analysis of a chunk may take; past it the try fails ("analysis passed its
    /// deadline"), is retried within `max_attempts`, then dead-lettered, and the slot is free.
    #[serde(rename = "chunk_deadline_secs", with = "osprey_core::config::secs")]
    pub chunk_deadline: Duration,
    /// Where a consumer group that has never committed starts on `osprey.chunks`: `earliest`
    /// (what the topic still holds) or `latest` (chunks from now on: a model added to a running
    /// system skips the backlog; `osprey reanalyse` sends it history at a rate). Re-analysis
    /// requests are always read from the earliest.
    pub start: Start,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            group: "osprey-detectors".into(),
            concurrency: 2,
            max_attempts: 3,
            retry_backoff: Duration::from_secs(1),
            fetch_timeout: Duration::from_secs(60),
            max_chunk_bytes: 512 * 1024 * 1024,
            chunk_deadline: Duration::from_secs(300),
            start: Start::Earliest,
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<()> {
        if self.concurrency == 0 || self.max_attempts == 0 || self.group.is_empty() {
            return Err(Error::invalid(
                "invalid config: worker.concurrency and worker.max_attempts must be above 0, worker.group not empty",
            ));
        }
        if self.fetch_timeout.is_zero() || self.max_chunk_bytes == 0 || self.chunk_deadline.is_zero() {
            return Err(Error::invalid(
                "invalid config: worker.fetch_timeout_secs, max_chunk_bytes and chunk_deadline_secs must be above 0",
            ));
        }
        Ok(())
    }
}

/// What one worker loop reads: `[worker]` (its consumer group made the group's own), the
/// `[detect]` it runs, and the cameras it analyses.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    pub worker: Config,
    pub detect: osprey_detect::Config,
    /// Cameras (device ids) whose chunks are analysed; empty: every camera. Chunks of others are
    /// committed without a result.
    pub devices: Vec<String>,
    /// The model group's name (`[[models]]`), or empty for the single group of `[detect]`.
    pub group: String,
}

/// One model run over the chunks in its own consumer group (`[[models]]`): a person model on
/// every camera beside a plate model on two. Each key left out is `[detect]`'s.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelGroup {
    /// The group's name: its consumer group is `<worker.group>-<name>`.
    pub name: String,
    /// Cameras it analyses; empty: every camera.
    #[serde(default)]
    pub devices: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_dir: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Classes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score_threshold: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<Sampling>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<Device>,
    /// `worker.start` for this group: `latest` for a model added to a running system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Start>,
}

impl ModelGroup {
    /// The worker loop this group runs, over `worker` and `detect`.
    pub fn setup(&self, worker: &Config, detect: &osprey_detect::Config) -> Setup {
        let mut d = detect.clone();
        if let Some(m) = &self.model {
            d.model = m.clone();
            d.model_dir = None;
        }
        if self.model_dir.is_some() {
            d.model_dir = self.model_dir.clone();
        }
        d.classes = self.classes.clone().unwrap_or(d.classes);
        d.score_threshold = self.score_threshold.or(d.score_threshold);
        d.sampling = self.sampling.unwrap_or(d.sampling);
        d.workers = self.workers.unwrap_or(d.workers);
        d.device = self.device.unwrap_or(d.device);
        let worker = Config {
            group: format!("{}-{}", worker.group, self.name),
            start: self.start.unwrap_or(worker.start),
            ..worker.clone()
        };
        Setup { worker, detect: d, devices: self.devices.clone(), group: self.name.clone() }
    }

    pub fn validate(&self) -> Result<()> {
        let plain = |s: &str| {
            !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        };
        if !plain(&self.name) {
            return Err(Error::invalid(format!(
                "invalid config: models.name {:?} must be 1 to 64 letters, digits, '.', '_' or '-'",
                self.name
            )));
        }
        if self.devices.iter().any(|d| d.trim().is_empty()) {
            return Err(Error::invalid(format!("invalid config: models {:?}: an empty device name", self.name)));
        }
        if self.workers == Some(0) || self.score_threshold.is_some_and(|t| !(0.0..=1.0).contains(&t)) {
            return Err(Error::invalid(format!(
                "invalid config: models {:?}: workers must be above 0 and score_threshold within 0..1",
                self.name
            )));
        }
        Ok(())
    }
}

/// The worker loops a config runs: one per `[[models]]` group, or the single `[detect]` group.
pub fn setups(worker: &Config, detect: &osprey_detect::Config, groups: &[ModelGroup]) -> Vec<Setup> {
    if groups.is_empty() {
        return vec![Setup {
            worker: worker.clone(),
            detect: detect.clone(),
            devices: Vec::new(),
            group: String::new(),
        }];
    }
    groups.iter().map(|g| g.setup(worker, detect)).collect()
}

/// Group names are unique.
pub fn validate_groups(groups: &[ModelGroup]) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for g in groups {
        g.validate()?;
        if !seen.insert(g.name.as_str()) {
            return Err(Error::invalid(format!("invalid config: two [[models]] are named {:?}", g.name)));
        }
    }
    Ok(())
}
