//! Deciding what to record. Frames are grouped into GOPs (a keyframe and what follows it), the
//! unit a chunk can start or end on without re-encoding. Continuous mode records every GOP;
//! motion mode keeps the last `pre_secs` of GOPs in a ring buffer, records from there when motion
//! is seen, and goes on until `post_secs` pass without motion. Either way a chunk is closed
//! before it would grow past `max_secs`.

use crate::chunk::Frame;
use std::collections::VecDeque;

/// A run of frames to write as one chunk.
#[derive(Debug, Clone)]
pub struct Recording {
    pub frames: Vec<Frame>,
    pub start_secs: f64,
    pub duration_secs: f64,
    /// Presentation time of the first frame with motion, in motion mode.
    pub trigger_secs: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MotionSettings {
    pub pre_secs: f64,
    pub post_secs: f64,
}

#[derive(Debug)]
struct Gop {
    frames: Vec<Frame>,
    start: f64,
    /// Start of the next GOP, or an estimate past the last frame when the stream ended.
    end: f64,
    first_motion: Option<f64>,
    last_motion: Option<f64>,
}

pub struct Recorder {
    max_secs: f64,
    motion: Option<MotionSettings>,
    open: Option<Gop>,
    /// GOPs of the chunk being recorded.
    chunk: Vec<Gop>,
    /// Motion mode, not recording: the latest GOPs, kept for pre-recording.
    ring: VecDeque<Gop>,
    last_motion: Option<f64>,
}

const EPSILON: f64 = 1e-6;

impl Recorder {
    pub fn continuous(max_secs: f64) -> Recorder {
        Recorder::new(max_secs, None)
    }

    pub fn motion(max_secs: f64, settings: MotionSettings) -> Recorder {
        Recorder::new(max_secs, Some(settings))
    }

    fn new(max_secs: f64, motion: Option<MotionSettings>) -> Recorder {
        Recorder { max_secs, motion, open: None, chunk: Vec::new(), ring: VecDeque::new(), last_motion: None }
    }

    /// Adds the next frame (decode order) and whether motion was seen in it; returns the
    /// recordings this closes. Frames before the first keyframe are dropped.
    pub fn push(&mut self, frame: Frame, motion: bool) -> Vec<Recording> {
        let mut closed = Vec::new();
        if frame.keyframe {
            if let Some(mut gop) = self.open.take() {
                gop.end = frame.pts;
                self.on_gop(gop, &mut closed);
            }
            self.open = Some(Gop {
                frames: Vec::new(),
                start: frame.pts,
                end: frame.pts,
                first_motion: None,
                last_motion: None,
            });
        }
        let Some(gop) = self.open.as_mut() else { return closed };
        if motion {
            gop.first_motion.get_or_insert(frame.pts);
            gop.last_motion = Some(gop.last_motion.map_or(frame.pts, |t| t.max(frame.pts)));
        }
        gop.frames.push(frame);
        closed
    }

    /// The stream ended: closes what is being recorded.
    pub fn finish(&mut self) -> Vec<Recording> {
        let mut closed = Vec::new();
        if let Some(mut gop) = self.open.take() {
            gop.end = estimated_end(&gop.frames);
            self.on_gop(gop, &mut closed);
        }
        self.close(&mut closed);
        self.ring.clear();
        closed
    }

    fn on_gop(&mut self, gop: Gop, closed: &mut Vec<Recording>) {
        let Some(settings) = self.motion else {
            return self.record(gop, closed);
        };
        if gop.last_motion.is_some() {
            self.last_motion = gop.last_motion;
        }
        let active = gop.first_motion.is_some()
            || self.last_motion.is_some_and(|t| gop.start - t < settings.post_secs - EPSILON);
        if active {
            for pre in std::mem::take(&mut self.ring) {
                self.record(pre, closed);
            }
            self.record(gop, closed);
            return;
        }
        self.close(closed);
        self.ring.push_back(gop);
        // Keep the fewest GOPs that still cover `pre_secs` before the next one.
        while self.ring.len() > 1 && self.ring.back().unwrap().end - self.ring[1].start >= settings.pre_secs - EPSILON {
            self.ring.pop_front();
        }
        if settings.pre_secs <= 0.0 {
            self.ring.clear();
        }
    }

    fn record(&mut self, gop: Gop, closed: &mut Vec<Recording>) {
        if self.chunk.first().is_some_and(|first| gop.end - first.start > self.max_secs + EPSILON) {
            self.close(closed);
        }
        let full = gop.end - self.chunk.first().map_or(gop.start, |g| g.start) >= self.max_secs - EPSILON;
        self.chunk.push(gop);
        if full {
            self.close(closed);
        }
    }

