//! Multi-object tracking in the ByteTrack family, on one chunk's analysed frames.
//!
//! Each track's box is predicted by a constant-velocity Kalman filter over (centre x, centre y,
//! width, height), in seconds rather than frames, since the analysed frames are sampled at any
//! rate. Each frame is associated in stages:
//! 1. confirmed tracks (tracked or lost) with the high-score detections (`score >= high`);
//! 2. tracks still tracked that found nothing with the low-score detections (`low <= score <
//!    high`): a partly hidden object keeps its track instead of starting a new one;
//! 3. tentative tracks (fewer than `min_hits` matches) with the high-score detections left.
//!
//! Association is by IoU of predicted and detected box, within one label, greedily by highest
//! IoU (as Norfair does), which on sparse frames matches what an optimal assignment picks. A
//! high-score detection left over starts a tentative track; a tentative track that misses a
//! frame is dropped; a confirmed track lost for longer than `max_lost` ends. Tracks born on the
//! chunk's first frame are confirmed at once, and tentative tracks alive on its last frame are
//! kept: both may be the halves of an object crossing a chunk boundary, which the index joins.

use crate::iou;
use osprey_core::{Detection, Error, Result, Track, TrackBox};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A tracker follows objects through one chunk's frames, given in time order.
pub trait Tracker: Send {
    fn update(&mut self, pts_ms: i64, detections: &[Detection]);
    /// The tracks, numbered from 1 in order of appearance.
    fn finish(self: Box<Self>) -> Vec<Track>;
}

/// `[detect.tracking]`: when tracks start, continue and end.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrackingConfig {
    pub enabled: bool,
    /// Detections down to this score are used to continue tracks (stage 2); they are not reported.
    pub low_score: f32,
    /// The least score that starts a track; by default `detect.score_threshold`.
    pub new_track_score: Option<f32>,
    /// The least IoU of predicted and detected box that continues a track.
    pub match_iou: f32,
    /// The same for low-score detections, which must overlap more.
    pub low_match_iou: f32,
    /// How long a track may go unseen before it ends.
    #[serde(rename = "max_lost_ms", with = "osprey_core::config::millis")]
    pub max_lost: Duration,
    /// Matches before a track is confirmed.
    pub min_hits: u32,
    /// Boxes are widened by this share of their size on each side before their IoU is taken
    /// (buffered IoU, as C-BIoU does): at a few analysed frames per second an object moves more
    /// than its width between frames, and a track that has no speed yet must still find it.
    pub buffer: f32,
}

impl Default for TrackingConfig {
    fn default() -> Self {
        TrackingConfig {
            enabled: true,
            low_score: 0.25,
            new_track_score: None,
            match_iou: 0.2,
            low_match_iou: 0.4,
            max_lost: Duration::from_millis(2000),
            min_hits: 2,
            buffer: 0.3,
        }
    }
}

impl TrackingConfig {
    pub fn validate(&self) -> Result<()> {
        let unit = |v: f32| (0.0..=1.0).contains(&v);
        let scores = [self.low_score, self.match_iou, self.low_match_iou, self.new_track_score.unwrap_or(0.5)];
        if !scores.into_iter().all(unit) {
            return Err(Error::invalid(
                "invalid config: detect.tracking scores and IoUs (low_score, new_track_score, match_iou, low_match_iou) must be within 0..1",
            ));
        }
        if !(0.0..=2.0).contains(&self.buffer) {
            return Err(Error::invalid("invalid config: detect.tracking.buffer must be within 0..2"));
        }
        if self.min_hits == 0 {
            return Err(Error::invalid("invalid config: detect.tracking.min_hits must be above 0"));
        }
        Ok(())
    }
}

/// One coordinate's position and velocity (per second), with their covariance.
#[derive(Debug, Clone, Copy)]
struct Axis {
    x: f32,
    v: f32,
    p: [[f32; 2]; 2],
}

impl Axis {
    fn new(x: f32, scale: f32) -> Axis {
        let (sp, sv) = (0.1 * scale, 1.0 * scale);
        Axis { x, v: 0.0, p: [[sp * sp, 0.0], [0.0, sv * sv]] }
    }

    /// Moves `dt` seconds on; the noise grows with the object's size.
    fn predict(&mut self, dt: f32, scale: f32) {
        let (qp, qv) = ((0.1 * scale).powi(2) * dt, (0.5 * scale).powi(2) * dt);
        self.x += self.v * dt;
        let [[p00, p01], [p10, p11]] = self.p;
        let p00 = p00 + dt * (p10 + p01) + dt * dt * p11 + qp;
        let (p01, p10) = (p01 + dt * p11, p10 + dt * p11);
        self.p = [[p00, p01], [p10, p11 + qv]];
    }

