//! Configuration: typed settings from a TOML file, overridden by `KASAD_*` environment
//! variables, validated once at load.
//!
//! Precedence (tested): built-in defaults < file < environment. Environment keys are
//! `KASAD_<KEY>` for top-level keys and `KASAD_<SECTION>__<KEY>` for keys in a section, e.g.
//! `KASAD_POLL__INTERVAL=30s`; values are read as TOML when they parse as such (`true`, `5`,
//! `["127.0.0.2:9999"]`) and as plain strings otherwise. Unknown environment keys are
//! reported as warnings, unknown file keys as errors.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The commented example configuration, also printed by `kasad print-config`.
pub const EXAMPLE: &str = include_str!("../systemd/kasad.toml");

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

fn invalid(key: &str, msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        msg: msg.into(),
    }
}

/// A duration written as `"500ms"`, `"10s"`, `"5m"`, `"2h"` or `"400d"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl Dur {
    /// Parses the textual form.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit())?;
        let (n, unit) = s.split_at(split);
        let n: u64 = n.parse().ok()?;
        let ms = match unit.trim() {
            "ms" => n,
            "s" => n.checked_mul(1_000)?,
            "m" => n.checked_mul(60_000)?,
            "h" => n.checked_mul(3_600_000)?,
            "d" => n.checked_mul(86_400_000)?,
            _ => return None,
        };
        Some(Dur(Duration::from_millis(ms)))
    }
}

impl std::fmt::Display for Dur {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.0.as_millis();
        match ms {
            0 => write!(f, "0s"),
            _ if ms.is_multiple_of(86_400_000) => write!(f, "{}d", ms / 86_400_000),
            _ if ms.is_multiple_of(3_600_000) => write!(f, "{}h", ms / 3_600_000),
            _ if ms.is_multiple_of(60_000) => write!(f, "{}m", ms / 60_000),
            _ if ms.is_multiple_of(1_000) => write!(f, "{}s", ms / 1_000),
            _ => write!(f, "{ms}ms"),
        }
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Dur::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid duration {s:?}: use a whole number with ms, s, m, h or d, e.g. \"10s\""
            ))
        })
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// `[http]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http {
    /// Bind address.
    pub listen: SocketAddr,
    /// Base of absolute links (download links in e-mails), e.g. `http://kasa-pi.local:5272`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// Reverse proxies (addresses or networks, `127.0.0.1`, `10.0.0.0/8`, `::1`) whose
    /// `X-Forwarded-For` names the real client (for login throttling and the audit log).
    pub trusted_proxies: Vec<String>,
    /// Longest a request's headers may take to arrive, from its first byte (every request on
    /// a connection, not only the first); a connection that sends nothing is closed after it.
    pub header_timeout: Dur,
    /// Longest a kept-alive connection may sit idle between requests.
    pub idle_timeout: Dur,
    /// Longest a request body may take to arrive.
    pub body_timeout: Dur,
    /// Open HTTP connections at most; further ones wait in the kernel's queue.
    pub max_connections: usize,
}

impl Default for Http {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 5272)),
            public_url: None,
            trusted_proxies: Vec::new(),
            header_timeout: Dur(Duration::from_secs(10)),
            idle_timeout: Dur(Duration::from_secs(60)),
            body_timeout: Dur(Duration::from_secs(30)),
            max_connections: 512,
        }
    }
}

/// `[auth]`: the cost of password checks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// Argon2 checks and hashes running at once (19 MiB each).
    pub argon2_concurrency: usize,
    /// Logins waiting for an Argon2 turn; beyond it 503 with `Retry-After`.
    pub login_queue: usize,
}

impl Default for Auth {
    fn default() -> Self {
        Self {
            argon2_concurrency: 2,
            login_queue: 32,
        }
    }
}

/// `[schedules]`: what one user's scheduled exports may do (admins are exempt).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Schedules {
    /// Schedules per user.
    pub max_per_user: usize,
    /// Shortest gap between two runs of a schedule (the shortest among its next 1,000).
    pub min_interval: Dur,
    /// Runs of one user's schedules per rolling hour; runs beyond it are skipped.
    pub max_runs_per_hour: usize,
    /// Share of `[exports] storage_quota_mb` one user's export files may take before their
    /// scheduled runs are refused, percent.
    pub quota_share_percent: u8,
}

