//! The sections of the configuration file, each with its defaults.

use super::ConfigError;
use super::types::{Dur, Net};
use crate::domain::export::ExportType;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
    pub trusted_proxies: Vec<Net>,
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
            port_20002: crate::domain::device::PORT_20002,
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

/// The `[kasa]` account with its password read (never logged).
#[derive(Clone, PartialEq, Eq)]
pub struct Account {
    /// The account's e-mail address.
    pub username: String,
    /// Its password.
    pub password: String,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Kasa {
    /// The configured account, with its password read from `password_file`.
    pub fn account(&self) -> Result<Option<Account>, ConfigError> {
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
        Ok(Some(Account {
            username: self.username.clone(),
            password,
        }))
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
    pub cleanup_schedule: crate::cron::Schedule,
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
    /// Who issues signed statements (a landlord, a business); the host name when empty.
    pub statement_issuer: String,
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
            cleanup_schedule: crate::cron::Schedule::parse("0 2 * * *").expect("a valid default"),
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
            statement_issuer: String::new(),
        }
    }
}

/// One `[[retention.policies]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicy {
    /// `device_data`, `cost_analysis`, `system_report`, `audit_logs` or `configuration`.
    pub export_type: ExportType,
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
    pub fn policy(&self, export_type: ExportType) -> RetentionPolicy {
        if let Some(p) = self.policies.iter().find(|p| p.export_type == export_type) {
            return p.clone();
        }
        let (days, auto, hold) = match export_type {
            ExportType::AuditLogs => (30, true, true),
            // Issued statements are kept until someone deletes them.
            ExportType::SystemReport | ExportType::Statement => (90, false, false),
            ExportType::CostAnalysis | ExportType::Configuration => (30, true, false),
            ExportType::DeviceData => (7, true, false),
        };
        RetentionPolicy {
            export_type,
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
pub use crate::domain::tariff::Tariff;

/// `[[devices]]`: a device polled without being discovered.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticDevice {
    /// `ip` or `ip:port` (port 9999 by default).
    pub host: String,
}

/// `[insights]`: the statistics computed from the readings (always-on, cycles, runs, unusual
/// days, the forecast).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Insights {
    /// Budget of a billing period in the tariff's currency (`PUT /api/insights/settings` wins
    /// over it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monthly_budget: Option<f64>,
    /// Minutes below its threshold that end an appliance run (pauses inside a programme are
    /// shorter).
    pub run_end_minutes: u32,
    /// Smallest difference from the typical day, kWh, that can make a day unusual.
    pub unusual_min_kwh: f64,
}

impl Default for Insights {
    fn default() -> Self {
        Self {
            monthly_budget: None,
            run_end_minutes: 15,
            unusual_min_kwh: 0.1,
        }
    }
}

/// `[[price_feeds]]`: a price series fetched on a schedule for dynamic tariffs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceFeed {
    /// The series it fills.
    pub series: String,
    /// Where from (under an entry of `[delivery] webhook_allow`).
    pub url: String,
    /// `csv`, `json`, `awattar` or `octopus`.
    pub layout: String,
    /// When (5-field cron in `timezone`), e.g. `"15 14 * * *"` after a day-ahead auction.
    pub schedule: crate::cron::Schedule,
}

/// `[[push]]`: a time-series store the readings are pushed to, from the store as a queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushTarget {
    /// Its name (`kasad push status`, metrics labels): 1 to 64 letters, digits, '-' or '_'.
    pub name: String,
    /// `remote_write` (Prometheus remote write 1.0) or `influx` (line protocol).
    pub kind: String,
    /// Where to (under an entry of `[delivery] webhook_allow`).
    pub url: String,
    /// The `site` label of every series (empty: none).
    #[serde(default)]
    pub site: String,
    /// A file holding the bearer token.
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// Basic auth user (with `password_file`).
    #[serde(default)]
    pub username: Option<String>,
    /// A file holding the basic auth password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// PEM file of the CA that signed the target's certificate (besides the usual roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// InfluxDB 2 organisation (with `bucket`: `/api/v2/write`).
    #[serde(default)]
    pub org: Option<String>,
    /// InfluxDB 2 bucket.
    #[serde(default)]
    pub bucket: Option<String>,
    /// InfluxDB 1 database (`/write?db=`).
    #[serde(default)]
    pub database: Option<String>,
    /// `raw` readings or 15-minute `rollups`.
    #[serde(default = "default_series")]
    pub series: String,
    /// Readings per request.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Longest wait between retries.
    #[serde(default = "default_retry_max")]
    pub retry_max: Dur,
    /// Readings older than this are not pushed (a target away longer skips them, counted).
    #[serde(default = "default_max_age")]
    pub max_age: Dur,
}

fn default_series() -> String {
    "raw".into()
}

fn default_batch() -> usize {
    5_000
}

fn default_retry_max() -> Dur {
    Dur(Duration::from_secs(10))
}

fn default_max_age() -> Dur {
    Dur(Duration::from_secs(7 * 86_400))
}
