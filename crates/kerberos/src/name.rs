//! The Kerberos agent's recording file name, which carries metadata of its own:
//! `{start_secs}_{n}-{sub}_{instance}_{region}_{changes}_{duration_ms}.mp4`.
//!
//! - `n-sub`: the sub-second part of the start, `sub` having `n` digits. Current agents write
//!   milliseconds (`3-737`); old ones microseconds (`6-967003`).
//! - `region`: `x-y-w-h` of the motion, `0-0-0-0` for continuous recording.
//! - `changes`: pixels changed by motion; `-1` for continuous recording.
//! - the last field is the duration in milliseconds (a random token on old agents).
//!
//! The instance (camera) name may itself contain `_`: it is everything between the second field
//! and the last three. Used for metadata only when no header says it; never as a path.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileName {
    pub start_secs: i64,
    /// The `n-sub` field as written.
    pub sub_second: String,
    pub instance: String,
    pub region: String,
    pub changes: i64,
    /// Duration in milliseconds on current agents, a token on old ones.
    pub last: i64,
}

/// What the agent writes for a continuous recording's region.
const NO_REGION: &str = "0-0-0-0";

impl FileName {
    /// A continuous recording's name, as the agent writes it after the recording closed.
    pub fn continuous(start_ms: i64, instance: &str, duration_ms: i64) -> Self {
        FileName {
            start_secs: start_ms.div_euclid(1000),
            sub_second: sub_second(start_ms),
            instance: instance.to_string(),
            region: NO_REGION.to_string(),
            changes: -1,
            last: duration_ms,
        }
    }

    /// A motion recording's name: `region` is `[x, y, width, height]` of what moved.
    pub fn motion(start_ms: i64, instance: &str, region: [u32; 4], changes: u32, duration_ms: i64) -> Self {
        let [x, y, w, h] = region;
        FileName {
            region: format!("{x}-{y}-{w}-{h}"),
            changes: changes.into(),
            ..FileName::continuous(start_ms, instance, duration_ms)
        }
    }

    /// The name of the agent's Verify test upload.
    pub fn verify(now_secs: i64, instance: &str) -> Self {
        FileName {
            start_secs: now_secs,
            sub_second: "6-967003".to_string(),
            instance: instance.to_string(),
            region: "200-200-400-400".to_string(),
            changes: 24,
            last: 769,
        }
    }

    /// Reads a name in the agent's format; `None` for any other name.
    pub fn parse(file_name: &str) -> Option<FileName> {
        let stem = file_name.strip_suffix(".mp4").unwrap_or(file_name);
        let parts: Vec<&str> = stem.split('_').collect();
        let n = parts.len();
        if n < 6 {
            return None;
        }
        let name = FileName {
            start_secs: parse_secs(parts[0])?,
            sub_second: parts[1].to_string(),
            instance: parts[2..n - 3].join("_"),
            region: parts[n - 3].to_string(),
            changes: parts[n - 2].parse().ok()?,
            last: parts[n - 1].parse().ok()?,
        };
        let region_ok = name.region.split('-').count() == 4 && name.region.split('-').all(|f| f.parse::<u32>().is_ok());
        (region_ok && name.sub_second_ms().is_some() && !name.instance.is_empty()).then_some(name)
    }

    /// When recording started, unix milliseconds.
    pub fn start_ms(&self) -> i64 {
        self.start_secs * 1000 + self.sub_second_ms().unwrap_or(0)
    }

    fn sub_second_ms(&self) -> Option<i64> {
        let (n, digits) = self.sub_second.split_once('-')?;
        let n: u32 = n.parse().ok()?;
        // Digits only: `parse` would take a sign, and `3--50` is no sub-second.
        let digits_only = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
        let value: i64 = digits.parse().ok().filter(|_| digits_only && digits.len() == n as usize && n <= 9)?;
        Some(if n <= 3 { value } else { value / 10i64.pow(n - 3) })
    }

    /// The duration in milliseconds, where the name carries one: current agents mark it with
    /// `changes` = -1; on older names the last field is a token.
    pub fn duration_ms(&self) -> Option<i64> {
        (self.changes == -1 && self.last > 0).then_some(self.last)
    }

    /// A motion recording carries the region that moved; continuous ones `0-0-0-0`.
    pub fn has_region(&self) -> bool {
        self.region != NO_REGION
    }
}

/// The `n-sub` field for a start in unix milliseconds, as current agents write it (`3-737`).
pub fn sub_second(start_ms: i64) -> String {
    let ms = start_ms.rem_euclid(1000).to_string();
    format!("{}-{ms}", ms.len())
}

