//! The daemon's clock: real time, or a fast one that starts at a given instant (tests, demos).

use super::*;

/// The daemon's clock: real time, or (for tests and demonstrations) a clock that starts at a
/// given instant and runs `rate` times as fast.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin_real: Instant,
    origin: Timestamp,
    rate: f64,
}

impl Clock {
    /// The real clock.
    pub fn real() -> Clock {
        Clock {
            origin_real: Instant::now(),
            origin: Timestamp::now(),
            rate: 1.0,
        }
    }

    /// `START*RATE`, e.g. `2026-11-21T01:59:00Z*60`: starts at START and runs RATE times as fast.
    pub fn parse(s: &str) -> Result<Clock, String> {
        let (start, rate) = s.split_once('*').unwrap_or((s, "1"));
        let origin = start
            .parse::<Timestamp>()
            .map_err(|e| format!("clock `{s}`: `{start}` is not an RFC 3339 instant ({e})"))?;
        let rate = rate
            .parse::<f64>()
            .ok()
            .filter(|r| *r >= 1.0 && *r <= 10_000.0)
            .ok_or_else(|| format!("clock `{s}`: the rate must be a number from 1 to 10000"))?;
        Ok(Clock {
            origin_real: Instant::now(),
            origin,
            rate,
        })
    }

    /// Now, by this clock.
    pub fn now(&self) -> Timestamp {
        let real = self.origin_real.elapsed().as_secs_f64() * self.rate;
        self.origin + SignedDuration::from_secs_f64(real)
    }

    /// How long to sleep between looks at the calendar, in real time.
    pub(super) fn tick(&self) -> Duration {
        Duration::from_secs_f64((1.0 / self.rate).clamp(0.05, 1.0))
    }
}
