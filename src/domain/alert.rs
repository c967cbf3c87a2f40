//! Alert rules and alerts as data: what a rule watches, where its notices go, and the state of
//! an alert. Checked here as far as no setting is needed (allow-lists are checked by the
//! alerts engine).

use serde::{Deserialize, Serialize};

/// Most rules a household may have.
pub const MAX_RULES: usize = 200;
/// Longest rule name, in characters.
pub const MAX_NAME: usize = 100;
/// Most channels of one rule.
pub const MAX_CHANNELS: usize = 8;
/// Most entries of a rule's `devices`.
pub const MAX_DEVICES: usize = 100;
/// Longest `for_minutes` and `cooldown_minutes`: a week.
pub const MAX_MINUTES: u32 = 7 * 24 * 60;

/// What a rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// No reading for `for_minutes` (default 10).
    DeviceOffline,
    /// Power above `threshold_w` for `for_minutes`.
    PowerAbove,
    /// Power below `threshold_w` for `for_minutes` (while readings come).
    PowerBelow,
    /// A programme load finished a run.
    ApplianceFinished,
    /// Always-on power above `threshold_w` (checked daily).
    StandbyAbove,
    /// Yesterday was unusual (checked daily).
    UnusualDay,
    /// A cycling load's duty drifted by `percent` or more (checked daily).
    CycleDrift,
    /// The billing period's forecast is over the budget (checked daily, the household).
    BudgetForecast,
    /// Today's energy above `kwh`.
    DailyEnergyAbove,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 9] = [
        Kind::DeviceOffline,
        Kind::PowerAbove,
        Kind::PowerBelow,
        Kind::ApplianceFinished,
        Kind::StandbyAbove,
        Kind::UnusualDay,
        Kind::CycleDrift,
        Kind::BudgetForecast,
        Kind::DailyEnergyAbove,
    ];

    /// The name used in the API.
    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// Checked once a day (from the insights) rather than after each poll cycle.
    pub fn daily(self) -> bool {
        matches!(
            self,
            Kind::StandbyAbove | Kind::UnusualDay | Kind::CycleDrift | Kind::BudgetForecast
        )
    }
}

/// Where a rule's notices go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Channel {
    /// `"page"` or `"mqtt"`.
    Named(Named),
    /// `{"method": "email", "recipients": [...]}` or `{"method": "webhook", "url", "secret"}`.
    Out(Out),
}

/// The channels named by a word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Named {
    /// The bell on the pages (every alert is listed there anyway).
    Page,
    /// `<topic_prefix>/alerts/<rule_id>` and a Home Assistant event entity.
    Mqtt,
}

/// The channels that leave the Pi, in the shapes of scheduled-export delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum Out {
    /// E-mail through `[smtp]`.
    Email {
        /// Addresses (their domains in `[delivery] email_allow_domains`).
        recipients: Vec<String>,
    },
    /// A JSON notice POSTed to `url`, signed with `secret` when given.
    Webhook {
        /// Under an entry of `[delivery] webhook_allow`.
        url: String,
        /// HMAC key (16 characters or more).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secret: Option<String>,
    },
}

/// A daily window, `HH:MM` in the daemon's zone; `end` before `start` wraps midnight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    /// Start, `HH:MM`.
    pub start: String,
    /// End, `HH:MM`.
    pub end: String,
}

fn minute_of(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

impl QuietHours {
    /// Whether local minute-of-day `minute` lies inside.
    pub fn holds(&self, minute: u32) -> bool {
        let (Some(a), Some(b)) = (minute_of(&self.start), minute_of(&self.end)) else {
            return false;
        };
        if a <= b {
            (a..b).contains(&minute)
        } else {
            minute >= a || minute < b
        }
    }
}

/// A rule as the API takes it (`rule_id` and times are kasad's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleBody {
    /// Name shown with its alerts.
    pub name: String,
    /// What it watches.
    pub kind: Kind,
    /// `"all"`, or device ids, IPs and `room:` names (ignored by `budget_forecast`).
    #[serde(default = "all")]
    pub devices: serde_json::Value,
    /// Where notices go (at least one).
    pub channels: Vec<Channel>,
    /// W (`power_above`, `power_below`, `standby_above`; `appliance_finished`: the run threshold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_w: Option<f64>,
    /// How long the condition must hold before an alert, minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_minutes: Option<u32>,
    /// `cycle_drift`: the drift that counts, percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    /// `daily_energy_above`: kWh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kwh: Option<f64>,
    /// Notices wait while these hours last (alerts are still raised and listed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<QuietHours>,
    /// A condition that still holds is notified again after this long (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_minutes: Option<u32>,
}

