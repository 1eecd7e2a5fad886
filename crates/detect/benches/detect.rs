//! The hot path, measured stage by stage on one chunk, beside a Python consumer of the kind
//! Kerberos ships (OpenCV decode + onnxruntime, same model, same frames) and the compute floor;
//! the int8 model's inference and end-to-end rows beside the fp32 ones.
//!
//! `cargo bench -p osprey-detect --bench detect [-- FILE.mp4 [every:N]]`; defaults to the shipped
//! sample, every 4th frame. Python figures need `.venv-reference` (made by `scripts/test`).

use osprey_detect::{analyse, batcher_from_config, detectors_from_config, Config, Detector, Options};
use osprey_media::{decode_frames, Demuxed, Letterbox, ModelInput, Sampling};
use osprey_testkit::repo_root;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let file = args.first().map(PathBuf::from).unwrap_or_else(|| repo_root().join("samples/vtest.mp4"));
    let sampling: Sampling = args.get(1).map(|s| s.parse().unwrap()).unwrap_or(Sampling::EveryNth(4));
    let bytes = std::fs::read(&file).unwrap();
    let video = Demuxed::parse(&bytes).unwrap();
    let frames = sampling.targets(&video).len();
    println!(
        "chunk {} ({}x{}, {} frames), analysing {frames} ({sampling:?}), {} cores",
        file.display(),
        video.width,
        video.height,
        video.samples.len(),
        std::thread::available_parallelism().unwrap()
    );

    let mut rows: Vec<(String, f64)> = Vec::new();
    for threads in [1, 2] {
        rows.push((
            format!("decode only, {threads} ffmpeg thread(s)"),
            decode_fps(&video, &bytes, sampling, threads, frames),
        ));
    }
    let (inputs, pre_fps) = preprocess(&video, &bytes, sampling);
    rows.push(("letterbox + normalise (swscale)".into(), pre_fps));
    for model in [FP32, INT8] {
        for threads in [1, 2] {
            let fps = inference_fps(&inputs, model, threads);
            rows.push((format!("inference + decoding + NMS, {model}, {threads} thread(s)"), fps));
        }
    }
    let mut e2e = Vec::new();
    for (workers, threads, label) in
        [(1, 1, "1 thread: 1 session x 1"), (1, 2, "2 threads: 1 session x 2"), (2, 1, "2 threads: 2 sessions x 1")]
    {
        let fps = end_to_end(&bytes, sampling, FP32, workers, threads, frames);
        rows.push((format!("Osprey end to end, {FP32}, {label}"), fps));
        e2e.push((threads * workers, fps));
    }
    for (workers, threads, label) in [(1, 1, "1 thread: 1 session x 1"), (2, 1, "2 threads: 2 sessions x 1")] {
        let fps = end_to_end(&bytes, sampling, INT8, workers, threads, frames);
        rows.push((format!("Osprey end to end, {INT8}, {label}"), fps));
    }
    // Decode's share of one thread's end-to-end time: decoding the sampled frames (and the frames
    // they depend on) against the whole, per model.
    let decode_1 = rows[0].1;
    let shares: Vec<String> = rows
        .iter()
        .filter(|(name, _)| name.starts_with("Osprey end to end") && name.ends_with("1 thread: 1 session x 1"))
        .map(|(name, fps)| {
            let model = name.split(", ").nth(1).unwrap_or("");
            format!("{model} {:.0}%", 100.0 * fps / decode_1)
        })
        .collect();
    let python = python_consumer(&file, sampling);
    for (threads, fps) in &python {
        rows.push((format!("Python consumer (OpenCV + onnxruntime), {threads} thread(s)"), *fps));
    }
    let floor = compute_floor();
    if let Some((flops, rates)) = &floor {
        for (threads, gflops) in rates {
            rows.push((
                format!("compute floor, {threads} thread(s): {:.2} GFLOP/frame at {gflops:.1} GFLOP/s", flops / 1e9),
                gflops * 1e9 / flops,
            ));
        }
    }

    println!("\n{:<78} {:>10}", "stage", "frames/s");
    for (name, fps) in &rows {
        println!("{name:<78} {fps:>10.1}");
    }
    println!();
    println!("decode share of one thread's end-to-end time: {}", shares.join(", "));
    for (threads, fps) in &e2e {
        let vs_python =
            python.iter().find(|(t, _)| t == threads).map(|(_, p)| format!("{:.2}x the Python consumer", fps / p));
        let vs_floor = floor.as_ref().and_then(|(flops, rates)| {
            rates
                .iter()
                .find(|(t, _)| t == threads)
                .map(|(_, g)| format!("{:.0}% of the floor", 100.0 * fps / (g * 1e9 / flops)))
        });
        println!(
            "Osprey fp32 with {threads} thread(s), {fps:.1} frames/s: {}, {}",
            vs_python.unwrap_or("no Python figure".into()),
            vs_floor.unwrap_or("no floor".into())
        );
    }
}

