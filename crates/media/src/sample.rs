//! Which frames to analyse.

use crate::mp4::Demuxed;
use osprey_core::{Error, Result};
use std::collections::BTreeSet;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// Every frame.
    All,
    /// Every Nth frame in presentation order, starting with the first.
    EveryNth(u32),
    /// About this many frames per second: the first frame at or after each 1/fps step.
    Fps(f64),
    /// Only keyframes: the cheapest, since nothing else is decoded.
    Keyframes,
}

impl FromStr for Sampling {
    type Err = Error;

    /// `all`, `keyframes`, `every:N` or a number of frames per second (`2`, `0.5`).
    fn from_str(s: &str) -> Result<Self> {
        let bad =
            || Error::invalid(format!("invalid sampling {s:?}: use all, keyframes, every:N or frames per second"));
        match s {
            "all" => Ok(Sampling::All),
            "keyframes" => Ok(Sampling::Keyframes),
            _ => match s.strip_prefix("every:") {
                Some(n) => n.parse().ok().filter(|n| *n > 0).map(Sampling::EveryNth).ok_or_else(bad),
                None => s.parse().ok().filter(|f: &f64| f.is_finite() && *f > 0.0).map(Sampling::Fps).ok_or_else(bad),
            },
        }
    }
}

impl std::fmt::Display for Sampling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sampling::All => f.write_str("all"),
            Sampling::Keyframes => f.write_str("keyframes"),
            Sampling::EveryNth(n) => write!(f, "every:{n}"),
            Sampling::Fps(fps) => write!(f, "{fps}"),
        }
    }
}

impl serde::Serialize for Sampling {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Accepts `"every:4"`, `"2"` and bare numbers (`2`, `0.5`): environment variables holding numbers
/// arrive as numbers.
impl<'de> serde::Deserialize<'de> for Sampling {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Value {
            Text(String),
            Int(i64),
            Float(f64),
        }
        let text = match Value::deserialize(d)? {
            Value::Text(s) => s,
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
        };
        text.parse().map_err(|e: Error| serde::de::Error::custom(e.to_string()))
    }
}

impl Sampling {
    /// Presentation timestamps of the frames to analyse.
    pub fn targets(&self, video: &Demuxed) -> BTreeSet<i64> {
        let mut shown: Vec<(i64, bool)> = video.samples.iter().map(|s| (s.presentation_ts, s.is_sync)).collect();
        shown.sort_unstable_by_key(|(pts, _)| *pts);
        match *self {
            Sampling::All => shown.iter().map(|(p, _)| *p).collect(),
            Sampling::Keyframes => shown.iter().filter(|(_, sync)| *sync).map(|(p, _)| *p).collect(),
            Sampling::EveryNth(n) => shown.iter().step_by(n as usize).map(|(p, _)| *p).collect(),
            Sampling::Fps(fps) => per_window(&shown, video.timescale as f64 / fps, closed_groups(video)),
        }
    }
}

/// True when no frame is shown before the keyframe that starts its group (no open groups of
/// pictures): then a keyframe decodes alone. FFmpeg drops some of an open stream's keyframes
/// when they are fed alone, so open streams are not keyframe-aligned.
fn closed_groups(video: &Demuxed) -> bool {
    let mut key = i64::MIN;
    video.samples.iter().all(|s| {
        if s.is_sync {
            key = s.presentation_ts;
        }
        s.presentation_ts >= key
    })
}

/// One frame per `step` (timescale units) window: the first of each, or, when every whole window
/// holds a keyframe (the rate allows it), the window's first keyframe, so that each analysed frame
/// is decoded alone instead of after the frames it would depend on.
fn per_window(shown: &[(i64, bool)], step: f64, closed: bool) -> BTreeSet<i64> {
    let (Some(first), Some(last)) = (shown.first().map(|s| s.0), shown.last().map(|s| s.0)) else {
        return BTreeSet::new();
    };
    let window = |pts: i64| (((pts - first) as f64 + 1e-6) / step).floor() as i64;
    // Per window: its first frame and its first keyframe.
    let mut windows: std::collections::BTreeMap<i64, (i64, Option<i64>)> = Default::default();
    for &(pts, sync) in shown {
        let w = windows.entry(window(pts)).or_insert((pts, None));
        if sync && w.1.is_none() {
            w.1 = Some(pts);
        }
    }
    // The last window may be cut short by the chunk's end: it does not decide.
    let whole = |k: i64| (k + 1) as f64 * step <= (last - first) as f64 + 1e-6;
    let aligned = closed && windows.iter().filter(|(k, _)| whole(**k)).all(|(_, w)| w.1.is_some());
    windows.values().map(|&(first, key)| if aligned { key.unwrap_or(first) } else { first }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!("all".parse::<Sampling>().unwrap(), Sampling::All);
        assert_eq!("every:5".parse::<Sampling>().unwrap(), Sampling::EveryNth(5));
        assert_eq!("2".parse::<Sampling>().unwrap(), Sampling::Fps(2.0));
        for bad in ["every:0", "-1", "fast", "nan", "0"] {
            assert!(bad.parse::<Sampling>().is_err(), "{bad}");
        }
    }

    /// 10 frames a second for 4 s, a keyframe every `gop` frames.
    fn frames(gop: usize) -> Vec<(i64, bool)> {
        (0..40).map(|i| (i as i64 * 100, i % gop == 0)).collect()
    }

    #[test]
    fn fps_windows_take_keyframes_when_every_window_has_one() {
        // A keyframe every 1 s at 1 fps: the keyframes.
        assert_eq!(per_window(&frames(10), 1000.0, true), [0, 1000, 2000, 3000].into());
        // Every 0.8 s at 1 fps: each window holds one, so those, one a second.
        assert_eq!(per_window(&frames(8), 1000.0, true), [0, 1600, 2400, 3200].into());
        // Every 2.5 s at 1 fps: windows without one, so the first frame of each, as before.
        assert_eq!(per_window(&frames(25), 1000.0, true), [0, 1000, 2000, 3000].into());
        assert_eq!(per_window(&frames(25), 500.0, true).len(), 8);
        // An open stream: never aligned.
        assert_eq!(per_window(&frames(8), 1000.0, false), [0, 1000, 2000, 3000].into());
    }
}
