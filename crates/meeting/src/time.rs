//! The meeting's clock: milliseconds since the Unix epoch, as the driver reads them. The
//! rules never read a clock; every call that needs the time is given it, so tests run in
//! simulated time and a record written before a restart means the same after it.

use std::ops::Add;
use std::time::Duration;

/// A point in time: milliseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub u64);

impl Time {
    /// The time as milliseconds since the Unix epoch.
    pub fn as_millis(self) -> u64 {
        self.0
    }

    /// How long after `earlier` this is (zero if it is not after).
    pub fn since(self, earlier: Time) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// How long until `later` (zero if it has passed).
    pub fn until(self, later: Time) -> Duration {
        later.since(self)
    }
}

impl Add<Duration> for Time {
    type Output = Time;

    fn add(self, d: Duration) -> Time {
        Time(self.0.saturating_add(d.as_millis() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_between_times_never_go_negative() {
        let t = Time(1_000);
        assert_eq!(
            (t + Duration::from_secs(2)).since(t),
            Duration::from_secs(2)
        );
        assert_eq!(t.since(t + Duration::from_secs(2)), Duration::ZERO);
        assert_eq!(t.until(Time(1_500)), Duration::from_millis(500));
    }
}
