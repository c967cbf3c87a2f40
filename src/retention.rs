//! Retention jobs: raw readings (`[storage] raw_retention`; rollups are kept forever) and the
//! audit log (`[audit] retention_days`, blocked by `[audit] compliance_hold`), and expired
//! refresh tokens, sessions and token revocations. Each job is a `*_once` function (the token
//! purge is `Store::purge_auth`) plus a daily loop.

use crate::auth::keys::SecretKey;
use crate::clock::SharedClock;
use crate::store::{self, Store};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What an audit sweep did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditSweep {
    /// Retention is off (0 days).
    Disabled,
    /// A compliance hold is active; nothing removed.
    Held,
    /// Entries removed.
    Removed(u64),
}

/// Removes audit entries (and alerts resolved) older than `retention_days` (0 keeps
/// everything).
pub fn audit_sweep_once(
    store: &Store,
    key: &SecretKey,
    retention_days: u32,
    now_ms: i64,
) -> store::Result<AuditSweep> {
    if retention_days == 0 {
        return Ok(AuditSweep::Disabled);
    }
    let before = now_ms - i64::from(retention_days) * 86_400_000;
    // Resolved alerts are kept as long as the audit entries that tell of them.
    store.alerts_retain(before)?;
    match store.audit_retain(key, before, now_ms) {
        Ok(n) => Ok(AuditSweep::Removed(n)),
        Err(store::Error::ComplianceHold) => Ok(AuditSweep::Held),
        Err(e) => Err(e),
    }
}

/// Removes raw readings older than `keep_ms`; marks the file for compaction at the next start
/// when anything was removed.
pub fn raw_sweep_once(store: &Store, keep_ms: i64, now_ms: i64) -> store::Result<u64> {
    let n = store.retain_raw(now_ms - keep_ms)?;
    if n > 0 {
        store.set_meta(COMPACT_PENDING, 1)?;
    }
    Ok(n)
}

/// Meta flag: retention freed space; compact at the next start.
pub const COMPACT_PENDING: &str = "compact_pending";

/// Runs the sweeps at start and then daily until `cancel` fires.
pub async fn run(
    store: Store,
    key: SecretKey,
    retention_days: u32,
    raw_keep: Duration,
    clock: SharedClock,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(86_400));
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let (s, k, now) = (store.clone(), key.clone(), clock.now_ms());
        match tokio::task::spawn_blocking(move || audit_sweep_once(&s, &k, retention_days, now))
            .await
        {
            Ok(Ok(AuditSweep::Removed(n))) if n > 0 => {
                tracing::info!(removed = n, "audit retention removed old entries")
            }
            Ok(Ok(AuditSweep::Held)) => {
                tracing::info!("audit retention skipped: compliance hold is active")
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "audit retention failed"),
            Err(e) => tracing::error!(error = %e, "audit retention task failed"),
        }
        let (s, now) = (store.clone(), clock.now_ms());
        let keep = i64::try_from(raw_keep.as_millis()).unwrap_or(i64::MAX / 2);
        match tokio::task::spawn_blocking(move || raw_sweep_once(&s, keep, now)).await {
            Ok(Ok(n)) if n > 0 => tracing::info!(
                removed = n,
                "raw-data retention removed old readings; the file is compacted at the next start"
            ),
            Ok(Ok(_)) => tracing::debug!(keep_ms = keep, "raw-data retention: nothing to remove"),
            Ok(Err(e)) => tracing::error!(error = %e, "raw-data retention failed"),
            Err(e) => tracing::error!(error = %e, "raw-data retention task failed"),
        }
        let (s, now) = (store.clone(), clock.now_ms());
        match tokio::task::spawn_blocking(move || s.purge_auth(now)).await {
            Ok(Ok(p)) => tracing::debug!(?p, "expired tokens and sessions purged"),
            Ok(Err(e)) => tracing::error!(error = %e, "token purge failed"),
            Err(e) => tracing::error!(error = %e, "token purge task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Event, EventType, Severity};

    #[test]
    fn sweep_removes_old_entries_unless_held() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("k.redb"), 8).unwrap();
        let key = SecretKey::from_bytes([3; 32]);
        let day = 86_400_000;
        for d in 0..5 {
            store
                .audit_append(
                    &key,
                    Event::new(EventType::LoginSuccess, Severity::Info),
                    d * day,
                )
                .unwrap();
        }
        assert_eq!(
            audit_sweep_once(&store, &key, 0, 10 * day).unwrap(),
            AuditSweep::Disabled
        );
        store.audit_set_hold(true).unwrap();
        assert_eq!(
            audit_sweep_once(&store, &key, 7, 10 * day).unwrap(),
            AuditSweep::Held
        );
        store.audit_set_hold(false).unwrap();
        // Entries of days 0..2 are older than 7 days at day 10.
        assert_eq!(
            audit_sweep_once(&store, &key, 7, 10 * day).unwrap(),
            AuditSweep::Removed(3)
        );
        let v = store.audit_verify(&key).unwrap();
        assert!(v.ok, "{v:?}");
        assert_eq!(
            v.checked, 3,
            "two old entries kept plus the retention record"
        );
    }
}