impl Default for Schedules {
    fn default() -> Self {
        Self {
            max_per_user: 20,
            min_interval: Dur(Duration::from_secs(15 * 60)),
            max_runs_per_hour: 12,
            quota_share_percent: 25,
        }
    }
}

/// An address or network of `[http] trusted_proxies`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    addr: std::net::IpAddr,
    prefix: u8,
}

impl Net {
    /// Parses `1.2.3.4`, `10.0.0.0/8`, `::1` or `fd00::/8`.
    pub fn parse(s: &str) -> Option<Self> {
        let (a, p) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().ok()?)),
            None => (s.trim(), None),
        };
        let addr: std::net::IpAddr = a.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = p.unwrap_or(max);
        (prefix <= max).then_some(Self { addr, prefix })
    }

    /// The prefix length (32 or 128 for a single address).
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` lies in this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr::{V4, V6};
        let ip = match ip {
            V6(v6) => v6.to_ipv4_mapped().map_or(ip, V4),
            v4 => v4,
        };
        let bits = |x: u128, width: u32| {
            let shift = width - u32::from(self.prefix);
            if shift >= 128 { 0 } else { x >> shift }
        };
        match (self.addr, ip) {
            (V4(n), V4(i)) => {
                bits(u128::from(u32::from(n)), 32) == bits(u128::from(u32::from(i)), 32)
            }
            (V6(n), V6(i)) => bits(u128::from(n), 128) == bits(u128::from(i), 128),
            _ => false,
        }
    }
}

/// `[discovery]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Discovery {
    /// Probe for devices at all.
    pub enabled: bool,
    /// Where probes go (`ip:port`); a broadcast address finds every device on the LAN.
    pub targets: Vec<String>,
    /// Time between discovery rounds.
    pub interval: Dur,
    /// How long to listen for answers.
    pub window: Dur,
    /// Refuse any target or static device outside 127.0.0.0/8 (set by the demo and tests).
    pub loopback_only: bool,
    /// Each target's host also gets the probe of newer (KLAP, AES) devices on this UDP port;
    /// 0 turns that probe off.
    pub port_20002: u16,
}

impl Default for Discovery {
    fn default() -> Self {
        Self {
            enabled: true,
            targets: vec!["255.255.255.255:9999".into()],
            interval: Dur(Duration::from_secs(300)),
            window: Dur(Duration::from_secs(2)),
            loopback_only: false,
            port_20002: crate::protocol::port20002::DEFAULT_PORT,
        }
    }
}

/// `[kasa]`: the TP-Link cloud account that newer (KLAP) devices were set up with. Without
/// it, such devices are tried with the Kasa default and blank credentials only.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Kasa {
    /// The account's e-mail address; empty = no account.
    pub username: String,
    /// File holding the account's password (first line; mode 0600). Never logged.
    pub password_file: Option<PathBuf>,
    /// Send the reversible login-version-1 password (AES devices) also to devices kasad has
    /// not seen before; off by default, when only devices with a known MAC address get it.
    pub allow_login_v1: bool,
}

impl Kasa {
    /// The configured account, with its password read from `password_file`.
    pub fn account(&self) -> Result<Option<crate::protocol::klap::Credentials>, ConfigError> {
        if self.username.is_empty() {
            return Ok(None);
        }
        let password = match &self.password_file {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|source| ConfigError::Read {
                    path: p.display().to_string(),
                    source,
                })?
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned(),
            None => String::new(),
        };
        Ok(Some(crate::protocol::klap::Credentials::new(
            &self.username,
            &password,
        )))
    }
}

/// `[poll]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Poll {
    /// Time between polls of each device.
    pub interval: Dur,
    /// Longest a device may take to answer one poll.
    pub timeout: Dur,
    /// Devices polled at the same time.
    pub concurrency: usize,
    /// Longest wait between attempts at an unreachable device.
    pub max_backoff: Dur,
    /// Device connections kept open between polls (each holds a file descriptor).
    pub keep_connections: usize,
}

impl Default for Poll {
    fn default() -> Self {
        Self {
            interval: Dur(Duration::from_secs(10)),
            timeout: Dur(Duration::from_secs(3)),
            concurrency: 256,
            max_backoff: Dur(Duration::from_secs(300)),
            keep_connections: 512,
        }
    }
}

