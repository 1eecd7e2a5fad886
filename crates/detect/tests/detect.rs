//! Detection on real video: the shipped model on the shipped sample and clips cut from it.

use osprey_core::{DetectionData, ErrorKind};
use osprey_detect::{analyse, batcher_from_config, detectors_from_config, iou, Batcher, Config, Options};
use osprey_media::Sampling;
use osprey_testkit::{ffmpeg, reference_python, repo_root};
use std::path::PathBuf;
use std::sync::OnceLock;

fn sample() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| std::fs::read(repo_root().join("samples/vtest.mp4")).unwrap())
}

fn config() -> Config {
    Config { model: "nanodet-416".into(), workers: 2, threads: 1, ..Config::default() }
}

fn run(bytes: &[u8], sampling: Sampling) -> osprey_core::Result<DetectionData> {
    run_on(&batcher_from_config(&config())?, bytes, sampling)
}

fn run_on(batcher: &Batcher, bytes: &[u8], sampling: Sampling) -> osprey_core::Result<DetectionData> {
    analyse(bytes, &Options { sampling, decode_threads: 1, ..Options::default() }, batcher, &|_, _| {})
}

/// A clip made by ffmpeg from the sample (or a synthetic source), read back as bytes.
fn clip(name: &str, args: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out: PathBuf = dir.path().join(name);
    ffmpeg(args, &out);
    std::fs::read(out).unwrap()
}

fn sample_path() -> String {
    repo_root().join("samples/vtest.mp4").display().to_string()
}

#[test]
fn people_are_found_where_people_walk() {
    let data = run(sample(), Sampling::Fps(0.5)).unwrap();
    assert_eq!((data.width, data.height), (768, 576));
    assert_eq!(data.model, "nanodet-416");
    assert_eq!((data.model_version.as_str(), &data.model_sha256[..12]), ("1", "fe4ea6f8afdc"));
    assert_eq!(data.frames_analyzed, 40, "79.5 s at 0.5 fps");
    let with_people =
        data.frames.iter().filter(|f| f.detections.iter().any(|d| d.label == "person" && d.score >= 0.5)).count();
    assert!(with_people >= 38, "people found in only {with_people} of 40 frames of a busy walkway");
    assert!(data.object_count["person"] >= 5, "{:?}", data.object_count);
    for frame in &data.frames {
        for d in &frame.detections {
            let [x1, y1, x2, y2] = d.bbox;
            assert!(0.0 <= x1 && x1 < x2 && x2 <= 768.0 && 0.0 <= y1 && y1 < y2 && y2 <= 576.0, "{d:?}");
            assert!(d.score >= 0.5 && d.score <= 1.0);
        }
    }
    let times: Vec<i64> = data.frames.iter().map(|f| f.pts_ms).collect();
    assert!(times.windows(2).all(|w| w[1] - w[0] == 2000), "frames every 2 s in order: {times:?}");
}

#[test]
fn nothing_is_found_on_a_blank_clip() {
    let bytes = clip(
        "blank.mp4",
        &["-f", "lavfi", "-i", "color=c=gray:s=640x360:r=10", "-t", "3", "-c:v", "libx264", "-pix_fmt", "yuv420p"],
    );
    let data = run(&bytes, Sampling::All).unwrap();
    assert_eq!(data.frames_analyzed, 30);
    assert!(data.frames.iter().all(|f| f.detections.is_empty()), "{:?}", data.object_count);
}

#[test]
fn results_are_identical_between_runs_and_worker_counts() {
    let bytes = clip("cut.mp4", &["-ss", "20", "-t", "4", "-i", &sample_path(), "-c", "copy"]);
    let first = run(&bytes, Sampling::All).unwrap();
    let second = run(&bytes, Sampling::All).unwrap();
    assert_eq!(first, second);
    let one = batcher_from_config(&Config { workers: 1, ..config() }).unwrap();
    let single = analyse(
        &bytes,
        &Options { sampling: Sampling::All, decode_threads: 2, ..Options::default() },
        &one,
        &|_, _| {},
    )
    .unwrap();
    assert_eq!(first, single, "worker and decode thread counts change nothing");
}

