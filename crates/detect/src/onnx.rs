//! Any model a manifest describes, on ONNX Runtime. The session is opened on the configured
//! device, its input checked against the manifest (rank 4, the manifest's layout and size, f32 or
//! u8 pixels), then one inference on a blank frame checks its outputs against the family's
//! decoder and the manifest's labels, so a model that does not fit fails at start, not on the
//! first chunk. Frames always arrive as planar (NCHW) floats; NHWC and u8 models get them
//! rearranged into a buffer kept between calls.

use crate::config::{Config, Device};
use crate::decode::{Candidate, Decoder, Frame, Output};
use crate::manifest::{Layout, Manifest, Model, ModelId};
use crate::{nms, runtime, Detector};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionOutputs};
use ort::value::{TensorElementType, TensorRef, ValueType};
use osprey_core::{Detection, Error, Result};
use osprey_media::{ModelInput, Normalize};
use std::sync::Arc;

pub struct OnnxDetector {
    id: ModelId,
    family: Decoder,
    session: Session,
    size: u32,
    layout: Layout,
    pixels: Pixels,
    normalize: Normalize,
    /// Largest batch the model takes: 1 for a fixed-batch export.
    max_batch: usize,
    on_gpu: bool,
    labels: Arc<[String]>,
    output_names: Vec<String>,
    keep: Vec<bool>,
    /// Least score reported, and the least kept (lower while tracking, for its second stage).
    report_threshold: f32,
    keep_threshold: f32,
    iou_threshold: f32,
    max_detections: usize,
    /// Where a batch is gathered into one tensor; kept to reuse its allocation.
    floats: Vec<f32>,
    bytes: Vec<u8>,
}

/// The element type of the model's input.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Pixels {
    F32,
    /// 0-255 as bytes (TF Object Detection API exports): mean 0 and std 1 only.
    U8,
}

impl OnnxDetector {
    /// A session on `model`, checked against its manifest.
    pub fn new(config: &Config, model: &Model) -> Result<OnnxDetector> {
        let m = &model.manifest;
        let (session, on_gpu) = open_session(config, m, &model.onnx)?;
        let (pixels, max_batch) = check_input(&session, m)?;
        let output_names = session.outputs().iter().map(|o| o.name().to_string()).collect();
        let labels: Arc<[String]> = m.labels.clone().into();
        let keep = keep_mask(config, m)?;
        let mut detector = OnnxDetector {
            id: m.id(),
            family: m.family,
            session,
            size: m.input.size,
            layout: m.input.layout,
            pixels,
            normalize: m.input.normalize,
            max_batch,
            on_gpu,
            labels,
            output_names,
            keep,
            report_threshold: config.score_threshold(),
            keep_threshold: config.detector_threshold(),
            iou_threshold: config.iou_threshold(),
            max_detections: config.max_detections,
            floats: Vec::new(),
            bytes: Vec::new(),
        };
        detector
            .detect(&blank(m.input.size))
            .map_err(|e| Error::invalid(format!("model {} does not fit its manifest: {}", m.name, e.message())))?;
        Ok(detector)
    }

    fn to_detection(&self, c: Candidate, input: &ModelInput) -> Option<Detection> {
        let label = self.labels.get(c.class_id)?;
        if label.is_empty() || !self.keep[c.class_id] || c.score < self.keep_threshold {
            return None; // a gap in the ids (coco90), or a class not kept
        }
        let (w, h, s) = (input.source_width as f32, input.source_height as f32, input.scale);
        let bbox = [
            (c.bbox[0] / s).clamp(0.0, w),
            (c.bbox[1] / s).clamp(0.0, h),
            (c.bbox[2] / s).clamp(0.0, w),
            (c.bbox[3] / s).clamp(0.0, h),
        ];
        Some(Detection { label: label.clone(), class_id: c.class_id, score: c.score, bbox })
    }
}

/// What one inference call needs of the detector, borrowed apart from the rest of it.
struct Feed<'a> {
    session: &'a mut Session,
    size: u32,
    layout: Layout,
    pixels: Pixels,
    floats: &'a mut Vec<f32>,
    bytes: &'a mut Vec<u8>,
}

