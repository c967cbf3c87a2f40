//! The audit log in redb: append (optionally inside another change's transaction), query,
//! verify and retention with an anchor. The chain rules are in `crate::audit`.

use super::schema::{AUDIT, AUDIT_STATE};
use super::{Error, Result, Store};
use crate::audit::{self, ChainState, Entry, Event, EventType, Severity, Verification};
use crate::auth::keys::SecretKey;
use redb::{ReadableDatabase, ReadableTable, WriteTransaction};

/// An event waiting to be appended, possibly in the same transaction as the change it records.
#[derive(Debug)]
pub struct Pending<'a> {
    key: &'a SecretKey,
    event: Event,
    ts_ms: i64,
}

impl<'a> Pending<'a> {
    /// An event at `ts_ms` chained with `key`.
    pub fn new(key: &'a SecretKey, event: Event, ts_ms: i64) -> Self {
        Self { key, event, ts_ms }
    }

    /// Appends inside `txn`.
    pub(crate) fn append_in(self, txn: &WriteTransaction) -> Result<Entry> {
        let mut st = load_state(txn)?;
        let mut t = txn.open_table(AUDIT)?;
        let prev = match t.last()? {
            Some((_, v)) => decode(v.value())?.mac,
            None => st.anchor_mac.clone(),
        };
        let mut e = Entry {
            seq: st.last_seq + 1,
            ts_ms: self.ts_ms,
            event: self.event.bounded(),
            prev,
            mac: String::new(),
        };
        e.mac = audit::compute_mac(self.key, &e);
        t.insert(e.seq, encode(&e)?.as_slice())?;
        st.last_seq = e.seq;
        save_state(txn, &st)?;
        Ok(e)
    }
}

fn decode(b: &[u8]) -> Result<Entry> {
    serde_json::from_slice(b).map_err(|e| Error::Corrupt(format!("audit entry: {e}")))
}

fn encode(e: &Entry) -> Result<Vec<u8>> {
    serde_json::to_vec(e).map_err(|x| Error::Corrupt(x.to_string()))
}

fn load_state(txn: &WriteTransaction) -> Result<ChainState> {
    let t = txn.open_table(AUDIT_STATE)?;
    let v = t.get("chain")?;
    v.map(|v| serde_json::from_slice(v.value()).map_err(|e| Error::Corrupt(e.to_string())))
        .transpose()
        .map(Option::unwrap_or_default)
}

fn save_state(txn: &WriteTransaction, st: &ChainState) -> Result<()> {
    let b = serde_json::to_vec(st).map_err(|e| Error::Corrupt(e.to_string()))?;
    txn.open_table(AUDIT_STATE)?.insert("chain", b.as_slice())?;
    Ok(())
}

/// Which entries a query returns.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AuditFilter {
    /// Only these types (empty = all).
    pub event_types: Vec<EventType>,
    /// Only these severities (empty = all).
    pub severities: Vec<Severity>,
    /// Only these usernames, case-insensitive (empty = all).
    pub users: Vec<String>,
    /// Not before, UTC ms.
    pub start_ms: Option<i64>,
    /// Before, UTC ms.
    pub end_ms: Option<i64>,
}

impl AuditFilter {
    fn matches(&self, e: &Entry) -> bool {
        (self.event_types.is_empty() || self.event_types.contains(&e.event.event_type))
            && (self.severities.is_empty() || self.severities.contains(&e.event.severity))
            && (self.users.is_empty()
                || e.event
                    .username
                    .as_ref()
                    .is_some_and(|u| self.users.iter().any(|x| x.eq_ignore_ascii_case(u))))
            && self.start_ms.is_none_or(|s| e.ts_ms >= s)
            && self.end_ms.is_none_or(|s| e.ts_ms < s)
    }
}

/// Events of concurrent requests, appended together: one transaction (and one sync) for all
/// that arrived while the previous one committed, rather than one each.
#[derive(Default)]
pub(super) struct AuditQueue {
    waiting: std::sync::Mutex<Vec<Queued>>,
    /// Held by the thread committing a group.
    turn: std::sync::Mutex<()>,
}

impl std::fmt::Debug for AuditQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditQueue")
    }
}

struct Queued {
    key: SecretKey,
    event: Event,
    ts_ms: i64,
    /// Whether its group committed; set once it has been tried.
    done: std::sync::Arc<std::sync::OnceLock<bool>>,
}

impl Store {
    /// Appends an event from async code, on a blocking thread, in a group with the events
    /// other requests log meanwhile; returns once it is durable. A failure is logged (callers
    /// never show it to a client).
    pub async fn audit_logged(&self, key: &SecretKey, event: Event, ts_ms: i64) {
        let done = std::sync::Arc::new(std::sync::OnceLock::new());
        self.audit_queue
            .waiting
            .lock()
            .expect("audit queue")
            .push(Queued {
                key: key.clone(),
                event,
                ts_ms,
                done: done.clone(),
            });
        let store = self.clone();
        let res = tokio::task::spawn_blocking(move || store.audit_group(&done)).await;
        if !matches!(res, Ok(true)) {
            tracing::error!("could not write an audit entry");
        }
    }

    /// Waits for the turn to commit; unless an earlier group took `mine` along, commits every
    /// waiting event in one transaction. Whether `mine` was written.
    fn audit_group(&self, mine: &std::sync::OnceLock<bool>) -> bool {
        let q = &self.audit_queue;
        let _turn = q.turn.lock().expect("audit turn");
        if let Some(ok) = mine.get() {
            return *ok;
        }
        let group = std::mem::take(&mut *q.waiting.lock().expect("audit queue"));
        let write = || -> Result<()> {
            let txn = self.begin_write()?;
            for e in &group {
                Pending::new(&e.key, e.event.clone(), e.ts_ms).append_in(&txn)?;
            }
            Ok(txn.commit()?)
        };
        let ok = write().is_ok();
        for e in &group {
            // Each event is in exactly one group, so this is its only setting.
            let _ = e.done.set(ok);
        }
        mine.get().copied().unwrap_or(false)
    }

