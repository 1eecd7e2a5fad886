//! Time as a value. Every role asks its `Clock` for the wall time (expiry, retention, names),
//! for monotonic time (intervals, deadlines) and to sleep, so that a `ManualClock` can run
//! retries, backoff and expiry in a test without waiting.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A sleep that can be awaited in any task.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

pub trait Clock: std::fmt::Debug + Send + Sync + 'static {
    /// Wall time: what is stored and shown.
    fn now(&self) -> SystemTime;

    /// Monotonic time: what intervals and deadlines are measured in (it never goes back when the
    /// wall clock is set).
    fn monotonic(&self) -> Instant;

    /// Waits `duration`.
    fn sleep(&self, duration: Duration) -> Sleep;

    fn unix_secs(&self) -> i64 {
        self.now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
    }

    fn unix_millis(&self) -> i64 {
        self.now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
    }

    /// The wall time as stored.
    fn timestamp(&self) -> crate::Timestamp {
        self.now().into()
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn monotonic(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// A clock that moves only when told to, or when something sleeps on it: a sleep returns at once
/// and moves both times forward by its length (and is remembered, for tests of backoff).
#[derive(Debug)]
pub struct ManualClock(Mutex<ManualTime>);

#[derive(Debug)]
struct ManualTime {
    wall: SystemTime,
    monotonic: Instant,
    slept: Vec<Duration>,
}

impl ManualClock {
    pub fn new(start: SystemTime) -> Self {
        ManualClock(Mutex::new(ManualTime { wall: start, monotonic: Instant::now(), slept: Vec::new() }))
    }

    pub fn advance(&self, by: Duration) {
        let mut t = self.0.lock().unwrap();
        t.wall += by;
        t.monotonic += by;
    }

    /// Every sleep so far, in order.
    pub fn slept(&self) -> Vec<Duration> {
        self.0.lock().unwrap().slept.clone()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        self.0.lock().unwrap().wall
    }

    fn monotonic(&self) -> Instant {
        self.0.lock().unwrap().monotonic
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        self.advance(duration);
        self.0.lock().unwrap().slept.push(duration);
        Box::pin(std::future::ready(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_sleeps_by_moving_both_times() {
        let clock = ManualClock::new(UNIX_EPOCH);
        let before = clock.monotonic();
        clock.sleep(Duration::from_secs(3)).await;
        assert_eq!(clock.unix_secs(), 3);
        assert_eq!(clock.monotonic() - before, Duration::from_secs(3));
        assert_eq!(clock.slept(), vec![Duration::from_secs(3)]);
    }
}
