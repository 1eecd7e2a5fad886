//! Batching across chunks: frames/s and 1080p chunk-streams sampled at 1 fps, for batch sizes 1,
//! 8 and 32, on the device the config picks.
//!
//! `cargo bench -p osprey-detect --bench batch [-- --device cpu|cuda|cuda:N|auto] [--sessions N]
//! [--streams N] [--chunks N] [--chunk FILE.mp4]` (`--chunk`: a ready 1080p chunk, where no
//! ffmpeg is installed, as on the GPU machine of scripts/gpu-pack)
//!
//! Two figures per batch size:
//! - inference: letterboxed frames straight into `detect_batch`, the ceiling with decoding free;
//! - end to end: `--streams` chunks analysed at once through one batcher (decode on CPU threads,
//!   in parallel with inference), `--chunks` in all. A camera stream sampled at 1 fps needs 1
//!   analysed frame a second, so frames/s is also the number of such streams one worker keeps up
//!   with.
//!
//! The chunk is the shipped sample scaled to 1920x1080 by ffmpeg (10 s, 10 fps, keyframe every
//! 2.5 s), so decoding costs what a real 1080p chunk costs.

use osprey_detect::{analyse, batcher_from_config, detectors_from_config, Config, Options};
use osprey_media::{decode_frames, Demuxed, Letterbox, ModelInput, Sampling};
use osprey_testkit::{ffmpeg, repo_root};
use std::time::{Duration, Instant};

const BATCHES: [usize; 3] = [1, 8, 32];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let device = arg("--device").unwrap_or_else(|| "auto".into());
    let sessions: usize = arg("--sessions").map(|s| s.parse().unwrap()).unwrap_or(1);
    let streams: usize = arg("--streams").map(|s| s.parse().unwrap()).unwrap_or(cores.max(2));
    let chunks: usize = arg("--chunks").map(|s| s.parse().unwrap()).unwrap_or(streams * 2);
    let config = |max_batch: usize| Config {
        device: device.parse().expect("--device is cpu, cuda, cuda:N or auto"),
        workers: sessions,
        threads: if device == "cpu" || cores <= 2 { cores } else { 1 },
        sampling: osprey_media::Sampling::Fps(1.0),
        max_batch: Some(max_batch),
        max_wait: Duration::from_millis(5),
        ..Config::default()
    };

    let dir = tempfile::tempdir().unwrap();
    let path = match arg("--chunk") {
        Some(file) => std::path::PathBuf::from(file),
        None => {
            let path = dir.path().join("1080p.mp4");
            let sample = repo_root().join("samples/vtest.mp4");
            let scale = ["-t", "10", "-i", sample.to_str().unwrap(), "-vf", "scale=1920:1080", "-c:v", "libx264"];
            ffmpeg(&[&scale[..], &["-g", "25", "-an"]].concat(), &path);
            path
        }
    };
    let chunk = std::fs::read(&path).unwrap();
    let video = Demuxed::parse(&chunk).unwrap();
    let sampling = Sampling::Fps(1.0);
    let per_chunk = sampling.targets(&video).len();
    let gpu = detectors_from_config(&config(1)).unwrap()[0].on_gpu();
    println!(
        "1080p chunk: {} frames, {per_chunk} analysed (1 fps); device {device} ({}), {sessions} session(s), {cores} cores; end to end: {streams} chunks at once, {chunks} in all",
        video.samples.len(),
        if gpu { "GPU" } else { "CPU" },
    );

    let decode = decode_fps(&chunk, &video, streams, chunks, per_chunk);
    println!("decode only ({streams} chunks at once, 1 FFmpeg thread each): {decode:.1} analysed frames/s, the end-to-end ceiling on these cores");
    let inputs = letterboxed(&chunk, &video, &config(1), 64);
    println!(
        "\n{:>6} {:>18} {:>22} {:>26} {:>10} {:>10}",
        "batch", "inference fr/s", "end-to-end fr/s", "1080p streams @ 1 fps", "mean batch", "mixed %"
    );
    for batch in BATCHES {
        let infer = inference_fps(&config(batch), &inputs, batch);
        let (e2e, mean, mixed) = end_to_end(&config(batch), &chunk, streams, chunks, per_chunk);
        println!("{batch:>6} {infer:>18.1} {e2e:>22.1} {e2e:>26.0} {mean:>10.1} {mixed:>10.0}");
    }
    println!("\nstreams @ 1 fps = end-to-end frames/s: each stream needs one analysed frame a second. DeepStream's anchor: ~50 1080p streams per GPU (detector + tracker).");
}

