//! Device identity and descriptive metadata.
//!
//! A device is identified by its device id (`deviceId` for IOT plugs, the child id for strip
//! outlets), never by its IP address: DHCP moves devices and history must not split.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The legacy protocol's port (TCP and UDP).
pub const DEFAULT_PORT: u16 = 9999;
/// The newer devices' discovery port (UDP).
pub const PORT_20002: u16 = 20002;

/// Longest device id accepted (IOT ids are 40 hex chars, outlet ids 42).
pub const MAX_ID_LEN: usize = 64;

/// A validated device id: 1–64 characters of `[A-Za-z0-9_-]`. Shared, so a clone (one per
/// decoded reading) costs no allocation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeviceId(std::sync::Arc<str>);

/// Why a string is not a device id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid device id {0:?}: expected 1-64 characters of A-Z, a-z, 0-9, '_' or '-'")]
pub struct InvalidDeviceId(pub String);

impl DeviceId {
    /// Parses and validates a device id.
    pub fn parse(s: &str) -> Result<Self, InvalidDeviceId> {
        let ok = !s.is_empty()
            && s.len() <= MAX_ID_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(std::sync::Arc::from(s)))
        } else {
            Err(InvalidDeviceId(s.to_owned()))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The full id of a strip outlet. Strips report child ids either in full (parent id +
    /// two-digit index) or, in some UDP answers, as the index alone; both map to the full form.
    pub fn outlet(parent: &DeviceId, child: &str) -> Result<Self, InvalidDeviceId> {
        if child.len() <= 2 && child.bytes().all(|b| b.is_ascii_digit()) {
            let idx: u8 = child.parse().map_err(|_| InvalidDeviceId(child.into()))?;
            Self::parse(&format!("{}{idx:02}", parent.0))
        } else {
            Self::parse(child)
        }
    }
}

impl TryFrom<String> for DeviceId {
    type Error = InvalidDeviceId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<DeviceId> for String {
    fn from(id: DeviceId) -> String {
        id.0.to_string()
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What kind of thing a device record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceType {
    /// A single plug.
    Plug,
    /// A power strip (its energy is the sum of its outlets).
    Strip,
    /// One outlet of a power strip.
    StripOutlet,
}

/// How the daemon talks to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// Legacy IOT protocol, XOR autokey over TCP 9999.
    Xor,
    /// KLAP v1 over HTTP (md5 credential hash).
    Klap,
    /// KLAP v2 over HTTP (sha256 credential hash).
    KlapV2,
    /// AES "securePassthrough" over HTTP.
    Aes,
    /// Announced something the daemon does not speak (TPAP, HTTPS); never polled.
    Unknown,
}

impl Transport {
    /// The name the API and logs use (`xor`, `klap`, `klap_v2`, `aes`).
    pub fn name(self) -> &'static str {
        match self {
            Transport::Xor => "xor",
            Transport::Klap => "klap",
            Transport::KlapV2 => "klap_v2",
            Transport::Aes => "aes",
            Transport::Unknown => "unknown",
        }
    }
}

/// The request language a device speaks inside its transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// The legacy IOT JSON (`{"system":{"get_sysinfo":{}}}`), over XOR or KLAP.
    #[default]
    Iot,
    /// The SMART JSON (`{"method":"get_device_info"}`), over KLAP v2 or AES.
    Smart,
}

/// Reachability as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    /// Answered the last poll.
    Online,
    /// Did not answer recently.
    Offline,
    /// Needs credentials we do not have (newer transports).
    AuthRequired,
    /// Speaks something we cannot poll.
    Unsupported,
}

