//! The int8 NanoDet against the fp32 one it was quantised from, through the whole pipeline: on
//! the sample video (its calibration came partly from it) and on photos it was not calibrated
//! on (Debian darknet's dog, eagle, giraffe, horses, kite, person). Every fp32 detection scoring
//! 0.1 above the threshold must be found by int8 with the same label at IoU >= 0.5.

use osprey_core::{DetectionData, FrameDetections};
use osprey_detect::{analyse, batcher_from_config, iou, Batcher, Config, Device, Options, TrackingConfig};
use osprey_media::Sampling;
use osprey_testkit::{photo_clip, photos, repo_root};

fn batcher(model: &str) -> Batcher {
    let config = Config {
        model: model.into(),
        workers: 2,
        device: Device::Cpu,
        tracking: TrackingConfig { enabled: false, ..TrackingConfig::default() },
        ..Config::default()
    };
    batcher_from_config(&config).unwrap()
}

fn run(batcher: &Batcher, bytes: &[u8], sampling: Sampling) -> DetectionData {
    let options = Options { sampling, decode_threads: 1, ..Options::default() };
    analyse(bytes, &options, batcher, &|_, _| {}).unwrap()
}

/// The fp32 detections above `margin` over the threshold that int8 misses, and how many there were.
fn missed(fp32: &[FrameDetections], int8: &[FrameDetections], threshold: f32) -> (Vec<String>, usize) {
    let (mut missed, mut checked) = (Vec::new(), 0);
    for (a, b) in fp32.iter().zip(int8) {
        assert_eq!(a.pts_ms, b.pts_ms);
        for d in a.detections.iter().filter(|d| d.score >= threshold + 0.1) {
            checked += 1;
            let found = b.detections.iter().any(|e| e.label == d.label && iou(&e.bbox, &d.bbox) >= 0.5);
            if !found {
                missed.push(format!("{} {:.2} at {} ms {:?}", d.label, d.score, a.pts_ms, d.bbox));
            }
        }
    }
    (missed, checked)
}

#[test]
fn int8_finds_what_fp32_finds_with_confidence() {
    let (fp32, int8) = (batcher("nanodet-416"), batcher("nanodet-416-int8"));
    assert_eq!(int8.model().name, "nanodet-416-int8");
    let threshold = fp32.score_threshold();
    let sample = std::fs::read(repo_root().join("samples/vtest.mp4")).unwrap();
    let (a, b) = (run(&fp32, &sample, Sampling::Fps(0.5)), run(&int8, &sample, Sampling::Fps(0.5)));
    let (mut all_missed, mut checked) = missed(&a.frames, &b.frames, threshold);
    let mut labels = std::collections::BTreeSet::new();
    if let Some(photos) = photos() {
        let dir = tempfile::tempdir().unwrap();
        for photo in photos {
            let bytes = photo_clip(&photo, &dir.path().join("photo.mp4"));
            let (a, b) = (run(&fp32, &bytes, Sampling::All), run(&int8, &bytes, Sampling::All));
            labels.extend(a.frames.iter().flat_map(|f| f.detections.iter().map(|d| d.label.clone())));
            let (m, n) = missed(&a.frames, &b.frames, threshold);
            let name = photo.file_name().unwrap().to_string_lossy().to_string();
            all_missed.extend(m.into_iter().map(|m| format!("{name}: {m}")));
            checked += n;
        }
        for label in ["dog", "bird", "giraffe", "horse", "kite", "person"] {
            assert!(labels.contains(label), "fp32 found no {label} in the photos: {labels:?}");
        }
    }
    eprintln!("{checked} confident fp32 detections compared; int8 missed {}", all_missed.len());
    assert!(all_missed.is_empty(), "int8 missed: {all_missed:#?}");
    assert!(checked > 100, "only {checked} detections to compare");
}
