//! The one retry policy: exponential delays with jitter, bounded by a number of attempts, a
//! deadline, or neither (loops that must not give up, such as the outbox relay). Whether an error
//! is worth another try is its kind's decision (`ErrorKind::is_retryable`), not the caller's.
//!
//! Time comes from a `Clock`, so a test with a `ManualClock` runs every delay without waiting.

use crate::clock::Clock;
use crate::error::Result;
use rand::Rng;
use std::future::Future;
use std::time::{Duration, Instant};

/// How a failed operation is tried again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The wait after the first failure; it doubles after each further one.
    pub first: Duration,
    /// The longest wait.
    pub max: Duration,
    /// Each wait is moved by up to this fraction either way, so that many clients that failed
    /// together do not retry together.
    pub jitter: f64,
    /// Tries in all, the first included; `None` for no limit.
    pub attempts: Option<u32>,
    /// No new try starts later than this after the first one.
    pub deadline: Option<Duration>,
}

impl Backoff {
    /// Retries forever, from `first` up to `max` between tries.
    pub const fn new(first: Duration, max: Duration) -> Self {
        Backoff { first, max, jitter: 0.2, attempts: None, deadline: None }
    }

    /// One try and no retry: for a caller whose own loop retries the larger unit of work.
    pub const fn once() -> Self {
        Backoff::new(Duration::ZERO, Duration::ZERO).attempts(1)
    }

    pub const fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = Some(if attempts == 0 { 1 } else { attempts });
        self
    }

    pub const fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    pub const fn without_jitter(mut self) -> Self {
        self.jitter = 0.0;
        self
    }

    /// Starts counting failures now.
    pub fn start(&self, clock: &dyn Clock) -> Retry {
        Retry { policy: *self, failures: 0, started: clock.monotonic() }
    }

    /// The wait after `failures` failures in a row (1 for the first), before jitter.
    fn base_delay(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1));
        self.first.saturating_mul(factor).min(self.max)
    }
}

/// The state of one operation under a `Backoff`.
#[derive(Debug, Clone)]
pub struct Retry {
    policy: Backoff,
    failures: u32,
    started: Instant,
}

impl Retry {
    /// Records a failure. Returns how long to wait before the next try, or `None` when the policy
    /// allows no more.
    pub fn failed(&mut self, clock: &dyn Clock) -> Option<Duration> {
        self.failures += 1;
        if self.policy.attempts.is_some_and(|n| self.failures >= n) {
            return None;
        }
        let delay = jittered(self.policy.base_delay(self.failures), self.policy.jitter).min(self.policy.max);
        let elapsed = clock.monotonic().saturating_duration_since(self.started);
        match self.policy.deadline {
            Some(deadline) if elapsed + delay > deadline => None,
            _ => Some(delay),
        }
    }

    /// A success: the next failure waits `first` again and the deadline starts over.
    pub fn succeeded(&mut self, clock: &dyn Clock) {
        self.failures = 0;
        self.started = clock.monotonic();
    }
}

fn jittered(delay: Duration, jitter: f64) -> Duration {
    if jitter <= 0.0 || delay.is_zero() {
        return delay;
    }
    delay.mul_f64(1.0 + rand::rng().random_range(-jitter..=jitter))
}

/// Runs `op` until it succeeds, fails with an error that is not retryable, or `policy` is spent;
/// each retry is logged with `what`. Returns the last outcome and how many tries were made.
pub async fn retry<T, F, Fut>(policy: &Backoff, clock: &dyn Clock, what: &str, mut op: F) -> (Result<T>, u32)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut state = policy.start(clock);
    loop {
        let outcome = op().await;
        let error = match &outcome {
            Err(e) if e.kind().is_retryable() => e,
            _ => return (outcome, state.failures + 1),
        };
        let Some(wait) = state.failed(clock) else { return (outcome, state.failures) };
        tracing::warn!(attempt = state.failures, error = %error, retry_in = ?wait, "{what} failed; retrying");
        clock.sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Error, ManualClock};
    use std::time::UNIX_EPOCH;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn delays_double_up_to_the_maximum() {
        let clock = ManualClock::new(UNIX_EPOCH);
        let mut r = Backoff::new(ms(100), ms(500)).without_jitter().start(&clock);
        let delays: Vec<_> = (0..5).map(|_| r.failed(&clock).unwrap()).collect();
        assert_eq!(delays, vec![ms(100), ms(200), ms(400), ms(500), ms(500)]);
        r.succeeded(&clock);
        assert_eq!(r.failed(&clock), Some(ms(100)));
    }

    #[test]
    fn jitter_stays_within_its_fraction_and_under_the_maximum() {
        let clock = ManualClock::new(UNIX_EPOCH);
        let policy = Backoff::new(ms(1000), ms(1100));
        let delays: Vec<_> = (0..200).map(|_| policy.start(&clock).failed(&clock).unwrap()).collect();
        assert!(delays.iter().all(|d| *d >= ms(800) && *d <= ms(1100)), "{delays:?}");
        assert!(delays.iter().any(|d| *d != delays[0]), "no jitter at all");
    }

    #[test]
    fn attempts_count_the_first_try() {
        let clock = ManualClock::new(UNIX_EPOCH);
        let mut r = Backoff::new(ms(10), ms(10)).attempts(3).start(&clock);
        assert!(r.failed(&clock).is_some());
        assert!(r.failed(&clock).is_some());
        assert_eq!(r.failed(&clock), None);
        assert_eq!(Backoff::once().start(&clock).failed(&clock), None);
    }

    #[test]
    fn no_try_starts_past_the_deadline() {
        let clock = ManualClock::new(UNIX_EPOCH);
        let mut r = Backoff::new(ms(400), ms(400)).without_jitter().deadline(ms(1000)).start(&clock);
        assert_eq!(r.failed(&clock), Some(ms(400)));
        clock.advance(ms(400));
        assert_eq!(r.failed(&clock), Some(ms(400)));
        clock.advance(ms(400));
        assert_eq!(r.failed(&clock), None, "800 ms gone, a 400 ms wait would end past 1000 ms");
    }

    #[tokio::test]
    async fn retry_stops_at_an_error_that_is_not_retryable() {
        let clock = ManualClock::new(UNIX_EPOCH);
        let policy = Backoff::new(ms(100), ms(1000)).without_jitter().attempts(10);
        let mut calls = 0;
        let (outcome, tries) = retry(&policy, &clock, "test", || {
            calls += 1;
            let n = calls;
            async move {
                match n {
                    1 | 2 => Err::<(), _>(Error::unavailable("down")),
                    _ => Err(Error::invalid("refused")),
                }
            }
        })
        .await;
        assert_eq!(outcome.unwrap_err().kind(), crate::ErrorKind::InvalidInput);
        assert_eq!(tries, 3);
        assert_eq!(clock.slept(), vec![ms(100), ms(200)], "slept on the clock, not on the wall");
    }

    #[tokio::test]
    async fn retry_gives_up_when_the_attempts_are_spent() {
        let clock = ManualClock::new(UNIX_EPOCH);
        let policy = Backoff::new(ms(100), ms(1000)).without_jitter().attempts(4);
        let (outcome, tries) =
            retry(&policy, &clock, "test", || async { Err::<(), _>(Error::unavailable("down")) }).await;
        assert!(outcome.is_err());
        assert_eq!(tries, 4);
        assert_eq!(clock.slept(), vec![ms(100), ms(200), ms(400)]);
    }
}
