//! Batching across chunks. A [`Batcher`] owns the detectors, each on its own thread. Every chunk
//! in flight puts its letterboxed frames on one queue; a detector thread takes the first frame
//! waiting, then whatever else arrives within `max_wait`, up to `max_batch` frames, runs them in
//! one call and hands each result back to the chunk it came from, with the frame's buffer.

use crate::{Detector, ModelId, Progress};
use osprey_core::{Detection, Error, Result};
use osprey_media::{Crop, ModelInput, Normalize};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A frame on its way to a detector, and where its result goes.
struct Job {
    input: ModelInput,
    chunk: u64,
    reply: Sender<Done>,
}

/// A frame's result, with its buffer to fill again.
struct Done {
    input: ModelInput,
    result: Result<Vec<Detection>>,
}

/// What a batcher has run since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    pub batches: u64,
    pub frames: u64,
    /// Batches that held frames of more than one chunk.
    pub mixed: u64,
    pub largest: usize,
}

/// A pool of detectors fed with frames from every chunk in flight.
pub struct Batcher {
    jobs: Option<SyncSender<Job>>,
    threads: Vec<JoinHandle<()>>,
    model: ModelId,
    score_threshold: f32,
    input_size: u32,
    normalize: Normalize,
    max_batch: usize,
    workers: usize,
    next_chunk: AtomicU64,
    stats: Arc<Mutex<BatchStats>>,
}

impl Batcher {
    /// Starts one inference thread per detector. Batches are capped by what the model takes.
    pub fn new(detectors: Vec<Box<dyn Detector>>, max_batch: usize, max_wait: Duration) -> Result<Batcher> {
        let first = detectors.first().ok_or_else(|| Error::internal("no detector given"))?;
        let (model, input_size, normalize) = (first.model().clone(), first.input_size(), first.normalize());
        let score_threshold = first.score_threshold();
        let model_max = detectors.iter().map(|d| d.max_batch()).min().unwrap_or(1).max(1);
        if max_batch > model_max {
            tracing::info!(asked = max_batch, model_max, "detector: the model takes at most {model_max} frames a call");
        }
        let max_batch = max_batch.clamp(1, model_max);
        let workers = detectors.len();
        let (jobs, queue) = mpsc::sync_channel::<Job>(workers * max_batch * 2);
        let queue = Arc::new(Mutex::new(queue));
        let stats = Arc::new(Mutex::new(BatchStats::default()));
        let threads = detectors
            .into_iter()
            .enumerate()
            .map(|(i, detector)| {
                let (queue, stats) = (queue.clone(), stats.clone());
                std::thread::Builder::new()
                    .name(format!("osprey-infer-{i}"))
                    .spawn(move || serve(detector, &queue, max_batch, max_wait, &stats))
                    .map_err(|e| Error::internal("cannot start an inference thread").with_source(e))
            })
            .collect::<Result<Vec<_>>>()?;
        tracing::debug!(workers, max_batch, max_wait_ms = max_wait.as_millis() as u64, "batcher started");
        Ok(Batcher {
            jobs: Some(jobs),
            threads,
            model,
            score_threshold,
            input_size,
            normalize,
            max_batch,
            workers,
            next_chunk: AtomicU64::new(0),
            stats,
        })
    }

    /// The model its detectors run.
    pub fn model(&self) -> &ModelId {
        &self.model
    }

    /// Least score reported.
    pub fn score_threshold(&self) -> f32 {
        self.score_threshold
    }

    /// Side of the models' square input, in pixels.
    pub fn input_size(&self) -> u32 {
        self.input_size
    }

    pub fn normalize(&self) -> Normalize {
        self.normalize
    }

    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// Detectors in the pool.
    pub fn workers(&self) -> usize {
        self.workers
    }

    pub fn stats(&self) -> BatchStats {
        *self.stats.lock().unwrap()
    }

    /// A queue for one chunk's frames; `total` frames are expected.
    pub(crate) fn chunk<'a>(&'a self, total: usize, progress: Progress<'a>) -> ChunkQueue<'a> {
        let (reply, replies) = mpsc::channel();
        ChunkQueue {
            batcher: self,
            id: self.next_chunk.fetch_add(1, Ordering::Relaxed),
            reply,
            replies,
            // Enough frames in flight to fill a batch alone, and to decode while one runs.
            limit: self.max_batch + self.workers + 1,
            buffers: 0,
            in_flight: 0,
            results: Vec::with_capacity(total),
            total,
            progress,
            crop_above: f32::INFINITY,
        }
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.jobs.take();
        for thread in self.threads.drain(..) {
            thread.join().ok();
        }
    }
}

/// One chunk's side of the batcher: buffers to fill, frames in flight, results come back.
pub(crate) struct ChunkQueue<'a> {
    batcher: &'a Batcher,
    id: u64,
    reply: Sender<Done>,
    replies: Receiver<Done>,
    limit: usize,
    buffers: usize,
    in_flight: usize,
    results: Vec<Analysed>,
    total: usize,
    progress: Progress<'a>,
    /// Detections scoring at least this get a crop of their picture, taken before the buffer is
    /// filled again.
    crop_above: f32,
}

