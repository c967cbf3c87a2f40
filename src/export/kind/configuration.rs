//! The configuration export: devices (ids, names, models, firmware, rated power, location),
//! users (username, role, effective permissions — never password hashes), schedules (timing,
//! request, where they deliver: a webhook only by its origin, never its secret), retention
//! policies, every stored tariff version and the remaining settings, as
//! rows of `section, item, key, value` in any format. Secrets never appear: no key material
//! is read, and any setting whose name says password, secret, token or credential is left out.
//! `remove_location_data` drops device coordinates, `exclude_user_data` the users,
//! `anonymize_ip_addresses` zeroes the last octet of device addresses and
//! `hash_device_identifiers` replaces ids and names with keyed hashes (and drops MACs).

use crate::config::Settings;
use crate::export::format::{Cell, Sink};
use crate::export::pipeline::{Control, Limits, RenderError};
use crate::export::request::{CreateRequest, RequestError, refuse_device_options};
use crate::store::{self, Store};
use serde_json::{Map, Value, json};
use std::sync::atomic::Ordering;

/// The columns of a configuration export.
pub const COLUMNS: [&str; 4] = ["section", "item", "key", "value"];

/// The request's privacy options, as they apply to the configuration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Privacy {
    /// `remove_location_data`: no device coordinates.
    pub no_location: bool,
    /// `exclude_user_data`: no users.
    pub no_users: bool,
    /// `anonymize_ip_addresses`: device addresses with the last IPv4 octet zeroed.
    pub anonymize_ip: bool,
    /// `hash_device_identifiers`: device ids and names as keyed hashes, no MAC addresses.
    pub hash_ids: bool,
}

/// The privacy options of a configuration export (it takes no devices or row options).
pub fn privacy_of(req: &CreateRequest) -> Result<Privacy, RequestError> {
    refuse_device_options(req, "use privacy_options")?;
    let p = req.privacy_options.clone().unwrap_or_default();
    Ok(Privacy {
        no_location: p.remove_location_data.unwrap_or(false),
        no_users: p.exclude_user_data.unwrap_or(false),
        anonymize_ip: p.anonymize_ip_addresses.unwrap_or(false),
        hash_ids: p.hash_device_identifiers.unwrap_or(false),
    })
}

/// One setting.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// `devices`, `users`, `schedules`, `retention`, `tariffs` or `settings`.
    pub section: String,
    /// The device id, username, policy type … (empty for plain settings).
    pub item: String,
    /// The setting's name (dotted path for nested ones).
    pub key: String,
    /// Its value.
    pub value: Value,
}

/// Whether a setting's name says it holds a secret.
fn secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "credential",
        "private_key",
        "api_key",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// Appends `value` under `key`, flattening objects into dotted keys and dropping secrets.
fn flatten(out: &mut Vec<Row>, section: &str, item: &str, key: &str, value: &Value) {
    if secret(key) {
        return;
    }
    match value {
        Value::Object(m) => {
            for (k, v) in m {
                let path = if key.is_empty() {
                    k.clone()
                } else {
                    format!("{key}.{k}")
                };
                flatten(out, section, item, &path, v);
            }
        }
        v => out.push(Row {
            section: section.into(),
            item: item.into(),
            key: key.into(),
            value: v.clone(),
        }),
    }
}

