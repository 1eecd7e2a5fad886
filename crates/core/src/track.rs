//! Whether one track continues another across a chunk boundary: the rule the index joins tracks
//! into events by, and the notifier tells new objects from continuing ones by.

use crate::event::{Track, TrackBox};
use serde::{Deserialize, Serialize};

/// A track's first and last box and how fast its centre moved there (pixels per second).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Ends {
    pub first: [f32; 4],
    pub last: [f32; 4],
    pub v_first: [f32; 2],
    pub v_last: [f32; 2],
}

impl Ends {
    /// `None` for a track without boxes.
    pub fn of(track: &Track) -> Option<Ends> {
        let b = &track.boxes;
        let (first, last) = (b.first()?, b.last()?);
        let n = b.len();
        let (v_first, v_last) = match n {
            1 => ([0.0; 2], [0.0; 2]),
            _ => (velocity(&b[0], &b[1]), velocity(&b[n - 2], &b[n - 1])),
        };
        Some(Ends { first: first.bbox, last: last.bbox, v_first, v_last })
    }

    /// How well `self` (ending first) continues into `next` after `gap_ms`: the better IoU of
    /// this track's last box moved forward and the next one's first box moved back.
    pub fn continues(&self, next: &Ends, gap_ms: i64) -> f32 {
        let dt = gap_ms as f32 / 1000.0;
        let shift =
            |b: [f32; 4], v: [f32; 2], t: f32| [b[0] + v[0] * t, b[1] + v[1] * t, b[2] + v[0] * t, b[3] + v[1] * t];
        let forward = iou(&shift(self.last, self.v_last, dt), &next.first);
        let back = iou(&self.last, &shift(next.first, next.v_first, -dt));
        forward.max(back)
    }
}

fn velocity(a: &TrackBox, z: &TrackBox) -> [f32; 2] {
    let dt = (z.pts_ms - a.pts_ms) as f32 / 1000.0;
    if dt <= 0.0 {
        return [0.0, 0.0];
    }
    let centre = |b: &[f32; 4]| [(b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0];
    let (ca, cz) = (centre(&a.bbox), centre(&z.bbox));
    [(cz[0] - ca[0]) / dt, (cz[1] - ca[1]) / dt]
}

/// Intersection over union of two `[x1, y1, x2, y2]` boxes.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let inter = w * h;
    inter / (area(a) + area(b) - inter + 1e-9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moving_box_continues_across_a_gap() {
        let a = Ends { first: [0.0; 4], last: [100.0, 0.0, 140.0, 100.0], v_first: [0.0; 2], v_last: [80.0, 0.0] };
        // One second later it has moved 80 px: without the velocity the boxes would not overlap.
        let b = Ends { first: [180.0, 0.0, 220.0, 100.0], last: [0.0; 4], v_first: [80.0, 0.0], v_last: [0.0; 2] };
        assert!(a.continues(&b, 1000) > 0.9);
        assert!(iou(&a.last, &b.first) < 0.01);
        let elsewhere = Ends { first: [600.0, 300.0, 640.0, 400.0], ..b };
        assert!(a.continues(&elsewhere, 1000) < 0.01);
    }
}
