//! Configuration: typed settings from a TOML file, overridden by `KASAD_*` environment
//! variables, validated once at load.
//!
//! Precedence (tested): built-in defaults < file < environment. Environment keys are
//! `KASAD_<KEY>` for top-level keys and `KASAD_<SECTION>__<KEY>` for keys in a section, e.g.
//! `KASAD_POLL__INTERVAL=30s`; values are read as TOML when they parse as such (`true`, `5`,
//! `["127.0.0.2:9999"]`) and as plain strings otherwise. Unknown environment keys are
//! reported as warnings, unknown file keys as errors.

mod sections;
mod types;
mod validate;

pub use sections::*;
pub use types::{Dur, Net, Zone};

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The commented example configuration, also printed by `kasad print-config`.
pub const EXAMPLE: &str = include_str!("../../systemd/kasad.toml");

/// A configuration problem, with the key or file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The TOML (after environment overrides) does not fit the settings.
    #[error("invalid configuration: {0}")]
    Parse(String),
    /// A value is out of range or inconsistent.
    #[error("invalid configuration: {key}: {msg}")]
    Invalid {
        /// Dotted key.
        key: String,
        /// What is wrong.
        msg: String,
    },
}

pub(crate) fn invalid(key: &str, msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        msg: msg.into(),
    }
}

/// All settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// State directory (database, keys, export files).
    pub data_dir: PathBuf,
    /// Default IANA time zone for days and months.
    pub timezone: Zone,
    /// HTTP server.
    pub http: Http,
    /// Device discovery.
    pub discovery: Discovery,
    /// Polling.
    pub poll: Poll,
    /// Storage.
    pub storage: Storage,
    /// Audit log.
    pub audit: Audit,
    /// Export limits.
    pub exports: Exports,
    /// Export retention.
    pub retention: Retention,
    /// Electricity price.
    pub tariff: Tariff,
    /// Static devices.
    pub devices: Vec<StaticDevice>,
    /// Delivery of scheduled exports.
    pub delivery: Delivery,
    /// Mail server.
    pub smtp: Smtp,
    /// `[metrics]`.
    pub metrics: Metrics,
    /// `[mdns]`.
    pub mdns: Mdns,
    /// `[mqtt]`.
    pub mqtt: Mqtt,
    /// `[kasa]`.
    pub kasa: Kasa,
    /// `[auth]`.
    pub auth: Auth,
    /// `[schedules]`.
    pub schedules: Schedules,
    /// `[insights]`.
    pub insights: Insights,
    /// `[[price_feeds]]`.
    pub price_feeds: Vec<PriceFeed>,
    /// `[[push]]`: time-series stores the readings are pushed to.
    pub push: Vec<PushTarget>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("/var/lib/kasad"),
            timezone: Zone::default(),
            http: Http::default(),
            discovery: Discovery::default(),
            poll: Poll::default(),
            storage: Storage::default(),
            audit: Audit::default(),
            exports: Exports::default(),
            retention: Retention::default(),
            tariff: Tariff::default(),
            devices: Vec::new(),
            delivery: Delivery::default(),
            smtp: Smtp::default(),
            metrics: Metrics::default(),
            mdns: Mdns::default(),
            mqtt: Mqtt::default(),
            kasa: Kasa::default(),
            auth: Auth::default(),
            schedules: Schedules::default(),
            insights: Insights::default(),
            price_feeds: Vec::new(),
            push: Vec::new(),
        }
    }
}

/// Parses `ip:port` or `ip` (port 9999).
pub fn parse_host(s: &str) -> Option<SocketAddr> {
    s.parse().ok().or_else(|| {
        s.parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, crate::domain::device::DEFAULT_PORT))
    })
}