/// Everything known about a device apart from its readings; persisted by the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// Stable id.
    pub device_id: DeviceId,
    /// The strip this outlet belongs to.
    pub parent_id: Option<DeviceId>,
    /// Outlet index within its strip.
    pub outlet_index: Option<u8>,
    /// Last known address (`ip:port`).
    pub address: String,
    /// User-given name.
    pub name: String,
    /// Plug, strip or outlet.
    pub device_type: DeviceType,
    /// Model, e.g. `HS110(EU)`.
    pub model: String,
    /// Hardware version.
    pub hw_ver: String,
    /// Firmware version.
    pub sw_ver: String,
    /// How we talk to it.
    pub transport: Transport,
    /// The request language inside the transport (records stored before it existed are IOT).
    #[serde(default)]
    pub family: Family,
    /// Whether it has an energy meter.
    pub has_emeter: bool,
    /// MAC address as reported.
    pub mac: String,
    /// Reported latitude, degrees.
    pub latitude: Option<f64>,
    /// Reported longitude, degrees.
    pub longitude: Option<f64>,
}

impl DeviceInfo {
    /// A metered plug speaking the legacy protocol, with only its id known: where a record
    /// starts (imports, tests, benches), finished with the setters below or struct update
    /// syntax.
    pub fn plug(device_id: DeviceId) -> Self {
        Self {
            device_id,
            parent_id: None,
            outlet_index: None,
            address: String::new(),
            name: String::new(),
            device_type: DeviceType::Plug,
            model: String::new(),
            hw_ver: String::new(),
            sw_ver: String::new(),
            transport: Transport::Xor,
            family: Family::Iot,
            has_emeter: true,
            mac: String::new(),
            latitude: None,
            longitude: None,
        }
    }

    /// At `address` (`ip:port`).
    pub fn at(mut self, address: impl Into<String>) -> Self {
        self.address = address.into();
        self
    }

    /// Named `name`.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Of `model`, hardware `hw_ver`, firmware `sw_ver`.
    pub fn made(mut self, model: &str, hw_ver: &str, sw_ver: &str) -> Self {
        (self.model, self.hw_ver, self.sw_ver) = (model.into(), hw_ver.into(), sw_ver.into());
        self
    }

    /// Outlet `index` of strip `parent`.
    pub fn outlet_of(mut self, parent: DeviceId, index: u8) -> Self {
        (self.parent_id, self.outlet_index) = (Some(parent), Some(index));
        self.device_type = DeviceType::StripOutlet;
        self
    }

    /// The IP part of the address.
    pub fn ip(&self) -> &str {
        host_of(&self.address)
    }
}

/// The host part of `ip:port`, `[ipv6]:port`, or an address without a port (`ip`, a bare
/// IPv6 address).
pub fn host_of(address: &str) -> &str {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(h, _)| h);
    }
    match address.rsplit_once(':') {
        // More than one colon without brackets: an IPv6 address without a port.
        Some((h, _)) if !h.contains(':') => h,
        _ => address,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_of_an_address_with_or_without_a_port() {
        assert_eq!(host_of("192.168.1.100:9999"), "192.168.1.100");
        assert_eq!(host_of("192.168.1.100"), "192.168.1.100");
        assert_eq!(host_of("[fe80::1]:9999"), "fe80::1");
        assert_eq!(host_of("fe80::1"), "fe80::1");
        assert_eq!(host_of(""), "");
    }

    #[test]
    fn device_id_rejects_empty_long_and_odd_characters() {
        assert!(DeviceId::parse("").is_err());
        assert!(DeviceId::parse(&"A".repeat(65)).is_err());
        assert!(DeviceId::parse("../etc").is_err());
        assert!(DeviceId::parse("8006AF35494E7DB13DDE9B8F40BF2E001E770319").is_ok());
    }

    #[test]
    fn outlet_ids_expand_short_child_ids() {
        let p = DeviceId::parse("AB12").unwrap();
        assert_eq!(DeviceId::outlet(&p, "3").unwrap().as_str(), "AB1203");
        assert_eq!(DeviceId::outlet(&p, "05").unwrap().as_str(), "AB1205");
        assert_eq!(DeviceId::outlet(&p, "AB1201").unwrap().as_str(), "AB1201");
    }
}