#[test]
fn fragmented_mp4_gives_the_same_detections() {
    let progressive = clip("p.mp4", &["-ss", "30", "-t", "5", "-i", &sample_path(), "-c", "copy"]);
    let fragmented = clip(
        "f.mp4",
        &[
            "-ss",
            "30",
            "-t",
            "5",
            "-i",
            &sample_path(),
            "-c",
            "copy",
            "-movflags",
            "frag_keyframe+empty_moov+default_base_moof",
        ],
    );
    assert!(osprey_media::Demuxed::parse(&fragmented).unwrap().fragmented);
    let a = run(&progressive, Sampling::EveryNth(5)).unwrap();
    let b = run(&fragmented, Sampling::EveryNth(5)).unwrap();
    assert!(a.frames_analyzed >= 10, "{}", a.frames_analyzed);
    assert_eq!(a, b, "same frames, same detections");
}

#[test]
fn sampling_selects_the_frames_asked_for() {
    let bytes = clip("s.mp4", &["-ss", "10", "-t", "6", "-i", &sample_path(), "-c", "copy"]);
    // A stream copy cut starts at the keyframe before the cut: about 6 s at 10 fps.
    let all = run(&bytes, Sampling::All).unwrap();
    let n = all.frames_analyzed;
    assert!((60..=85).contains(&n), "{n}");
    assert_eq!(n, osprey_media::Demuxed::parse(&bytes).unwrap().samples.len(), "every frame in the file");
    assert!(all.frames.windows(2).all(|w| w[1].pts_ms > w[0].pts_ms), "in presentation order");
    assert_eq!(run(&bytes, Sampling::EveryNth(10)).unwrap().frames_analyzed, n.div_ceil(10));
    let two_fps = run(&bytes, Sampling::Fps(2.0)).unwrap();
    assert_eq!(two_fps.frames_analyzed, n.div_ceil(5), "2 fps of 10 fps is every 5th frame");
    assert!(two_fps.frames.windows(2).all(|w| w[1].pts_ms - w[0].pts_ms == 500));
    let keyframes = run(&bytes, Sampling::Keyframes).unwrap();
    assert_eq!(keyframes.frames_analyzed, n.div_ceil(25), "a keyframe every 25 frames");
    assert!(keyframes.frames.iter().all(|f| f.pts_ms % 2500 == keyframes.frames[0].pts_ms % 2500));
}

#[test]
fn corrupt_and_truncated_input_gives_errors_that_say_where() {
    let bytes = clip("t.mp4", &["-ss", "5", "-t", "3", "-i", &sample_path(), "-c", "copy"]);
    // moov first (faststart), so cutting the tail truncates mdat.
    let faststart = clip("fs.mp4", &["-i", &sample_path(), "-t", "3", "-c", "copy", "-movflags", "+faststart"]);
    let truncated = &faststart[..faststart.len() * 2 / 3];
    let err = run(truncated, Sampling::All).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("mp4: box 'mdat' at offset") && err.to_string().contains("truncated"), "{err}");

    for (what, input) in [
        ("empty", Vec::new()),
        ("text", b"definitely not a video file".to_vec()),
        ("first half", bytes[..bytes.len() / 2].to_vec()),
        ("header only", bytes[..64].to_vec()),
    ] {
        let err = run(&input, Sampling::All).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{what}: {err}");
        assert!(err.to_string().starts_with("mp4:"), "{what}: {err}");
    }

    // Flipped bytes anywhere: an error or frames, never a panic (demux and decode are where
    // hostile bytes go; inference only ever sees decoded pixels).
    let mut state = 0x2545F4914F6CDD1Du64;
    for _ in 0..60 {
        let damaged = osprey_testkit::flip_bytes(&bytes, 8, bytes.len(), &mut state);
        if let Ok(video) = osprey_media::Demuxed::parse(&damaged) {
            let _ = osprey_media::decode_frames(&video, &damaged, Sampling::All, 1, |_| Ok(()));
        }
    }
}

fn reference(args: &[&str]) -> Option<Vec<serde_json::Value>> {
    let python = reference_python()?;
    let out = std::process::Command::new(python)
        .arg(repo_root().join("scripts/reference/nanodet.py"))
        .arg(repo_root().join("models/nanodet-416/model.onnx"))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Some(serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap().as_array().unwrap().clone())
}

