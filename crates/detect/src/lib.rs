//! Object detection on video chunks: a [`Detector`] trait, [`OnnxDetector`] running any model
//! directory a [`Manifest`] describes (NanoDet, YOLOv8/YOLO11, YOLOv5/v7, YOLOX, DETR and SSD
//! outputs, see [`decode`]) on ONNX Runtime, a [`Batcher`] that runs a pool of detectors on
//! frames gathered from every chunk in flight, and [`analyse`], which decodes a chunk held in
//! memory and feeds the batcher while it decodes.

mod batch;
pub mod config;
pub mod decode;
mod labels;
pub mod manifest;
pub mod metrics;
mod nms;
mod onnx;
mod pipeline;
mod runtime;
pub mod track;
pub mod zone;

pub use batch::{BatchStats, Batcher};
pub use config::{Classes, Config, Device};
pub use decode::Decoder;
pub use labels::COCO;
pub use manifest::{Manifest, Model, ModelId};
pub use nms::{iou, nms};
pub use onnx::OnnxDetector;
pub use osprey_core::{Detection, DetectionData, FrameDetections, Track, TrackBox, ZoneVisit};
pub use pipeline::{analyse, Options, Progress};
pub use runtime::{model_dir, onnxruntime_library, open_model};
pub use track::{ByteTrack, Tracker, TrackingConfig};
pub use zone::Zone;

use osprey_core::Result;
use osprey_media::{ModelInput, Normalize};

/// A model that finds objects in one letterboxed frame. Boxes come back in source-frame pixels.
pub trait Detector: Send {
    /// Which model this is: results carry it.
    fn model(&self) -> &ModelId;
    /// Side of the square input, in pixels.
    fn input_size(&self) -> u32;
    fn normalize(&self) -> Normalize;
    /// Least score reported (detections below it may still be returned to continue a track).
    fn score_threshold(&self) -> f32;
    fn detect(&mut self, input: &ModelInput) -> Result<Vec<Detection>>;

    /// Whether inference runs on a GPU (where batches pay).
    fn on_gpu(&self) -> bool {
        false
    }

    /// How many classes the model scores (its labels).
    fn classes(&self) -> usize;

    /// The most frames one [`Detector::detect_batch`] call takes.
    fn max_batch(&self) -> usize {
        1
    }

    /// Detects in several frames at once: one result per input, in input order.
    fn detect_batch(&mut self, inputs: &[&ModelInput]) -> Result<Vec<Vec<Detection>>> {
        inputs.iter().map(|input| self.detect(input)).collect()
    }
}

/// The batcher a config asks for: `detect.workers` detectors, batches of `detect.max_batch`
/// frames (by default 1 on the CPU, 16 on a GPU), waiting at most `detect.max_wait_ms` to fill one.
pub fn batcher_from_config(config: &Config) -> Result<Batcher> {
    let detectors = detectors_from_config(config)?;
    let on_gpu = detectors.first().is_some_and(|d| d.on_gpu());
    let max_batch = config.max_batch.unwrap_or(if on_gpu { DEFAULT_GPU_BATCH } else { 1 });
    Batcher::new(detectors, max_batch, config.max_wait)
}

/// Frames per batch on a GPU unless `detect.max_batch` says otherwise.
pub const DEFAULT_GPU_BATCH: usize = 16;

/// Builds the detectors a config asks for: one per worker, all from one read of the model
/// directory, the manifest's thresholds where the config sets none.
pub fn detectors_from_config(config: &Config) -> Result<Vec<Box<dyn Detector>>> {
    detectors_for(config, &open_model(config)?)
}

/// What a worker would refuse of `[detect]` before it loads the model: the model directory, its
/// manifest and file, and `detect.classes` against its labels.
pub fn check_model(config: &Config) -> Result<Manifest> {
    let manifest = open_model(config)?.manifest;
    onnx::keep_mask(config, &manifest)?;
    Ok(manifest)
}

/// `config.workers` detectors on `model`.
pub fn detectors_for(config: &Config, model: &Model) -> Result<Vec<Box<dyn Detector>>> {
    let config = config.with_model_defaults(&model.manifest);
    (0..config.workers).map(|_| OnnxDetector::new(&config, model).map(|d| Box::new(d) as Box<dyn Detector>)).collect()
}