    fn update(&mut self, z: f32, scale: f32) {
        let r = (0.05 * scale).powi(2);
        let [[p00, p01], [p10, p11]] = self.p;
        let s = p00 + r;
        let (k0, k1) = (p00 / s, p10 / s);
        let y = z - self.x;
        self.x += k0 * y;
        self.v += k1 * y;
        self.p = [[(1.0 - k0) * p00, (1.0 - k0) * p01], [p10 - k1 * p00, p11 - k1 * p01]];
    }
}

/// A box as centre, width and height, each filtered on its own.
#[derive(Debug, Clone, Copy)]
struct Motion {
    axes: [Axis; 4],
    at_ms: i64,
}

impl Motion {
    fn new(b: [f32; 4], at_ms: i64) -> Motion {
        let z = centred(b);
        let scale = z[3].max(1.0);
        Motion { axes: z.map(|c| Axis::new(c, scale)), at_ms }
    }

    fn predict(&mut self, at_ms: i64) {
        let dt = (at_ms - self.at_ms) as f32 / 1000.0;
        if dt <= 0.0 {
            return;
        }
        let scale = self.axes[3].x.max(1.0);
        for axis in &mut self.axes {
            axis.predict(dt, scale);
        }
        self.at_ms = at_ms;
    }

    fn update(&mut self, b: [f32; 4]) {
        let scale = self.axes[3].x.max(1.0);
        for (axis, z) in self.axes.iter_mut().zip(centred(b)) {
            axis.update(z, scale);
        }
    }

    fn bbox(&self) -> [f32; 4] {
        let [cx, cy, w, h] = self.axes.map(|a| a.x);
        let (w, h) = (w.max(1.0), h.max(1.0));
        [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]
    }
}

fn widen(b: [f32; 4], by: f32) -> [f32; 4] {
    let (dx, dy) = ((b[2] - b[0]) * by, (b[3] - b[1]) * by);
    [b[0] - dx, b[1] - dy, b[2] + dx, b[3] + dy]
}

fn centred(b: [f32; 4]) -> [f32; 4] {
    [(b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0, (b[2] - b[0]).max(1.0), (b[3] - b[1]).max(1.0)]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Tentative,
    Tracked,
    Lost,
}

struct Live {
    track: Track,
    motion: Motion,
    state: State,
    hits: u32,
}

impl Live {
    fn hit(&mut self, d: &Detection, pts_ms: i64, min_hits: u32) {
        self.motion.update(d.bbox);
        self.hits += 1;
        if self.state != State::Tentative || self.hits >= min_hits {
            self.state = State::Tracked;
        }
        let t = &mut self.track;
        t.last_ms = pts_ms;
        t.boxes.push(TrackBox { pts_ms, bbox: d.bbox, score: d.score });
        if d.score > t.best_score {
            (t.best_score, t.best_ms) = (d.score, pts_ms);
        }
    }
}

/// ByteTrack-style tracking (module documentation).
pub struct ByteTrack {
    config: TrackingConfig,
    high_score: f32,
    live: Vec<Live>,
    ended: Vec<Track>,
    frames: usize,
    last_pts: i64,
}

impl ByteTrack {
    /// `high_score` splits the detections into the two stages: `detect.score_threshold`.
    pub fn new(config: TrackingConfig, high_score: f32) -> ByteTrack {
        ByteTrack { config, high_score, live: Vec::new(), ended: Vec::new(), frames: 0, last_pts: i64::MIN }
    }

    fn new_track_score(&self) -> f32 {
        self.config.new_track_score.unwrap_or(self.high_score)
    }

    fn start(&mut self, d: &Detection, pts_ms: i64) {
        let state = if self.frames == 0 { State::Tracked } else { State::Tentative };
        let track = Track {
            id: 0,
            label: d.label.clone(),
            first_ms: pts_ms,
            last_ms: pts_ms,
            boxes: Vec::new(),
            best_score: 0.0,
            best_ms: pts_ms,
            zones: Vec::new(),
            thumbnail: None,
        };
        let mut live = Live { track, motion: Motion::new(d.bbox, pts_ms), state, hits: 0 };
        live.hit(d, pts_ms, self.config.min_hits);
        live.hits = 1;
        self.live.push(live);
    }
}

/// Pairs tracks (by index into `tracks`) with detections (by index into `dets`), best IoU first.
fn associate(live: &[Live], tracks: &[usize], dets: &[&Detection], min_iou: f32, buffer: f32) -> Vec<(usize, usize)> {
    let predicted: Vec<[f32; 4]> = tracks.iter().map(|&t| widen(live[t].motion.bbox(), buffer)).collect();
    let mut pairs = Vec::new();
    for (ti, &t) in tracks.iter().enumerate() {
        for (di, d) in dets.iter().enumerate() {
            if d.label != live[t].track.label {
                continue;
            }
            let overlap = iou(&predicted[ti], &widen(d.bbox, buffer));
            if overlap >= min_iou {
                pairs.push((overlap, t, di));
            }
        }
    }
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut track_used, mut det_used) = (vec![false; live.len()], vec![false; dets.len()]);
    let mut matched = Vec::new();
    for (_, t, d) in pairs {
        if !track_used[t] && !det_used[d] {
            (track_used[t], det_used[d]) = (true, true);
            matched.push((t, d));
        }
    }
    matched
}

