//! A rolling-window rate limit per key (a user id): at most `limit` hits in any `window_ms`.
//! Each key keeps at most `limit` times, so memory grows only with the number of keys (users).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Hits per key.
#[derive(Debug, Default)]
pub struct Rolling {
    hits: Mutex<HashMap<u32, (VecDeque<i64>, bool)>>,
}

/// A refused hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// When the next hit is allowed, UTC ms.
    pub retry_at_ms: i64,
    /// The first refusal since the key was last allowed (audit it; count the rest).
    pub first: bool,
}

impl Rolling {
    /// Records a hit of `key` at `now`, or refuses it when `limit` hits fall in the window.
    pub fn hit(&self, key: u32, now: i64, limit: u32, window_ms: i64) -> Result<(), Limited> {
        let mut map = self.hits.lock().expect("rate lock");
        let (q, refused) = map.entry(key).or_default();
        while q.front().is_some_and(|t| now - t >= window_ms) {
            q.pop_front();
        }
        if q.len() >= limit as usize {
            let first = !*refused;
            *refused = true;
            return Err(Limited {
                retry_at_ms: q.front().map_or(now, |t| t + window_ms),
                first,
            });
        }
        *refused = false;
        q.push_back(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_key_over_a_rolling_window() {
        let r = Rolling::default();
        for t in 0..3 {
            assert!(r.hit(1, t, 3, 60_000).is_ok());
        }
        let e = r.hit(1, 10, 3, 60_000).unwrap_err();
        assert_eq!(
            e,
            Limited {
                retry_at_ms: 60_000,
                first: true
            }
        );
        assert!(!r.hit(1, 11, 3, 60_000).unwrap_err().first);
        assert!(r.hit(2, 11, 3, 60_000).is_ok(), "another key");
        assert!(r.hit(1, 60_000, 3, 60_000).is_ok(), "the window moved on");
    }
}