/// Frames/s that decoding alone delivers at 1 fps sampling with `streams` chunks at once.
fn decode_fps(chunk: &[u8], video: &Demuxed, streams: usize, chunks: usize, per_chunk: usize) -> f64 {
    let secs = in_parallel(streams, chunks, || {
        assert_eq!(decode_frames(video, chunk, Sampling::Fps(1.0), 1, |_| Ok(())).unwrap(), per_chunk);
    });
    (chunks * per_chunk) as f64 / secs
}

/// Runs `one_chunk` `chunks` times on `streams` threads at once; returns the seconds taken.
fn in_parallel(streams: usize, chunks: usize, one_chunk: impl Fn() + Sync) -> f64 {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..streams {
            s.spawn(|| {
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < chunks {
                    one_chunk();
                }
            });
        }
    });
    start.elapsed().as_secs_f64()
}

/// `n` model inputs made from the chunk's frames, repeated as needed.
fn letterboxed(chunk: &[u8], video: &Demuxed, config: &Config, n: usize) -> Vec<ModelInput> {
    let detector = &detectors_from_config(config).unwrap()[0];
    let mut letterbox = Letterbox::new(detector.input_size(), detector.normalize());
    let mut inputs = Vec::new();
    decode_frames(video, chunk, Sampling::All, 2, |f| {
        if inputs.len() < n {
            let mut input = ModelInput::new(detector.input_size());
            letterbox.fill(f.frame, f.pts_ms, &mut input)?;
            inputs.push(input);
        }
        Ok(())
    })
    .unwrap();
    while inputs.len() < n {
        inputs.push(inputs[inputs.len() % 8].clone());
    }
    inputs
}

fn inference_fps(config: &Config, inputs: &[ModelInput], batch: usize) -> f64 {
    let mut detector = detectors_from_config(config).unwrap().remove(0);
    let refs: Vec<&ModelInput> = inputs.iter().collect();
    detector.detect_batch(&refs[..batch]).unwrap(); // warm up: kernels and memory for this shape
    let start = Instant::now();
    let mut frames = 0;
    while frames < inputs.len() || start.elapsed() < Duration::from_secs(2) {
        for group in refs.chunks(batch).filter(|g| g.len() == batch) {
            detector.detect_batch(group).unwrap();
            frames += batch;
        }
    }
    frames as f64 / start.elapsed().as_secs_f64()
}

/// (analysed frames/s, mean batch, % of batches mixing chunks) with `streams` chunks at a time.
fn end_to_end(config: &Config, chunk: &[u8], streams: usize, chunks: usize, per_chunk: usize) -> (f64, f64, f64) {
    let batcher = batcher_from_config(config).unwrap();
    let options = Options { sampling: Sampling::Fps(1.0), decode_threads: 1, ..Options::default() };
    analyse(chunk, &options, &batcher, &|_, _| {}).unwrap(); // warm up
    let before = batcher.stats();
    let secs = in_parallel(streams, chunks, || {
        assert_eq!(analyse(chunk, &options, &batcher, &|_, _| {}).unwrap().frames_analyzed, per_chunk);
    });
    let after = batcher.stats();
    let (batches, frames) = (after.batches - before.batches, after.frames - before.frames);
    let mixed = 100.0 * (after.mixed - before.mixed) as f64 / batches as f64;
    (frames as f64 / secs, frames as f64 / batches as f64, mixed)
}
