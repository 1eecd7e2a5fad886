//! `osprey model check DIR`: a model directory (ONNX file and `model.toml`) checked the way a
//! worker will load it, then run on a video (the bundled sample by default), printing what it
//! found and how fast.

use anyhow::Context;
use osprey_cli::Config;
use osprey_detect::{analyse, detectors_for, Batcher, Model, Options};
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct CheckArgs {
    /// The model's directory: its ONNX file and model.toml.
    dir: PathBuf,
    /// An H.264 MP4 to run it on; default: the bundled samples/vtest.mp4.
    #[arg(long)]
    source: Option<PathBuf>,
    /// Frames per second to analyse.
    #[arg(long, default_value_t = 2.0)]
    fps: f64,
}

/// A manifest or model that does not hold together is a usage error (exit 2); running it is not.
pub enum Failure {
    Invalid(anyhow::Error),
    Run(anyhow::Error),
}

pub fn check(args: CheckArgs, config: Config) -> Result<(), Failure> {
    let model = Model::open(&args.dir).map_err(|e| Failure::Invalid(e.into()))?;
    let manifest = &model.manifest;
    println!(
        "model {} {} ({}, {} labels, input {} px), sha256 {}…, licence {}",
        manifest.name,
        manifest.version,
        manifest.family.name(),
        manifest.labels.len(),
        manifest.input.size,
        &manifest.sha256[..12],
        manifest.licence
    );
    let detect = config.detect.with_model_defaults(manifest);
    let loaded = Instant::now();
    // Building a detector checks the model's input against the manifest and decodes one frame.
    let detectors = detectors_for(&detect, &model).map_err(|e| Failure::Invalid(e.into()))?;
    println!("loaded and matches its manifest in {:.2} s", loaded.elapsed().as_secs_f64());
    run_on_video(&args, &detect, detectors).map_err(Failure::Run)
}

fn run_on_video(
    args: &CheckArgs,
    detect: &osprey_detect::Config,
    detectors: Vec<Box<dyn osprey_detect::Detector>>,
) -> anyhow::Result<()> {
    let source = match &args.source {
        Some(s) => s.clone(),
        None => {
            osprey_core::find_bundled("samples/vtest.mp4").context("the bundled sample was not found; pass --source")?
        }
    };
    let bytes = std::fs::read(&source).with_context(|| format!("cannot read {}", source.display()))?;
    let batcher = Batcher::new(detectors, detect.max_batch.unwrap_or(1), detect.max_wait)?;
    let options = Options { sampling: args.fps.to_string().parse()?, ..Options::from_config(detect, "") };
    let started = Instant::now();
    let data = analyse(&bytes, &options, &batcher, &|_, _| {})
        .with_context(|| format!("cannot analyse {}", source.display()))?;
    let took = started.elapsed().as_secs_f64();
    let objects: Vec<String> = data.object_count.iter().map(|(l, n)| format!("{l} x{n}")).collect();
    let boxes: usize = data.frames.iter().map(|f| f.detections.len()).sum();
    println!(
        "{}: {} frames at {} fps, {boxes} boxes, objects: {}",
        source.display(),
        data.frames_analyzed,
        args.fps,
        if objects.is_empty() { "none".to_string() } else { objects.join(", ") }
    );
    println!(
        "{:.1} ms a frame (decode, detect and track; {} detector threads)",
        took * 1000.0 / data.frames_analyzed.max(1) as f64,
        detect.workers
    );
    Ok(())
}
