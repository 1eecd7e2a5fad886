//! NanoDet (COCO, 80 classes) on ONNX Runtime. Six outputs, two per stride 8/16/32: class scores
//! `[1, N, 80]` (sigmoid applied) and box distributions `[1, N, 44]` (4 sides x 11 bins). A box
//! side is the expected value of the softmax over its bins, times the stride, measured from the
//! cell centre.

use crate::config::{Config, Device};
use crate::{nms, runtime, Detector, COCO};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};
use osprey_core::{Detection, Error, Result};
use osprey_media::{ModelInput, Normalize};

const CLASSES: usize = 80;
const BINS: usize = 11;

pub struct NanoDet {
    name: String,
    session: Session,
    /// Side of the square input, read from the model.
    input_size: u32,
    /// Largest batch the model takes: 1 for a fixed-batch export.
    max_batch: usize,
    on_gpu: bool,
    /// Where a batch is gathered into one tensor; kept to reuse its allocation.
    scratch: Vec<f32>,
    score_threshold: f32,
    iou_threshold: f32,
    max_detections: usize,
    keep: [bool; CLASSES],
}

impl NanoDet {
    /// A session on `model` (the ONNX bytes from [`runtime::load_model`]).
    // The builder's steps return ort's own error type, whose size is not ours to choose.
    #[allow(clippy::result_large_err)]
    pub fn new(config: &Config, model: &[u8]) -> Result<NanoDet> {
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
        let load_failed = |e: ort::Error| fail(&format!("load model {:?}", config.model), e.to_string());
        let mut session = placed.commit_from_memory(model).map_err(load_failed);
        if on_gpu && device == Device::Auto {
            if let Err(e) = &session {
                // A GPU that took the provider but not the model: the CPU still can.
                tracing::warn!(error = %e, "detector: GPU session failed; running on the CPU");
                session = builder()?.commit_from_memory(model).map_err(load_failed);
                on_gpu = false;
            }
        }
        let session = session?;
        let (input_size, max_batch) = square_input(&session)?;
        let mut keep = [config.classes.is_empty(); CLASSES];
        for label in config.classes.iter() {
            let id = COCO.iter().position(|c| *c == label).ok_or_else(|| {
                Error::invalid(format!("invalid config: detect.classes names {label:?}, which is not a COCO label"))
            })?;
            keep[id] = true;
        }
        Ok(NanoDet {
            name: config.model.clone(),
            session,
            input_size,
            max_batch,
            on_gpu,
            scratch: Vec::new(),
            score_threshold: config.detector_threshold(),
            iou_threshold: config.iou_threshold,
            max_detections: config.max_detections,
            keep,
        })
    }
}

impl Detector for NanoDet {
    fn model_name(&self) -> &str {
        &self.name
    }

    fn input_size(&self) -> u32 {
        self.input_size
    }

    fn normalize(&self) -> Normalize {
        Normalize { mean: [103.53, 116.28, 123.675], std: [57.375, 57.12, 58.395], bgr: true }
    }

    fn on_gpu(&self) -> bool {
        self.on_gpu
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
                "nanodet: batch of {batch}, the model takes at most {}",
                self.max_batch
            )));
        }
        let size = self.input_size as usize;
        let frame = 3 * size * size;
        if let Some(bad) = inputs.iter().find(|i| i.data.len() != frame) {
            return Err(Error::internal(format!("nanodet: input of {} floats, not 3x{size}x{size}", bad.data.len())));
        }
        // ONNX Runtime takes one contiguous tensor: a batch is gathered into the scratch buffer.
        let data: &[f32] = if batch == 1 {
            &inputs[0].data
        } else {
            self.scratch.clear();
            for input in inputs {
                self.scratch.extend_from_slice(&input.data);
            }
            &self.scratch
        };
        let tensor = TensorRef::from_array_view(([batch, 3, size, size], data))
            .map_err(|e| Error::internal(format!("onnxruntime: bad input tensor: {e}")))?;
        let outputs = self
            .session
            .run(ort::inputs![tensor])
            .map_err(|e| Error::unavailable(format!("onnxruntime: inference failed: {e}")))?;
        let levels = heads(&outputs, batch)?;
        let detections = inputs
            .iter()
            .enumerate()
            .map(|(b, input)| {
                let mut candidates = Vec::new();
                for level in &levels {
                    let (cls, reg) = level.image(b);
                    decode_level(level.cells, cls, reg, input, self.score_threshold, &self.keep, &mut candidates);
                }
                nms(candidates, self.iou_threshold, self.max_detections)
            })
            .collect();
        Ok(detections)
    }
}

/// One stride's outputs for a whole batch: class scores and box bins, `cells` per image.
struct Level<'a> {
    cells: usize,
    scores: &'a [f32],
    boxes: &'a [f32],
}