    fn close(&mut self, closed: &mut Vec<Recording>) {
        if self.chunk.is_empty() {
            return;
        }
        let gops = std::mem::take(&mut self.chunk);
        let start_secs = gops[0].start;
        let duration_secs = gops.last().unwrap().end - start_secs;
        let trigger_secs = gops.iter().find_map(|g| g.first_motion);
        let frames = gops.into_iter().flat_map(|g| g.frames).collect();
        closed.push(Recording { frames, start_secs, duration_secs, trigger_secs });
    }
}

/// One frame interval past the last frame, from the average spacing of the GOP.
fn estimated_end(frames: &[Frame]) -> f64 {
    let (first, last) =
        frames.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), f| (lo.min(f.pts), hi.max(f.pts)));
    let step = if frames.len() > 1 { (last - first) / (frames.len() - 1) as f64 } else { 0.0 };
    last + step
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 10 fps, a keyframe every `gop` frames.
    fn frames(n: usize, gop: usize) -> impl Iterator<Item = Frame> {
        (0..n).map(move |i| Frame { pts: i as f64 / 10.0, keyframe: i % gop == 0, data: vec![i as u8] })
    }

    fn spans(recordings: &[Recording]) -> Vec<(f64, f64)> {
        let round = |x: f64| (x * 10.0).round() / 10.0;
        recordings.iter().map(|r| (round(r.start_secs), round(r.start_secs + r.duration_secs))).collect()
    }

    fn run(mut recorder: Recorder, n: usize, gop: usize, motion: impl Fn(f64) -> bool) -> Vec<Recording> {
        let mut out = Vec::new();
        for f in frames(n, gop) {
            let m = motion(f.pts);
            out.extend(recorder.push(f, m));
        }
        out.extend(recorder.finish());
        out
    }

    #[test]
    fn continuous_chunks_never_pass_the_maximum() {
        // Keyframes every 2 s; a 5 s maximum fits two GOPs.
        let out = run(Recorder::continuous(5.0), 100, 20, |_| false);
        assert_eq!(spans(&out), vec![(0.0, 4.0), (4.0, 8.0), (8.0, 10.0)]);
        assert_eq!(out.iter().map(|r| r.frames.len()).sum::<usize>(), 100);
        // Exactly on the maximum: closed at once.
        let out = run(Recorder::continuous(4.0), 80, 20, |_| false);
        assert_eq!(spans(&out), vec![(0.0, 4.0), (4.0, 8.0)]);
    }

    #[test]
    fn a_gop_longer_than_the_maximum_is_a_chunk_of_its_own() {
        let out = run(Recorder::continuous(1.0), 60, 30, |_| false);
        assert_eq!(spans(&out), vec![(0.0, 3.0), (3.0, 6.0)]);
    }

    #[test]
    fn frames_before_the_first_keyframe_are_dropped() {
        let mut recorder = Recorder::continuous(10.0);
        let mut out = Vec::new();
        for f in frames(30, 10).skip(3) {
            out.extend(recorder.push(f, false));
        }
        out.extend(recorder.finish());
        assert_eq!(spans(&out), vec![(1.0, 3.0)]);
    }

    #[test]
    fn motion_records_pre_and_post_roll() {
        let settings = MotionSettings { pre_secs: 3.0, post_secs: 2.0 };
        // Motion from 10.5 s to 13.0 s, keyframes every 2 s, 30 s of video.
        let out = run(Recorder::motion(60.0, settings), 300, 20, |t| (10.5..13.0).contains(&t));
        assert_eq!(spans(&out), vec![(6.0, 16.0)]);
        let r = &out[0];
        assert_eq!(r.trigger_secs, Some(10.5));
        assert!(r.trigger_secs.unwrap() - r.start_secs >= 3.0);
        // Ends on the first keyframe at least post_secs after the last motion (12.9 s).
        assert!(r.start_secs + r.duration_secs - 12.9 >= 2.0);
    }

    #[test]
    fn motion_chunks_are_cut_at_the_maximum_and_go_on() {
        let settings = MotionSettings { pre_secs: 2.0, post_secs: 1.0 };
        let out = run(Recorder::motion(4.0, settings), 300, 10, |t| (10.0..19.5).contains(&t));
        assert_eq!(spans(&out), vec![(8.0, 12.0), (12.0, 16.0), (16.0, 20.0), (20.0, 21.0)]);
        assert!(out.iter().all(|r| r.duration_secs <= 4.0 + 1e-9));
    }

    #[test]
    fn no_motion_no_chunk_and_separate_events_make_separate_chunks() {
        let settings = MotionSettings { pre_secs: 1.0, post_secs: 1.0 };
        assert!(run(Recorder::motion(10.0, settings), 200, 10, |_| false).is_empty());
        let out =
            run(Recorder::motion(10.0, settings), 300, 10, |t| (5.0..5.5).contains(&t) || (20.0..20.5).contains(&t));
        assert_eq!(spans(&out), vec![(4.0, 7.0), (19.0, 22.0)]);
    }
}