/// The configuration as rows.
pub fn rows(
    store: &Store,
    settings: &Settings,
    privacy: &Privacy,
    key: &[u8],
) -> store::Result<Vec<Row>> {
    use crate::export::devices::{anonymize_ip, hashed_name, pseudonym, rated_power};
    let mut out = Vec::new();
    let devices = store.devices()?;
    let records: Vec<_> = devices.iter().map(|d| d.record.clone()).collect();
    for d in devices {
        let i = &d.record.info;
        let room = d.record.room(&records).map(str::to_owned);
        let rated = rated_power(&settings.exports, &d.record);
        let name = d.record.name();
        let (id, name, mac) = if privacy.hash_ids {
            let id = pseudonym(key, "id", i.device_id.as_str());
            (id, hashed_name(key, name), None)
        } else {
            (
                i.device_id.to_string(),
                name.to_owned(),
                Some(i.mac.clone()),
            )
        };
        let address = if privacy.anonymize_ip {
            anonymize_ip(i.ip())
        } else {
            i.address.clone()
        };
        let mut v = json!({
            "name": name, "model": i.model, "device_type": i.device_type,
            "hardware_version": i.hw_ver, "firmware_version": i.sw_ver,
            "address": address, "has_energy_meter": i.has_emeter,
            "outlet_index": i.outlet_index, "rated_power": rated,
        });
        v["room"] = json!(room);
        if let Some(mac) = mac {
            v["mac"] = json!(mac);
            v["parent_id"] = json!(i.parent_id);
            v["alias"] = json!(i.name);
        }
        if !privacy.no_location {
            v["latitude"] = json!(i.latitude);
            v["longitude"] = json!(i.longitude);
        }
        flatten(&mut out, "devices", &id, "", &v);
    }
    if !privacy.no_users {
        for u in store.users()? {
            let mut perms: Vec<&str> = u.role.permissions().iter().map(|p| p.name()).collect();
            perms.extend(u.permissions.iter().map(|p| p.name()));
            perms.sort_unstable();
            perms.dedup();
            let v = json!({"role": u.role, "permissions": perms.join(" "), "disabled": u.disabled});
            flatten(&mut out, "users", &u.username, "", &v);
        }
    }
    for sc in store.schedules()? {
        let mut delivery = sc.delivery.summary();
        if privacy.no_users {
            delivery.as_object_mut().map(|d| d.remove("recipients"));
        }
        let mut v = json!({"schedule_id": sc.id, "schedule": sc.schedule, "timezone": sc.timezone,
            "enabled": sc.enabled, "export_config": sc.export_config.to_string(), "delivery": delivery});
        if !privacy.no_users {
            v["owner"] = json!(sc.username);
        }
        flatten(&mut out, "schedules", &sc.name, "", &v);
    }
    let mut rest = match serde_json::to_value(settings) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    // The policies in force for every type, configured or default.
    rest.remove("retention");
    for t in crate::export::ExportType::ALL {
        let p = serde_json::to_value(settings.retention.policy(t)).unwrap_or_default();
        flatten(&mut out, "retention", t.name(), "", &p);
    }
    let notice = json!(settings.retention.notification_before_deletion);
    flatten(
        &mut out,
        "retention",
        "",
        "notification_before_deletion",
        &notice,
    );
    // Every tariff version as stored (the configured one until the first is stored).
    rest.remove("tariff");
    let mut versions = store.tariffs()?;
    if versions.is_empty() {
        versions.push(settings.tariff.clone());
    }
    for (i, t) in versions.iter().enumerate() {
        let v = serde_json::to_value(t).unwrap_or_default();
        flatten(&mut out, "tariffs", &format!("version {}", i + 1), "", &v);
    }
    // Static devices are listed with the devices; the data directory is this machine's.
    rest.remove("devices");
    rest.remove("data_dir");
    flatten(&mut out, "settings", "", "", &Value::Object(rest));
    Ok(out)
}

/// Writes `rows` to `sink` (after its `begin`) and finishes it.
pub fn write(
    rows: &[Row],
    sink: &mut dyn Sink,
    limits: Limits,
    ctl: &Control,
) -> Result<(u64, Value), RenderError> {
    for (n, r) in rows.iter().enumerate() {
        if n as u64 >= limits.max_records {
            return Err(RenderError::TooManyRecords(limits.max_records));
        }
        if ctl.cancel.load(Ordering::Relaxed) {
            return Err(RenderError::Cancelled);
        }
        let text;
        let value = match &r.value {
            Value::Null => Cell::Null,
            Value::Bool(b) => Cell::Bool(*b),
            Value::Number(x) => Cell::Num(x.as_f64().unwrap_or(f64::NAN), 6),
            Value::String(s) => Cell::Text(s),
            v => {
                text = v.to_string();
                Cell::Text(&text)
            }
        };
        sink.row(&[
            Cell::Text(&r.section),
            Cell::Text(&r.item),
            Cell::Text(&r.key),
            value,
        ])?;
    }
    let summary = json!({});
    sink.finish(rows.len() as u64, &summary)?;
    Ok((rows.len() as u64, summary))
}
