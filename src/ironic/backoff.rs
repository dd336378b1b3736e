//! Delays between retries and between polls: exponential, capped, with jitter so that many CPI
//! processes started together (compilation workers, max_in_flight) do not hit Ironic in step.

use std::time::{Duration, Instant};

use rand::Rng;

use crate::config::{PollPolicy, RetryPolicy};

/// A growing delay: `initial * factor^n`, capped at `max`, plus up to `jitter` (a fraction) more.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: f64,
    factor: f64,
    max: f64,
    jitter: f64,
}

impl Backoff {
    pub fn new(initial: f64, factor: f64, max: f64, jitter: f64) -> Backoff {
        let max = max.max(0.0);
        Backoff {
            next: initial.clamp(0.0, max),
            factor: factor.max(1.0),
            max,
            jitter: jitter.clamp(0.0, 1.0),
        }
    }

    /// Retries double their delay; a quarter of jitter spreads simultaneous clients.
    pub fn for_retry(p: &RetryPolicy) -> Backoff {
        Backoff::new(
            p.initial_delay.as_secs_f64(),
            2.0,
            p.max_delay.as_secs_f64(),
            0.25,
        )
    }

    pub fn for_poll(p: &PollPolicy) -> Backoff {
        Backoff::new(
            p.initial_interval.as_secs_f64(),
            p.factor,
            p.max_interval.as_secs_f64(),
            p.jitter,
        )
    }

    /// The next delay. Never above `max * (1 + jitter)`, never below the un-jittered base.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * self.factor).min(self.max);
        let extra = if self.jitter > 0.0 {
            rand::rng().random_range(0.0..=self.jitter) * base
        } else {
            0.0
        };
        Duration::from_secs_f64(base + extra)
    }
}

/// How long a request may keep retrying transient failures.
#[derive(Debug, Clone, Copy)]
pub enum RetryBudget {
    /// A number of attempts in all (plain API calls).
    Attempts(u32),
    /// Until this instant (waits: an Ironic restart during a long deploy must be ridden out as
    /// long as the wait's own deadline allows).
    Until(Instant),
}

impl RetryBudget {
    /// Whether attempt number `attempt` (1-based, just failed) may be followed by another after
    /// sleeping `delay`.
    pub fn allows(&self, attempt: u32, delay: Duration) -> bool {
        match *self {
            RetryBudget::Attempts(max) => attempt < max,
            RetryBudget::Until(deadline) => Instant::now() + delay < deadline,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_within_jitter_bounds() {
        let mut b = Backoff::new(0.5, 2.0, 4.0, 0.25);
        let expected = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0];
        for base in expected {
            let d = b.next_delay().as_secs_f64();
            assert!(d >= base - 1e-9 && d <= base * 1.25 + 1e-9, "{d} vs {base}");
        }
    }

    #[test]
    fn no_jitter_is_exact_and_bad_input_is_clamped() {
        let mut b = Backoff::new(0.25, 1.5, 1.0, 0.0);
        let got: Vec<f64> = (0..5).map(|_| b.next_delay().as_secs_f64()).collect();
        assert_eq!(got, vec![0.25, 0.375, 0.5625, 0.84375, 1.0]);
        let mut b = Backoff::new(10.0, 0.5, 2.0, 5.0);
        for _ in 0..10 {
            let d = b.next_delay().as_secs_f64();
            assert!((2.0..=4.0).contains(&d), "{d}");
        }
    }

    #[test]
    fn budgets() {
        let a = RetryBudget::Attempts(3);
        assert!(a.allows(1, Duration::ZERO) && a.allows(2, Duration::ZERO));
        assert!(!a.allows(3, Duration::ZERO));
        let u = RetryBudget::Until(Instant::now() + Duration::from_secs(5));
        assert!(u.allows(100, Duration::from_secs(1)));
        assert!(!u.allows(1, Duration::from_secs(6)));
    }
}