fn reference_boxes(frame: &serde_json::Value) -> Vec<(usize, f32, [f32; 4])> {
    frame["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let b: Vec<f32> = t["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
            (t["class_id"].as_u64().unwrap() as usize, t["score"].as_f64().unwrap() as f32, [b[0], b[1], b[2], b[3]])
        })
        .collect()
}

/// Best IoU of `d` with a same-class box of `others`.
fn best_iou(d: &osprey_core::Detection, others: &[(usize, f32, [f32; 4])]) -> f32 {
    others.iter().filter(|o| o.0 == d.class_id).map(|o| iou(&d.bbox, &o.2)).fold(0.0, f32::max)
}

/// onnxruntime in Python, given Osprey's own input tensors, finds exactly the same objects: the
/// model run, box decoding and NMS agree, with nothing but float rounding between them.
#[test]
fn inference_and_decoding_match_python_onnxruntime() {
    let every = 40usize;
    let video = osprey_media::Demuxed::parse(sample()).unwrap();
    let mut detector = detectors_from_config(&Config { workers: 1, ..config() }).unwrap().remove(0);
    let mut letterbox = osprey_media::Letterbox::new(detector.input_size(), detector.normalize());
    let (mut inputs, mut meta) = (Vec::new(), Vec::new());
    osprey_media::decode_frames(&video, sample(), Sampling::EveryNth(every as u32), 1, |f| {
        let mut input = osprey_media::ModelInput::new(detector.input_size());
        letterbox.fill(f.frame, f.pts_ms, &mut input)?;
        meta.push(serde_json::json!({"frame": f.pts_ms / 100, "scale": input.scale, "width": input.source_width, "height": input.source_height}));
        inputs.push(input);
        Ok(())
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (tensors, meta_path) = (dir.path().join("inputs.f32"), dir.path().join("meta.json"));
    let raw: Vec<u8> = inputs.iter().flat_map(|i| i.data.iter().flat_map(|v| v.to_le_bytes())).collect();
    std::fs::write(&tensors, raw).unwrap();
    std::fs::write(&meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();
    let Some(reference) =
        reference(&["-", "--tensors", tensors.to_str().unwrap(), "--meta", meta_path.to_str().unwrap()])
    else {
        return;
    };
    let (mut matched, mut worst) = (0, 1.0f32);
    for (input, theirs) in inputs.iter().zip(&reference) {
        // The detector also keeps lower scores for tracking; the reference reports from the threshold.
        let threshold = detector.score_threshold();
        let mine: Vec<_> = detector.detect(input).unwrap().into_iter().filter(|d| d.score >= threshold).collect();
        let theirs = reference_boxes(theirs);
        assert_eq!(mine.len(), theirs.len(), "frame at {} ms: {mine:?} vs {theirs:?}", input.pts_ms);
        for d in &mine {
            let best = best_iou(d, &theirs);
            let score = theirs.iter().filter(|t| t.0 == d.class_id).map(|t| (t.1 - d.score).abs()).fold(1.0, f32::min);
            assert!(best >= 0.99 && score < 1e-3, "{d:?}: IoU {best}, score difference {score}");
            worst = worst.min(best);
            matched += 1;
        }
    }
    eprintln!("{matched} detections identical to the Python reference (worst IoU {worst:.4})");
    assert!(matched > 50);
}

/// Against a Python consumer that decodes and resizes with OpenCV. Its resize (cv2 INTER_LINEAR
/// on a full-size BGR frame) differs from Osprey's (swscale bilinear straight from YUV), which
/// moves scores by a few hundredths. Both run with a low threshold; what either finds with
/// confidence, the other must find in nearly the same place.
#[test]
fn detections_agree_with_an_opencv_python_consumer() {
    let (every, low, confident) = (40, 0.3f32, 0.6f32);
    let frames: Vec<String> = (0..795).step_by(every).map(|f| f.to_string()).collect();
    let args = [&sample_path(), "--frames", &frames.join(","), "--threshold", "0.3"];
    let Some(reference) = reference(&args) else { return };
    let batcher = batcher_from_config(&Config { score_threshold: Some(low), ..config() }).unwrap();
    let ours = run_on(&batcher, sample(), Sampling::EveryNth(every as u32)).unwrap();
    assert_eq!(ours.frames.len(), reference.len());
    let (mut compared, mut flips, mut ious, mut score_gaps) = (0, 0, Vec::new(), Vec::new());
    for (mine, theirs) in ours.frames.iter().zip(&reference) {
        assert_eq!(mine.pts_ms, theirs["frame"].as_i64().unwrap() * 100, "same frame");
        let theirs = reference_boxes(theirs);
        for d in mine.detections.iter().filter(|d| d.score >= confident) {
            let best = theirs.iter().max_by(|a, b| iou(&d.bbox, &a.2).total_cmp(&iou(&d.bbox, &b.2)));
            let (class_id, score, bbox) =
                best.unwrap_or_else(|| panic!("at {} ms Osprey found {d:?}; the OpenCV consumer nothing", mine.pts_ms));
            let overlap = iou(&d.bbox, bbox);
            assert!(
                overlap >= 0.8,
                "at {} ms Osprey found {d:?}; the OpenCV consumer's best IoU is {overlap}",
                mine.pts_ms
            );
            flips += (*class_id != d.class_id) as usize;
            ious.push(overlap);
            score_gaps.push((score - d.score).abs());
            compared += 1;
        }
        for (class_id, score, bbox) in theirs.iter().filter(|t| t.1 >= confident) {
            let found = mine.detections.iter().any(|d| iou(&d.bbox, bbox) >= 0.8);
            assert!(
                found,
                "at {} ms the OpenCV consumer found class {class_id} {score} {bbox:?}; Osprey did not",
                mine.pts_ms
            );
        }
    }
    // An object on the edge between two classes (a parked van: car or truck) may flip.
    assert!(flips * 20 <= compared, "{flips} of {compared} labels differ");
    ious.sort_by(f32::total_cmp);
    score_gaps.sort_by(f32::total_cmp);
    eprintln!(
        "{compared} confident detections compared, {flips} labels differ; IoU median {:.3} min {:.3}; score difference median {:.3} max {:.3}",
        ious[ious.len() / 2], ious[0], score_gaps[score_gaps.len() / 2], score_gaps[score_gaps.len() - 1]
    );
    assert!(compared > 50);
}

#[test]
fn device_selection_and_fallback() {
    use osprey_detect::Device;
    assert_eq!("cuda:1".parse::<Device>().unwrap(), Device::Cuda(1));
    assert_eq!("cuda".parse::<Device>().unwrap(), Device::Cuda(0));
    assert!("gpu".parse::<Device>().unwrap_err().to_string().contains("detect.device"));
    // The library scripts/setup fetches is ONNX Runtime's CPU build: asking for CUDA says what
    // is missing; `auto` runs on the CPU and finds exactly what `cpu` finds.
    let err =
        detectors_from_config(&Config { device: "cuda".parse().unwrap(), ..config() }).err().expect("no CUDA here");
    assert!(err.to_string().contains("no CUDA execution provider"), "{err}");
    let bytes = clip("device.mp4", &["-t", "3", "-i", &sample_path(), "-c", "copy"]);
    let on = |device: &str| {
        let batcher = batcher_from_config(&Config { device: device.parse().unwrap(), ..config() }).unwrap();
        run_on(&batcher, &bytes, Sampling::Fps(2.0)).unwrap()
    };
    assert_eq!(on("auto").frames, on("cpu").frames);
}

/// Frames of three chunks analysed at once share batches, and each chunk gets back exactly what
/// it gets analysed alone and unbatched: the same frames, in order, the same objects. Batched
/// convolutions round differently in the last bits, hence the tolerance on scores and boxes.
#[test]
fn batches_across_chunks_give_each_chunk_its_unbatched_result() {
    let starts = ["5", "25", "45"];
    let chunks: Vec<Vec<u8>> = starts
        .iter()
        .map(|ss| clip(&format!("b{ss}.mp4"), &["-ss", ss, "-t", "6", "-i", &sample_path(), "-c", "copy"]))
        .collect();
    let sampling = Sampling::EveryNth(2);
    let alone = batcher_from_config(&Config { workers: 1, max_batch: Some(1), ..config() }).unwrap();
    let expected: Vec<DetectionData> = chunks.iter().map(|c| run_on(&alone, c, sampling).unwrap()).collect();
    assert_eq!(alone.stats().largest, 1);

    let batched = batcher_from_config(&Config {
        workers: 1,
        max_batch: Some(8),
        max_wait: std::time::Duration::from_millis(50),
        ..config()
    })
    .unwrap();
    assert_eq!(batched.max_batch(), 8, "the shipped model takes batches");
    let got: Vec<DetectionData> = std::thread::scope(|s| {
        let runs: Vec<_> = chunks.iter().map(|c| s.spawn(|| run_on(&batched, c, sampling).unwrap())).collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let stats = batched.stats();
    eprintln!("{stats:?}");
    assert!(stats.largest > 1 && stats.mixed > 0, "frames of different chunks shared no batch: {stats:?}");
    assert_eq!(stats.frames as usize, expected.iter().map(|d| d.frames_analyzed).sum::<usize>());

    let mut compared = 0;
    for (want, got) in expected.iter().zip(&got) {
        assert_eq!((got.frames_analyzed, &got.object_count), (want.frames_analyzed, &want.object_count));
        for (w, g) in want.frames.iter().zip(&got.frames) {
            assert_eq!(w.pts_ms, g.pts_ms, "frames in order");
            assert_eq!(
                w.detections.len(),
                g.detections.len(),
                "at {} ms: {:?} vs {:?}",
                w.pts_ms,
                w.detections,
                g.detections
            );
            for (a, b) in w.detections.iter().zip(&g.detections) {
                let off = a.bbox.iter().zip(&b.bbox).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
                assert!(
                    a.label == b.label && (a.score - b.score).abs() < 1e-4 && off < 0.01,
                    "at {} ms: {a:?} vs {b:?}",
                    w.pts_ms
                );
                compared += 1;
            }
        }
    }
    assert!(compared > 100, "{compared} detections compared");
}

/// On a GPU node: the same chunk finds the same objects on CUDA as on the CPU, batched on the GPU.
/// Run with `OSPREY_TEST_CUDA_ORT=/path/to/onnxruntime-gpu/libonnxruntime.so cargo test -p
/// osprey-detect --test detect -- --ignored cuda`. The CPU side then runs on the same library.
#[test]
#[ignore = "needs an NVIDIA GPU and the onnxruntime-gpu library (OSPREY_TEST_CUDA_ORT)"]
fn cuda_finds_what_the_cpu_finds() {
    let library = PathBuf::from(
        std::env::var("OSPREY_TEST_CUDA_ORT").expect("OSPREY_TEST_CUDA_ORT names the onnxruntime-gpu library"),
    );
    let on = |device: &str, max_batch: usize| {
        let config = Config {
            device: device.parse().unwrap(),
            onnxruntime: Some(library.clone()),
            max_batch: Some(max_batch),
            ..config()
        };
        let batcher = batcher_from_config(&config).unwrap();
        run_on(&batcher, sample(), Sampling::EveryNth(8)).unwrap()
    };
    let (cpu, gpu) = (on("cpu", 1), on("cuda", 16));
    assert_eq!(cpu.frames_analyzed, gpu.frames_analyzed);
    let (mut compared, mut worst) = (0, 1.0f32);
    for (c, g) in cpu.frames.iter().zip(&gpu.frames) {
        assert_eq!(c.pts_ms, g.pts_ms);
        let theirs: Vec<(usize, f32, [f32; 4])> = g.detections.iter().map(|d| (d.class_id, d.score, d.bbox)).collect();
        // A detection right at the threshold may fall either side of it on the GPU's arithmetic.
        for d in c.detections.iter().filter(|d| d.score >= 0.55) {
            let best = best_iou(d, &theirs);
            assert!(best >= 0.95, "at {} ms the CPU found {d:?}; CUDA's best IoU is {best}", c.pts_ms);
            worst = worst.min(best);
            compared += 1;
        }
    }
    eprintln!("{compared} confident CPU detections found on CUDA (worst IoU {worst:.4})");
    assert!(compared > 100);
}
