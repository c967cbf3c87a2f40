//! What the store keeps of a push target: the cursors of what it acknowledged (the store's
//! readings are the queue; nothing is written per reading), the backfill in progress, and the
//! counters `kasad push status` and `/metrics` show.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A target's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// When the target was first configured: live pushing starts there (older history is a
    /// backfill's).
    pub started_ms: i64,
    /// Per device id: the newest reading (raw) or bucket start (rollups) acknowledged.
    pub cursors: BTreeMap<String, i64>,
    /// A backfill asked for and not finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfill: Option<Backfill>,
    /// The earliest time finished backfills covered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covered_from_ms: Option<i64>,
    /// Readings acknowledged by the target.
    pub sent: u64,
    /// Samples acknowledged (a reading is up to seven: its values, energy and cost).
    #[serde(default)]
    pub samples_sent: u64,
    /// Readings never sent: older than `max_age` when the target came back, or refused by the
    /// target as data (400, 422: e.g. too old for it).
    pub skipped: u64,
    /// Failed requests.
    pub errors: u64,
    /// The last failure, in words (never a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When a batch was last acknowledged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_ms: Option<i64>,
}

/// History sent on request: `[from_ms, to_ms]`, its own cursors.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Backfill {
    /// Which request (a forced one replaces a running one: what the old one read is dropped).
    #[serde(default)]
    pub id: u64,
    /// Oldest time sent.
    pub from_ms: i64,
    /// Newest time sent (where live pushing began).
    pub to_ms: i64,
    /// Per device id: the newest reading acknowledged.
    pub cursors: BTreeMap<String, i64>,
    /// Readings it sent.
    pub sent: u64,
}

impl State {
    /// A new target's state: live from `now_ms`.
    pub fn new(now_ms: i64) -> Self {
        Self {
            started_ms: now_ms,
            ..Self::default()
        }
    }

    /// The live cursor of `device` (before its first reading after the start).
    pub fn cursor(&self, device: &str) -> i64 {
        self.cursors
            .get(device)
            .copied()
            .unwrap_or(self.started_ms - 1)
    }
}
