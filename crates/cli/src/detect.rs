//! `osprey detect FILE.mp4`: the detections of one chunk, as a table or as JSON.

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use osprey_cli::Config;
use osprey_core::DetectionData;
use osprey_detect::{analyse, batcher_from_config, Options};
use osprey_media::Sampling;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// MP4 file (H.264), progressive or fragmented.
    file: PathBuf,
    /// Frames per second to analyse (overrides detect.sampling).
    #[arg(long, conflicts_with = "sampling")]
    fps: Option<f64>,
    /// Which frames to analyse: all, keyframes, every:N, or frames per second.
    #[arg(long)]
    sampling: Option<String>,
    /// Print the `data` object of docs/design.md as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args, config: Config) -> anyhow::Result<()> {
    let sampling: Sampling = match (args.fps, &args.sampling) {
        (Some(fps), _) => fps.to_string().parse()?,
        (None, Some(s)) => s.parse()?,
        (None, None) => config.detect.sampling,
    };
    let bytes = std::fs::read(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
    let batcher = batcher_from_config(&config.detect)?;
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{spinner} {pos}/{len} frames {per_sec} eta {eta}").expect("valid template"),
    );
    let progress = |done: usize, total: usize| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    };
    let options = Options { sampling, ..Options::from_config(&config.detect, "") };
    let start = Instant::now();
    let data = analyse(&bytes, &options, &batcher, &progress)
        .with_context(|| format!("cannot analyse {}", args.file.display()))?;
    bar.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&data)?);
    } else {
        print_table(&data);
        eprintln!("{} frames analysed in {:.2} s", data.frames_analyzed, start.elapsed().as_secs_f64());
    }
    Ok(())
}

fn print_table(data: &DetectionData) {
    println!(
        "model {} {} (sha256 {}…) on {}x{}, {} frames analysed",
        data.model,
        data.model_version,
        data.model_sha256.get(..12).unwrap_or(""),
        data.width,
        data.height,
        data.frames_analyzed
    );
    println!("{:>9}  {:<14} {:>5}  box (x1, y1, x2, y2)", "time", "label", "score");
    for frame in &data.frames {
        for d in &frame.detections {
            let [x1, y1, x2, y2] = d.bbox;
            println!(
                "{:>8.2}s  {:<14} {:>5.2}  ({x1:.0}, {y1:.0}, {x2:.0}, {y2:.0})",
                frame.pts_ms as f64 / 1000.0,
                d.label,
                d.score
            );
        }
    }
    let list = |counts: &std::collections::BTreeMap<String, u32>| match counts.is_empty() {
        true => "nothing detected".to_string(),
        false => counts.iter().map(|(l, n)| format!("{l}: {n}")).collect::<Vec<_>>().join(", "),
    };
    println!("most in one frame: {}", list(&data.max_in_frame));
    println!("distinct objects (tracks): {}", list(&data.object_count));
}
