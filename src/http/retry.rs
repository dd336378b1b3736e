//! The one retry policy: delays that grow exponentially to a cap (backon's
//! [`ExponentialBuilder`]), plus up to a fraction of jitter so that many CPI processes started
//! together (compilation workers, max_in_flight) do not hit a server in step, a server's
//! `Retry-After` honoured up to a cap, and a number of attempts. The Ironic client, the WebDAV
//! and registry clients retry with it, and Ironic's waits poll with its delays.
//!
//! backon's blocking retry has no `adjust` hook (its async one has): the `Retry-After` of the
//! failed attempt reaches the delays through a slot that [`run`]'s `when` fills.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, BlockingRetryable, ExponentialBuilder};
use rand::Rng;

/// A growing delay: `initial * factor^n`, capped at `max`, plus up to `jitter` (a fraction of
/// it) more; for `attempts` in all, the first included, or without end (polls, whose loop has a
/// deadline of its own).
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    initial: Duration,
    factor: f32,
    max: Duration,
    jitter: f64,
    attempts: Option<u32>,
}

/// For services that answer quickly or not at all (WebDAV, the registry): three attempts, 0.5 s
/// and then 1 s apart (plus jitter).
impl Default for Policy {
    fn default() -> Policy {
        Policy::retries(Duration::from_millis(500), Duration::from_secs(2), 3)
    }
}

impl Policy {
    /// Out-of-range input is clamped: factor at least 1, jitter within 0..=1, initial at most
    /// `max`.
    pub fn new(initial: Duration, factor: f64, max: Duration, jitter: f64) -> Policy {
        Policy {
            initial: initial.min(max),
            factor: factor.max(1.0) as f32,
            max,
            jitter: if jitter.is_nan() {
                0.0
            } else {
                jitter.clamp(0.0, 1.0)
            },
            attempts: None,
        }
    }

    /// Retries of a request: delays double, a quarter of jitter, `attempts` in all.
    pub fn retries(initial: Duration, max: Duration, attempts: u32) -> Policy {
        Policy {
            attempts: Some(attempts),
            ..Policy::new(initial, 2.0, max, 0.25)
        }
    }

    /// The delays before each retry, in order; `None` once the attempts are spent.
    pub fn delays(&self) -> Delays {
        self.delays_after(Arc::default())
    }

    fn delays_after(&self, retry_after: Arc<Mutex<Option<Duration>>>) -> Delays {
        let growth = ExponentialBuilder::new()
            .with_min_delay(self.initial)
            .with_factor(self.factor)
            .with_max_delay(self.max);
        let growth = match self.attempts {
            Some(n) => growth.with_max_times(n.saturating_sub(1) as usize),
            None => growth.without_max_times(),
        };
        Delays {
            growth: growth.build(),
            jitter: self.jitter,
            retry_after,
            // A server may ask for a longer pause than our own cap, but not for any length.
            retry_after_cap: self.max.max(Duration::from_secs(1)),
        }
    }
}

/// The delays of a [`Policy`] (a backon backoff).
#[derive(Debug)]
pub struct Delays {
    growth: <ExponentialBuilder as BackoffBuilder>::Backoff,
    jitter: f64,
    /// The failed attempt's `Retry-After`, set by [`run`] before it asks for the next delay.
    retry_after: Arc<Mutex<Option<Duration>>>,
    retry_after_cap: Duration,
}

impl Iterator for Delays {
    type Item = Duration;