impl<'a> Feed<'a> {
    /// Runs the frames as the model takes them: planar floats as they are, else rearranged.
    fn run(self, inputs: &[&ModelInput]) -> Result<SessionOutputs<'a>> {
        let (b, s) = (inputs.len(), self.size as usize);
        let shape = match self.layout {
            Layout::Nchw => [b, 3, s, s],
            Layout::Nhwc => [b, s, s, 3],
        };
        let bad = |e: ort::Error| Error::internal(format!("onnxruntime: bad input tensor: {e}"));
        let value = if self.pixels == Pixels::F32 && self.layout == Layout::Nchw && b == 1 {
            TensorRef::from_array_view((shape, &inputs[0].data[..])).map_err(bad)?.into_dyn()
        } else if self.pixels == Pixels::F32 {
            gather(inputs, self.layout, self.floats, |v| v);
            TensorRef::from_array_view((shape, &self.floats[..])).map_err(bad)?.into_dyn()
        } else {
            gather(inputs, self.layout, self.bytes, |v| v.round().clamp(0.0, 255.0) as u8);
            TensorRef::from_array_view((shape, &self.bytes[..])).map_err(bad)?.into_dyn()
        };
        self.session
            .run(ort::inputs![value])
            .map_err(|e| Error::unavailable(format!("onnxruntime: inference failed: {e}")))
    }
}

/// The outputs as f32 tensors with their names.
fn float_outputs<'s>(outputs: &'s SessionOutputs<'_>, names: &'s [String], family: Decoder) -> Result<Vec<Output<'s>>> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let (shape, data) = outputs[i]
                .try_extract_tensor::<f32>()
                .map_err(|e| Error::invalid(format!("{}: output {name:?} is not float32: {e}", family.name())))?;
            Ok(Output { name, shape, data })
        })
        .collect()
}

/// The `limit` highest-scoring detections.
fn top(mut detections: Vec<Detection>, limit: usize) -> Vec<Detection> {
    detections.sort_by(|a, b| b.score.total_cmp(&a.score));
    detections.truncate(limit);
    detections
}

/// Per label of the model, whether `detect.classes` keeps it; a label the model lacks is an error.
pub(crate) fn keep_mask(config: &Config, m: &Manifest) -> Result<Vec<bool>> {
    let mut keep = vec![config.classes.is_empty(); m.labels.len()];
    for label in config.classes.iter() {
        let id = m.labels.iter().position(|l| l == label).ok_or_else(|| {
            Error::invalid(format!("invalid config: detect.classes names {label:?}, a label model {} lacks", m.name))
        })?;
        keep[id] = true;
    }
    Ok(keep)
}

/// Copies planar frames into `out` in the model's layout and element type.
fn gather<T: Copy>(inputs: &[&ModelInput], layout: Layout, out: &mut Vec<T>, cast: impl Fn(f32) -> T) {
    out.clear();
    for input in inputs {
        let plane = input.data.len() / 3;
        match layout {
            Layout::Nchw => out.extend(input.data.iter().map(|v| cast(*v))),
            Layout::Nhwc => out.extend(
                (0..plane).flat_map(|i| (0..3).map(move |c| (c, i))).map(|(c, i)| cast(input.data[c * plane + i])),
            ),
        }
    }
}

fn blank(size: u32) -> ModelInput {
    ModelInput { source_width: size, source_height: size, ..ModelInput::new(size) }
}

impl Detector for OnnxDetector {
    fn model(&self) -> &ModelId {
        &self.id
    }

    fn input_size(&self) -> u32 {
        self.size
    }

    fn normalize(&self) -> Normalize {
        self.normalize
    }

    fn score_threshold(&self) -> f32 {
        self.report_threshold
    }

    fn on_gpu(&self) -> bool {
        self.on_gpu
    }

    fn classes(&self) -> usize {
        self.labels.len()
    }

    fn max_batch(&self) -> usize {
        self.max_batch
    }

    fn detect(&mut self, input: &ModelInput) -> Result<Vec<Detection>> {
        Ok(self.detect_batch(&[input])?.pop().unwrap_or_default())
    }

    fn detect_batch(&mut self, inputs: &[&ModelInput]) -> Result<Vec<Vec<Detection>>> {
        let batch = inputs.len();
        if batch == 0 {
            return Ok(Vec::new());
        }
        if batch > self.max_batch {
            return Err(Error::internal(format!(
                "{}: batch of {batch}, the model takes at most {}",
                self.id.name, self.max_batch
            )));
        }
        let frame_len = 3 * (self.size * self.size) as usize;
        if let Some(bad) = inputs.iter().find(|i| i.data.len() != frame_len) {
            return Err(Error::internal(format!(
                "{}: input of {} floats, not 3x{s}x{s}",
                self.id.name,
                bad.data.len(),
                s = self.size
            )));
        }
        let frame = Frame { batch, size: self.size, classes: self.labels.len(), threshold: self.keep_threshold };
        let family = self.family;
        let feed = Feed {
            session: &mut self.session,
            size: self.size,
            layout: self.layout,
            pixels: self.pixels,
            floats: &mut self.floats,
            bytes: &mut self.bytes,
        };
        let outputs = feed.run(inputs)?;
        let candidates = family.decode(&float_outputs(&outputs, &self.output_names, family)?, &frame)?;
        drop(outputs);
        Ok(candidates
            .into_iter()
            .zip(inputs)
            .map(|(found, input)| {
                let detections: Vec<Detection> =
                    found.into_iter().filter_map(|c| self.to_detection(c, input)).collect();
                match family.needs_nms() {
                    true => nms(detections, self.iou_threshold, self.max_detections),
                    false => top(detections, self.max_detections),
                }
            })
            .collect())
    }
}

