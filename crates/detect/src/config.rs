//! The detector's typed config, the `[detect]` section of the file: every value is parsed when the
//! file is read, so a bad one fails there, naming its key, and never at a worker's start.

use std::path::PathBuf;
use std::time::Duration;

use osprey_core::{Error, Result};
use osprey_media::Sampling;
use serde::{Deserialize, Serialize};

use crate::{TrackingConfig, Zone};

/// Object detection: the model, how to run it and what to keep.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// A shipped model: the directory `models/<model>/` (its ONNX file and `model.toml`).
    /// "auto", the default, is the COCO detector that runs fastest here: "nanodet-416-int8" on
    /// the CPU, "nanodet-416" (fp32) on a GPU.
    pub model: String,
    /// A model directory anywhere (ONNX file and `model.toml`); when set, `model` is not used.
    pub model_dir: Option<PathBuf>,
    /// ONNX Runtime shared library; defaults to `ORT_DYLIB_PATH`, then
    /// `third_party/onnxruntime/libonnxruntime.so` (fetched by scripts/fetch-onnxruntime).
    pub onnxruntime: Option<PathBuf>,
    /// Least score reported; default: the model manifest's `score_threshold`.
    pub score_threshold: Option<f32>,
    /// Overlap above which NMS drops the weaker box; default: the manifest's `iou_threshold`.
    pub iou_threshold: Option<f32>,
    pub max_detections: usize,
    /// Labels to keep (the model's, checked when it loads); empty keeps all.
    pub classes: Classes,
    /// Frames to analyse: "all", "keyframes", "every:N" or frames per second (2 or "2").
    pub sampling: Sampling,
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
    #[serde(rename = "max_wait_ms", with = "osprey_core::config::millis")]
    pub max_wait: Duration,
    /// Following objects from frame to frame (`[detect.tracking]`).
    pub tracking: TrackingConfig,
    /// Named areas of each camera's picture (`[[detect.zones]]`).
    pub zones: Vec<Zone>,
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

/// Thresholds of a model whose manifest sets none.
pub const DEFAULT_SCORE_THRESHOLD: f32 = 0.5;
pub const DEFAULT_IOU_THRESHOLD: f32 = 0.6;

impl Default for Config {
    fn default() -> Self {
        Config {
            model: crate::runtime::AUTO.into(),
            model_dir: None,
            onnxruntime: None,
            score_threshold: None,
            iou_threshold: None,
            max_detections: 100,
            classes: Classes::default(),
            sampling: Sampling::Fps(2.0),
            workers: 2,
            threads: 1,
            decode_threads: 1,
            device: Device::Auto,
            max_batch: None,
            max_wait: Duration::from_millis(5),
            tracking: TrackingConfig::default(),
            zones: Vec::new(),
        }
    }
}

/// The labels a detector keeps; checked against the model's labels when it loads.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Classes(Vec<String>);

impl Classes {
    pub fn new<S: AsRef<str>>(labels: &[S]) -> Result<Classes> {
        let labels: Vec<String> = labels.iter().map(|l| l.as_ref().trim().to_string()).collect();
        match labels.iter().any(|l| l.is_empty()) {
            true => Err(Error::invalid("an empty label")),
            false => Ok(Classes(labels)),
        }
    }

    /// True when every class is kept.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

impl<'de> Deserialize<'de> for Classes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let labels = Vec::<String>::deserialize(d)?;
        Classes::new(&labels).map_err(|e| serde::de::Error::custom(e.to_string()))
    }
}

impl Config {
    /// What the types cannot say: ranges, and values above zero.
    pub fn validate(&self) -> Result<()> {
        let in_range = |t: Option<f32>| t.is_none_or(|t| (0.0..=1.0).contains(&t));
        if !in_range(self.score_threshold) || !in_range(self.iou_threshold) {
            return Err(Error::invalid(
                "invalid config: detect.score_threshold and detect.iou_threshold must be within 0..1",
            ));
        }
        if self.workers == 0 || self.threads == 0 || self.decode_threads == 0 || self.max_detections == 0 {
            return Err(Error::invalid(
                "invalid config: detect.workers, threads, decode_threads and max_detections must be above 0",
            ));
        }
        if self.max_batch.is_some_and(|b| b == 0 || b > 1024) {
            return Err(Error::invalid("invalid config: detect.max_batch must be within 1..=1024"));
        }
        if self.max_wait > Duration::from_secs(10) {
            return Err(Error::invalid("invalid config: detect.max_wait_ms must be at most 10000 (10 s)"));
        }
        self.tracking.validate()?;
        for zone in &self.zones {
            zone.validate()?;
        }
        let mut names: Vec<(&str, &str)> = self.zones.iter().map(|z| (z.device.as_str(), z.name.as_str())).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::invalid(format!(
                "invalid config: detect.zones: device {:?} has two zones named {:?}",
                w[0].0, w[0].1
            )));
        }
        Ok(())
    }
}

impl Config {
    /// The thresholds of `manifest` where this config sets none.
    pub fn with_model_defaults(&self, manifest: &crate::Manifest) -> Config {
        Config {
            score_threshold: Some(self.score_threshold.unwrap_or(manifest.score_threshold)),
            iou_threshold: Some(self.iou_threshold.unwrap_or(manifest.iou_threshold)),
            ..self.clone()
        }
    }

    /// The least score reported (the manifest's when the config sets none, see
    /// [`Config::with_model_defaults`]).
    pub fn score_threshold(&self) -> f32 {
        self.score_threshold.unwrap_or(DEFAULT_SCORE_THRESHOLD)
    }

    pub fn iou_threshold(&self) -> f32 {
        self.iou_threshold.unwrap_or(DEFAULT_IOU_THRESHOLD)
    }

    /// The score detectors keep down to: the reporting threshold, or lower for tracking's second stage.
    pub fn detector_threshold(&self) -> f32 {
        match self.tracking.enabled {
            true => self.score_threshold().min(self.tracking.low_score),
            false => self.score_threshold(),
        }
    }

    /// The zones of one camera.
    pub fn zones_of(&self, device: &str) -> Vec<Zone> {
        self.zones.iter().filter(|z| z.device == device).cloned().collect()
    }
}
