//! Following objects across a camera's chunks, so rules can fire once per object: a track that
//! continues one of the previous chunk's (the rule the index joins events by,
//! `osprey_core::track::Ends`) keeps its object's id, any other track is a new object.
//!
//! Results are taken in the order they come; one that arrives before its predecessor's sees no
//! predecessor, and its tracks count as new objects. The index, which sees every result, still
//! joins them into one event.

use osprey_core::track::Ends;
use osprey_core::{DetectionResult, Track};
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// How much of their pasts the objects keep: their zones' dwell and what fired for them.
const KEEP: Duration = Duration::from_secs(3600);
/// The least overlap of a continued box.
const JOIN_IOU: f32 = 0.1;

/// One object, as far as the notifier has followed it.
#[derive(Debug, Default)]
pub struct Object {
    pub last_at: i64,
    /// Milliseconds in each zone so far.
    pub dwell: HashMap<String, i64>,
    /// Rules (by index) that fired for it.
    pub fired: Vec<usize>,
}

/// A track of this result and the object it is.
pub struct Followed<'a> {
    pub track: &'a Track,
    pub object: u64,
    pub is_new: bool,
}

#[derive(Default)]
struct Camera {
    /// Tracks alive at the end of the last chunk: (object, label, ends, last seen, in ms).
    open: Vec<(u64, String, Ends, i64)>,
    /// When each new object appeared, oldest first: (at, label).
    starts: VecDeque<(i64, String)>,
}

pub struct Objects {
    join_gap: i64,
    cameras: HashMap<String, Camera>,
    objects: HashMap<u64, Object>,
    next: u64,
}

impl Objects {
    pub fn new(join_gap: Duration) -> Objects {
        Objects { join_gap: join_gap.as_millis() as i64, cameras: HashMap::new(), objects: HashMap::new(), next: 1 }
    }

    pub fn get(&self, id: u64) -> Option<&Object> {
        self.objects.get(&id)
    }

    pub fn get_mut(&mut self, id: u64) -> Option<&mut Object> {
        self.objects.get_mut(&id)
    }

    /// New objects of `label` on `camera` since `since` (unix ms).
    pub fn new_since(&self, camera: &str, label: &str, since: i64) -> usize {
        let Some(c) = self.cameras.get(camera) else { return 0 };
        c.starts.iter().filter(|(at, l)| *at >= since && l == label).count()
    }

    /// Follows a result's tracks on `camera`.
    pub fn follow<'a>(&mut self, camera: &str, result: &'a DetectionResult) -> Vec<Followed<'a>> {
        let meta = &result.event.payload.metadata;
        let start = start_ms(result);
        let last_frame = result.data.frames.iter().map(|f| f.pts_ms).max().unwrap_or(0);
        let end_ms = meta.duration.parse::<i64>().ok().filter(|d| *d > 0).unwrap_or(last_frame);
        let gap = self.join_gap;
        let mut camera_state = self.cameras.remove(camera).unwrap_or_default();
        let mut taken = vec![false; camera_state.open.len()];
        let mut followed = Vec::new();
        let mut still_open = Vec::new();
        for track in &result.data.tracks {
            let Some(ends) = Ends::of(track) else { continue };
            let first_at = start + track.first_ms;
            let continued = (track.first_ms <= gap)
                .then(|| best_predecessor(&camera_state.open, &taken, track, &ends, first_at, gap))
                .flatten();
            let (object, is_new) = match continued {
                Some(i) => {
                    taken[i] = true;
                    (camera_state.open[i].0, false)
                }
                None => (self.start_object(&mut camera_state, &track.label, first_at), true),
            };
            let o = self.objects.get_mut(&object).expect("objects are kept while open");
            o.last_at = o.last_at.max(start + track.last_ms);
            for visit in &track.zones {
                *o.dwell.entry(visit.zone.clone()).or_default() += visit.dwell_ms;
            }
            if track.last_ms >= end_ms - gap {
                still_open.push((object, track.label.clone(), ends, start + track.last_ms));
            }
            followed.push(Followed { track, object, is_new });
        }
        camera_state.open = still_open;
        self.cameras.insert(camera.to_string(), camera_state);
        self.forget_before(start - KEEP.as_millis() as i64);
        followed
    }

    fn start_object(&mut self, camera: &mut Camera, label: &str, at: i64) -> u64 {
        let id = self.next;
        self.next += 1;
        self.objects.insert(id, Object { last_at: at, ..Object::default() });
        camera.starts.push_back((at, label.to_string()));
        id
    }

    fn forget_before(&mut self, at: i64) {
        self.objects.retain(|_, o| o.last_at >= at);
        for c in self.cameras.values_mut() {
            while c.starts.front().is_some_and(|(t, _)| *t < at) {
                c.starts.pop_front();
            }
        }
    }
}

/// When a result's chunk began, in unix ms: the agent's timestamp, else the event's date.
pub fn start_ms(result: &DetectionResult) -> i64 {
    let meta = &result.event.payload.metadata;
    meta.timestamp.parse::<i64>().unwrap_or(result.event.date).saturating_mul(1000)
}

fn best_predecessor(
    open: &[(u64, String, Ends, i64)],
    taken: &[bool],
    track: &Track,
    ends: &Ends,
    first_at: i64,
    gap: i64,
) -> Option<usize> {
    open.iter()
        .enumerate()
        .filter(|(i, (_, label, _, last_at))| {
            !taken[*i] && *label == track.label && first_at > *last_at && first_at - last_at <= gap
        })
        .map(|(i, (_, _, prev, last_at))| (i, prev.continues(ends, first_at - last_at)))
        .filter(|(_, quality)| *quality >= JOIN_IOU)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i)
}
