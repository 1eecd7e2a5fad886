//! The worker's typed config, the `[worker]` section of the file, and [`Setup`], the sections a
//! worker reads.

use osprey_core::{Error, Result};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Detector workers: consumers of `osprey.chunks`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Consumer group; workers in one group share the chunks.
    pub group: String,
    /// Chunks decoded at once; their frames share the detector sessions (`detect.workers`).
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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            group: "osprey-detectors".into(),
            concurrency: 1,
            max_attempts: 3,
            retry_backoff: Duration::from_secs(1),
            fetch_timeout: Duration::from_secs(60),
            max_chunk_bytes: 512 * 1024 * 1024,
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
        if self.fetch_timeout.is_zero() || self.max_chunk_bytes == 0 {
            return Err(Error::invalid(
                "invalid config: worker.fetch_timeout_secs and max_chunk_bytes must be above 0",
            ));
        }
        Ok(())
    }
}

/// What a worker reads of the whole file: `[worker]` and `[detect]`.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    pub worker: Config,
    pub detect: osprey_detect::Config,
}
