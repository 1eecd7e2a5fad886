//! Zones: named polygons of a camera's picture, in coordinates relative to the frame (0..1, so a
//! zone holds when the camera's resolution changes). A track is in a zone when its footpoint,
//! the bottom centre of its box, is inside the polygon (where a person stands, as Frigate does).

use osprey_core::{Error, Result, Track, ZoneVisit};
use serde::{Deserialize, Serialize};

/// `[[detect.zones]]`: one zone of one camera.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Zone {
    /// The camera (device id, the agent's product id) the zone belongs to.
    pub device: String,
    pub name: String,
    /// Corners `[x, y]`, relative to the frame's width and height.
    pub polygon: Vec<[f32; 2]>,
}

impl Zone {
    pub fn validate(&self) -> Result<()> {
        let what = || format!("invalid config: detect.zones {:?} of device {:?}", self.name, self.device);
        if self.name.is_empty() || self.device.is_empty() {
            return Err(Error::invalid("invalid config: each of detect.zones needs a device and a name"));
        }
        if !self.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-')) || self.name.len() > 64 {
            return Err(Error::invalid(format!("{}: a name is up to 64 letters, digits, _ or -", what())));
        }
        if self.polygon.len() < 3 {
            return Err(Error::invalid(format!("{}: a polygon needs at least 3 corners", what())));
        }
        if self.polygon.iter().flatten().any(|v| !(0.0..=1.0).contains(v)) {
            return Err(Error::invalid(format!("{}: corners are relative to the frame, within 0..1", what())));
        }
        Ok(())
    }

    /// Whether the point (relative coordinates) is inside, by ray casting.
    pub fn contains(&self, x: f32, y: f32) -> bool {
        let p = &self.polygon;
        let mut inside = false;
        let mut j = p.len() - 1;
        for i in 0..p.len() {
            let ([xi, yi], [xj, yj]) = (p[i], p[j]);
            if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
                inside = !inside;
            }
            j = i;
        }
        inside
    }
}

/// The zones' visits of each track, on a frame of `width` x `height` pixels.
pub fn visit(tracks: &mut [Track], zones: &[Zone], width: u32, height: u32) {
    let (w, h) = (width.max(1) as f32, height.max(1) as f32);
    for track in tracks.iter_mut() {
        track.zones = zones.iter().filter_map(|zone| visit_one(track, zone, w, h)).collect();
    }
}

fn visit_one(track: &Track, zone: &Zone, w: f32, h: f32) -> Option<ZoneVisit> {
    let mut visit: Option<ZoneVisit> = None;
    let mut previous_in: Option<i64> = None;
    for b in &track.boxes {
        let (fx, fy) = ((b.bbox[0] + b.bbox[2]) / 2.0 / w, b.bbox[3] / h);
        if !zone.contains(fx, fy) {
            previous_in = None;
            continue;
        }
        let v = visit.get_or_insert(ZoneVisit {
            zone: zone.name.clone(),
            entered_ms: b.pts_ms,
            left_ms: b.pts_ms,
            dwell_ms: 0,
        });
        v.left_ms = b.pts_ms;
        if let Some(at) = previous_in {
            v.dwell_ms += b.pts_ms - at;
        }
        previous_in = Some(b.pts_ms);
    }
    visit
}

#[cfg(test)]
mod tests {
    use super::*;
    use osprey_core::TrackBox;

    fn left_half() -> Zone {
        Zone {
            device: "cam".into(),
            name: "door".into(),
            polygon: vec![[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]],
        }
    }

    #[test]
    fn a_polygon_contains_what_is_inside() {
        let z = left_half();
        assert!(z.contains(0.25, 0.5));
        assert!(!z.contains(0.75, 0.5));
        let triangle = Zone { polygon: vec![[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], ..z };
        assert!(triangle.contains(0.2, 0.2) && !triangle.contains(0.8, 0.8));
    }

    #[test]
    fn a_visit_counts_only_time_between_frames_inside() {
        // Footpoints at x = 10, 20, 80, 30 of 100: in, in, out, in.
        let boxes = [10.0, 20.0, 80.0, 30.0]
            .iter()
            .enumerate()
            .map(|(i, x)| TrackBox { pts_ms: i as i64 * 1000, bbox: [x - 5.0, 10.0, x + 5.0, 50.0], score: 0.9 })
            .collect();
        let mut tracks = vec![Track {
            id: 1,
            label: "person".into(),
            first_ms: 0,
            last_ms: 3000,
            boxes,
            best_score: 0.9,
            best_ms: 0,
            zones: vec![],
            thumbnail: None,
        }];
        visit(&mut tracks, &[left_half()], 100, 100);
        assert_eq!(
            tracks[0].zones,
            vec![ZoneVisit { zone: "door".into(), entered_ms: 0, left_ms: 3000, dwell_ms: 1000 }]
        );
    }

    #[test]
    fn bad_zones_are_refused_with_their_name() {
        let mut z = left_half();
        z.polygon.truncate(2);
        assert!(z.validate().unwrap_err().to_string().contains("\"door\""));
        let z = Zone { polygon: vec![[0.0, 0.0], [2.0, 0.0], [0.0, 1.0]], ..left_half() };
        assert!(z.validate().unwrap_err().to_string().contains("0..1"));
    }
}