impl<'a> Level<'a> {
    fn image(&self, b: usize) -> (&'a [f32], &'a [f32]) {
        let (s, r) = (self.cells * CLASSES, self.cells * 4 * BINS);
        (&self.scores[b * s..(b + 1) * s], &self.boxes[b * r..(b + 1) * r])
    }
}

/// Pairs the six outputs by cell count, whatever order the export gave them.
fn heads<'a>(outputs: &'a ort::session::SessionOutputs<'_>, batch: usize) -> Result<Vec<Level<'a>>> {
    // (cells, scores, boxes) as they are found.
    type Found<'a> = (usize, Option<&'a [f32]>, Option<&'a [f32]>);
    let mut found: Vec<Found> = Vec::new();
    for name in 0..outputs.len() {
        let (shape, data) = outputs[name]
            .try_extract_tensor::<f32>()
            .map_err(|e| Error::internal(format!("onnxruntime: output {name} is not f32: {e}")))?;
        let bad_shape =
            || Error::internal(format!("nanodet: output {name} has shape {shape:?} for a batch of {batch}"));
        let (n, last) = match shape[..] {
            [b, n, last] if b as usize == batch => (n as usize, last as usize),
            _ => return Err(bad_shape()),
        };
        let slot = match found.iter().position(|l| l.0 == n) {
            Some(i) => i,
            None => {
                found.push((n, None, None));
                found.len() - 1
            }
        };
        match last {
            CLASSES => found[slot].1 = Some(data),
            l if l == 4 * BINS => found[slot].2 = Some(data),
            _ => return Err(bad_shape()),
        }
    }
    found
        .into_iter()
        .map(|(cells, scores, boxes)| match (scores, boxes) {
            (Some(scores), Some(boxes)) => Ok(Level { cells, scores, boxes }),
            _ => Err(Error::internal(format!("nanodet: level with {cells} cells lacks scores or boxes"))),
        })
        .collect()
}

fn decode_level(
    n: usize,
    cls: &[f32],
    reg: &[f32],
    input: &ModelInput,
    threshold: f32,
    keep: &[bool; CLASSES],
    out: &mut Vec<Detection>,
) {
    {
        let side = (n as f64).sqrt().round() as usize;
        let stride = input.size as f32 / side as f32;
        let (w, h) = (input.source_width as f32, input.source_height as f32);
        for cell in 0..n {
            let scores = &cls[cell * CLASSES..(cell + 1) * CLASSES];
            let (class_id, score) =
                scores
                    .iter()
                    .copied()
                    .enumerate()
                    .fold((0, f32::MIN), |best, (i, s)| if s > best.1 { (i, s) } else { best });
            if score < threshold || !keep[class_id] {
                continue;
            }
            let bins = &reg[cell * 4 * BINS..(cell + 1) * 4 * BINS];
            let d: [f32; 4] = std::array::from_fn(|side| expected_bin(&bins[side * BINS..(side + 1) * BINS]) * stride);
            let cx = ((cell % side) as f32 + 0.5) * stride;
            let cy = ((cell / side) as f32 + 0.5) * stride;
            let s = input.scale;
            let bbox = [
                ((cx - d[0]) / s).clamp(0.0, w),
                ((cy - d[1]) / s).clamp(0.0, h),
                ((cx + d[2]) / s).clamp(0.0, w),
                ((cy + d[3]) / s).clamp(0.0, h),
            ];
            out.push(Detection { label: COCO[class_id].to_string(), class_id, score, bbox });
        }
    }
}

/// The model's input must be float32 images, `[B, 3, S, S]`: the side S, and the largest batch
/// (1 when the export fixed it, unbounded when B is dynamic).
fn square_input(session: &Session) -> Result<(u32, usize)> {
    let [input] = session.inputs() else {
        return Err(Error::invalid(format!("nanodet: the model has {} inputs, not 1", session.inputs().len())));
    };
    match input.dtype() {
        ValueType::Tensor { ty: TensorElementType::Float32, shape, .. } => match shape[..] {
            [b, 3, h, w] if h == w && h > 0 && (b == 1 || b < 0) => Ok((h as u32, if b == 1 { 1 } else { usize::MAX })),
            _ => Err(Error::invalid(format!("nanodet: input {} has shape {shape:?}, not [B, 3, S, S]", input.name()))),
        },
        other => Err(Error::invalid(format!("nanodet: input {} is {other:?}, not a float32 tensor", input.name()))),
    }
}

/// Expected bin index under the softmax of `logits`.
fn expected_bin(logits: &[f32]) -> f32 {
    let max = logits.iter().copied().fold(f32::MIN, f32::max);
    let (mut sum, mut weighted) = (0.0f32, 0.0f32);
    for (i, l) in logits.iter().enumerate() {
        let e = (l - max).exp();
        sum += e;
        weighted += e * i as f32;
    }
    weighted / sum
}
