//! `kasad import kasa-monitor PATH.db`: brings the history in a kasa-monitor SQLite database
//! (its `device_readings` table) into the store.
//!
//! Each of its devices (an IP address) is matched to one of ours by IP at import time — a
//! plug, not a strip, whose readings are its outlets' — or created as an imported device
//! (id `km-<ip>`, its address without a port, so it is never polled). Readings keep power,
//! voltage, current, relay and RSSI; energy comes from its cumulative counter
//! (`total_energy_kwh`) by the same rule as live readings, never from its day or month totals.
//! A reading whose time does not parse is skipped and counted. Importing the same file again
//! adds nothing (see [`Store::import_history`]).

pub mod files;

use crate::domain::{DeviceId, DeviceInfo, DeviceType, Reading};
use crate::store::history::Imported;
use crate::store::{self, Store};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, params};
use serde::Serialize;
use std::path::Path;

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file could not be read as SQLite.
    #[error("reading {0}: {1}")]
    Sqlite(String, rusqlite::Error),
    /// The file is SQLite but has no kasa-monitor readings.
    #[error("{0} is not a kasa-monitor database: it has no device_readings table")]
    NotKasaMonitor(String),
    /// The store refused.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// A file of another tool that does not read (where and why).
    #[error("{0}")]
    File(String),
}

/// What happened to one kasa-monitor device.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceReport {
    /// Its IP address in kasa-monitor.
    pub ip: String,
    /// Our device it went to.
    pub device_id: String,
    /// True when the device was created by this import.
    pub created: bool,
    /// Readings put before the device's first stored reading.
    pub before: u64,
    /// Readings added after its newest.
    pub after: u64,
    /// Readings skipped as already covered (kasad's own, or imported before).
    pub skipped: u64,
    /// Readings skipped because their time does not parse.
    pub bad_time: u64,
}

/// What an import did: the devices imported, and why it stopped early, if it did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Imports {
    /// Devices imported, in IP order.
    pub devices: Vec<DeviceReport>,
    /// The device it stopped at and why (the ones before it are imported).
    pub error: Option<String>,
    /// Rows of other kinds left out (a Home Assistant file's power or non-energy statistics).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub left_out: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Reads `path` and imports it into `store`, one device (one transaction) at a time.