impl fmt::Display for FileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let FileName { start_secs, sub_second, instance, region, changes, last } = self;
        write!(f, "{start_secs}_{sub_second}_{instance}_{region}_{changes}_{last}.mp4")
    }
}

/// The leading unix-seconds field of any name that has one (`1700000001.mp4`, `1700000001_x`).
pub fn leading_secs(file_name: &str) -> Option<i64> {
    let stem = file_name.strip_suffix(".mp4").unwrap_or(file_name);
    parse_secs(stem.split('_').next()?)
}

/// Latest start a name may carry, in unix seconds: the bound of the `Timestamp` header (the year
/// 5138). Anything above is no time, and would overflow as milliseconds.
pub const MAX_START_SECS: i64 = crate::wire::SECONDS_BELOW - 1;

/// A start in unix seconds: digits only, above 0 and at most [`MAX_START_SECS`].
fn parse_secs(field: &str) -> Option<i64> {
    let digits = !field.is_empty() && field.bytes().all(|b| b.is_ascii_digit());
    field.parse().ok().filter(|t| digits && *t > 0 && *t <= MAX_START_SECS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuous_names_are_written_as_the_agent_does() {
        let name = FileName::continuous(1_786_715_908_737, "front door", 25_498);
        assert_eq!(name.to_string(), "1786715908_3-737_front door_0-0-0-0_-1_25498.mp4");
        assert_eq!(FileName::parse(&name.to_string()), Some(name.clone()));
        assert_eq!(name.start_ms(), 1_786_715_908_737);
        assert_eq!(name.duration_ms(), Some(25_498));
        assert_eq!(FileName::verify(1, "c").duration_ms(), None, "a token, not a duration");
        assert_eq!(FileName::continuous(1_000_000_000_037, "c", 1).sub_second, "2-37");
        assert_eq!(FileName::continuous(1_000_000_000_037, "c", 1).start_ms(), 1_000_000_000_037);
    }

    #[test]
    fn names_with_impossible_times_are_not_agent_names() {
        let ok = "1700000000_3-500_cam_0-0-0-0_-1_9000.mp4";
        assert!(FileName::parse(ok).is_some());
        for bad in [
            "9223372036854775807_3-500_cam_0-0-0-0_-1_9000.mp4",
            "100000000000_3-500_cam_0-0-0-0_-1_9000.mp4",
            "+1700000000_3-500_cam_0-0-0-0_-1_9000.mp4",
            "1700000000_3--50_cam_0-0-0-0_-1_9000.mp4",
            "1700000000_3-+50_cam_0-0-0-0_-1_9000.mp4",
            "1700000000_2--5_cam_0-0-0-0_-1_9000.mp4",
        ] {
            assert_eq!(FileName::parse(bad), None, "{bad}");
        }
        assert_eq!(leading_secs("9223372036854775807.mp4"), None);
        assert_eq!(leading_secs("99999999999_x.mp4"), Some(99_999_999_999));
        let latest = FileName::parse("99999999999_3-999_cam_0-0-0-0_-1_9000.mp4").unwrap();
        assert_eq!(latest.start_ms(), 99_999_999_999_999);
    }

    #[test]
    fn motion_and_verify_names() {
        let m = FileName::motion(1_700_000_000_500, "back_yard", [577, 283, 727, 375], 1153, 9000);
        assert_eq!(m.to_string(), "1700000000_3-500_back_yard_577-283-727-375_1153_9000.mp4");
        let parsed = FileName::parse(&m.to_string()).unwrap();
        assert_eq!(parsed.instance, "back_yard");
        assert!(parsed.has_region());
        let v = FileName::verify(1_700_000_000, "cam");
        assert_eq!(v.to_string(), "1700000000_6-967003_cam_200-200-400-400_24_769.mp4");
        assert_eq!(FileName::parse(&v.to_string()).unwrap().start_ms(), 1_700_000_000_967);
    }

    #[test]
    fn other_names_are_not_kerberos_names() {
        for name in [
            "clip.mp4",
            "1700000001.mp4",
            "x_y_z_bad-region_q_t.mp4",
            "1_2_c_0-0-0-0_1_1.mp4",
            "1_3-12_c_0-0-0-0_1_1.mp4",
        ] {
            assert_eq!(FileName::parse(name), None, "{name}");
        }
        assert_eq!(leading_secs("1700000001.mp4"), Some(1_700_000_001));
        assert_eq!(leading_secs("clip.mp4"), None);
    }
}
