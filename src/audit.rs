//! The audit vocabulary and the hash chain that makes the log tamper-evident.
//!
//! Each entry carries the MAC of its predecessor (`prev`) and its own MAC: HMAC-SHA256, keyed
//! with a secret from the data directory, over `prev` and the entry's canonical JSON. Changing
//! any byte of an entry breaks its MAC; removing one breaks the sequence; retention removes
//! entries from the front and keeps the last removed entry's sequence number and MAC as the
//! anchor the chain continues from. Pure logic: persistence is in `store::audit`.

use crate::auth::keys::SecretKey;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventType {
    /// An export was requested.
    DataExport,
    /// An export file was downloaded.
    DataExported,
    /// Data or an export was deleted.
    DataDeleted,
    /// A request lacked a permission.
    PermissionDenied,
    /// A rate limit refused a request.
    RateLimitExceeded,
    /// A login succeeded.
    LoginSuccess,
    /// A login failed.
    LoginFailure,
    /// A user logged out.
    Logout,
    /// A relay was switched.
    DeviceControlled,
    /// A user was created.
    UserCreated,
    /// A user was changed.
    UserUpdated,
    /// A user was deleted.
    UserDeleted,
    /// Old audit entries were removed by retention.
    AuditRetention,
    /// An export will be deleted by retention soon.
    ExportExpiring,
    /// A tariff version was added.
    TariffChanged,
    /// A scheduled export was created, changed or deleted.
    ScheduleChanged,
    /// A scheduled export was delivered.
    ExportDelivered,
    /// A scheduled export could not be made or delivered.
    DeliveryFailed,
    /// A backup of the database was made.
    BackupCreated,
    /// History was imported from another tool.
    DataImported,
    /// A refresh token was presented after it had been traded: its session was revoked.
    RefreshTokenReused,
    /// A device's labels (name, room, rated power, notes) were changed.
    DeviceUpdated,
    /// A device was forgotten (with its readings when purged).
    DeviceDeleted,
    /// A forgotten device was restored.
    DeviceRestored,
    /// A setting made through the API changed (the insights' budget).
    SettingsChanged,
    /// An alert rule was created, changed or deleted.
    AlertRuleChanged,
    /// An alert was raised.
    AlertRaised,
    /// An alert's condition cleared.
    AlertResolved,
    /// Someone acknowledged an alert.
    AlertAcknowledged,
    /// A utility bill was recorded, changed or deleted.
    BillChanged,
    /// A signed statement was issued.
    StatementIssued,
}

impl EventType {
    /// Every event type.
    pub const ALL: [EventType; 31] = [
        EventType::DataExport,
        EventType::DataExported,
        EventType::DataDeleted,
        EventType::PermissionDenied,
        EventType::RateLimitExceeded,
        EventType::LoginSuccess,
        EventType::LoginFailure,
        EventType::Logout,
        EventType::DeviceControlled,
        EventType::UserCreated,
        EventType::UserUpdated,
        EventType::UserDeleted,
        EventType::AuditRetention,
        EventType::ExportExpiring,
        EventType::TariffChanged,
        EventType::ScheduleChanged,
        EventType::ExportDelivered,
        EventType::DeliveryFailed,
        EventType::BackupCreated,
        EventType::DataImported,
        EventType::RefreshTokenReused,
        EventType::DeviceUpdated,
        EventType::DeviceDeleted,
        EventType::DeviceRestored,
        EventType::SettingsChanged,
        EventType::AlertRuleChanged,
        EventType::AlertRaised,
        EventType::AlertResolved,
        EventType::AlertAcknowledged,
        EventType::BillChanged,
        EventType::StatementIssued,
    ];

    /// The upper-case name.
    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// Parses a name in any case.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|e| e.name().eq_ignore_ascii_case(s))
    }
}

/// How serious.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Severity {
    /// Routine.
    Info,
    /// Worth a look.
    Warning,
    /// Something failed.
    Error,
    /// Security-relevant failure.
    Critical,
}