fn all() -> serde_json::Value {
    serde_json::Value::String("all".into())
}

/// Why a rule is refused: the field and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RuleError {
    /// The field.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

fn err(field: &'static str, message: impl Into<String>) -> RuleError {
    RuleError {
        field,
        message: message.into(),
    }
}

fn positive(field: &'static str, v: Option<f64>, max: f64) -> Result<(), RuleError> {
    match v {
        Some(x) if !(x.is_finite() && x > 0.0 && x <= max) => {
            Err(err(field, format!("a number above 0 and at most {max}")))
        }
        _ => Ok(()),
    }
}

impl RuleBody {
    /// Checks what needs no settings: the name, the kind's own keys, the windows and the
    /// counts; the devices as a list of strings or `"all"`.
    pub fn check(&self) -> Result<Vec<String>, RuleError> {
        let n = self.name.chars().count();
        if n == 0 || n > MAX_NAME || self.name.chars().any(char::is_control) {
            return Err(err(
                "name",
                format!("1 to {MAX_NAME} characters, no control characters"),
            ));
        }
        let needs = |field: &'static str, present: bool| {
            if present {
                Ok(())
            } else {
                Err(err(field, format!("{} needs {field}", self.kind.name())))
            }
        };
        match self.kind {
            Kind::PowerAbove | Kind::PowerBelow | Kind::StandbyAbove => {
                needs("threshold_w", self.threshold_w.is_some())?
            }
            Kind::DailyEnergyAbove => needs("kwh", self.kwh.is_some())?,
            _ => {}
        }
        positive("threshold_w", self.threshold_w, 100_000.0)?;
        positive("kwh", self.kwh, 1_000_000.0)?;
        positive("percent", self.percent, 10_000.0)?;
        for (field, v) in [
            ("for_minutes", self.for_minutes),
            ("cooldown_minutes", self.cooldown_minutes),
        ] {
            if v.is_some_and(|m| m > MAX_MINUTES) {
                return Err(err(field, format!("0 to {MAX_MINUTES} minutes")));
            }
        }
        if let Some(q) = &self.quiet_hours
            && (minute_of(&q.start).is_none() || minute_of(&q.end).is_none() || q.start == q.end)
        {
            return Err(err("quiet_hours", "start and end as HH:MM, not equal"));
        }
        if self.channels.is_empty() || self.channels.len() > MAX_CHANNELS {
            return Err(err("channels", format!("1 to {MAX_CHANNELS} channels")));
        }
        let devices: Vec<String> = match &self.devices {
            serde_json::Value::String(s) => vec![s.clone()],
            serde_json::Value::Array(a) if !a.is_empty() && a.len() <= MAX_DEVICES => a
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<_>>()
                .ok_or_else(|| err("devices", "a list of device ids, IPs or room: names"))?,
            _ => {
                return Err(err(
                    "devices",
                    format!(
                        "\"all\" or a list of 1 to {MAX_DEVICES} device ids, IPs or room: names"
                    ),
                ));
            }
        };
        Ok(devices)
    }

    /// The cool-down, ms.
    pub fn cooldown_ms(&self) -> i64 {
        i64::from(self.cooldown_minutes.unwrap_or(60)) * 60_000
    }

    /// How long the condition must hold, ms (`device_offline`: 10 minutes unless set).
    pub fn for_ms(&self) -> i64 {
        let default = if self.kind == Kind::DeviceOffline {
            10
        } else {
            0
        };
        i64::from(self.for_minutes.unwrap_or(default)) * 60_000
    }
}