/// One analysed frame: its detections and, for those scoring enough, their pictures.
pub(crate) struct Analysed {
    pub pts_ms: i64,
    pub detections: Vec<Detection>,
    pub crops: Vec<Option<Crop>>,
}

/// Margin around an object's box in its crop, of the box's size on each side.
const CROP_MARGIN: f32 = 0.1;

impl ChunkQueue<'_> {
    /// Keeps a crop of each detection scoring at least `above`.
    pub fn with_crops(mut self, above: f32) -> Self {
        self.crop_above = above;
        self
    }

    /// A buffer to fill: a new one while under the limit, else the next one a detector hands back.
    pub fn buffer(&mut self) -> Result<ModelInput> {
        if self.buffers < self.limit {
            self.buffers += 1;
            return Ok(ModelInput::new(self.batcher.input_size));
        }
        self.next_result()
    }

    pub fn submit(&mut self, input: ModelInput) -> Result<()> {
        let job = Job { input, chunk: self.id, reply: self.reply.clone() };
        let jobs = self.batcher.jobs.as_ref().expect("open until dropped");
        jobs.send(job).map_err(|_| Error::internal("the inference threads stopped"))?;
        self.in_flight += 1;
        Ok(())
    }

    /// Waits for every frame in flight; results in the order they came back.
    pub fn finish(mut self) -> Result<Vec<Analysed>> {
        while self.in_flight > 0 {
            self.next_result()?;
        }
        Ok(self.results)
    }

    fn next_result(&mut self) -> Result<ModelInput> {
        let done = self.replies.recv().map_err(|_| Error::internal("the inference threads stopped"))?;
        self.in_flight -= 1;
        let detections = done.result?;
        let norm = self.batcher.normalize;
        let crops = detections
            .iter()
            .map(|d| (d.score >= self.crop_above).then(|| done.input.crop(d.bbox, CROP_MARGIN, norm)).flatten())
            .collect();
        self.results.push(Analysed { pts_ms: done.input.pts_ms, detections, crops });
        (self.progress)(self.results.len(), self.total);
        Ok(done.input)
    }
}

fn serve(
    mut detector: Box<dyn Detector>,
    queue: &Mutex<Receiver<Job>>,
    max_batch: usize,
    max_wait: Duration,
    stats: &Mutex<BatchStats>,
) {
    let mut batch = Vec::with_capacity(max_batch);
    while gather(queue, max_batch, max_wait, &mut batch) {
        record(stats, &batch);
        let inputs: Vec<&ModelInput> = batch.iter().map(|job| &job.input).collect();
        let outcome = catch_unwind(AssertUnwindSafe(|| detector.detect_batch(&inputs)))
            .unwrap_or_else(|_| Err(Error::internal("the detector panicked")))
            .and_then(|results| match results.len() == inputs.len() {
                true => Ok(results),
                false => Err(Error::internal(format!(
                    "the detector gave {} results for {} frames",
                    results.len(),
                    inputs.len()
                ))),
            });
        drop(inputs);
        // A chunk that has stopped waiting has dropped its receiver; its results are not needed.
        match outcome {
            Ok(results) => {
                for (job, result) in batch.drain(..).zip(results) {
                    job.reply.send(Done { input: job.input, result: Ok(result) }).ok();
                }
            }
            Err(e) => {
                for job in batch.drain(..) {
                    let result = Err(Error::new(e.kind(), e.to_string()));
                    job.reply.send(Done { input: job.input, result }).ok();
                }
            }
        }
    }
}