/// `[storage]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Storage {
    /// Time between durable points (staging-log syncs): the most a power cut can lose.
    pub commit_interval: Dur,
    /// Time between durable commits of the database (checkpoints); in between, what arrives
    /// is made durable by the staging log. Longer means fewer bytes written to the SD card.
    pub checkpoint_interval: Dur,
    /// Page cache, MiB.
    pub cache_mb: usize,
    /// Free space (MiB) kept on the data dir's file system: below it the database takes no
    /// writes (readings wait in memory and the staging log until space returns), so that a
    /// full disk never fails a database write half-way.
    pub reserve_mb: u64,
    /// Raw readings older than this are removed daily (15-minute rollups are kept forever).
    pub raw_retention: Dur,
}

impl Default for Storage {
    fn default() -> Self {
        Self {
            commit_interval: Dur(Duration::from_secs(30)),
            checkpoint_interval: Dur(Duration::from_secs(6 * 3600)),
            cache_mb: 16,
            reserve_mb: 32,
            raw_retention: Dur(Duration::from_secs(400 * 86_400)),
        }
    }
}

/// `[audit]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Audit {
    /// Days audit entries are kept (0 = forever).
    pub retention_days: u32,
    /// Compliance hold: no audit entry may be removed while set.
    pub compliance_hold: bool,
}

/// `[exports]`: limits of the export engine (spec defaults).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Exports {
    /// Most rows one export may hold.
    pub max_records_per_export: u64,
    /// Longest date range of one export, days.
    pub max_date_range_days: u32,
    /// Exports rendered at the same time; the rest wait queued.
    pub max_concurrent_exports: usize,
    /// Largest finished file, MiB.
    pub max_file_size_mb: u64,
    /// All export files together, MiB; new exports are refused above it.
    pub storage_quota_mb: u64,
    /// New exports are refused when the data directory's disk has less free space, MiB.
    pub min_free_disk_mb: u64,
    /// Creates per user per rolling hour (scheduled runs do not count).
    pub rate_limit_per_hour: u32,
    /// Cron expression (5 fields, in `timezone`) of the expired-export cleanup.
    pub cleanup_schedule: String,
    /// Rated power in watts per device (key: device id, IP or name), for `rated_power` in
    /// custom-field formulas.
    pub rated_power: std::collections::BTreeMap<String, f64>,
    /// PDF page size: `A4` or `Letter`.
    pub pdf_page_size: String,
    /// TrueType fonts embedded in PDFs, tried in order for each character (the first that
    /// has a glyph wins); characters none of them has use the built-in Helvetica when it can
    /// show them, else appear as `<U+XXXX>`.
    pub pdf_fonts: Vec<PathBuf>,
    /// Distinct values all `COUNT(DISTINCT …)` sets of one request may hold together.
    pub distinct_budget: usize,
    /// Custom fields one request may have.
    pub max_custom_fields: usize,
    /// Previews per user per minute.
    pub preview_rate_per_minute: u32,
}

impl Default for Exports {
    fn default() -> Self {
        Self {
            max_records_per_export: 1_000_000,
            max_date_range_days: 366,
            max_concurrent_exports: 3,
            max_file_size_mb: 100,
            storage_quota_mb: 2048,
            min_free_disk_mb: 256,
            rate_limit_per_hour: 10,
            cleanup_schedule: "0 2 * * *".into(),
            rated_power: Default::default(),
            pdf_page_size: "A4".into(),
            pdf_fonts: vec![
                PathBuf::from("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
                PathBuf::from("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),
                PathBuf::from("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
            ],
            distinct_budget: 2_000_000,
            max_custom_fields: 10,
            preview_rate_per_minute: 60,
        }
    }
}

/// One `[[retention.policies]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicy {
    /// `device_data`, `cost_analysis`, `system_report`, `audit_logs` or `configuration`.
    pub export_type: String,
    /// Days a finished export is kept (counted from completion).
    pub retention_days: u32,
    /// Delete automatically when expired; `false` keeps the export (`expires_at: null`).
    #[serde(default = "yes")]
    pub auto_delete: bool,
    /// Never delete while held, not even on request.
    #[serde(default)]
    pub compliance_hold: bool,
}

fn yes() -> bool {
    true
}

/// `[retention]`: export retention policies.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    /// One policy per export type; types without one use the defaults below.
    pub policies: Vec<RetentionPolicy>,
    /// Hours before deletion at which a notice is written to the audit log.
    pub notification_before_deletion: u32,
}

impl Retention {
    /// The policies in force: configured ones over the spec's defaults.
    pub fn policy(&self, export_type: &str) -> RetentionPolicy {
        if let Some(p) = self.policies.iter().find(|p| p.export_type == export_type) {
            return p.clone();
        }
        let (days, auto, hold) = match export_type {
            "audit_logs" => (30, true, true),
            "system_report" => (90, false, false),
            "cost_analysis" | "configuration" => (30, true, false),
            _ => (7, true, false),
        };
        RetentionPolicy {
            export_type: export_type.into(),
            retention_days: days,
            auto_delete: auto,
            compliance_hold: hold,
        }
    }
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            policies: Vec::new(),
            notification_before_deletion: 24,
        }
    }
}

