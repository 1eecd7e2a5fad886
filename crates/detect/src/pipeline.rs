//! Running a detector over a chunk: decoding and letterboxing on one thread, inference on one
//! thread per detector, frames passed in reusable buffers so no frame is copied twice.

use crate::Detector;
use osprey_core::{Detection, DetectionData, Error, FrameDetections, Result};
use osprey_media::{decode_frames, Demuxed, Letterbox, ModelInput, Sampling};
use std::collections::BTreeMap;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Mutex;

#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub sampling: Sampling,
    pub decode_threads: usize,
}

/// Called with (frames analysed, frames to analyse) as work progresses.
pub type Progress<'a> = &'a (dyn Fn(usize, usize) + Sync);

/// Detects objects in an MP4 chunk held in memory.
pub fn analyse(
    bytes: &[u8],
    options: Options,
    detectors: &mut [Box<dyn Detector>],
    progress: Progress<'_>,
) -> Result<DetectionData> {
    let first = detectors.first().ok_or_else(|| Error::internal("no detector given"))?;
    let (size, norm, model) = (first.input_size(), first.normalize(), first.model_name().to_string());
    let video = Demuxed::parse(bytes)?;
    let total = options.sampling.targets(&video).len();

    // Buffers circulate: decoder fills a free one, a detector empties it and hands it back.
    let buffers = detectors.len() + 2;
    let (free_tx, free_rx) = sync_channel::<ModelInput>(buffers);
    for _ in 0..buffers {
        free_tx.send(ModelInput::new(size)).expect("channel has room");
    }
    let (full_tx, full_rx) = sync_channel::<ModelInput>(buffers);
    let full_rx = Mutex::new(full_rx);
    let results: Mutex<Vec<(i64, Vec<Detection>)>> = Mutex::new(Vec::with_capacity(total));
    let failure: Mutex<Option<Error>> = Mutex::new(None);

    std::thread::scope(|scope| {
        for detector in detectors.iter_mut() {
            let (full_rx, free_tx, results, failure) = (&full_rx, free_tx.clone(), &results, &failure);
            scope.spawn(move || infer(detector.as_mut(), full_rx, free_tx, results, failure, total, progress));
        }
        drop(free_tx);
        let decoded = produce(&video, bytes, options, size, norm, free_rx, full_tx);
        if let Err(e) = decoded {
            failure.lock().unwrap().get_or_insert(e);
        }
    });
    if let Some(e) = failure.into_inner().unwrap() {
        return Err(e);
    }
    let mut frames = results.into_inner().unwrap();
    frames.sort_by_key(|(pts, _)| *pts);
    Ok(assemble(model, &video, frames))
}

fn produce(
    video: &Demuxed,
    bytes: &[u8],
    options: Options,
    size: u32,
    norm: osprey_media::Normalize,
    free: Receiver<ModelInput>,
    full: SyncSender<ModelInput>,
) -> Result<()> {
    let mut letterbox = Letterbox::new(size, norm);
    decode_frames(video, bytes, options.sampling, options.decode_threads, |frame| {
        // A closed channel means the detectors stopped on an error; it is reported by them.
        let mut input = free.recv().map_err(|_| Error::internal("detectors stopped"))?;
        letterbox.fill(frame.frame, frame.pts_ms, &mut input)?;
        full.send(input).map_err(|_| Error::internal("detectors stopped"))
    })?;
    Ok(())
}

fn infer(
    detector: &mut dyn Detector,
    full: &Mutex<Receiver<ModelInput>>,
    free: SyncSender<ModelInput>,
    results: &Mutex<Vec<(i64, Vec<Detection>)>>,
    failure: &Mutex<Option<Error>>,
    total: usize,
    progress: Progress<'_>,
) {
    loop {
        let next = full.lock().unwrap().recv();
        let Ok(input) = next else { return };
        match detector.detect(&input) {
            Ok(detections) => {
                let done = {
                    let mut r = results.lock().unwrap();
                    r.push((input.pts_ms, detections));
                    r.len()
                };
                progress(done, total);
            }
            Err(e) => {
                failure.lock().unwrap().get_or_insert(e);
                return;
            }
        }
        // The decoder may be done and gone; the buffer is then simply dropped.
        free.send(input).ok();
    }
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