/// Waits for a first frame, then takes more until the batch is full or `max_wait` has passed.
/// False when the batcher is closing.
fn gather(queue: &Mutex<Receiver<Job>>, max_batch: usize, max_wait: Duration, batch: &mut Vec<Job>) -> bool {
    let queue = queue.lock().unwrap();
    let Ok(first) = queue.recv() else { return false };
    batch.push(first);
    let deadline = Instant::now() + max_wait;
    while batch.len() < max_batch {
        let next = match queue.try_recv() {
            Ok(job) => Ok(job),
            Err(TryRecvError::Empty) => queue.recv_timeout(deadline.saturating_duration_since(Instant::now())),
            Err(TryRecvError::Disconnected) => break,
        };
        match next {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    true
}

fn record(stats: &Mutex<BatchStats>, batch: &[Job]) {
    let mixed = batch.iter().any(|job| job.chunk != batch[0].chunk);
    metrics::histogram!(crate::metrics::BATCH_FRAMES).record(batch.len() as f64);
    let mut stats = stats.lock().unwrap();
    stats.batches += 1;
    stats.frames += batch.len() as u64;
    stats.mixed += u64::from(mixed);
    stats.largest = stats.largest.max(batch.len());
}

#[cfg(test)]
mod tests {
    use super::*;
    use osprey_core::ErrorKind;

    /// Answers each frame with one detection whose score is the frame's pts, so a result shows
    /// where it came from; fails on pts < 0; records the batch sizes it was given.
    struct Echo {
        model: ModelId,
        max_batch: usize,
        seen: Arc<Mutex<Vec<usize>>>,
    }

    impl Detector for Echo {
        fn model(&self) -> &ModelId {
            &self.model
        }
        fn score_threshold(&self) -> f32 {
            0.5
        }
        fn classes(&self) -> usize {
            1
        }
        fn input_size(&self) -> u32 {
            2
        }
        fn normalize(&self) -> Normalize {
            Normalize { mean: [0.0; 3], std: [1.0; 3], bgr: false }
        }
        fn max_batch(&self) -> usize {
            self.max_batch
        }
        fn detect(&mut self, _: &ModelInput) -> Result<Vec<Detection>> {
            unreachable!("the batcher calls detect_batch")
        }
        fn detect_batch(&mut self, inputs: &[&ModelInput]) -> Result<Vec<Vec<Detection>>> {
            self.seen.lock().unwrap().push(inputs.len());
            if inputs.iter().any(|i| i.pts_ms < 0) {
                return Err(Error::invalid("negative pts"));
            }
            let one = |i: &&ModelInput| {
                vec![Detection { label: "x".into(), class_id: 0, score: i.pts_ms as f32, bbox: [0.0; 4] }]
            };
            Ok(inputs.iter().map(one).collect())
        }
    }

    fn batcher(workers: usize, model_max: usize, max_batch: usize, wait_ms: u64) -> (Batcher, Arc<Mutex<Vec<usize>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let detectors = (0..workers)
            .map(|_| {
                Box::new(Echo { model: ModelId::default(), max_batch: model_max, seen: seen.clone() })
                    as Box<dyn Detector>
            })
            .collect();
        (Batcher::new(detectors, max_batch, Duration::from_millis(wait_ms)).unwrap(), seen)
    }

    /// Sends frames with these pts through one chunk queue; returns (pts, score) per result.
    fn send(batcher: &Batcher, pts: impl IntoIterator<Item = i64>) -> Result<Vec<(i64, f32)>> {
        let mut queue = batcher.chunk(0, &|_, _| {});
        for p in pts {
            let mut input = queue.buffer()?;
            input.pts_ms = p;
            queue.submit(input)?;
        }
        let mut results: Vec<(i64, f32)> =
            queue.finish()?.into_iter().map(|a| (a.pts_ms, a.detections[0].score)).collect();
        results.sort_by_key(|r| r.0);
        Ok(results)
    }

    #[test]
    fn each_chunk_gets_its_own_frames_back_from_shared_batches() {
        let (batcher, seen) = batcher(1, 64, 8, 20);
        let chunks: Vec<Vec<i64>> = (0..4).map(|c| (0..50).map(|f| c * 1000 + f).collect()).collect();
        let results: Vec<_> = std::thread::scope(|s| {
            let runs: Vec<_> = chunks.iter().map(|pts| s.spawn(|| send(&batcher, pts.clone()).unwrap())).collect();
            runs.into_iter().map(|r| r.join().unwrap()).collect()
        });
        for (pts, got) in chunks.iter().zip(&results) {
            let want: Vec<(i64, f32)> = pts.iter().map(|p| (*p, *p as f32)).collect();
            assert_eq!(got, &want);
        }
        let stats = batcher.stats();
        assert_eq!(stats.frames, 200);
        assert!(seen.lock().unwrap().iter().all(|n| (1..=8).contains(n)));
        assert!(stats.largest > 1 && stats.mixed > 0, "{stats:?}");
    }

    #[test]
    fn a_lone_frame_goes_after_max_wait() {
        let (batcher, seen) = batcher(1, 64, 32, 30);
        let started = Instant::now();
        assert_eq!(send(&batcher, [7]).unwrap(), vec![(7, 7.0)]);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(*seen.lock().unwrap(), vec![1]);
    }

    #[test]
    fn batches_are_capped_by_what_the_model_takes() {
        let (batcher, seen) = batcher(2, 1, 16, 5);
        assert_eq!(batcher.max_batch(), 1);
        assert_eq!(send(&batcher, 0..20).unwrap().len(), 20);
        assert!(seen.lock().unwrap().iter().all(|n| *n == 1));
    }

    #[test]
    fn a_failed_frame_fails_its_chunk_and_the_batcher_goes_on() {
        let (batcher, _) = batcher(1, 8, 8, 5);
        let err = send(&batcher, [1, 2, -3, 4]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.to_string().contains("negative pts"), "{err}");
        assert_eq!(send(&batcher, [5, 6]).unwrap(), vec![(5, 5.0), (6, 6.0)]);
    }
}
