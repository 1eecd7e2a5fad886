//! What recording costs the agent per camera: cutting chunks (continuous mode) and motion
//! detection (motion mode), on the bundled sample (768x576, 10 fps). Prints a table.
//!
//! cargo bench -p osprey-agent --bench record

use osprey_agent::{mp4_frames, mux, MotionSettings, Recorder};
use osprey_media::{Demuxed, MotionDetector, MotionOptions};
use std::time::Instant;

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let bytes = std::fs::read(root.join("samples/vtest.mp4")).expect("samples/vtest.mp4");
    let video = Demuxed::parse(&bytes).unwrap();
    let frames = mp4_frames(&video, &bytes).unwrap();
    let n = frames.len();
    let video_secs = n as f64 / 10.0;
    println!("{n} frames ({video_secs:.1} s of {}x{} video)\n", video.width, video.height);
    println!("| stage | frames/s | share of one core for a 10 fps camera |");
    println!("| --- | --- | --- |");

    let t = Instant::now();
    let mut recorder = Recorder::continuous(10.0);
    let mut chunks = 0;
    for f in frames.iter().cloned() {
        for r in recorder.push(f, false) {
            mux(&r, video.width, video.height).unwrap();
            chunks += 1;
        }
    }
    for r in recorder.finish() {
        mux(&r, video.width, video.height).unwrap();
        chunks += 1;
    }
    row(&format!("continuous: group + mux ({chunks} chunks)"), n, t.elapsed().as_secs_f64());

    for fps in [5.0, 10.0] {
        let t = Instant::now();
        let mut detector = MotionDetector::h264(MotionOptions { fps, ..MotionOptions::default() }).unwrap();
        let mut recorder = Recorder::motion(10.0, MotionSettings { pre_secs: 5.0, post_secs: 5.0 });
        let mut moving = 0;
        for f in frames.iter().cloned() {
            let motion = detector.feed(&f.data, f.pts).unwrap();
            moving += motion as usize;
            recorder.push(f, motion);
        }
        row(&format!("motion: decode + compare at {fps} fps ({moving} with motion)"), n, t.elapsed().as_secs_f64());
    }
}

fn row(stage: &str, frames: usize, secs: f64) {
    let fps = frames as f64 / secs;
    println!("| {stage} | {fps:.0} | {:.1}% |", 10.0 / fps * 100.0);
}