impl Severity {
    /// The upper-case name.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "INFO",
            Severity::Warning => "WARNING",
            Severity::Error => "ERROR",
            Severity::Critical => "CRITICAL",
        }
    }

    /// Parses a name in any case.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Severity::Info,
            Severity::Warning,
            Severity::Error,
            Severity::Critical,
        ]
        .into_iter()
        .find(|x| x.name().eq_ignore_ascii_case(s))
    }
}

/// An event to record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// What happened.
    pub event_type: EventType,
    /// How serious.
    pub severity: Severity,
    /// Acting user id.
    pub user_id: Option<u32>,
    /// Acting username (or another actor name).
    pub username: Option<String>,
    /// Client address.
    pub client: Option<String>,
    /// What was acted on.
    pub resource: Option<String>,
    /// Event-specific details.
    pub details: serde_json::Value,
}

impl Event {
    /// A new event with no actor, client or resource yet.
    pub fn new(event_type: EventType, severity: Severity) -> Self {
        Self {
            event_type,
            severity,
            user_id: None,
            username: None,
            client: None,
            resource: None,
            details: serde_json::Value::Null,
        }
    }

    /// An event about export `id`: its resource is `export:<id>`, and `details` (an object)
    /// gain its `export_id`.
    pub fn about_export(event_type: EventType, id: &str, mut details: serde_json::Value) -> Self {
        details["export_id"] = serde_json::json!(id);
        Self {
            resource: Some(format!("export:{id}")),
            details,
            ..Self::new(event_type, Severity::Info)
        }
    }

    /// The same event, done by user `id` (`username`) from `client`.
    pub fn by(mut self, id: u32, username: &str, client: Option<String>) -> Self {
        (self.user_id, self.username, self.client) = (Some(id), Some(username.to_owned()), client);
        self
    }
}

/// Longest client-supplied string an entry stores, in characters.
pub const MAX_STRING: usize = 256;

/// `s` cut to [`MAX_STRING`] characters, marked with how much was cut.
fn cut(s: &mut String) {
    if let Some((at, _)) = s.char_indices().nth(MAX_STRING) {
        let total = s.chars().count();
        s.truncate(at);
        s.push_str(&format!("…[truncated, {total} characters]"));
    }
}

fn cut_value(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) => cut(s),
        serde_json::Value::Array(a) => a.iter_mut().for_each(cut_value),
        serde_json::Value::Object(o) => o.values_mut().for_each(cut_value),
        _ => {}
    }
}

impl Event {
    /// The event with every string (actor, client, resource, each string in the details)
    /// cut to [`MAX_STRING`] characters, so that no request can make an entry large.
    pub fn bounded(mut self) -> Self {
        for s in [&mut self.username, &mut self.client, &mut self.resource]
            .into_iter()
            .flatten()
        {
            cut(s);
        }
        cut_value(&mut self.details);
        self
    }
}

/// A stored entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Sequence number, gap-free from 1.
    pub seq: u64,
    /// Time, UTC ms.
    pub ts_ms: i64,
    /// The event.
    #[serde(flatten)]
    pub event: Event,
    /// MAC of the previous entry (hex; all zeros before the first).
    pub prev: String,
    /// This entry's MAC (hex).
    pub mac: String,
}

/// The MAC before the first entry.
pub fn genesis() -> String {
    "0".repeat(64)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Computes the MAC of an entry (its `mac` field is ignored).
pub fn compute_mac(key: &SecretKey, e: &Entry) -> String {
    #[derive(Serialize)]
    struct Canonical<'a> {
        seq: u64,
        ts_ms: i64,
        event: &'a Event,
        prev: &'a str,
    }
    let body = serde_json::to_vec(&Canonical {
        seq: e.seq,
        ts_ms: e.ts_ms,
        event: &e.event,
        prev: &e.prev,
    })
    .expect("entries serialise");
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key.bytes()).expect("any key length");
    m.update(&body);
    hex(&m.finalize().into_bytes())
}

/// Where the chain starts after retention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainState {
    /// Sequence number of the last removed entry (0 = none removed).
    pub anchor_seq: u64,
    /// MAC of the last removed entry.
    pub anchor_mac: String,
    /// Sequence number of the newest entry.
    pub last_seq: u64,
    /// Compliance hold: retention may not remove entries.
    pub hold: bool,
}

