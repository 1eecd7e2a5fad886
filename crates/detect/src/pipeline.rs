//! Running a chunk through the batcher: the chunk is decoded and letterboxed on the calling
//! thread, its frames go to the batcher's detectors as they are ready (decode and inference
//! overlap), and buffers come back with the results, so no frame is copied twice.

use crate::Batcher;
use osprey_core::{Detection, DetectionData, FrameDetections, Result};
use osprey_media::{decode_frames, Demuxed, Letterbox, Sampling};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub sampling: Sampling,
    pub decode_threads: usize,
}

/// Called with (frames analysed, frames to analyse) as work progresses.
pub type Progress<'a> = &'a (dyn Fn(usize, usize) + Sync);

/// Detects objects in an MP4 chunk held in memory. Several chunks may be analysed at once on
/// one batcher, each from its own thread; their frames then share batches.
pub fn analyse(bytes: &[u8], options: Options, batcher: &Batcher, progress: Progress<'_>) -> Result<DetectionData> {
    let video = Demuxed::parse(bytes)?;
    let total = options.sampling.targets(&video).len();
    let mut queue = batcher.chunk(total, progress);
    let mut letterbox = Letterbox::new(batcher.input_size(), batcher.normalize());
    decode_frames(&video, bytes, options.sampling, options.decode_threads, |frame| {
        let mut input = queue.buffer()?;
        letterbox.fill(frame.frame, frame.pts_ms, &mut input)?;
        queue.submit(input)
    })?;
    let mut frames = queue.finish()?;
    frames.sort_by_key(|(pts, _)| *pts);
    Ok(assemble(batcher.model_name().to_string(), &video, frames))
}

fn assemble(model: String, video: &Demuxed, frames: Vec<(i64, Vec<Detection>)>) -> DetectionData {
    let mut object_count: BTreeMap<String, u32> = BTreeMap::new();
    for (_, detections) in &frames {
        let mut in_frame: BTreeMap<&str, u32> = BTreeMap::new();
        for d in detections {
            *in_frame.entry(&d.label).or_default() += 1;
        }
        for (label, n) in in_frame {
            let max = object_count.entry(label.to_string()).or_default();
            *max = (*max).max(n);
        }
    }
    DetectionData {
        model,
        width: video.width,
        height: video.height,
        frames_analyzed: frames.len(),
        object_count,
        frames: frames.into_iter().map(|(pts_ms, detections)| FrameDetections { pts_ms, detections }).collect(),
        tracks: Vec::new(),
    }
}
