//! Reading a model's outputs into boxes, one decoder per model family. Every decoder works on the
//! outputs of a whole batch as ONNX Runtime returns them (name, shape, f32 data) and gives, per
//! image, the candidates above the threshold with boxes in model-input pixels; mapping back to
//! the source frame, label lookup and NMS are the caller's. A decoder checks the shapes it is
//! given against the manifest's label count and says which output is wrong, and how.
//!
//! | family | outputs | box | score |
//! | --- | --- | --- | --- |
//! | `nanodet` | per stride: scores `[B, N, C]`, bins `[B, N, 44]` | distance to the cell centre, softmax over 11 bins | class (sigmoid applied) |
//! | `yolov8` (YOLO11) | `[B, 4+C, N]` | cx, cy, w, h in pixels | class |
//! | `yolov5` (YOLOv7) | `[B, N, 5+C]` | cx, cy, w, h in pixels | objectness x class |
//! | `yolox` | `[B, N, 5+C]`, raw | (x + grid) * stride, exp(w) * stride over strides 8/16/32 | objectness x class |
//! | `detr` (RT-DETR, RF-DETR) | boxes `[B, Q, 4]`, logits `[B, Q, C]` | cx, cy, w, h in 0..1 | sigmoid of the logit; no NMS |
//! | `ssd` (TF OD API, post-processing in the graph) | `*boxes*` `[B, N, 4]`, `*scores*` `[B, N]`, `*classes*` `[B, N]`, `*num*` `[B]` | ymin, xmin, ymax, xmax in 0..1 | score; class ids from 1; no NMS |

use osprey_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// How a model's outputs are read into boxes: the manifest's `family`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decoder {
    #[serde(rename = "nanodet")]
    NanoDet,
    #[serde(alias = "yolo11")]
    Yolov8,
    #[serde(alias = "yolov7")]
    Yolov5,
    Yolox,
    Detr,
    Ssd,
}

impl Decoder {
    pub fn name(self) -> &'static str {
        match self {
            Decoder::NanoDet => "nanodet",
            Decoder::Yolov8 => "yolov8",
            Decoder::Yolov5 => "yolov5",
            Decoder::Yolox => "yolox",
            Decoder::Detr => "detr",
            Decoder::Ssd => "ssd",
        }
    }

    /// Whether overlapping boxes still need suppressing (DETR and in-graph SSD did it already).
    pub fn needs_nms(self) -> bool {
        !matches!(self, Decoder::Detr | Decoder::Ssd)
    }

    /// Candidates per image of the batch, boxes in input pixels.
    pub fn decode(self, outputs: &[Output<'_>], frame: &Frame) -> Result<Vec<Vec<Candidate>>> {
        match self {
            Decoder::NanoDet => nanodet(outputs, frame),
            Decoder::Yolov8 => yolov8(outputs, frame),
            Decoder::Yolov5 => yolo_rows(outputs, frame, Grid::Decoded),
            Decoder::Yolox => yolo_rows(outputs, frame, Grid::Strides),
            Decoder::Detr => detr(outputs, frame),
            Decoder::Ssd => ssd(outputs, frame),
        }
    }
}

/// One output tensor of a batch.
pub struct Output<'a> {
    pub name: &'a str,
    pub shape: &'a [i64],
    pub data: &'a [f32],
}

/// What every decoder needs to know of the input and the model.
pub struct Frame {
    pub batch: usize,
    /// Side of the square input, pixels.
    pub size: u32,
    /// Labels of the manifest: the class width the model must have.
    pub classes: usize,
    /// The least score kept.
    pub threshold: f32,
}

/// A box before it is mapped to the source frame: class index into the labels, input pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub class_id: usize,
    pub score: f32,
    pub bbox: [f32; 4],
}

fn shape_error(family: &str, output: &Output<'_>, want: &str) -> Error {
    Error::invalid(format!("{family}: output {:?} has shape {:?}, expected {want}", output.name, output.shape))
}

