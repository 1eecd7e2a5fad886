//! One time type for every stored time: [`Timestamp`], unix milliseconds. The database, the rows
//! and the code between them use it; only the edges convert (the agent's file name says seconds,
//! the recordings API shows `recorded_at` in seconds as it always has).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A moment as unix milliseconds (UTC). Stored as a 64-bit integer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_millis(millis: i64) -> Timestamp {
        Timestamp(millis)
    }

    pub const fn from_secs(secs: i64) -> Timestamp {
        Timestamp(secs.saturating_mul(1000))
    }

    pub const fn millis(self) -> i64 {
        self.0
    }

    /// Whole seconds, rounded down.
    pub const fn secs(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// How long after `earlier` this is; zero when it is not after.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0).max(0) as u64)
    }
}

/// Saturating: a time far in the future stays the latest one.
impl std::ops::Add<Duration> for Timestamp {
    type Output = Timestamp;

    fn add(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
    }
}

impl std::ops::Sub<Duration> for Timestamp {
    type Output = Timestamp;

    fn sub(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
    }
}

/// What sqlx reads a stored time as (`#[sqlx(try_from = "i64")]`).
impl From<i64> for Timestamp {
    fn from(millis: i64) -> Timestamp {
        Timestamp(millis)
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Timestamp {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            Err(e) => Timestamp(-i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX)),
        }
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ms", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_milliseconds_meet_in_one_unit() {
        let t = Timestamp::from_secs(1_700_000_000);
        assert_eq!(t.millis(), 1_700_000_000_000);
        assert_eq!(Timestamp::from_millis(1_700_000_000_999).secs(), 1_700_000_000);
        assert_eq!(Timestamp::from_millis(-1).secs(), -1, "rounds down before 1970 too");
        assert_eq!((t + Duration::from_millis(1500)).millis(), 1_700_000_001_500);
        assert_eq!((t + Duration::from_secs(2)).since(t), Duration::from_secs(2));
        assert_eq!(t.since(t + Duration::from_secs(2)), Duration::ZERO);
        assert_eq!(Timestamp::from(UNIX_EPOCH + Duration::from_millis(42)), Timestamp::from_millis(42));
    }
}
