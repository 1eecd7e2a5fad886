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
            Sampling::Fps(fps) => {
                let step = video.timescale as f64 / fps;
                let first = shown.first().map(|(p, _)| *p).unwrap_or(0);
                let mut next = 0.0;
                let mut out = BTreeSet::new();
                for (pts, _) in &shown {
                    if (*pts - first) as f64 >= next - 1e-6 {
                        out.insert(*pts);
                        next = (((*pts - first) as f64 / step).floor() + 1.0) * step;
                    }
                }
                out
            }
        }
    }
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
}