impl Default for ChainState {
    fn default() -> Self {
        Self {
            anchor_seq: 0,
            anchor_mac: genesis(),
            last_seq: 0,
            hold: false,
        }
    }
}

/// Result of verifying the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// True when every entry checks out.
    pub ok: bool,
    /// Entries checked.
    pub checked: u64,
    /// First sequence number that fails, if any.
    pub first_bad_seq: Option<u64>,
    /// Why it fails.
    pub reason: Option<String>,
}

/// Verifies entries (in ascending order) against the chain state.
pub fn verify(
    key: &SecretKey,
    state: &ChainState,
    entries: impl IntoIterator<Item = Entry>,
) -> Verification {
    let mut expect_seq = state.anchor_seq + 1;
    let mut prev = state.anchor_mac.clone();
    let mut checked = 0;
    let bad = |seq: u64, why: &str, checked: u64| Verification {
        ok: false,
        checked,
        first_bad_seq: Some(seq),
        reason: Some(why.to_owned()),
    };
    for e in entries {
        if e.seq != expect_seq {
            return bad(expect_seq, "entry missing (sequence gap)", checked);
        }
        if e.prev != prev {
            return bad(e.seq, "chain broken (previous MAC differs)", checked);
        }
        if compute_mac(key, &e) != e.mac {
            return bad(e.seq, "entry altered (MAC mismatch)", checked);
        }
        prev = e.mac;
        expect_seq += 1;
        checked += 1;
    }
    if expect_seq != state.last_seq + 1 {
        return bad(expect_seq, "entries missing at the end of the log", checked);
    }
    Verification {
        ok: true,
        checked,
        first_bad_seq: None,
        reason: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(key: &SecretKey, n: u64) -> (ChainState, Vec<Entry>) {
        let mut prev = genesis();
        let mut out = Vec::new();
        for seq in 1..=n {
            let mut e = Entry {
                seq,
                ts_ms: seq as i64,
                event: Event::new(EventType::LoginSuccess, Severity::Info),
                prev: prev.clone(),
                mac: String::new(),
            };
            e.mac = compute_mac(key, &e);
            prev = e.mac.clone();
            out.push(e);
        }
        (
            ChainState {
                last_seq: n,
                ..ChainState::default()
            },
            out,
        )
    }

    #[test]
    fn intact_chain_verifies_and_tampering_is_located() {
        let k = SecretKey::from_bytes([1; 32]);
        let (st, es) = chain(&k, 5);
        assert!(verify(&k, &st, es.clone()).ok);
        let mut altered = es.clone();
        altered[2].event.details = serde_json::json!({"x": 1});
        assert_eq!(verify(&k, &st, altered).first_bad_seq, Some(3));
        let mut removed = es.clone();
        removed.remove(1);
        assert_eq!(verify(&k, &st, removed).first_bad_seq, Some(2));
        let mut tail = es.clone();
        tail.pop();
        assert_eq!(verify(&k, &st, tail).first_bad_seq, Some(5));
        assert!(!verify(&SecretKey::from_bytes([2; 32]), &st, es).ok);
    }

    #[test]
    fn long_strings_are_cut_and_marked() {
        let mut e = Event::new(EventType::LoginFailure, Severity::Warning);
        e.username = Some("ü".repeat(60_000));
        e.details = serde_json::json!({"list": ["x".repeat(300), "short"], "n": 1});
        let b = e.bounded();
        let name = b.username.unwrap();
        assert!(name.starts_with(&"ü".repeat(256)));
        assert!(name.ends_with("…[truncated, 60000 characters]"), "{name}");
        assert!(name.chars().count() < 300);
        assert!(
            b.details["list"][0]
                .as_str()
                .unwrap()
                .contains("truncated, 300")
        );
        assert_eq!(b.details["list"][1], "short");
    }

    #[test]
    fn names_parse_in_any_case() {
        assert_eq!(
            EventType::parse("login_failure"),
            Some(EventType::LoginFailure)
        );
        assert_eq!(EventType::LoginFailure.name(), "LOGIN_FAILURE");
        assert_eq!(Severity::parse("warning"), Some(Severity::Warning));
    }
}