impl Settings {
    /// Loads `path` (or only defaults when `None`) and applies the process environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.display().to_string(),
                source,
            })?,
            None => String::new(),
        };
        Self::from_sources(&text, std::env::vars())
    }

    /// Builds settings from TOML text and `(name, value)` environment pairs.
    pub fn from_sources(
        toml_text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table =
            toml::from_str(toml_text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        let known = toml::Table::try_from(Settings::default())
            .map_err(|e| ConfigError::Parse(e.to_string()))?;
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("KASAD_") else {
                continue;
            };
            let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            let (section, key) = match path.as_slice() {
                [k] => (None, k.clone()),
                [s, k] => (Some(s.clone()), k.clone()),
                _ => {
                    tracing::warn!(%name, "ignoring environment variable: too many '__' parts");
                    continue;
                }
            };
            let exists = match &section {
                None => known.contains_key(&key) && !known[&key].is_table(),
                Some(s) => known
                    .get(s)
                    .and_then(|t| t.as_table())
                    .is_some_and(|t| t.contains_key(&key)),
            };
            if !exists {
                tracing::warn!(%name, "ignoring unknown configuration environment variable");
                continue;
            }
            let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or(toml::Value::String(value));
            let target = match section {
                None => &mut table,
                Some(s) => table
                    .entry(s)
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                    .as_table_mut()
                    .ok_or_else(|| invalid(&name, "section is not a table"))?,
            };
            target.insert(key, parsed);
        }
        let settings: Settings = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    /// The configured time zone.
    pub fn tz(&self) -> chrono_tz::Tz {
        self.timezone.tz()
    }

    /// Discovery targets as socket addresses.
    pub fn discovery_targets(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        self.discovery
            .targets
            .iter()
            .map(|t| {
                parse_host(t)
                    .ok_or_else(|| invalid("discovery.targets", format!("{t:?} is not ip:port")))
            })
            .collect()
    }

    /// Where the 20002 probe goes: each target's host on `port_20002` (none when 0).
    pub fn discovery_targets_20002(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        let port = self.discovery.port_20002;
        if port == 0 {
            return Ok(Vec::new());
        }
        let mut out: Vec<SocketAddr> = Vec::new();
        for t in self.discovery_targets()? {
            let a = SocketAddr::new(t.ip(), port);
            if !out.contains(&a) {
                out.push(a);
            }
        }
        Ok(out)
    }

    /// Static device addresses.
    pub fn static_hosts(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        self.devices
            .iter()
            .map(|d| {
                parse_host(&d.host).ok_or_else(|| {
                    invalid("devices.host", format!("{:?} is not ip or ip:port", d.host))
                })
            })
            .collect()
    }

    /// Path of the database file.
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("kasad.redb")
    }

    /// Path of the staging log.
    pub fn staging_path(&self) -> PathBuf {
        self.data_dir.join("staging.log")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn example_config_parses_and_matches_fixed_keys() {
        let s = Settings::from_sources(EXAMPLE, env(&[])).unwrap();
        assert_eq!(s.http.listen.port(), 5272);
        assert_eq!(s.poll.interval, Dur(Duration::from_secs(10)));
        assert_eq!(s.discovery.interval, Dur(Duration::from_secs(300)));
        assert_eq!(s.discovery.targets, vec!["255.255.255.255:9999"]);
    }

    #[test]
    fn env_overrides_file() {
        let s = Settings::from_sources(
            "[poll]\ninterval = \"20s\"\n",
            env(&[
                ("KASAD_POLL__INTERVAL", "30s"),
                ("KASAD_DISCOVERY__ENABLED", "false"),
                ("KASAD_DATA_DIR", "/tmp/x"),
                ("KASAD_DISCOVERY__TARGETS", "[\"127.0.0.2:9999\"]"),
                ("KASAD_NOPE__THING", "1"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert_eq!(s.poll.interval, Dur(Duration::from_secs(30)));
        assert!(!s.discovery.enabled);
        assert_eq!(s.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(s.discovery.targets, vec!["127.0.0.2:9999"]);
    }

    #[test]
    fn bad_values_are_rejected_with_the_key() {
        for (text, needle) in [
            ("[poll]\ninterval = \"ten\"\n", "invalid duration"),
            ("timezone = \"Mars/Base\"\n", "timezone"),
            ("[poll]\nintervall = \"10s\"\n", "intervall"),
            (
                "[discovery]\ntargets = [\"nowhere\"]\n",
                "discovery.targets",
            ),
            ("[poll]\ninterval = \"0s\"\n", "poll.interval"),
            (
                "[discovery]\nloopback_only = true\ntargets = [\"255.255.255.255:9999\"]\n",
                "loopback",
            ),
            (
                "[discovery]\nloopback_only = true\ntargets = []\n[[devices]]\nhost = \"192.168.1.100\"\n",
                "192.168.1.100",
            ),
        ] {
            let e = Settings::from_sources(text, env(&[]))
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn durations_parse_and_print() {
        for (s, ms) in [
            ("500ms", 500),
            ("10s", 10_000),
            ("5m", 300_000),
            ("400d", 34_560_000_000),
        ] {
            let d = Dur::parse(s).unwrap();
            assert_eq!(d.0.as_millis(), ms);
            assert_eq!(d.to_string(), s);
        }
        assert!(Dur::parse("10").is_none());
        assert!(Dur::parse("s").is_none());
    }

    #[test]
    fn hosts_default_to_port_9999() {
        assert_eq!(parse_host("127.0.0.20").unwrap().port(), 9999);
        assert_eq!(parse_host("127.0.0.20:1234").unwrap().port(), 1234);
        assert!(parse_host("example").is_none());
    }

    #[test]
    fn warnings_name_a_trust_everyone_proxy_and_a_silent_mdns() {
        let s = Settings::from_sources(EXAMPLE, env(&[])).unwrap();
        assert!(s.warnings().is_empty(), "{:?}", s.warnings());
        let s = Settings::from_sources(
            "[http]\nlisten = \"127.0.0.1:5272\"\ntrusted_proxies = [\"127.0.0.1\", \"0.0.0.0/0\"]\n[mdns]\nenabled = true\n",
            env(&[]),
        )
        .unwrap();
        let w = s.warnings();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("\"0.0.0.0/0\" trusts X-Forwarded-For from every client"));
        assert!(w[1].contains("nothing is announced"));
        let s = Settings::from_sources("[mqtt]\nenabled = true\nallow_control = true\n", env(&[]))
            .unwrap();
        let w = s.warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("plain TCP to an anonymous broker"), "{w:?}");
    }
}
