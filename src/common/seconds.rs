//! A duration read from a configuration file as a number of seconds.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Seconds as configured (`30`, `0.5`): greater than zero and at most 1e9 (about 31 years), so
/// that no caller has to check it again and no `Instant` arithmetic can overflow. Written back as
/// the number it was read from.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Seconds(Duration);

impl Seconds {
    /// The largest value accepted, in seconds.
    pub const MAX: f64 = 1e9;
    const MAX_WHOLE: u64 = 1_000_000_000;

    /// A whole number of seconds, for defaults; `n` must be in range (checked when compiled in a
    /// `const`).
    pub const fn from_secs(n: u64) -> Seconds {
        assert!(n > 0 && n <= Self::MAX_WHOLE, "Seconds out of range");
        Seconds(Duration::from_secs(n))
    }

    /// Milliseconds, for defaults below a second.
    pub const fn from_millis(n: u64) -> Seconds {
        assert!(n > 0 && n <= Self::MAX_WHOLE * 1000, "Seconds out of range");
        Seconds(Duration::from_millis(n))
    }

    pub fn get(self) -> Duration {
        self.0
    }

    pub fn as_secs_f64(self) -> f64 {
        self.0.as_secs_f64()
    }
}

impl TryFrom<f64> for Seconds {
    type Error = String;

    fn try_from(s: f64) -> Result<Seconds, String> {
        if !(s.is_finite() && s > 0.0) {
            return Err("must be a positive number of seconds".into());
        }
        if s > Self::MAX {
            return Err("must be at most 1e9 seconds (about 31 years)".into());
        }
        Ok(Seconds(Duration::from_secs_f64(s)))
    }
}

impl From<Seconds> for f64 {
    fn from(s: Seconds) -> f64 {
        s.0.as_secs_f64()
    }
}

impl From<Seconds> for Duration {
    fn from(s: Seconds) -> Duration {
        s.0
    }
}

impl std::fmt::Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} s", self.0.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_positive_finite_seconds_up_to_1e9() {
        let read = |v: serde_json::Value| serde_json::from_value::<Seconds>(v).map(Seconds::get);
        assert_eq!(
            read(serde_json::json!(30)).unwrap(),
            Duration::from_secs(30)
        );
        assert_eq!(
            read(serde_json::json!(0.25)).unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(
            read(serde_json::json!(1e9)).unwrap(),
            Duration::from_secs(1_000_000_000)
        );
        for bad in [
            serde_json::json!(0),
            serde_json::json!(-1),
            serde_json::json!(1e300),
        ] {
            let e = read(bad.clone()).unwrap_err().to_string();
            assert!(e.contains("seconds"), "{bad}: {e}");
        }
        assert!(read(serde_json::json!("30")).is_err());
    }

    #[test]
    fn writes_back_the_number() {
        let s = Seconds::try_from(1.5).unwrap();
        assert_eq!(serde_json::to_value(s).unwrap(), serde_json::json!(1.5));
        assert_eq!(Seconds::from_millis(500).get(), Duration::from_millis(500));
    }
}