/// `[delivery]`: where scheduled exports may go, and how hard delivery tries.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Delivery {
    /// Directories under which `directory` deliveries may write (e.g. `/media`, `/mnt`);
    /// empty = directory delivery refused.
    pub directory_roots: Vec<PathBuf>,
    /// A directory delivery needs its target on a mounted file system other than the one
    /// holding its root (a USB stick or share, not the bare mount point on the SD card);
    /// a schedule may turn this off for itself.
    pub require_mount: bool,
    /// URL prefixes webhooks may be sent to (e.g. `https://ha.local:8123/api/webhook/`).
    pub webhook_allow: Vec<String>,
    /// E-mail domains recipients may belong to (e.g. `example.com`).
    pub email_allow_domains: Vec<String>,
    /// Delivery attempts after the first one fails.
    pub retries: u32,
    /// Wait before the first retry; doubled for each further one.
    pub retry_backoff: Dur,
    /// Timeout of one webhook request or SMTP session.
    pub timeout: Dur,
    /// A run missed while the daemon was down (or the clock was wrong) still runs, once, when
    /// its time is at most this long ago.
    pub missed_run_grace: Dur,
    /// Lifetime of download links in e-mails and webhook notices.
    pub link_ttl: Dur,
}

impl Default for Delivery {
    fn default() -> Self {
        Self {
            directory_roots: vec![PathBuf::from("/media"), PathBuf::from("/mnt")],
            require_mount: true,
            webhook_allow: Vec::new(),
            email_allow_domains: Vec::new(),
            retries: 3,
            retry_backoff: Dur(Duration::from_secs(30)),
            timeout: Dur(Duration::from_secs(30)),
            missed_run_grace: Dur(Duration::from_secs(6 * 3600)),
            link_ttl: Dur(Duration::from_secs(7 * 86_400)),
        }
    }
}

/// `[metrics]`: who may scrape `GET /metrics`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Metrics {
    /// `auth` (a bearer token is required: the contents of `token_file`, or a user's access
    /// token with DEVICE_READ), `open` (anyone who reaches the port) or `off`.
    pub access: String,
    /// File holding the scrape token (first line), e.g. for Prometheus' `credentials_file`.
    pub token_file: Option<PathBuf>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            access: "auth".into(),
            token_file: None,
        }
    }
}

/// `[mdns]`: announcing the daemon on the LAN (`_http._tcp` and `_kasad._tcp`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mdns {
    /// Announce at all. Off unless configured (the packaged config turns it on); always off
    /// in `kasad demo`.
    pub enabled: bool,
    /// Instance name shown by browsers and `avahi-browse`; `%h` becomes the host name.
    pub instance: String,
    /// `auto` (through Avahi's service file when avahi-daemon runs, else built in),
    /// `builtin` or `avahi`.
    pub responder: String,
}

impl Default for Mdns {
    fn default() -> Self {
        Self {
            enabled: false,
            instance: "kasad on %h".into(),
            responder: "auto".into(),
        }
    }
}