impl Tracker for ByteTrack {
    fn update(&mut self, pts_ms: i64, detections: &[Detection]) {
        let config = self.config;
        for live in &mut self.live {
            live.motion.predict(pts_ms);
        }
        let mut high: Vec<&Detection> = detections.iter().filter(|d| d.score >= self.high_score).collect();
        let mut low: Vec<&Detection> =
            detections.iter().filter(|d| d.score < self.high_score && d.score >= config.low_score).collect();
        let mut hit = vec![false; self.live.len()];
        let by_state = |live: &[Live], hit: &[bool], states: &[State]| -> Vec<usize> {
            (0..live.len()).filter(|&i| !hit[i] && states.contains(&live[i].state)).collect()
        };

        let stages = [
            (vec![State::Tracked, State::Lost], config.match_iou, true),
            (vec![State::Tracked], config.low_match_iou, false),
            (vec![State::Tentative], config.match_iou.max(0.3), true),
        ];
        for (states, min_iou, use_high) in stages {
            let candidates = by_state(&self.live, &hit, &states);
            let dets = if use_high { &mut high } else { &mut low };
            let matched = associate(&self.live, &candidates, dets, min_iou, config.buffer);
            let mut taken = vec![false; dets.len()];
            for &(t, d) in &matched {
                self.live[t].hit(dets[d], pts_ms, config.min_hits);
                hit[t] = true;
                taken[d] = true;
            }
            let mut keep = taken.iter().map(|t| !t);
            dets.retain(|_| keep.next().unwrap_or(true));
        }

        let max_lost = config.max_lost.as_millis() as i64;
        let mut still = Vec::with_capacity(self.live.len());
        for (live, was_hit) in std::mem::take(&mut self.live).into_iter().zip(hit) {
            match (was_hit, live.state) {
                (true, _) => still.push(live),
                (false, State::Tentative) => {}
                (false, _) if pts_ms - live.track.last_ms > max_lost => self.ended.push(live.track),
                (false, _) => still.push(Live { state: State::Lost, ..live }),
            }
        }
        self.live = still;
        let start_at = self.new_track_score();
        for d in high.into_iter().filter(|d| d.score >= start_at) {
            self.start(d, pts_ms);
        }
        self.frames += 1;
        self.last_pts = pts_ms;
    }