/// A stored rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// Its id.
    pub rule_id: String,
    /// What it is.
    #[serde(flatten)]
    pub body: RuleBody,
    /// Created, UTC ms.
    pub created_ms: i64,
    /// Last changed, UTC ms.
    pub updated_ms: i64,
}

/// Where an alert stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Raised and not yet seen to.
    Open,
    /// Someone has seen it; not notified again; resolves when the condition clears.
    Acknowledged,
    /// The condition cleared.
    Resolved,
}

/// One alert: a rule's condition on one device (or the household).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Its id.
    pub alert_id: String,
    /// The rule.
    pub rule_id: String,
    /// The device (`None`: the household).
    pub device_id: Option<String>,
    /// The rule's kind.
    pub kind: Kind,
    /// Where it stands.
    pub state: State,
    /// Raised, UTC ms.
    pub raised_ms: i64,
    /// Resolved, UTC ms.
    pub resolved_ms: Option<i64>,
    /// Acknowledged, UTC ms.
    pub acknowledged_ms: Option<i64>,
    /// Last notified, UTC ms (`None`: waiting for quiet hours to end).
    pub notified_ms: Option<i64>,
    /// No notices before this time, UTC ms.
    pub snoozed_until_ms: Option<i64>,
    /// What happened, in words.
    pub message: String,
    /// The measured value (W, kWh, percent, money).
    pub value: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quiet_hours_may_wrap_midnight() {
        let q = QuietHours {
            start: "22:00".into(),
            end: "07:00".into(),
        };
        assert!(q.holds(23 * 60) && q.holds(0) && q.holds(6 * 60 + 59));
        assert!(!q.holds(7 * 60) && !q.holds(12 * 60) && !q.holds(21 * 60 + 59));
        let day = QuietHours {
            start: "09:00".into(),
            end: "17:30".into(),
        };
        assert!(day.holds(9 * 60) && !day.holds(17 * 60 + 30));
    }

    #[test]
    fn rules_are_checked_field_by_field() {
        let ok: RuleBody = serde_json::from_value(json!({"name": "Freezer", "kind": "power_below",
            "threshold_w": 20, "for_minutes": 30, "channels": ["page", {"method": "email",
            "recipients": ["me@example.org"]}], "devices": ["room:Kitchen"]}))
        .unwrap();
        assert_eq!(ok.check().unwrap(), vec!["room:Kitchen".to_owned()]);
        let field = |v: serde_json::Value| {
            serde_json::from_value::<RuleBody>(v)
                .map(|b| b.check().map_err(|e| e.field))
                .map_err(|e| e.to_string())
        };
        let base =
            json!({"name": "x", "kind": "power_above", "threshold_w": 5, "channels": ["page"]});
        let with = |k: &str, v: serde_json::Value| {
            let mut b = base.clone();
            b[k] = v;
            b
        };
        assert_eq!(
            field(with("threshold_w", json!(-1))),
            Ok(Err("threshold_w"))
        );
        assert_eq!(field(with("name", json!(""))), Ok(Err("name")));
        assert_eq!(
            field(with("for_minutes", json!(20_000))),
            Ok(Err("for_minutes"))
        );
        assert_eq!(field(with("channels", json!([]))), Ok(Err("channels")));
        assert_eq!(field(with("devices", json!([1, 2]))), Ok(Err("devices")));
        assert_eq!(
            field(with(
                "quiet_hours",
                json!({"start": "25:00", "end": "07:00"})
            )),
            Ok(Err("quiet_hours"))
        );
        assert!(field(with("kind", json!("fire"))).is_err());
        assert!(field(with("channels", json!(["sms"]))).is_err());
        assert!(field(with("surprise", json!(1))).is_err());
        let mut b = base.clone();
        b.as_object_mut().unwrap().remove("threshold_w");
        assert_eq!(field(b), Ok(Err("threshold_w")));
    }
}