    /// Never below the un-jittered base, never above `max * (1 + jitter)` (or the capped
    /// `Retry-After`).
    fn next(&mut self) -> Option<Duration> {
        let base = self.growth.next()?;
        let mut delay = if self.jitter > 0.0 {
            base.mul_f64(1.0 + rand::rng().random_range(0.0..=self.jitter))
        } else {
            base
        };
        let asked = self
            .retry_after
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(asked) = asked {
            delay = delay.max(asked.min(self.retry_after_cap));
        }
        Some(delay)
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Give up: the failure is final, or repeating the request could do harm.
    Stop,
    /// Try again, after at least the server's `Retry-After` if it gave one.
    Retry(Option<Duration>),
}

/// Run `op` until it succeeds, `judge` stops it or `policy`'s attempts are spent; `notify`
/// hears of each retry before its delay. The result is `op`'s last.
pub fn run<T, E>(
    policy: &Policy,
    op: impl FnMut() -> Result<T, E>,
    judge: impl Fn(&E) -> Verdict,
    notify: impl FnMut(&E, Duration),
) -> Result<T, E> {
    let retry_after: Arc<Mutex<Option<Duration>>> = Arc::default();
    let delays = policy.delays_after(retry_after.clone());
    op.retry(delays)
        .when(|e| match judge(e) {
            Verdict::Stop => false,
            Verdict::Retry(asked) => {
                *retry_after.lock().unwrap_or_else(|p| p.into_inner()) = asked;
                true
            }
        })
        .notify(notify)
        .call()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn delays_grow_to_the_cap_within_jitter_bounds() {
        let mut d = Policy::new(secs(0.5), 2.0, secs(4.0), 0.25).delays();
        for base in [0.5, 1.0, 2.0, 4.0, 4.0, 4.0] {
            let got = d.next().unwrap().as_secs_f64();
            assert!(
                got >= base - 1e-6 && got <= base * 1.25 + 1e-6,
                "{got} vs {base}"
            );
        }
    }

    #[test]
    fn no_jitter_is_exact_and_bad_input_is_clamped() {
        let got: Vec<f64> = Policy::new(secs(0.25), 1.5, secs(1.0), 0.0)
            .delays()
            .take(5)
            .map(|d| d.as_secs_f64())
            .collect();
        // backon computes in f32: exact to a microsecond.
        let want = [0.25, 0.375, 0.5625, 0.84375, 1.0];
        assert!(
            got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-6),
            "{got:?}"
        );
        let mut d = Policy::new(secs(10.0), 0.5, secs(2.0), 5.0).delays();
        for _ in 0..10 {
            let got = d.next().unwrap().as_secs_f64();
            assert!((2.0 - 1e-6..=4.0 + 1e-6).contains(&got), "{got}");
        }
        assert_eq!(Policy::new(secs(1.0), 2.0, secs(1.0), f64::NAN).jitter, 0.0);
    }

    #[test]
    fn attempts() {
        let retries = |n| Policy::retries(Duration::ZERO, Duration::ZERO, n);
        assert_eq!(retries(3).delays().count(), 2);
        assert_eq!(retries(0).delays().count(), 0);
        let p = Policy::new(Duration::ZERO, 2.0, Duration::ZERO, 0.0);
        assert_eq!(p.delays().take(100).count(), 100, "no end");
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        let asked: Arc<Mutex<Option<Duration>>> = Arc::default();
        let mut d = Policy::new(secs(0.1), 2.0, secs(0.5), 0.0).delays_after(asked.clone());
        *asked.lock().unwrap() = Some(secs(0.3));
        assert_eq!(d.next(), Some(secs(0.3)));
        let second = d.next().unwrap().as_secs_f64();
        assert!((second - 0.2).abs() < 1e-6, "once only: {second}");
        *asked.lock().unwrap() = Some(secs(5000.0));
        assert_eq!(d.next(), Some(secs(1.0)), "max(policy max, 1 s)");
    }

    #[test]
    fn run_stops_when_judged_final_or_out_of_attempts() {
        let policy = Policy {
            jitter: 0.0,
            ..Policy::retries(Duration::ZERO, Duration::from_millis(1), 4)
        };
        let calls = std::cell::Cell::new(0);
        let mut slept = Vec::new();
        let r: Result<(), &str> = run(
            &policy,
            || {
                calls.set(calls.get() + 1);
                Err(if calls.get() < 3 { "busy" } else { "final" })
            },
            |e| match *e {
                "busy" => Verdict::Retry(Some(Duration::from_millis(20))),
                _ => Verdict::Stop,
            },
            |_, d| slept.push(d),
        );
        assert_eq!(r, Err("final"));
        assert_eq!(calls.get(), 3);
        assert_eq!(slept, vec![Duration::from_millis(20); 2]);

        let mut calls = 0;
        let r: Result<(), u32> = run(
            &policy,
            || {
                calls += 1;
                Err(calls)
            },
            |_| Verdict::Retry(None),
            |_, _| {},
        );
        assert_eq!(r, Err(4), "four attempts in all");
    }
}