/// The dims of `output` when it has `rank` of them and a batch of `batch`.
fn dims(output: &Output<'_>, rank: usize, batch: usize) -> Option<Vec<usize>> {
    let ok = output.shape.len() == rank && output.shape[0] as usize == batch && output.shape.iter().all(|d| *d >= 0);
    ok.then(|| output.shape.iter().map(|d| *d as usize).collect())
}

fn one<'a, 'b>(family: &str, outputs: &'a [Output<'b>]) -> Result<&'a Output<'b>> {
    match outputs {
        [only] => Ok(only),
        _ => Err(Error::invalid(format!("{family}: the model has {} outputs, expected 1", outputs.len()))),
    }
}

/// Index and value of the highest score.
fn best(scores: impl Iterator<Item = f32>) -> (usize, f32) {
    scores.enumerate().fold((0, f32::MIN), |b, (i, s)| if s > b.1 { (i, s) } else { b })
}

fn centre_box(cx: f32, cy: f32, w: f32, h: f32) -> [f32; 4] {
    [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

const NANODET_BINS: usize = 11;

/// One stride's cell count, class scores and box bins, as they are found.
type Level<'a> = (usize, Option<&'a [f32]>, Option<&'a [f32]>);

/// NanoDet: pairs of outputs per stride, matched by cell count whatever the export's order.
fn nanodet(outputs: &[Output<'_>], frame: &Frame) -> Result<Vec<Vec<Candidate>>> {
    let (c, bins) = (frame.classes, 4 * NANODET_BINS);
    let want = format!("[{}, N, {c}] or [{}, N, {bins}]", frame.batch, frame.batch);
    let mut levels: Vec<Level<'_>> = Vec::new();
    for output in outputs {
        let d = dims(output, 3, frame.batch).ok_or_else(|| shape_error("nanodet", output, &want))?;
        let slot = match levels.iter().position(|l| l.0 == d[1]) {
            Some(i) => i,
            None => {
                levels.push((d[1], None, None));
                levels.len() - 1
            }
        };
        match d[2] {
            w if w == c => levels[slot].1 = Some(output.data),
            w if w == bins => levels[slot].2 = Some(output.data),
            _ => return Err(shape_error("nanodet", output, &want)),
        }
    }
    let mut per_image = vec![Vec::new(); frame.batch];
    for (cells, scores, boxes) in levels {
        let (Some(scores), Some(boxes)) = (scores, boxes) else {
            return Err(Error::invalid(format!(
                "nanodet: the level of {cells} cells lacks its scores or its box bins"
            )));
        };
        let side = (cells as f64).sqrt().round() as usize;
        let stride = frame.size as f32 / side as f32;
        for (b, out) in per_image.iter_mut().enumerate() {
            let scores = &scores[b * cells * c..(b + 1) * cells * c];
            let boxes = &boxes[b * cells * bins..(b + 1) * cells * bins];
            for cell in 0..cells {
                let (class_id, score) = best(scores[cell * c..(cell + 1) * c].iter().copied());
                if score < frame.threshold {
                    continue;
                }
                let bins = &boxes[cell * bins..(cell + 1) * bins];
                let d: [f32; 4] =
                    std::array::from_fn(|s| expected_bin(&bins[s * NANODET_BINS..(s + 1) * NANODET_BINS]) * stride);
                let cx = ((cell % side) as f32 + 0.5) * stride;
                let cy = ((cell / side) as f32 + 0.5) * stride;
                out.push(Candidate { class_id, score, bbox: [cx - d[0], cy - d[1], cx + d[2], cy + d[3]] });
            }
        }
    }
    Ok(per_image)
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

/// Ultralytics YOLOv8 / YOLO11: one `[B, 4+C, N]` output, a column per anchor.
fn yolov8(outputs: &[Output<'_>], frame: &Frame) -> Result<Vec<Vec<Candidate>>> {
    let output = one("yolov8", outputs)?;
    let want = format!("[{}, 4+{}, N]", frame.batch, frame.classes);
    let d = dims(output, 3, frame.batch)
        .filter(|d| d[1] == 4 + frame.classes)
        .ok_or_else(|| shape_error("yolov8", output, &want))?;
    let (rows, n) = (d[1], d[2]);
    let per_image = (0..frame.batch)
        .map(|b| {
            let image = &output.data[b * rows * n..(b + 1) * rows * n];
            let at = |row: usize, i: usize| image[row * n + i];
            (0..n)
                .filter_map(|i| {
                    let (class_id, score) = best((0..frame.classes).map(|k| at(4 + k, i)));
                    (score >= frame.threshold).then(|| Candidate {
                        class_id,
                        score,
                        bbox: centre_box(at(0, i), at(1, i), at(2, i), at(3, i)),
                    })
                })
                .collect()
        })
        .collect();
    Ok(per_image)
}

/// Where a `[B, N, 5+C]` row's box is: already in pixels, or relative to YOLOX's grid cells.
#[derive(Clone, Copy, PartialEq)]
enum Grid {
    Decoded,
    Strides,
}

const YOLOX_STRIDES: [u32; 3] = [8, 16, 32];

/// YOLOv5 / YOLOv7 and YOLOX: one `[B, N, 5+C]` output, a row per anchor: box, objectness, classes.
fn yolo_rows(outputs: &[Output<'_>], frame: &Frame, grid: Grid) -> Result<Vec<Vec<Candidate>>> {
    let family = if grid == Grid::Strides { "yolox" } else { "yolov5" };
    let output = one(family, outputs)?;
    let want = format!("[{}, N, 5+{}]", frame.batch, frame.classes);
    let d = dims(output, 3, frame.batch)
        .filter(|d| d[2] == 5 + frame.classes)
        .ok_or_else(|| shape_error(family, output, &want))?;
    let (n, width) = (d[1], d[2]);
    let cells = match grid {
        Grid::Strides => {
            let cells = yolox_cells(frame.size);
            if cells.len() != n {
                return Err(Error::invalid(format!(
                    "yolox: output {:?} has {n} rows; a {} px input over strides 8, 16 and 32 gives {}",
                    output.name,
                    frame.size,
                    cells.len()
                )));
            }
            cells
        }
        Grid::Decoded => Vec::new(),
    };
    let per_image = (0..frame.batch)
        .map(|b| {
            let image = &output.data[b * n * width..(b + 1) * n * width];
            (0..n)
                .filter_map(|i| {
                    let row = &image[i * width..(i + 1) * width];
                    let objectness = row[4];
                    if objectness < frame.threshold {
                        return None; // the product can only be smaller
                    }
                    let (class_id, class_score) = best(row[5..].iter().copied());
                    let score = objectness * class_score;
                    if score < frame.threshold {
                        return None;
                    }
                    let bbox = match grid {
                        Grid::Decoded => centre_box(row[0], row[1], row[2], row[3]),
                        Grid::Strides => {
                            let (gx, gy, s) = cells[i];
                            centre_box((row[0] + gx) * s, (row[1] + gy) * s, row[2].exp() * s, row[3].exp() * s)
                        }
                    };
                    Some(Candidate { class_id, score, bbox })
                })
                .collect()
        })
        .collect();
    Ok(per_image)
}

/// YOLOX's anchor points in output order: per stride, row by row: (grid x, grid y, stride).
fn yolox_cells(size: u32) -> Vec<(f32, f32, f32)> {
    let mut cells = Vec::new();
    for stride in YOLOX_STRIDES {
        let side = size / stride;
        for y in 0..side {
            for x in 0..side {
                cells.push((x as f32, y as f32, stride as f32));
            }
        }
    }
    cells
}

/// DETR family: boxes `[B, Q, 4]` and class logits `[B, Q, C]`, one query an object at most.
fn detr(outputs: &[Output<'_>], frame: &Frame) -> Result<Vec<Vec<Candidate>>> {
    let want = format!("boxes [{}, Q, 4] and logits [{}, Q, {}]", frame.batch, frame.batch, frame.classes);
    let [first, second] = outputs else {
        return Err(Error::invalid(format!("detr: the model has {} outputs, expected 2 ({want})", outputs.len())));
    };
    // By name first (a model with 4 classes has two [B, Q, 4] outputs), then by shape.
    let is_boxes = |o: &Output<'_>| o.name.contains("box") || (!o.name.contains("logit") && o.shape.last() == Some(&4));
    let (boxes, logits) = if is_boxes(first) { (first, second) } else { (second, first) };
    let bd = dims(boxes, 3, frame.batch).filter(|d| d[2] == 4).ok_or_else(|| shape_error("detr", boxes, &want))?;
    let ld = dims(logits, 3, frame.batch)
        .filter(|d| d[1] == bd[1] && d[2] == frame.classes)
        .ok_or_else(|| shape_error("detr", logits, &want))?;
    let (q, c, size) = (bd[1], ld[2], frame.size as f32);
    let per_image = (0..frame.batch)
        .map(|b| {
            (0..q)
                .filter_map(|i| {
                    let row = &logits.data[(b * q + i) * c..(b * q + i + 1) * c];
                    let (class_id, logit) = best(row.iter().copied());
                    let score = sigmoid(logit);
                    let bx = &boxes.data[(b * q + i) * 4..(b * q + i + 1) * 4];
                    (score >= frame.threshold).then(|| Candidate {
                        class_id,
                        score,
                        bbox: centre_box(bx[0] * size, bx[1] * size, bx[2] * size, bx[3] * size),
                    })
                })
                .collect()
        })
        .collect();
    Ok(per_image)
}

/// SSD with TF's post-processing in the graph: outputs found by name (tf2onnx keeps
/// `detection_boxes:0` and the rest).
fn ssd(outputs: &[Output<'_>], frame: &Frame) -> Result<Vec<Vec<Candidate>>> {
    let find = |part: &str| {
        outputs.iter().find(|o| o.name.contains(part)).ok_or_else(|| {
            let names: Vec<&str> = outputs.iter().map(|o| o.name).collect();
            Error::invalid(format!("ssd: no output named like {part:?} among {names:?}"))
        })
    };
    let (boxes, scores, classes, num) = (find("boxes")?, find("scores")?, find("classes")?, find("num")?);
    let b = frame.batch;
    let bd = dims(boxes, 3, b).filter(|d| d[2] == 4).ok_or_else(|| shape_error("ssd", boxes, "[B, N, 4]"))?;
    let n = bd[1];
    for o in [scores, classes] {
        dims(o, 2, b).filter(|d| d[1] == n).ok_or_else(|| shape_error("ssd", o, &format!("[{b}, {n}]")))?;
    }
    if num.data.len() != b {
        return Err(shape_error("ssd", num, &format!("[{b}]")));
    }
    let size = frame.size as f32;
    let per_image = (0..b)
        .map(|img| {
            let count = (num.data[img].max(0.0) as usize).min(n);
            (0..count)
                .filter_map(|i| {
                    let k = img * n + i;
                    let (score, id) = (scores.data[k], classes.data[k].round() as usize);
                    let usable = score >= frame.threshold && (1..=frame.classes).contains(&id);
                    let bx = &boxes.data[k * 4..k * 4 + 4];
                    usable.then(|| Candidate {
                        class_id: id - 1,
                        score,
                        bbox: [bx[1] * size, bx[0] * size, bx[3] * size, bx[2] * size],
                    })
                })
                .collect()
        })
        .collect();
    Ok(per_image)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(batch: usize, classes: usize) -> Frame {
        Frame { batch, size: 64, classes, threshold: 0.5 }
    }

    #[test]
    fn yolov8_reads_columns_and_keeps_the_best_class() {
        // 2 anchors, 2 classes: rows cx, cy, w, h, class 0, class 1.
        let data = [10.0, 40.0, 20.0, 50.0, 4.0, 8.0, 6.0, 10.0, 0.2, 0.1, 0.9, 0.3];
        let out = Output { name: "output0", shape: &[1, 6, 2], data: &data };
        let got = Decoder::Yolov8.decode(&[out], &frame(1, 2)).unwrap();
        assert_eq!(got[0], vec![Candidate { class_id: 1, score: 0.9, bbox: [8.0, 17.0, 12.0, 23.0] }]);
    }

    #[test]
    fn yolox_places_rows_on_its_grid() {
        // A 32 px input: 16 cells at stride 8, 4 at 16, 1 at 32.
        let mut data = vec![0.0f32; 21 * 6];
        let row = 16 + 3; // stride 16, cell (1, 1)
        data[row * 6..row * 6 + 6].copy_from_slice(&[0.5, 0.25, 0.0, 1.0f32.ln(), 0.8, 0.75]);
        let out = Output { name: "output", shape: &[1, 21, 6], data: &data };
        let f = Frame { size: 32, ..frame(1, 1) };
        let got = Decoder::Yolox.decode(&[out], &f).unwrap();
        assert_eq!(got[0], vec![Candidate { class_id: 0, score: 0.6, bbox: [16.0, 12.0, 32.0, 28.0] }]);
        let short = Output { name: "output", shape: &[1, 20, 6], data: &data[..120] };
        let err = Decoder::Yolox.decode(&[short], &f).unwrap_err().to_string();
        assert!(err.contains("has 20 rows") && err.contains("gives 21"), "{err}");
    }

    #[test]
    fn yolov5_multiplies_objectness_by_class() {
        let data = [32.0, 32.0, 10.0, 20.0, 0.9, 0.1, 0.8, 1.0, 1.0, 1.0, 1.0, 0.4, 1.0, 1.0];
        let out = Output { name: "output", shape: &[1, 2, 7], data: &data };
        let got = Decoder::Yolov5.decode(&[out], &frame(1, 2)).unwrap();
        assert_eq!(got[0].len(), 1);
        assert_eq!((got[0][0].class_id, got[0][0].bbox), (1, [27.0, 22.0, 37.0, 42.0]));
        assert!((got[0][0].score - 0.72).abs() < 1e-6);
    }

    #[test]
    fn detr_finds_boxes_and_logits_whatever_their_order() {
        let logits = [-5.0, 3.0, -5.0, -5.0];
        let boxes = [0.5, 0.5, 0.25, 0.5, 0.1, 0.1, 0.1, 0.1];
        let outputs = [
            Output { name: "logits", shape: &[1, 2, 2], data: &logits },
            Output { name: "pred_boxes", shape: &[1, 2, 4], data: &boxes },
        ];
        let got = Decoder::Detr.decode(&outputs, &frame(1, 2)).unwrap();
        assert_eq!(got[0].len(), 1);
        assert_eq!((got[0][0].class_id, got[0][0].bbox), (1, [24.0, 16.0, 40.0, 48.0]));
    }

    #[test]
    fn ssd_reads_its_count_and_one_based_ids() {
        let boxes = [0.0, 0.25, 0.5, 0.75, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0];
        let scores = [0.9, 0.8, 0.7];
        let classes = [3.0, 91.0, 1.0];
        let outputs = [
            Output { name: "detection_boxes:0", shape: &[1, 3, 4], data: &boxes },
            Output { name: "detection_scores:0", shape: &[1, 3], data: &scores },
            Output { name: "detection_classes:0", shape: &[1, 3], data: &classes },
            Output { name: "num_detections:0", shape: &[1], data: &[2.0] },
        ];
        let got = Decoder::Ssd.decode(&outputs, &frame(1, 90)).unwrap();
        // The second is class 91 of 90 labels; the third is past the count.
        assert_eq!(got[0], vec![Candidate { class_id: 2, score: 0.9, bbox: [16.0, 0.0, 48.0, 32.0] }]);
    }

    #[test]
    fn a_class_width_that_is_not_the_labels_is_refused_by_name() {
        let data = vec![0.0; 2 * 85];
        let out = Output { name: "output0", shape: &[1, 85, 2], data: &data };
        let err = Decoder::Yolov8.decode(&[out], &frame(1, 3)).unwrap_err().to_string();
        assert!(err.contains("\"output0\"") && err.contains("[1, 4+3, N]"), "{err}");
    }
}
