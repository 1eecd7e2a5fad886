//! Every output family on a tiny ONNX model with known outputs (made by `scripts/tiny-models.py`,
//! committed under `tests/models/`), run through ONNX Runtime the way a worker runs it: the model
//! directory and manifest read, the input checked, a blank frame decoded at start, then frames
//! whose boxes are known exactly. Each frame here is 128x128 letterboxed into the 64 px input
//! (scale 0.5), so every box comes back doubled.

use osprey_core::Detection;
use osprey_detect::{detectors_from_config, Config, Detector, Device, TrackingConfig};
use osprey_media::ModelInput;
use std::path::{Path, PathBuf};

fn model_dir(family: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models").join(family)
}

fn config(dir: PathBuf) -> Config {
    Config {
        model_dir: Some(dir),
        workers: 1,
        device: Device::Cpu,
        // Tracking keeps low scores for its second stage; these tests look at what is reported.
        tracking: TrackingConfig { enabled: false, ..TrackingConfig::default() },
        ..Config::default()
    }
}

fn detector(family: &str) -> Box<dyn Detector> {
    detectors_from_config(&config(model_dir(family))).unwrap().remove(0)
}

/// A 128x128 frame in the 64 px input, every pixel of the first plane `first`, the others 0.
fn frame(first: f32) -> ModelInput {
    let mut input = ModelInput { scale: 0.5, source_width: 128, source_height: 128, ..ModelInput::new(64) };
    input.data[..64 * 64].fill(first);
    input
}

/// (label, score to 4 places, box) sorted, for comparing whatever order ties came in.
fn found(detections: &[Detection]) -> Vec<(String, i32, [f32; 4])> {
    let mut out: Vec<_> =
        detections.iter().map(|d| (d.label.clone(), (d.score * 10_000.0).round() as i32, d.bbox)).collect();
    out.sort_by(|a, b| a.partial_cmp(b).unwrap());
    out
}

fn expect(items: &[(&str, f32, [f32; 4])]) -> Vec<(String, i32, [f32; 4])> {
    let detections: Vec<Detection> = items
        .iter()
        .map(|(label, score, bbox)| Detection { label: label.to_string(), class_id: 0, score: *score, bbox: *bbox })
        .collect();
    found(&detections)
}

#[test]
fn yolov8_columns_with_nms() {
    let mut d = detector("yolov8");
    assert_eq!((d.model().name.as_str(), d.input_size(), d.classes()), ("tiny-yolov8", 64, 3));
    // The second car overlaps the first by IoU 0.82 and goes; the person at 0.3 is below 0.5.
    let got = d.detect(&frame(0.0)).unwrap();
    assert_eq!(found(&got), expect(&[("car", 0.9, [30.0, 30.0, 50.0, 50.0]), ("dog", 0.7, [72.0, 64.0, 88.0, 96.0])]));
}

#[test]
fn yolov5_rows_multiply_objectness() {
    let got = detector("yolov5").detect(&frame(0.0)).unwrap();
    assert_eq!(
        found(&got),
        expect(&[
            ("car", 0.81, [40.0, 50.0, 80.0, 70.0]),
            ("person", 0.95, [16.0, 16.0, 24.0, 24.0]),
            ("person", 0.81, [20.0, 16.0, 28.0, 24.0]),
        ])
    );
}

#[test]
fn yolox_rows_on_the_stride_grid() {
    let got = detector("yolox").detect(&frame(0.0)).unwrap();
    assert_eq!(
        found(&got),
        expect(&[("dog", 0.6, [48.0, 96.0, 112.0, 128.0]), ("person", 0.72, [48.0, 32.0, 112.0, 64.0])])
    );
}

#[test]
fn detr_queries_without_nms() {
    let mut d = detector("detr");
    let got = d.detect(&frame(0.0)).unwrap();
    let sigmoid = |x: f32| 1.0 / (1.0 + (-x).exp());
    assert_eq!(
        found(&got),
        expect(&[("car", sigmoid(2.0), [48.0, 48.0, 80.0, 80.0]), ("dog", sigmoid(1.5), [88.0, 16.0, 104.0, 48.0])])
    );
}

/// The SSD model takes u8 NHWC pixels, and its first score is the mean of the first channel /
/// 255: a batch of two frames gets each its own score, so layout, cast and batch order all show.
#[test]
fn ssd_u8_nhwc_with_coco90_ids_in_a_batch() {
    let mut d = detector("ssd");
    assert_eq!(d.classes(), 90);
    let (bright, dim) = (frame(204.0), frame(102.0));
    let got = d.detect_batch(&[&bright, &dim]).unwrap();
    let car = ("car", 0.6, [64.0, 64.0, 96.0, 128.0]);
    assert_eq!(found(&got[0]), expect(&[("person", 0.8, [0.0, 32.0, 64.0, 64.0]), car]));
    assert_eq!(found(&got[1]), expect(&[car]), "a first score of 0.4 is below the threshold");
}

/// A copy of a family's directory with its manifest edited.
fn edited(family: &str, edit: impl Fn(String) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(model_dir(family)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    let manifest = dir.path().join("model.toml");
    std::fs::write(&manifest, edit(std::fs::read_to_string(&manifest).unwrap())).unwrap();
    dir
}

type Edit = fn(String) -> String;

/// A manifest that does not describe its model fails at start, saying what does not fit.
#[test]
fn a_model_that_does_not_fit_its_manifest_fails_at_start() {
    let cases: [(&str, Edit, &str); 5] = [
        ("yolov8", |m| m.replace("labels.txt", "coco"), "expected [1, 4+80, N]"),
        ("yolov8", |m| m.replace("size = 64", "size = 96"), "not [B, 3, 96, 96]"),
        ("ssd", |m| m.replace("nhwc", "nchw"), "input.layout nchw"),
        ("ssd", |m| m.replace("colour = \"rgb\"", "colour = \"rgb\"\nstd = [255, 255, 255]"), "input.std 1"),
        ("yolox", |m| m.replace("family = \"yolox\"", "family = \"detr\""), "expected 2"),
    ];
    for (family, edit, says) in cases {
        let dir = edited(family, edit);
        let err = detectors_from_config(&config(dir.path().to_path_buf())).err().expect("refused").to_string();
        assert!(err.contains(says), "{family}: {err}");
    }
    let config = Config { classes: osprey_detect::Classes::new(&["unicorn"]).unwrap(), ..config(model_dir("detr")) };
    let err = detectors_from_config(&config).err().expect("refused").to_string();
    assert!(err.contains("\"unicorn\", a label model tiny-detr lacks"), "{err}");
}

/// `detect.classes` keeps only the named labels of the model's own list.
#[test]
fn classes_filter_by_the_models_labels() {
    let config = Config { classes: osprey_detect::Classes::new(&["dog"]).unwrap(), ..config(model_dir("yolov8")) };
    let got = detectors_from_config(&config).unwrap().remove(0).detect(&frame(0.0)).unwrap();
    assert_eq!(found(&got), expect(&[("dog", 0.7, [72.0, 64.0, 88.0, 96.0])]));
}
