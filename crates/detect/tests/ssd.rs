//! The SSD decoder end to end on a real model: SSD-MobileNet-v2 COCO from the TF Object
//! Detection API (made by scripts/convert-ssd), whose graph takes uint8 NHWC pixels of any size
//! and does its own post-processing. On the sample it must find the people who walk there; on
//! photos, the animals and objects in them, whose TF ids (1-90, with gaps) must come out as the
//! right names.

use osprey_detect::{analyse, batcher_from_config, Batcher, Config, Device, Options, TrackingConfig};
use osprey_media::Sampling;
use osprey_testkit::{photo_clip, photos, repo_root, ssd_model};

fn run(batcher: &Batcher, bytes: &[u8], sampling: Sampling) -> osprey_core::DetectionData {
    let options = Options { sampling, decode_threads: 1, ..Options::default() };
    analyse(bytes, &options, batcher, &|_, _| {}).unwrap()
}

#[test]
fn ssd_mobilenet_finds_people_and_names_animals_by_their_tf_ids() {
    let Some(dir) = ssd_model() else { return };
    let config = Config {
        model_dir: Some(dir),
        workers: 2,
        device: Device::Cpu,
        tracking: TrackingConfig { enabled: false, ..TrackingConfig::default() },
        ..Config::default()
    };
    let batcher = batcher_from_config(&config).unwrap();
    assert_eq!(batcher.model().name, "ssd-mobilenet-v2");
    let sample = std::fs::read(repo_root().join("samples/vtest.mp4")).unwrap();
    let data = run(&batcher, &sample, Sampling::Fps(0.5));
    assert_eq!(data.frames_analyzed, 40);
    let with_people = data.frames.iter().filter(|f| f.detections.iter().any(|d| d.label == "person")).count();
    assert!(with_people >= 36, "people in only {with_people} of 40 frames");
    for d in data.frames.iter().flat_map(|f| &f.detections) {
        let [x1, y1, x2, y2] = d.bbox;
        assert!(0.0 <= x1 && x1 < x2 && x2 <= 768.0 && 0.0 <= y1 && y1 < y2 && y2 <= 576.0, "{d:?}");
        assert!(d.score >= 0.5, "{d:?}");
    }
    let Some(photos) = photos() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let expected = [
        ("dog", "dog"),
        ("eagle", "bird"),
        ("giraffe", "giraffe"),
        ("horses", "horse"),
        ("kite", "kite"),
        ("person", "person"),
    ];
    for (photo, label) in expected {
        let path = photos.iter().find(|p| p.file_stem().is_some_and(|s| s == photo)).expect("the photo");
        let found = run(&batcher, &photo_clip(path, &tmp.path().join("photo.mp4")), Sampling::All);
        let labels: Vec<&str> = found.frames[0].detections.iter().map(|d| d.label.as_str()).collect();
        assert!(labels.contains(&label), "{photo}.jpg: no {label} in {labels:?}");
    }
}
