//! What tracking costs beside the analysis it follows: the tracker on 50 objects per frame over
//! a chunk's analysed frames, against the same chunk's detection (decode, letterbox, inference)
//! on the shipped model, side by side in one run.
//!
//! `cargo bench -p osprey-detect --bench track`

use osprey_core::Detection;
use osprey_detect::{analyse, batcher_from_config, ByteTrack, Config, Options, Tracker, TrackingConfig};
use osprey_media::Sampling;
use osprey_testkit::repo_root;
use std::time::Instant;

/// 50 people walking in a grid, each at its own speed, some crossing: `frames` frames, 200 ms apart.
fn scene(objects: usize, frames: usize) -> Vec<(i64, Vec<Detection>)> {
    (0..frames)
        .map(|f| {
            let t = f as f32 * 0.2;
            let dets = (0..objects)
                .map(|i| {
                    let (col, row) = ((i % 10) as f32, (i / 10) as f32);
                    let speed = 20.0 + (i % 7) as f32 * 10.0 * if i % 2 == 0 { 1.0 } else { -1.0 };
                    let x = 60.0 + col * 120.0 + speed * t;
                    let y = 40.0 + row * 130.0;
                    let score = 0.3 + (i % 6) as f32 * 0.12;
                    Detection { label: "person".into(), class_id: 0, score, bbox: [x, y, x + 40.0, y + 100.0] }
                })
                .collect();
            ((f as i64) * 200, dets)
        })
        .collect()
}

fn track_ms(frames: &[(i64, Vec<Detection>)], rounds: usize) -> f64 {
    let started = Instant::now();
    for _ in 0..rounds {
        let mut tracker: Box<dyn Tracker> = Box::new(ByteTrack::new(TrackingConfig::default(), 0.5));
        for (pts, dets) in frames {
            tracker.update(*pts, dets);
        }
        std::hint::black_box(tracker.finish());
    }
    started.elapsed().as_secs_f64() * 1000.0 / rounds as f64
}

fn main() {
    let bytes = std::fs::read(repo_root().join("samples/vtest.mp4")).unwrap();
    let config = Config { workers: 2, ..Config::default() };
    let batcher = batcher_from_config(&config).unwrap();
    println!("tracking cost beside analysis, {} cores", std::thread::available_parallelism().unwrap());
    println!(
        "{:>10}  {:>8}  {:>10}  {:>12}  {:>14}  {:>7}",
        "sampling", "frames", "objects", "tracking ms", "analysis ms", "share"
    );
    for fps in [2.0, 5.0] {
        let options = Options { sampling: Sampling::Fps(fps), ..Options::from_config(&config, "") };
        let started = Instant::now();
        let data = analyse(&bytes, &options, &batcher, &|_, _| {}).unwrap();
        let analysis_ms = started.elapsed().as_secs_f64() * 1000.0;
        // The sample is 79 s; a chunk is 10 s of it.
        let chunk_frames = (fps * 10.0) as usize;
        let per_chunk = analysis_ms * chunk_frames as f64 / data.frames_analyzed as f64;
        for objects in [10, 50] {
            let ms = track_ms(&scene(objects, chunk_frames), 20);
            println!(
                "{:>10}  {chunk_frames:>8}  {objects:>10}  {ms:>12.3}  {per_chunk:>14.1}  {:>6.2}%",
                format!("{fps} fps"),
                100.0 * ms / per_chunk
            );
        }
    }
}