/// `progress(done, total)` is called as readings are read. An error before any device is
/// imported is an `Err`; one after is in [`Imports::error`].
pub fn kasa_monitor(
    store: &Store,
    path: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Imports, ImportError> {
    let name = path.display().to_string();
    let sql = |e| ImportError::Sqlite(name.clone(), e);
    let db = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(sql)?;
    let has = |table: &str| -> Result<bool, ImportError> {
        db.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
            params![table],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n > 0)
        .map_err(sql)
    };
    if !has("device_readings")? {
        return Err(ImportError::NotKasaMonitor(name));
    }
    let with_info = has("device_info")?;
    let total: i64 = db
        .query_row(
            "SELECT count(*) FROM device_readings WHERE device_ip IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .map_err(sql)?;
    let total = u64::try_from(total).unwrap_or(0);
    let ips: Vec<String> = {
        let mut st = db
            .prepare("SELECT DISTINCT device_ip FROM device_readings WHERE device_ip IS NOT NULL ORDER BY 1")
            .map_err(sql)?;
        st.query_map([], |r| r.get(0))
            .map_err(sql)?
            .collect::<Result<_, _>>()
            .map_err(sql)?
    };
    let ours = store.devices()?;
    let mut done = 0u64;
    let mut out = Imports::default();
    for ip in ips {
        let (alias, model, mac): (Option<String>, Option<String>, Option<String>) = if with_info {
            db.query_row(
                "SELECT alias, model, mac FROM device_info WHERE device_ip = ?1",
                params![ip],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap_or((None, None, None))
        } else {
            (None, None, None)
        };
        let (info, created) = ours_or_new(&ours, &ip, imported_device(&ip, alias, model, mac));
        let mut bad_time = 0u64;
        let res = (|| -> Result<Imported, ImportError> {
            let mut st = db
                .prepare(
                    "SELECT timestamp, is_on, current_power_w, voltage, current, \
                     total_energy_kwh, rssi FROM device_readings WHERE device_ip = ?1 \
                     ORDER BY timestamp, id",
                )
                .map_err(sql)?;
            let mut rows = st.query(params![ip]).map_err(sql)?;
            let id = info.device_id.clone();
            let readings = std::iter::from_fn(|| {
                loop {
                    let row = match rows.next() {
                        Ok(Some(r)) => r,
                        Ok(None) => return None,
                        Err(e) => return Some(Err(ImportError::Sqlite(name.clone(), e).into())),
                    };
                    done += 1;
                    if done.is_multiple_of(4096) {
                        progress(done, total);
                    }
                    match reading(&id, row) {
                        Some(r) => return Some(Ok(r)),
                        None => bad_time += 1,
                    }
                }
            });
            Ok(store.import_history(&info, readings)?)
        })();
        match res {
            Ok(d) => out.devices.push(DeviceReport {
                ip,
                device_id: info.device_id.as_str().to_owned(),
                created,
                before: d.before,
                after: d.after,
                skipped: d.skipped,
                bad_time,
            }),
            // The devices before it stay imported; this one and the rest are not.
            Err(e) => {
                out.error = Some(format!("{ip}: {e}"));
                break;
            }
        }
    }
    progress(done, total);
    Ok(out)
}

/// The device the history of `fresh` goes to (and whether it is new): an earlier import's
/// device first (so a plug found at that IP since does not get the history a second time),
/// then a plug at that IP — unless both MAC addresses are known and differ (DHCP gave the
/// address to another plug).
fn ours_or_new(
    ours: &[crate::store::DeviceSummary],
    ip: &str,
    fresh: DeviceInfo,
) -> (DeviceInfo, bool) {
    let same_mac = |i: &DeviceInfo| {
        i.mac.is_empty() || fresh.mac.is_empty() || i.mac.eq_ignore_ascii_case(&fresh.mac)
    };
    let matched = ours
        .iter()
        .find(|d| d.record.info.device_id == fresh.device_id)
        .or_else(|| {
            ours.iter().find(|d| {
                let i = &d.record.info;
                i.device_type == DeviceType::Plug && i.ip() == ip && same_mac(i)
            })
        });
    match matched {
        Some(d) => (d.record.info.clone(), false),
        None => (fresh, true),
    }
}

/// A device for a kasa-monitor IP that matches none of ours.
fn imported_device(
    ip: &str,
    alias: Option<String>,
    model: Option<String>,
    mac: Option<String>,
) -> DeviceInfo {
    let safe: String = ip
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    DeviceInfo {
        name: alias
            .filter(|a| !a.trim().is_empty())
            .unwrap_or_else(|| format!("kasa-monitor {ip}")),
        model: model.unwrap_or_else(|| "imported".into()),
        mac: mac.unwrap_or_default(),
        ..DeviceInfo::plug(
            DeviceId::parse(&format!("km-{safe}"))
                .unwrap_or_else(|_| DeviceId::parse("km-device").expect("a valid id")),
        )
        .at(ip)
    }
}

/// One `device_readings` row as a reading; `None` when its time does not parse.
fn reading(id: &DeviceId, row: &rusqlite::Row<'_>) -> Option<Reading> {
    let ts_ms = match row.get_ref(0).ok()? {
        ValueRef::Text(t) => parse_time(std::str::from_utf8(t).ok()?)?,
        // Unix seconds, as some writers store them.
        ValueRef::Integer(s) => s.checked_mul(1000)?,
        ValueRef::Real(s) if s.is_finite() => (s * 1000.0).round() as i64,
        _ => return None,
    };
    let milli = |i: usize| -> Option<i64> {
        let v: Option<f64> = row.get(i).ok()?;
        v.filter(|x| x.is_finite())
            .map(|x| (x * 1000.0).round() as i64)
    };
    let on: Option<i64> = row.get(1).ok().flatten();
    Some(Reading {
        device_id: id.clone(),
        ts_ms,
        power_mw: milli(2),
        voltage_mv: milli(3),
        current_ma: milli(4),
        counter_wh: milli(5),
        relay_on: on.is_some_and(|v| v != 0),
        rssi: row
            .get::<_, Option<i64>>(6)
            .ok()
            .flatten()
            .and_then(|v| i32::try_from(v).ok()),
    })
}

/// Python's `str(datetime)` (`2025-11-25 10:00:00.123456+00:00`, the fraction only when not
/// zero), RFC 3339, or a time without an offset (taken as UTC); UTC ms.
fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    chrono::DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%:z")
        .or_else(|_| chrono::DateTime::parse_from_rfc3339(s))
        .map(|d| d.timestamp_millis())
        .ok()
        .or_else(|| {
            ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
                .iter()
                .find_map(|f| chrono::NaiveDateTime::parse_from_str(s, f).ok())
                .map(|t| t.and_utc().timestamp_millis())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kasa_monitor_times_parse() {
        let t = crate::clock::utc("2025-11-25T10:00:00.123456Z");
        assert_eq!(parse_time("2025-11-25 10:00:00.123456+00:00"), Some(t));
        assert_eq!(parse_time("2025-11-25 11:00:00.123456+01:00"), Some(t));
        assert_eq!(parse_time("2025-11-25 10:00:00+00:00"), Some(t - 123));
        assert_eq!(parse_time("2025-11-25T10:00:00.123456Z"), Some(t));
        assert_eq!(parse_time("2025-11-25 10:00:00.123456"), Some(t));
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(parse_time(""), None);
    }

    #[test]
    fn an_unmatched_ip_becomes_an_imported_device_that_is_never_polled() {
        let d = imported_device("192.168.1.100", Some("Lamp".into()), None, None);
        assert_eq!(d.device_id.as_str(), "km-192-168-1-100");
        assert_eq!((d.name.as_str(), d.ip()), ("Lamp", "192.168.1.100"));
        assert!(d.address.parse::<std::net::SocketAddr>().is_err());
        let v6 = imported_device("fe80::1", None, None, None);
        assert_eq!(v6.device_id.as_str(), "km-fe80--1");
        assert_eq!(v6.name, "kasa-monitor fe80::1");
    }
}