/// `[mqtt]`: publishing device states to an MQTT broker, with Home Assistant discovery.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mqtt {
    /// Publish at all.
    pub enabled: bool,
    /// Broker host name or address.
    pub host: String,
    /// Broker port (1883 plain, 8883 with TLS).
    pub port: u16,
    /// TLS to the broker (rustls; the broker's name or IP must be in its certificate).
    pub tls: bool,
    /// CA certificates (PEM) the broker's certificate must chain to; without it, the public
    /// web roots.
    pub ca_file: Option<PathBuf>,
    /// MQTT client id (unique per broker).
    pub client_id: String,
    /// User name; empty = anonymous.
    pub username: String,
    /// File holding the password (mode 0600), read at start.
    pub password_file: Option<PathBuf>,
    /// First level of every state topic.
    pub topic_prefix: String,
    /// Home Assistant's discovery prefix.
    pub discovery_prefix: String,
    /// 0 (at most once) or 1 (at least once).
    pub qos: u8,
    /// Obey `<prefix>/<id>/relay/set`; off by default.
    pub allow_control: bool,
    /// Messages held while the broker is away; beyond it the oldest are dropped.
    pub queue: usize,
}

impl Default for Mqtt {
    fn default() -> Self {
        Self {
            enabled: false,
            host: "127.0.0.1".into(),
            port: 1883,
            tls: false,
            ca_file: None,
            client_id: "kasad".into(),
            username: String::new(),
            password_file: None,
            topic_prefix: "kasad".into(),
            discovery_prefix: "homeassistant".into(),
            qos: 1,
            allow_control: false,
            queue: 10_000,
        }
    }
}

/// `[smtp]`: the mail server scheduled exports are sent through.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Smtp {
    /// Server host name; empty = e-mail delivery refused.
    pub host: String,
    /// Port (587 for STARTTLS, 465 for TLS, 25 for a LAN relay).
    pub port: u16,
    /// `starttls` (required), `tls` (implicit) or `none` (plain, for relays on the LAN).
    pub tls: String,
    /// Login name; empty = no login.
    pub username: String,
    /// File holding the password (first line).
    pub password_file: Option<PathBuf>,
    /// Sender, e.g. `kasad <kasad@example.com>`.
    pub from: String,
    /// Exports up to this size are attached; larger ones are sent as a link.
    pub max_attachment_mb: u64,
}

impl Default for Smtp {
    fn default() -> Self {
        Self {
            host: String::new(),
            port: 587,
            tls: "starttls".into(),
            username: String::new(),
            password_file: None,
            from: "kasad <kasad@localhost>".into(),
            max_attachment_mb: 10,
        }
    }
}

/// `[tariff]`: the first tariff version (flat at `price_per_kwh` unless `rates` says
/// otherwise); see [`crate::tariff`]. Seeds the database once; later versions come from
/// `PUT /api/tariffs`.
pub use crate::tariff::Tariff;

/// `[[devices]]`: a device polled without being discovered.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticDevice {
    /// `ip` or `ip:port` (port 9999 by default).
    pub host: String,
}

/// All settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// State directory (database, keys, export files).
    pub data_dir: PathBuf,
    /// Default IANA time zone for days and months.
    pub timezone: String,
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
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("/var/lib/kasad"),
            timezone: "UTC".into(),
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
        }
    }
}