/// A session on `device` (`auto` falls back to the CPU when the GPU will not take the model).
// The builder's steps return ort's own error type, whose size is not ours to choose.
#[allow(clippy::result_large_err)]
fn open_session(config: &Config, m: &Manifest, onnx: &[u8]) -> Result<(Session, bool)> {
    let env = runtime::environment(&runtime::onnxruntime_library(config)?)?;
    let fail = |what: &str, e: String| Error::unavailable(format!("onnxruntime: cannot {what}: {e}"));
    let builder = || {
        Session::builder(env)
            .map_err(|e| fail("create a session", e.to_string()))?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .and_then(|b| b.with_intra_threads(config.threads))
            .and_then(|b| b.with_inter_threads(1))
            .and_then(|b| b.with_intra_op_spinning(false))
            .map_err(|e| fail("configure the session", e.to_string()))
    };
    let device = config.device;
    let (mut placed, mut on_gpu) = match runtime::on_device(builder()?, device) {
        Ok(placed) => placed,
        Err(_) if device == Device::Auto => (builder()?, false),
        Err(e) => return Err(e),
    };
    let load_failed = |e: ort::Error| Error::invalid(format!("onnxruntime: cannot load model {}: {e}", m.name));
    let mut session = placed.commit_from_memory(onnx).map_err(load_failed);
    if on_gpu && device == Device::Auto {
        if let Err(e) = &session {
            // A GPU that took the provider but not the model: the CPU still can.
            tracing::warn!(error = %e, "detector: GPU session failed; running on the CPU");
            session = builder()?.commit_from_memory(onnx).map_err(load_failed);
            on_gpu = false;
        }
    }
    Ok((session?, on_gpu))
}

/// The model takes one rank-4 image tensor in the manifest's layout and size (or dynamic there),
/// float32, or u8 when the manifest asks for raw 0-255 pixels. Gives the element type and the
/// largest batch (1 when the export fixed it).
fn check_input(session: &Session, m: &Manifest) -> Result<(Pixels, usize)> {
    let bad = |why: String| Error::invalid(format!("model {} does not fit its manifest: {why}", m.name));
    let [input] = session.inputs() else {
        return Err(bad(format!("it has {} inputs, not one image", session.inputs().len())));
    };
    let ValueType::Tensor { ty, shape, .. } = input.dtype() else {
        return Err(bad(format!("input {:?} is not a tensor", input.name())));
    };
    let pixels = match ty {
        TensorElementType::Float32 => Pixels::F32,
        TensorElementType::Uint8 => Pixels::U8,
        other => return Err(bad(format!("input {:?} is {other:?}, not float32 or uint8", input.name()))),
    };
    let n = m.input.normalize;
    if pixels == Pixels::U8 && (n.mean != [0.0; 3] || n.std != [1.0; 3]) {
        return Err(bad(format!("input {:?} takes bytes, so input.mean must be 0 and input.std 1", input.name())));
    }
    let (layout, size) = (m.input.layout, m.input.size as i64);
    let fits = |d: i64, want: i64| d == want || d < 0;
    let ok = match (&shape[..], layout) {
        ([b, c, h, w], Layout::Nchw) => fits(*c, 3) && fits(*h, size) && fits(*w, size) && fits(*b, 1),
        ([b, h, w, c], Layout::Nhwc) => fits(*c, 3) && fits(*h, size) && fits(*w, size) && fits(*b, 1),
        _ => false,
    };
    if !ok {
        let want = match layout {
            Layout::Nchw => format!("[B, 3, {size}, {size}] (input.layout nchw, input.size {size})"),
            Layout::Nhwc => format!("[B, {size}, {size}, 3] (input.layout nhwc, input.size {size})"),
        };
        return Err(bad(format!("input {:?} has shape {shape:?}, not {want}", input.name())));
    }
    Ok((pixels, if shape[0] == 1 { 1 } else { usize::MAX }))
}
