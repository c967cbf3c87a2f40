//! Which devices an export covers and how they appear in it: the `devices` selector (ids,
//! `all`, `room:`), and the privacy options (hashed ids and names, anonymised addresses).

use super::request::{Devices, RequestError};
use crate::config::Exports;
use crate::domain::DeviceId;
use crate::store::DeviceRecord;
use hmac::{KeyInit, Mac};

/// A device as it appears in the file.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeviceMeta {
    /// Stored id (for the store scan).
    pub id: DeviceId,
    /// Rendered id (hashed when asked).
    pub shown_id: String,
    /// Rendered IP (anonymised when asked).
    pub ip: String,
    /// Rendered name (hashed when asked).
    pub name: String,
    /// Its room (its own or its strip's), if one is set.
    pub room: Option<String>,
    /// Rated power, W (stored, else config), for formulas.
    pub rated_power: Option<f64>,
    /// Model, for metadata.
    pub model: String,
    /// Coordinates, unless removed.
    pub location: Option<(f64, f64)>,
}

/// The rated power of a device: its stored value (`PATCH /api/devices`), else the default in
/// `[exports.rated_power]`, keyed by its id, IP, kasad name or alias.
pub fn rated_power(limits: &Exports, r: &DeviceRecord) -> Option<f64> {
    let i = &r.info;
    r.labels.rated_power_w.or_else(|| {
        [i.device_id.as_str(), i.ip(), r.name(), i.name.as_str()]
            .iter()
            .find_map(|k| limits.rated_power.get(*k).copied())
    })
}

/// A device name as `hash_device_identifiers` shows it.
pub fn hashed_name(key: &[u8], name: &str) -> String {
    format!("Device {}", pseudonym(key, "name", name))
}

/// Keyed, stable pseudonym of an identifier.
pub fn pseudonym(key: &[u8], kind: &str, value: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
    mac.update(kind.as_bytes());
    mac.update(b"\0");
    mac.update(value.as_bytes());
    let out = mac.finalize().into_bytes();
    out[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Zeroes the host part of an address: IPv4 last octet, IPv6 last 80 bits.
pub fn anonymize_ip(ip: &str) -> String {
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => {
            let o = v4.octets();
            format!("{}.{}.{}.0", o[0], o[1], o[2])
        }
        Ok(std::net::IpAddr::V6(v6)) => {
            let mut s = v6.segments();
            s[3..].iter_mut().for_each(|x| *x = 0);
            std::net::Ipv6Addr::from(s).to_string()
        }
        Err(_) => "anonymized".into(),
    }
}

/// The stored devices a `devices` value selects ([`crate::store::select`]), in a stable order.
pub fn select_devices<'a>(
    sel: Option<&Devices>,
    all: &'a [DeviceRecord],
) -> Result<Vec<&'a DeviceRecord>, RequestError> {
    let wanted: Vec<String> = match sel {
        None => vec!["all".into()],
        Some(Devices::One(s)) => vec![s.clone()],
        Some(Devices::List(v)) => v.clone(),
    };
    crate::store::select::select(&wanted, all).map_err(|e| RequestError {
        code: e.code,
        message: e.message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::DeviceType;

    fn summary(id: &str, ip: &str, kind: DeviceType, parent: Option<&str>) -> DeviceRecord {
        let info = crate::domain::DeviceInfo {
            parent_id: parent.map(|p| DeviceId::parse(p).unwrap()),
            outlet_index: parent.map(|_| 0),
            device_type: kind,
            ..crate::domain::DeviceInfo::plug(DeviceId::parse(id).unwrap())
                .at(format!("{ip}:9999"))
                .named(id)
                .made("HS300(US)", "1.0", "1")
        };
        DeviceRecord {
            info,
            key: 0,
            first_seen_ms: 0,
            labels: Default::default(),
            forgotten_ms: None,
        }
    }

    #[test]
    fn ips_are_anonymized_and_ids_pseudonymized_stably() {
        assert_eq!(anonymize_ip("192.168.1.100"), "192.168.1.0");
        assert_eq!(anonymize_ip("fe80::1:2:3:4"), "fe80::");
        let a = pseudonym(b"k", "id", "800611");
        assert_eq!(a, pseudonym(b"k", "id", "800611"));
        assert_ne!(a, pseudonym(b"other", "id", "800611"));
        assert_eq!(a.len(), 16);
    }

    #[test]
    fn a_strip_id_or_ip_selects_its_outlets_and_all_skips_the_strip() {
        let all = vec![
            summary("STRIP", "127.0.0.5", DeviceType::Strip, None),
            summary(
                "STRIP00",
                "127.0.0.5",
                DeviceType::StripOutlet,
                Some("STRIP"),
            ),
            summary(
                "STRIP01",
                "127.0.0.5",
                DeviceType::StripOutlet,
                Some("STRIP"),
            ),
            summary("PLUG", "127.0.0.6", DeviceType::Plug, None),
        ];
        let ids = |sel: Devices| -> Vec<String> {
            select_devices(Some(&sel), &all)
                .unwrap()
                .iter()
                .map(|d| d.info.device_id.to_string())
                .collect()
        };
        assert_eq!(
            ids(Devices::List(vec!["127.0.0.5".into()])),
            ["STRIP00", "STRIP01"]
        );
        assert_eq!(
            ids(Devices::List(vec!["STRIP".into()])),
            ["STRIP00", "STRIP01"]
        );
        assert_eq!(ids(Devices::List(vec!["STRIP01".into()])), ["STRIP01"]);
        assert_eq!(
            ids(Devices::One("all".into())),
            ["PLUG", "STRIP00", "STRIP01"]
        );
        assert_eq!(
            ids(Devices::List(vec!["PLUG".into(), "127.0.0.6".into()])),
            ["PLUG"]
        );
        let e = select_devices(Some(&Devices::List(vec!["127.0.0.99".into()])), &all).unwrap_err();
        assert_eq!(e.code, "DEVICE_NOT_FOUND");
        assert!(select_devices(Some(&Devices::List(vec![])), &all).is_err());
    }
}
