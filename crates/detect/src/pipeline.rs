//! Running a chunk through the batcher: the chunk is decoded and letterboxed on the calling
//! thread, its frames go to the batcher's detectors as they are ready (decode and inference
//! overlap), and buffers come back with the results, so no frame is copied twice. The frames'
//! detections are then tracked, the tracks placed in the camera's zones, and each track gets a
//! thumbnail cut from the model input of its best frame.

use crate::batch::Analysed;
use crate::{zone, Batcher, ByteTrack, Config, ModelId, Tracker, TrackingConfig, Zone};
use base64::Engine;
use osprey_core::{DetectionData, Error, FrameDetections, Result, Track};
use osprey_media::{decode_frames, Crop, Demuxed, Letterbox, Sampling};
use std::collections::BTreeMap;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct Options {
    pub sampling: Sampling,
    pub decode_threads: usize,
    pub tracking: TrackingConfig,
    /// The camera's zones.
    pub zones: Vec<Zone>,
    /// When the analysis must give up: checked before each frame, so a chunk that would take
    /// longer fails with an error instead of holding its thread.
    pub deadline: Option<Instant>,
}

impl Default for Options {
    fn default() -> Self {
        Options::from_config(&Config::default(), "")
    }
}

impl Options {
    /// What `[detect]` asks for, with the zones of `device`.
    pub fn from_config(config: &Config, device: &str) -> Options {
        Options {
            sampling: config.sampling,
            decode_threads: config.decode_threads,
            tracking: config.tracking,
            zones: config.zones_of(device),
            deadline: None,
        }
    }
}

/// Called with (frames analysed, frames to analyse) as work progresses.
pub type Progress<'a> = &'a (dyn Fn(usize, usize) + Sync);

/// Detects and tracks objects in an MP4 chunk held in memory. Several chunks may be analysed at
/// once on one batcher, each from its own thread; their frames then share batches.
pub fn analyse(bytes: &[u8], options: &Options, batcher: &Batcher, progress: Progress<'_>) -> Result<DetectionData> {
    let video = Demuxed::parse(bytes)?;
    let total = options.sampling.targets(&video).len();
    let mut queue = batcher.chunk(total, progress);
    let threshold = batcher.score_threshold();
    if options.tracking.enabled {
        queue = queue.with_crops(threshold);
    }
    let mut letterbox = Letterbox::new(batcher.input_size(), batcher.normalize());
    decode_frames(&video, bytes, options.sampling, options.decode_threads, |frame| {
        if options.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Error::unavailable(format!(
                "analysis passed its deadline at {} ms of the chunk",
                frame.pts_ms
            )));
        }
        let mut input = queue.buffer()?;
        letterbox.fill(frame.frame, frame.pts_ms, &mut input)?;
        queue.submit(input)
    })?;
    let mut frames = queue.finish()?;
    frames.sort_by_key(|f| f.pts_ms);
    let tracks = match options.tracking.enabled {
        true => track(&frames, options, threshold, video.width, video.height),
        false => Vec::new(),
    };
    Ok(assemble(batcher.model(), &video, frames, tracks, options, threshold))
}

/// Tracks, zones and thumbnails of a chunk's analysed frames (in time order).
fn track(frames: &[Analysed], options: &Options, threshold: f32, width: u32, height: u32) -> Vec<Track> {
    let mut tracker: Box<dyn Tracker> = Box::new(ByteTrack::new(options.tracking, threshold));
    for frame in frames {
        tracker.update(frame.pts_ms, &frame.detections);
    }
    let mut tracks = tracker.finish();
    zone::visit(&mut tracks, &options.zones, width, height);
    for track in &mut tracks {
        track.thumbnail = best_crop(frames, track).and_then(jpeg);
    }
    tracks
}

/// The crop of the detection a track was seen best in.
fn best_crop<'a>(frames: &'a [Analysed], track: &Track) -> Option<&'a Crop> {
    let best = track.boxes.iter().find(|b| b.pts_ms == track.best_ms)?;
    let frame = frames.iter().find(|f| f.pts_ms == track.best_ms)?;
    let index = frame.detections.iter().position(|d| d.bbox == best.bbox)?;
    frame.crops.get(index)?.as_ref()
}

/// Quality of thumbnails: small files that still show who it was.
const THUMBNAIL_QUALITY: u8 = 80;

fn jpeg(crop: &Crop) -> Option<String> {
    let (w, h) = (u16::try_from(crop.width).ok()?, u16::try_from(crop.height).ok()?);
    let mut out = Vec::new();
    let encoder = jpeg_encoder::Encoder::new(&mut out, THUMBNAIL_QUALITY);
    match encoder.encode(&crop.rgb, w, h, jpeg_encoder::ColorType::Rgb) {
        Ok(()) => Some(base64::engine::general_purpose::STANDARD.encode(out)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot encode a thumbnail");
            None
        }
    }
}

fn assemble(
    model: &ModelId,
    video: &Demuxed,
    frames: Vec<Analysed>,
    tracks: Vec<Track>,
    options: &Options,
    threshold: f32,
) -> DetectionData {
    let frames: Vec<FrameDetections> = frames
        .into_iter()
        .map(|f| FrameDetections {
            pts_ms: f.pts_ms,
            detections: f.detections.into_iter().filter(|d| d.score >= threshold).collect(),
        })
        .collect();
    let max_in_frame = most_in_one_frame(&frames);
    let object_count = match options.tracking.enabled {
        true => tracks.iter().fold(BTreeMap::new(), |mut counts, t| {
            *counts.entry(t.label.clone()).or_default() += 1;
            counts
        }),
        false => max_in_frame.clone(),
    };
    DetectionData {
        model: model.name.clone(),
        model_version: model.version.clone(),
        model_sha256: model.sha256.clone(),
        width: video.width,
        height: video.height,
        frames_analyzed: frames.len(),
        object_count,
        max_in_frame,
        frames,
        tracks,
    }
}

fn most_in_one_frame(frames: &[FrameDetections]) -> BTreeMap<String, u32> {
    let mut most: BTreeMap<String, u32> = BTreeMap::new();
    for frame in frames {
        let mut in_frame: BTreeMap<&str, u32> = BTreeMap::new();
        for d in &frame.detections {
            *in_frame.entry(&d.label).or_default() += 1;
        }
        for (label, n) in in_frame {
            let max = most.entry(label.to_string()).or_default();
            *max = (*max).max(n);
        }
    }
    most
}
