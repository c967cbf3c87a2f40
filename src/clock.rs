//! The one source of time for the whole daemon.
//!
//! Owns: wall-clock time (UTC Unix milliseconds) behind the [`Clock`] trait, so tests can drive
//! time with [`ManualClock`] instead of changing the system clock. Monotonic time (timeouts,
//! backoff, intervals) comes from `tokio::time`, which tests control with `tokio::time::pause`.
//! Nothing else in the crate may call `SystemTime::now` or `chrono::Utc::now`.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Wall-clock time in UTC Unix milliseconds.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Current wall-clock time, UTC Unix milliseconds.
    fn now_ms(&self) -> i64;

    /// Changes whenever the clock is set by hand, so waits for a wall-clock time (the
    /// scheduler) can look again; `None` for a clock that only moves by itself.
    fn steps(&self) -> Option<tokio::sync::watch::Receiver<()>> {
        None
    }
}

/// A shared clock handle.
pub type SharedClock = Arc<dyn Clock>;

/// The earliest time this build takes for real: a Pi without a real-time clock boots at 1970
/// (or at its last shutdown) until NTP sets it.
pub const PLAUSIBLE_FROM_MS: i64 = 1_735_689_600_000; // 2025-01-01T00:00:00Z

/// The clock guard: whether `now_ms` can be trusted — not before [`PLAUSIBLE_FROM_MS`] and not
/// more than a minute behind the newest reading already stored (a clock that went back).
pub fn trustworthy(now_ms: i64, newest_stored_ms: Option<i64>) -> bool {
    now_ms >= PLAUSIBLE_FROM_MS && newest_stored_ms.is_none_or(|n| now_ms + 60_000 >= n)
}

/// The system's real-time clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis()
    }
}

/// A clock that only moves when told to; for tests and for replaying history.
#[derive(Debug)]
pub struct ManualClock {
    now: AtomicI64,
    steps: tokio::sync::watch::Sender<()>,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new(0)
    }
}

impl ManualClock {
    /// A clock standing at `now_ms`.
    pub fn new(now_ms: i64) -> Self {
        Self {
            now: AtomicI64::new(now_ms),
            steps: tokio::sync::watch::Sender::new(()),
        }
    }

    /// Moves the clock to `now_ms` (may go backwards, like a badly set system clock).
    pub fn set(&self, now_ms: i64) {
        self.now.store(now_ms, Ordering::SeqCst);
        self.steps.send_replace(());
    }

    /// Moves the clock forward by `delta_ms`.
    pub fn advance(&self, delta_ms: i64) {
        self.now.fetch_add(delta_ms, Ordering::SeqCst);
        self.steps.send_replace(());
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }

    fn steps(&self) -> Option<tokio::sync::watch::Receiver<()>> {
        Some(self.steps.subscribe())
    }
}

/// The system clock as a shared handle.
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// Formats UTC milliseconds as RFC 3339 with millisecond precision and a `Z` suffix.
pub fn rfc3339(ts_ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ts_ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// UTC ms of an RFC 3339 time; panics on bad input (test helper).
#[cfg(test)]
pub fn utc(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s)
        .expect("an RFC 3339 time")
        .timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(1_000);
        assert_eq!(c.now_ms(), 1_000);
        c.advance(500);
        assert_eq!(c.now_ms(), 1_500);
        c.set(10);
        assert_eq!(c.now_ms(), 10);
    }

    #[test]
    fn rfc3339_has_millis_and_z() {
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
