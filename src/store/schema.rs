//! Every redb table of the daemon, the schema version and its migrations.
//!
//! Rule: tables are declared only here; a change of layout bumps [`SCHEMA_VERSION`] and adds a
//! migration step to [`migrate`] — existing steps are never edited.

use redb::{ReadableTable, TableDefinition, WriteTransaction};

/// Layout version of this build.
pub const SCHEMA_VERSION: u64 = 15;

/// `"schema_version"`, `"next_device_key"` → value.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// device id → JSON `DeviceRecord`.
pub const DEVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("devices");
/// (device key, ts ms) → encoded raw reading: the head of recent, not yet sealed readings.
pub const READINGS: TableDefinition<(u32, i64), &[u8]> = TableDefinition::new("readings");
/// (device key, hour start ms) → sealed block of that hour's readings (see `store::block`).
pub const BLOCKS: TableDefinition<(u32, i64), &[u8]> = TableDefinition::new("blocks");
/// (device key, bucket start ms) → encoded 15-minute bucket.
pub const ROLLUPS: TableDefinition<(u32, i64), &[u8]> = TableDefinition::new("rollups_15m");
/// device key → encoded per-device running state (count, last sample).
pub const DEVICE_STATE: TableDefinition<u32, &[u8]> = TableDefinition::new("device_state");

/// user id → JSON user.
pub const USERS: TableDefinition<u32, &[u8]> = TableDefinition::new("users");
/// lower-case username → user id.
pub const USERNAMES: TableDefinition<&str, u32> = TableDefinition::new("usernames");
/// SHA-256 (hex) of a refresh token → JSON `RefreshRow` (before 9: `(user id, expires ms)`).
pub const REFRESH: TableDefinition<&str, &[u8]> = TableDefinition::new("refresh_tokens");
/// refresh-token family (one per login) → JSON `(user id, expires ms)`; gone at logout.
pub const SESSIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("sessions");
/// revoked access-token id → its expiry, ms.
pub const REVOKED: TableDefinition<&str, i64> = TableDefinition::new("revoked_tokens");
/// sequence number → JSON audit entry.
pub const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// `"chain"` → JSON chain state (anchor, last sequence, compliance hold).
pub const AUDIT_STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("audit_state");

/// export id → JSON `ExportRecord` (deleted ones stay as tombstones for the rate limit).
pub const EXPORTS: TableDefinition<&str, &[u8]> = TableDefinition::new("exports");
/// Tariff versions by number (1 = the seed from the config file): JSON.
pub const TARIFFS: TableDefinition<u64, &[u8]> = TableDefinition::new("tariffs");
/// schedule id → JSON `ScheduleRecord`.
pub const SCHEDULES: TableDefinition<&str, &[u8]> = TableDefinition::new("schedules");
/// setting name (`"insights"`) → JSON: what people set through the API over the config file.
pub const SETTINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("settings");
/// rule id → JSON alert `Rule`.
pub const ALERT_RULES: TableDefinition<&str, &[u8]> = TableDefinition::new("alert_rules");
/// alert id → JSON `Alert` (resolved ones kept for the audit retention).
pub const ALERTS: TableDefinition<&str, &[u8]> = TableDefinition::new("alerts");
/// bill id → JSON `Bill`.
pub const BILLS: TableDefinition<&str, &[u8]> = TableDefinition::new("bills");
/// (price series, interval start ms) → (interval end ms, price per kWh in micro-units).
pub const PRICES: TableDefinition<(&str, i64), (i64, i64)> = TableDefinition::new("prices");

/// push target name → its state (JSON of `crate::push::state::State`): the cursors of what the
/// target acknowledged, and its counters.
pub const PUSH: TableDefinition<&str, &[u8]> = TableDefinition::new("push");

/// Why the file cannot be used by this build.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// Written by a newer kasad.
    #[error(
        "database schema version {found} is newer than this kasad supports ({SCHEMA_VERSION}); upgrade kasad"
    )]
    TooNew {
        /// Version in the file.
        found: u64,
    },
}

