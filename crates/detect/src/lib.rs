//! Object detection on video chunks: a [`Detector`] trait any model family implements, the
//! shipped NanoDet COCO detector on ONNX Runtime, and [`analyse`], which runs decode and
//! inference side by side on a chunk held in memory.

mod labels;
mod nanodet;
mod nms;
mod pipeline;
mod runtime;

pub use labels::COCO;
pub use nanodet::NanoDet;
pub use nms::{iou, nms};
pub use osprey_core::{Detection, DetectionData, FrameDetections};
pub use pipeline::{analyse, Options, Progress};
pub use runtime::{find_model, load_model, onnxruntime_library, SHIPPED_MODEL_SHA256};

use osprey_core::config::DetectConfig;
use osprey_core::{Error, Result};
use osprey_media::{ModelInput, Normalize};

/// A model that finds objects in one letterboxed frame. Boxes come back in source-frame pixels.
pub trait Detector: Send {
    fn model_name(&self) -> &str;
    /// Side of the square input, in pixels.
    fn input_size(&self) -> u32;
    fn normalize(&self) -> Normalize;
    fn detect(&mut self, input: &ModelInput) -> Result<Vec<Detection>>;
}

/// Builds the detectors a config asks for: one per worker, all from one read of the model.
pub fn detectors_from_config(config: &DetectConfig) -> Result<Vec<Box<dyn Detector>>> {
    match config.decoder.as_str() {
        "nanodet" => {
            let model = runtime::load_model(config)?;
            (0..config.workers).map(|_| NanoDet::new(config, &model).map(|d| Box::new(d) as Box<dyn Detector>)).collect()
        }
        other => Err(Error::invalid(format!("invalid config: detect.decoder {other:?} is not known (known: nanodet)"))),
    }
}