    fn finish(self: Box<Self>) -> Vec<Track> {
        let last_pts = self.last_pts;
        let mut tracks = self.ended;
        for live in self.live {
            // A tentative track on the last frame may be an object coming in across the boundary.
            if live.state != State::Tentative || live.track.last_ms == last_pts {
                tracks.push(live.track);
            }
        }
        tracks.sort_by_key(|t| (t.first_ms, t.boxes.first().map(|b| b.bbox[0].to_bits())));
        for (i, track) in tracks.iter_mut().enumerate() {
            track.id = i as u32 + 1;
        }
        tracks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(label: &str, score: f32, x: f32, y: f32) -> Detection {
        Detection { label: label.into(), class_id: 0, score, bbox: [x, y, x + 40.0, y + 100.0] }
    }

    fn run(frames: &[(i64, Vec<Detection>)]) -> Vec<Track> {
        let mut tracker: Box<dyn Tracker> = Box::new(ByteTrack::new(TrackingConfig::default(), 0.5));
        for (pts, dets) in frames {
            tracker.update(*pts, dets);
        }
        tracker.finish()
    }

    /// The track a detection at frame `pts` near x ended up in.
    fn owner(tracks: &[Track], pts: i64, x: f32) -> Option<u32> {
        tracks.iter().find(|t| t.boxes.iter().any(|b| b.pts_ms == pts && (b.bbox[0] - x).abs() < 1.0)).map(|t| t.id)
    }

    #[test]
    fn one_object_walking_is_one_track() {
        let frames: Vec<_> =
            (0..20).map(|i| (i * 200, vec![det("person", 0.8, 100.0 + i as f32 * 12.0, 50.0)])).collect();
        let tracks = run(&frames);
        assert_eq!(tracks.len(), 1, "{tracks:?}");
        let t = &tracks[0];
        assert_eq!((t.first_ms, t.last_ms, t.boxes.len()), (0, 3800, 20));
    }

    #[test]
    fn crossing_paths_keep_their_ids() {
        // Two people walk towards each other and pass with overlapping boxes.
        let frames: Vec<_> = (0..30)
            .map(|i| {
                let i = i as f32;
                let pts = (i * 200.0) as i64;
                (pts, vec![det("person", 0.9, 50.0 + i * 10.0, 60.0), det("person", 0.85, 340.0 - i * 10.0, 70.0)])
            })
            .collect();
        let tracks = run(&frames);
        assert_eq!(tracks.len(), 2, "{tracks:?}");
        let left = owner(&tracks, 0, 50.0).unwrap();
        assert_eq!(owner(&tracks, 29 * 200, 50.0 + 290.0), Some(left), "the left walker ends on the right");
    }

    #[test]
    fn a_missed_detection_does_not_break_the_track() {
        let frames: Vec<_> = (0..15)
            .map(|i| {
                let dets = if i == 6 || i == 7 { vec![] } else { vec![det("car", 0.9, 10.0 + i as f32 * 15.0, 20.0)] };
                (i * 500, dets)
            })
            .collect();
        let tracks = run(&frames);
        assert_eq!(tracks.len(), 1, "{tracks:?}");
        assert_eq!(tracks[0].boxes.len(), 13);
    }

    #[test]
    fn a_low_score_detection_continues_a_track_but_starts_none() {
        let mut frames: Vec<_> =
            (0..6).map(|i| (i * 200, vec![det("person", 0.8, 100.0 + i as f32 * 5.0, 50.0)])).collect();
        // Partly hidden: the score drops below the reporting threshold, the track goes on.
        frames.extend((6..10).map(|i| (i * 200, vec![det("person", 0.3, 100.0 + i as f32 * 5.0, 50.0)])));
        // A low-score detection elsewhere starts nothing.
        frames.push((2000, vec![det("person", 0.3, 600.0, 300.0)]));
        let tracks = run(&frames);
        assert_eq!(tracks.len(), 1, "{tracks:?}");
        assert_eq!(tracks[0].boxes.len(), 10);
        assert_eq!(tracks[0].best_score, 0.8);
    }

    #[test]
    fn a_reappearance_after_max_lost_is_a_new_track() {
        let mut frames: Vec<_> = (0..5).map(|i| (i * 500, vec![det("dog", 0.9, 200.0, 200.0)])).collect();
        frames.extend((5..10).map(|i| (i * 500, vec![])));
        frames.extend((10..14).map(|i| (i * 500, vec![det("dog", 0.9, 200.0, 200.0)])));
        let tracks = run(&frames);
        assert_eq!(tracks.len(), 2, "{tracks:?}");
        assert_eq!((tracks[0].last_ms, tracks[1].first_ms), (2000, 5000));
    }

    #[test]
    fn a_one_frame_false_positive_in_the_middle_is_dropped() {
        let mut frames: Vec<_> = (0..5).map(|i| (i * 500, vec![])).collect();
        frames[2].1.push(det("cat", 0.9, 10.0, 10.0));
        assert!(run(&frames).is_empty());
    }

    #[test]
    fn labels_do_not_mix_and_boundary_tracks_are_kept() {
        let frames = vec![
            (0, vec![det("person", 0.9, 0.0, 0.0), det("dog", 0.9, 5.0, 0.0)]),
            (500, vec![det("person", 0.9, 5.0, 0.0), det("dog", 0.9, 0.0, 0.0)]),
            // Something enters on the last frame: kept, it may continue in the next chunk.
            (1000, vec![det("person", 0.9, 10.0, 0.0), det("dog", 0.9, 0.0, 0.0), det("car", 0.9, 500.0, 0.0)]),
        ];
        let tracks = run(&frames);
        let labels: Vec<&str> = tracks.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels.len(), 3, "{tracks:?}");
        assert!(tracks.iter().all(|t| t.boxes.iter().all(|b| b.pts_ms >= t.first_ms)));
        assert_eq!(tracks.iter().find(|t| t.label == "car").unwrap().first_ms, 1000);
    }
}