    /// Appends one event in its own durable transaction.
    pub fn audit_append(&self, key: &SecretKey, event: Event, ts_ms: i64) -> Result<Entry> {
        let txn = self.begin_write()?;
        let e = Pending::new(key, event, ts_ms).append_in(&txn)?;
        txn.commit()?;
        Ok(e)
    }

    /// Matching entries, newest first, with the total number of matches.
    pub fn audit_query(
        &self,
        f: &AuditFilter,
        limit: usize,
        offset: usize,
    ) -> Result<(Vec<Entry>, usize)> {
        let txn = self.db().begin_read()?;
        let t = txn.open_table(AUDIT)?;
        let mut out = Vec::new();
        let mut total = 0;
        for row in t.range::<u64>(..)?.rev() {
            let e = decode(row?.1.value())?;
            if f.matches(&e) {
                if total >= offset && out.len() < limit {
                    out.push(e);
                }
                total += 1;
            }
        }
        Ok((out, total))
    }

    /// Up to `max` matching entries after sequence number `after`, oldest first.
    pub fn audit_page(&self, f: &AuditFilter, after: u64, max: usize) -> Result<Vec<Entry>> {
        let txn = self.db().begin_read()?;
        let t = txn.open_table(AUDIT)?;
        let mut out = Vec::new();
        for row in t.range(after.saturating_add(1)..)? {
            let e = decode(row?.1.value())?;
            if f.matches(&e) {
                out.push(e);
                if out.len() == max {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Checks the whole chain.
    pub fn audit_verify(&self, key: &SecretKey) -> Result<Verification> {
        let txn = self.db().begin_read()?;
        let st = match txn.open_table(AUDIT_STATE)?.get("chain")? {
            Some(v) => {
                serde_json::from_slice(v.value()).map_err(|e| Error::Corrupt(e.to_string()))?
            }
            None => ChainState::default(),
        };
        let t = txn.open_table(AUDIT)?;
        let mut entries = Vec::new();
        for row in t.range::<u64>(..)? {
            match decode(row?.1.value()) {
                Ok(e) => entries.push(e),
                Err(_) => {
                    // An undecodable entry is tampering too; report its position.
                    let seq = st.anchor_seq + entries.len() as u64 + 1;
                    return Ok(Verification {
                        ok: false,
                        checked: entries.len() as u64,
                        first_bad_seq: Some(seq),
                        reason: Some("entry unreadable".into()),
                    });
                }
            }
        }
        Ok(audit::verify(key, &st, entries))
    }

    /// Removes entries older than `before_ms` (from the front of the log), moving the anchor
    /// so verification still passes, and records the removal. Refused under a compliance hold.
    pub fn audit_retain(&self, key: &SecretKey, before_ms: i64, now_ms: i64) -> Result<u64> {
        let txn = self.begin_write()?;
        let mut st = load_state(&txn)?;
        if st.hold {
            return Err(Error::ComplianceHold);
        }
        let mut removed = 0;
        {
            let mut t = txn.open_table(AUDIT)?;
            loop {
                let Some((k, v)) = t.first()? else { break };
                let e = decode(v.value())?;
                let seq = k.value();
                drop((k, v));
                if e.ts_ms >= before_ms {
                    break;
                }
                t.remove(seq)?;
                st.anchor_seq = e.seq;
                st.anchor_mac = e.mac;
                removed += 1;
            }
        }
        save_state(&txn, &st)?;
        if removed > 0 {
            let mut ev = Event::new(EventType::AuditRetention, Severity::Info);
            ev.details =
                serde_json::json!({"removed": removed, "before": crate::clock::rfc3339(before_ms)});
            Pending::new(key, ev, now_ms).append_in(&txn)?;
        }
        txn.commit()?;
        Ok(removed)
    }

    /// Sets or clears the compliance hold.
    pub fn audit_set_hold(&self, hold: bool) -> Result<()> {
        let txn = self.begin_write()?;
        let mut st = load_state(&txn)?;
        st.hold = hold;
        save_state(&txn, &st)?;
        txn.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many requests logging at once: every event is appended exactly once, in one unbroken
    /// chain, and each caller returns only once its own event is stored.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_events_are_grouped_into_one_unbroken_chain() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("k.redb"), 8).unwrap();
        let key = SecretKey::from_bytes([7; 32]);
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let (store, key) = (store.clone(), key.clone());
                tokio::spawn(async move {
                    let mut ev = Event::new(EventType::DataExport, Severity::Info);
                    ev.resource = Some(format!("export:{i}"));
                    store.audit_logged(&key, ev, 1_000 + i).await;
                    // Durable once the call returns: a fresh read finds it.
                    let (found, _) = store
                        .audit_query(&AuditFilter::default(), 1_000, 0)
                        .unwrap();
                    assert!(
                        found
                            .iter()
                            .any(|e| e.event.resource.as_deref() == Some(&format!("export:{i}")))
                    );
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let (all, total) = store
            .audit_query(&AuditFilter::default(), 1_000, 0)
            .unwrap();
        assert_eq!(total, 200);
        let mut resources: Vec<_> = all
            .iter()
            .filter_map(|e| e.event.resource.clone())
            .collect();
        resources.sort();
        resources.dedup();
        assert_eq!(resources.len(), 200, "each event once");
        let mut seqs: Vec<u64> = all.iter().map(|e| e.seq).collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
        let v = store.audit_verify(&key).unwrap();
        assert!(v.ok && v.checked == 200, "{v:?}");
    }
}
