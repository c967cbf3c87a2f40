//! Login throttling: after [`MAX_FAILURES`] failed logins within [`WINDOW_MS`] for the same
//! username or from the same client address, further attempts are refused until the window
//! has passed. A success clears the username's count. Times come from the injected clock.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Failures allowed per key within the window.
pub const MAX_FAILURES: usize = 5;
/// The window, ms.
pub const WINDOW_MS: i64 = 15 * 60 * 1000;

/// Failure history per username and per client address.
#[derive(Debug, Default)]
pub struct Throttle {
    failures: Mutex<HashMap<String, VecDeque<i64>>>,
}

fn keys(username: &str, client: &str) -> [String; 2] {
    [
        format!("u:{}", username.to_lowercase()),
        format!("a:{client}"),
    ]
}

impl Throttle {
    /// If attempts are blocked, the time (UTC ms) when the next one is allowed.
    pub fn blocked_until(&self, username: &str, client: &str, now_ms: i64) -> Option<i64> {
        let mut map = self.failures.lock().expect("throttle lock");
        keys(username, client)
            .iter()
            .filter_map(|k| {
                let q = map.get_mut(k)?;
                while q.front().is_some_and(|t| now_ms - t >= WINDOW_MS) {
                    q.pop_front();
                }
                (q.len() >= MAX_FAILURES).then(|| q[q.len() - MAX_FAILURES] + WINDOW_MS)
            })
            .max()
    }

    /// Records a failed attempt.
    pub fn failed(&self, username: &str, client: &str, now_ms: i64) {
        let mut map = self.failures.lock().expect("throttle lock");
        if map.len() > 10_000 {
            map.retain(|_, q| q.back().is_some_and(|t| now_ms - t < WINDOW_MS));
        }
        for k in keys(username, client) {
            map.entry(k).or_default().push_back(now_ms);
        }
    }

    /// Records a success (clears the username's failures).
    pub fn succeeded(&self, username: &str) {
        let k = format!("u:{}", username.to_lowercase());
        self.failures.lock().expect("throttle lock").remove(&k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_repeated_failures_until_the_window_passes() {
        let t = Throttle::default();
        for i in 0..MAX_FAILURES as i64 {
            assert_eq!(t.blocked_until("ann", "1.2.3.4", i), None);
            t.failed("ann", "1.2.3.4", i);
        }
        let until = t.blocked_until("ann", "9.9.9.9", 10).unwrap();
        assert_eq!(until, WINDOW_MS);
        assert!(
            t.blocked_until("bob", "1.2.3.4", 10).is_some(),
            "same address"
        );
        assert_eq!(t.blocked_until("bob", "5.5.5.5", 10), None);
        assert_eq!(t.blocked_until("ann", "1.2.3.4", WINDOW_MS + 5), None);
    }
}