/// Creates missing tables and brings the file to [`SCHEMA_VERSION`].
pub fn migrate(txn: &WriteTransaction) -> Result<(), super::Error> {
    let mut meta = txn.open_table(META)?;
    let found = meta.get("schema_version")?.map(|v| v.value());
    match found {
        Some(v) if v > SCHEMA_VERSION => return Err(SchemaError::TooNew { found: v }.into()),
        _ => {}
    }
    let mut v = found.unwrap_or(0);
    if v < 1 {
        // 0 (new file) → 1: device and reading tables.
        txn.open_table(DEVICES)?;
        txn.open_table(READINGS)?;
        txn.open_table(ROLLUPS)?;
        txn.open_table(DEVICE_STATE)?;
        v = 1;
    }
    if v < 2 {
        // 1 → 2: users, tokens and the audit log.
        txn.open_table(USERS)?;
        txn.open_table(USERNAMES)?;
        txn.open_table(REFRESH)?;
        txn.open_table(REVOKED)?;
        txn.open_table(AUDIT)?;
        txn.open_table(AUDIT_STATE)?;
        v = 2;
    }
    if v < 3 {
        // 2 → 3: sealed blocks; rows already in `readings` stay there as the head and are
        // sealed when their device writes again.
        txn.open_table(BLOCKS)?;
        v = 3;
    }
    if v < 4 {
        // 3 → 4: rollup buckets from 104 fixed bytes to varints.
        let mut t = txn.open_table(ROLLUPS)?;
        let old: Vec<((u32, i64), Vec<u8>)> = t
            .range::<(u32, i64)>(..)?
            .map(|e| e.map(|(k, v)| (k.value(), v.value().to_vec())))
            .collect::<Result<_, _>>()?;
        for (k, bytes) in old {
            let b = super::codec::decode_bucket_v3(k.1, &bytes);
            t.insert(k, super::codec::encode_bucket(&b).as_slice())?;
        }
        v = 4;
    }
    if v < 5 {
        // 4 → 5: export jobs.
        txn.open_table(EXPORTS)?;
        v = 5;
    }
    if v < 6 {
        // 5 → 6: tariff versions.
        txn.open_table(TARIFFS)?;
        v = 6;
    }
    if v < 7 {
        // 6 → 7: scheduled exports.
        txn.open_table(SCHEDULES)?;
        v = 7;
    }
    if v < 8 {
        // 7 → 8: blocks may derive energy by the half-drop counter rule (energy mode 2), which
        // kasad before 8 cannot read. Blocks written before keep their mode and decode as
        // stored, so nothing is rewritten.
        v = 8;
    }
    if v < 9 {
        // 8 → 9: refresh-token families (sessions). Tokens stored before have none: the next
        // refresh starts one.
        txn.open_table(SESSIONS)?;
        v = 9;
    }
    if v < 10 {
        // 9 → 10: settings made through the API (the insights' budget).
        txn.open_table(SETTINGS)?;
        v = 10;
    }
    if v < 11 {
        // 10 → 11: alert rules and alerts.
        txn.open_table(ALERT_RULES)?;
        txn.open_table(ALERTS)?;
        v = 11;
    }
    if v < 12 {
        // 11 → 12: utility bills.
        txn.open_table(BILLS)?;
        v = 12;
    }
    if v < 13 {
        // 12 → 13: price series of dynamic tariffs.
        txn.open_table(PRICES)?;
        v = 13;
    }
    if v < 14 {
        // 13 → 14: provenance of energy (see `mark_provenance`).
        mark_provenance(txn)?;
        v = 14;
    }
    if v < 15 {
        // 14 → 15: push targets' cursors.
        txn.open_table(PUSH)?;
        v = 15;
    }
    meta.insert("schema_version", v)?;
    Ok(())
}

/// What the store can tell of the provenance of what was written before schema 14:
/// - the devices a kasa-monitor import created (id `km-…`, never polled)
///   hold only imported history: their buckets' energy and their readings become `imported`;
/// - a bucket of any other device with energy but no reading of its own lies wholly inside a
///   gap: its energy becomes `spread` (whether day totals shaped it cannot be told afterwards);
/// - everything else stays `measured`: the buckets at a gap's edges, and history imported into
///   a device kasad also polls, cannot be told apart from measured energy.
fn mark_provenance(txn: &WriteTransaction) -> Result<(), super::Error> {
    use super::codec;
    use crate::domain::provenance::Source;
    let imported: Vec<(u32, crate::domain::DeviceId)> = txn
        .open_table(DEVICES)?
        .iter()?
        .filter_map(|e| {
            let (_, v) = e.ok()?;
            let r: super::DeviceRecord = serde_json::from_slice(v.value()).ok()?;
            // Live ids are the devices' own (hex); `km-` is the import's alone.
            r.info
                .device_id
                .as_str()
                .starts_with("km-")
                .then_some((r.key, r.info.device_id))
        })
        .collect();
    let is_imported = |key: u32| imported.iter().any(|(k, _)| *k == key);
    let mut rollups = txn.open_table(ROLLUPS)?;
    let mut changed = Vec::new();
    for e in rollups.iter()? {
        let (k, v) = e?;
        let (key, start) = k.value();
        let mut b = codec::decode_bucket(start, v.value());
        let source = if is_imported(key) {
            Source::Imported
        } else if b.samples == 0 && b.energy_mwh != 0 {
            Source::Spread
        } else {
            continue;
        };
        b.unmeasured.add(source, b.energy_mwh);
        changed.push(((key, start), codec::encode_bucket(&b)));
    }
    for (k, bytes) in changed {
        rollups.insert(k, bytes.as_slice())?;
    }
    let mut head = txn.open_table(READINGS)?;
    let mut blocks = txn.open_table(BLOCKS)?;
    for (key, id) in &imported {
        let rows: Vec<(i64, Vec<u8>)> = head
            .range((*key, i64::MIN)..=(*key, i64::MAX))?
            .map(|e| e.map(|(k, v)| (k.value().1, v.value().to_vec())))
            .collect::<Result<_, _>>()?;
        for (ts, bytes) in rows {
            let r = codec::decode_reading(id.clone(), ts, &bytes);
            head.insert(
                (*key, ts),
                codec::encode_reading(&r.reading, r.energy_wh, true).as_slice(),
            )?;
        }
        let stored: Vec<(i64, Vec<u8>)> = blocks
            .range((*key, i64::MIN)..=(*key, i64::MAX))?
            .map(|e| e.map(|(k, v)| (k.value().1, v.value().to_vec())))
            .collect::<Result<_, _>>()?;
        for (start, bytes) in stored {
            let mut rows = super::block::decode(id, &bytes).ok_or_else(|| {
                super::Error::Corrupt(format!("block ({key}, {start}) does not decode"))
            })?;
            rows.iter_mut().for_each(|r| r.imported = true);
            blocks.insert((*key, start), super::block::encode(&rows).as_slice())?;
        }
    }
    Ok(())
}