/// Parses `ip:port` or `ip` (port 9999).
pub fn parse_host(s: &str) -> Option<SocketAddr> {
    s.parse().ok().or_else(|| {
        s.parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, crate::protocol::DEFAULT_PORT))
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

    /// Valid but probably unintended settings, in words (`check-config` and the daemon's start
    /// say them).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for p in &self.http.trusted_proxies {
            if Net::parse(p).is_some_and(|n| n.prefix() == 0) {
                out.push(format!(
                    "[http] trusted_proxies {p:?} trusts X-Forwarded-For from every client: anyone \
                     can choose the address that login throttling and the audit log see; list \
                     only the proxy's own address"
                ));
            }
        }
        if self.mdns.enabled && self.http.listen.ip().is_loopback() {
            out.push(format!(
                "[mdns] enabled, but [http] listen = {} is a loopback address: nothing is announced",
                self.http.listen
            ));
        }
        let m = &self.mqtt;
        if m.enabled && m.allow_control && (!m.tls || m.username.is_empty()) {
            let why = match (m.tls, m.username.is_empty()) {
                (false, true) => "over plain TCP to an anonymous broker",
                (false, false) => "over plain TCP (the password and commands travel in clear)",
                _ => "on an anonymous broker",
            };
            out.push(format!(
                "[mqtt] allow_control = true {why}: anyone who can publish to the broker can \
                 switch your plugs; use tls = true with a username and password_file"
            ));
        }
        out
    }

    /// Checks values that types alone do not.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.tz()?;
        let targets = self.discovery_targets()?;
        let hosts = self.static_hosts()?;
        let outside = targets.iter().chain(&hosts).find(|a| !a.ip().is_loopback());
        if let (true, Some(bad)) = (self.discovery.loopback_only, outside) {
            return Err(invalid(
                "discovery.loopback_only",
                format!("{bad} is not a loopback address; only 127.0.0.0/8 is allowed here"),
            ));
        }
        for (key, d) in [
            ("poll.interval", self.poll.interval),
            ("poll.timeout", self.poll.timeout),
            ("discovery.interval", self.discovery.interval),
            ("discovery.window", self.discovery.window),
            ("storage.commit_interval", self.storage.commit_interval),
            (
                "storage.checkpoint_interval",
                self.storage.checkpoint_interval,
            ),
            ("delivery.timeout", self.delivery.timeout),
            ("delivery.link_ttl", self.delivery.link_ttl),
            ("http.header_timeout", self.http.header_timeout),
            ("http.idle_timeout", self.http.idle_timeout),
            ("http.body_timeout", self.http.body_timeout),
        ] {
            if d.0.is_zero() {
                return Err(invalid(key, "must be greater than zero"));
            }
        }
        if !["auto", "builtin", "avahi"].contains(&self.mdns.responder.as_str()) {
            return Err(invalid(
                "mdns.responder",
                "must be \"auto\", \"builtin\" or \"avahi\"",
            ));
        }
        let name = crate::mdns::instance_name(&self.mdns.instance, &crate::mdns::host_name());
        if self.mdns.enabled && (name.trim().is_empty() || name.len() > 63) {
            return Err(invalid(
                "mdns.instance",
                format!("{name:?} must be 1 to 63 bytes long (a DNS label)"),
            ));
        }
        for (key, v) in [
            ("poll.concurrency", self.poll.concurrency),
            ("http.max_connections", self.http.max_connections),
            ("auth.argon2_concurrency", self.auth.argon2_concurrency),
            ("exports.distinct_budget", self.exports.distinct_budget),
            ("exports.max_custom_fields", self.exports.max_custom_fields),
            ("schedules.max_per_user", self.schedules.max_per_user),
            (
                "schedules.max_runs_per_hour",
                self.schedules.max_runs_per_hour,
            ),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if !(1..=100).contains(&self.schedules.quota_share_percent) {
            return Err(invalid("schedules.quota_share_percent", "must be 1 to 100"));
        }
        let topic_ok = |t: &str| {
            !t.starts_with('$') && !t.contains(['+', '#']) && t.split('/').all(|l| !l.is_empty())
        };
        for (key, t) in [
            ("mqtt.topic_prefix", &self.mqtt.topic_prefix),
            ("mqtt.discovery_prefix", &self.mqtt.discovery_prefix),
        ] {
            if !topic_ok(t) {
                return Err(invalid(
                    key,
                    "must be a topic without wildcards or a trailing /",
                ));
            }
        }
        if self.kasa.password_file.is_some() && self.kasa.username.is_empty() {
            return Err(invalid("kasa.password_file", "needs kasa.username"));
        }
        if self.mqtt.password_file.is_some() && self.mqtt.username.is_empty() {
            return Err(invalid("mqtt.password_file", "needs mqtt.username"));
        }
        if self.mqtt.qos > 1 {
            return Err(invalid("mqtt.qos", "must be 0 or 1"));
        }
        if self.mqtt.enabled && (self.mqtt.host.is_empty() || self.mqtt.client_id.is_empty()) {
            return Err(invalid(
                "mqtt.host",
                "a broker host and a client id are needed",
            ));
        }
        self.validate_exports()
    }

    fn validate_exports(&self) -> Result<(), ConfigError> {
        let e = &self.exports;
        for (key, v) in [
            ("exports.max_records_per_export", e.max_records_per_export),
            (
                "exports.max_date_range_days",
                u64::from(e.max_date_range_days),
            ),
            (
                "exports.max_concurrent_exports",
                e.max_concurrent_exports as u64,
            ),
            ("exports.max_file_size_mb", e.max_file_size_mb),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        crate::cron::Schedule::parse(&e.cleanup_schedule)
            .map_err(|m| invalid("exports.cleanup_schedule", m))?;
        if !["A4", "Letter"].contains(&e.pdf_page_size.as_str()) {
            return Err(invalid(
                "exports.pdf_page_size",
                format!("must be \"A4\" or \"Letter\", got {:?}", e.pdf_page_size),
            ));
        }
        for p in &self.retention.policies {
            if !crate::export::EXPORT_TYPES.contains(&p.export_type.as_str()) {
                return Err(invalid(
                    "retention.policies.export_type",
                    format!(
                        "{:?} is not one of {}",
                        p.export_type,
                        crate::export::EXPORT_TYPES.join(", ")
                    ),
                ));
            }
        }
        crate::tariff::Compiled::new(&self.tariff, self.tz()?)
            .map_err(|e| invalid(&format!("tariff.{}", e.field), e.message))?;
        if let Some(u) = &self.http.public_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err(invalid(
                "http.public_url",
                "must start with http:// or https://",
            ));
        }
        self.validate_delivery()
    }

    fn validate_delivery(&self) -> Result<(), ConfigError> {
        if let Some(r) = self
            .delivery
            .directory_roots
            .iter()
            .find(|r| !r.is_absolute())
        {
            return Err(invalid(
                "delivery.directory_roots",
                format!("{} is not an absolute path", r.display()),
            ));
        }
        for u in &self.delivery.webhook_allow {
            let ok = reqwest::Url::parse(u).is_ok_and(|p| {
                matches!(p.scheme(), "http" | "https")
                    && p.host_str().is_some()
                    && p.username().is_empty()
                    && p.password().is_none()
            });
            if !ok {
                return Err(invalid(
                    "delivery.webhook_allow",
                    format!(
                        "{u:?} must be an http:// or https:// URL with a host and no user name (e.g. \"https://ha.local:8123/api/webhook/\")"
                    ),
                ));
            }
        }
        if self.delivery.retries > 10 {
            return Err(invalid("delivery.retries", "must be at most 10"));
        }
        if self.delivery.link_ttl.0 > Duration::from_secs(90 * 86_400) {
            return Err(invalid("delivery.link_ttl", "must be at most 90d"));
        }
        if self.smtp.tls == "none" && !self.smtp.username.is_empty() {
            return Err(invalid(
                "smtp.username",
                "a login over tls = \"none\" would send the password in clear text; use starttls or tls",
            ));
        }
        if let Some(bad) = self
            .http
            .trusted_proxies
            .iter()
            .find(|p| Net::parse(p).is_none())
        {
            return Err(invalid(
                "http.trusted_proxies",
                format!("{bad:?} is not an address or network (10.0.0.0/8, ::1)"),
            ));
        }
        if !["auth", "open", "off"].contains(&self.metrics.access.as_str()) {
            return Err(invalid(
                "metrics.access",
                format!("must be auth, open or off, got {:?}", self.metrics.access),
            ));
        }
        if !["starttls", "tls", "none"].contains(&self.smtp.tls.as_str()) {
            return Err(invalid(
                "smtp.tls",
                format!(
                    "must be \"starttls\", \"tls\" or \"none\", got {:?}",
                    self.smtp.tls
                ),
            ));
        }
        if !self.smtp.host.is_empty() {
            self.smtp
                .from
                .parse::<lettre::message::Mailbox>()
                .map_err(|e| invalid("smtp.from", format!("{:?}: {e}", self.smtp.from)))?;
        }
        Ok(())
    }

    /// The configured time zone.
    pub fn tz(&self) -> Result<chrono_tz::Tz, ConfigError> {
        self.timezone.parse().map_err(|_| {
            invalid(
                "timezone",
                format!("unknown IANA time zone {:?}", self.timezone),
            )
        })
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

#[cfg(test)]
mod net_tests {
    use super::Net;

    #[test]
    fn addresses_and_networks_match_as_written() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let n = Net::parse("10.0.0.0/8").unwrap();
        assert!(n.contains(ip("10.200.3.4")) && !n.contains(ip("11.0.0.1")));
        assert!(n.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped");
        let one = Net::parse("127.0.0.1").unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let v6 = Net::parse("fd00::/8").unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        assert!(Net::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        for bad in ["10.0.0.0/33", "::/129", "host.lan", "10.0.0.0/x", ""] {
            assert_eq!(Net::parse(bad), None, "{bad}");
        }
    }
}