const FP32: &str = "nanodet-416";
const INT8: &str = "nanodet-416-int8";

fn config(model: &str, workers: usize, threads: usize) -> Config {
    Config { model: model.into(), workers, threads, ..Config::default() }
}

fn decode_fps(video: &Demuxed, bytes: &[u8], sampling: Sampling, threads: usize, frames: usize) -> f64 {
    let start = Instant::now();
    let n = decode_frames(video, bytes, sampling, threads, |_| Ok(())).unwrap();
    assert_eq!(n, frames);
    n as f64 / start.elapsed().as_secs_f64()
}

/// Letterboxes every sampled frame; returns the inputs and the letterbox rate alone.
fn preprocess(video: &Demuxed, bytes: &[u8], sampling: Sampling) -> (Vec<ModelInput>, f64) {
    let detector = detectors_from_config(&config(FP32, 1, 1)).unwrap().remove(0);
    let mut letterbox = Letterbox::new(detector.input_size(), detector.normalize());
    let mut inputs = Vec::new();
    let mut spent = 0.0;
    decode_frames(video, bytes, sampling, 1, |f| {
        let mut input = ModelInput::new(detector.input_size());
        let start = Instant::now();
        letterbox.fill(f.frame, f.pts_ms, &mut input)?;
        spent += start.elapsed().as_secs_f64();
        inputs.push(input);
        Ok(())
    })
    .unwrap();
    let n = inputs.len() as f64;
    (inputs, n / spent)
}

fn inference_fps(inputs: &[ModelInput], model: &str, threads: usize) -> f64 {
    let mut detector: Box<dyn Detector> = detectors_from_config(&config(model, 1, threads)).unwrap().remove(0);
    detector.detect(&inputs[0]).unwrap(); // warm up
    let start = Instant::now();
    for input in inputs {
        detector.detect(input).unwrap();
    }
    inputs.len() as f64 / start.elapsed().as_secs_f64()
}

fn end_to_end(bytes: &[u8], sampling: Sampling, model: &str, workers: usize, threads: usize, frames: usize) -> f64 {
    let batcher = batcher_from_config(&config(model, workers, threads)).unwrap();
    let start = Instant::now();
    let data =
        analyse(bytes, &Options { sampling, decode_threads: 1, ..Options::default() }, &batcher, &|_, _| {}).unwrap();
    assert_eq!(data.frames_analyzed, frames);
    frames as f64 / start.elapsed().as_secs_f64()
}

fn reference_python() -> Option<PathBuf> {
    let path = repo_root().join(".venv-reference/bin/python");
    if path.is_file() {
        Some(path)
    } else {
        println!("(no .venv-reference: Python and floor figures skipped; run scripts/test once)");
        None
    }
}

fn python_json(script: &str, args: &[&str], env: &[(&str, &str)]) -> Option<serde_json::Value> {
    let out = Command::new(reference_python()?)
        .arg(repo_root().join("scripts/reference").join(script))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .ok()?;
    if !out.status.success() {
        println!("{script} failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn python_consumer(file: &Path, sampling: Sampling) -> Vec<(usize, f64)> {
    let Sampling::EveryNth(every) = sampling else {
        println!("(the Python consumer runs with every:N sampling only)");
        return Vec::new();
    };
    let model = repo_root().join("models/nanodet-416/model.onnx");
    [1usize, 2]
        .into_iter()
        .filter_map(|threads| {
            let (t, e) = (threads.to_string(), every.to_string());
            let env = [("OMP_NUM_THREADS", t.as_str()), ("OPENCV_FFMPEG_THREADS", t.as_str())];
            let args = [model.to_str().unwrap(), file.to_str().unwrap(), "--every", &e, "--bench", "--threads", &t];
            python_json("nanodet.py", &args, &env).map(|v| (threads, v["fps"].as_f64().unwrap()))
        })
        .collect()
}

/// FLOPs per frame and the measured matrix-multiply rate (GFLOP/s) by thread count.
fn compute_floor() -> Option<(f64, Vec<(usize, f64)>)> {
    let model = repo_root().join("models/nanodet-416/model.onnx");
    let v = python_json("flops.py", &[model.to_str().unwrap()], &[])?;
    let rates = [1usize, 2].iter().map(|t| (*t, v["matmul_gflops"][t.to_string()].as_f64().unwrap())).collect();
    Some((v["flops_per_frame"].as_f64().unwrap(), rates))
}
