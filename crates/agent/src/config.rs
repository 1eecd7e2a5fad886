//! The agent's typed config, the `[agent]` section of the file. Its motion section is the motion
//! detector's own options; [`crate::AgentOptions::from_config`] adds what only a run knows.

use std::path::PathBuf;

use osprey_core::config::Secret;
use osprey_core::{Error, Result};
use osprey_kerberos::VaultTarget;
use osprey_media::MotionOptions;
use serde::{Deserialize, Serialize};

/// The agent: records a source into chunks and uploads them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
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
    pub motion: MotionOptions,
    /// Where chunks wait for a vault; defaults to `<data_dir>/spool`.
    pub spool_dir: Option<PathBuf>,
    pub spool_max_bytes: u64,
    /// The primary vault first, then fallbacks.
    pub vaults: Vec<VaultConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            source: None,
            camera: "camera".into(),
            mode: RecordMode::Continuous,
            chunk_secs: 10.0,
            loop_source: None,
            realtime: true,
            transport: RtspTransport::Tcp,
            motion: MotionOptions::default(),
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
    /// Around motion, as `[agent.motion]` says.
    Motion,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RtspTransport {
    Tcp,
    Udp,
}

impl RtspTransport {
    pub fn to_retina(self) -> retina::client::Transport {
        match self {
            RtspTransport::Tcp => retina::client::Transport::default(),
            RtspTransport::Udp => retina::client::Transport::Udp(Default::default()),
        }
    }
}

/// A vault the agent uploads to, an `[[agent.vaults]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultConfig {
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

impl Config {
    pub fn validate(&self) -> Result<()> {
        if self.chunk_secs.is_nan() || self.chunk_secs <= 0.0 || self.camera.is_empty() {
            return Err(Error::invalid("invalid config: agent.chunk_secs must be above 0 and agent.camera not empty"));
        }
        self.motion.validate().map_err(|e| Error::invalid(format!("invalid config: agent.{e}")))?;
        for (i, v) in self.vaults.iter().enumerate() {
            if !(v.url.starts_with("http://") || v.url.starts_with("https://")) || v.access_key.is_empty() {
                return Err(Error::invalid(format!(
                    "invalid config: agent.vaults[{i}] needs an http(s) url and an access_key"
                )));
            }
        }
        Ok(())
    }

    /// Where chunks go, primary first: the configured vaults, each in the camera's directory
    /// unless it names one.
    pub fn targets(&self) -> Vec<VaultTarget> {
        self.vaults
            .iter()
            .map(|v| VaultTarget {
                url: v.url.clone(),
                access_key: v.access_key.clone(),
                secret_key: v.secret_key.expose().to_string(),
                provider: v.provider.clone(),
                directory: v.directory.clone().unwrap_or_else(|| self.camera.clone()),
            })
            .collect()
    }
}
