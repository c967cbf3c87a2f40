//! Scheduled exports as data: the stored schedule, its latest run and where its files go.
//! What a delivery does and how a schedule runs is `crate::schedule`'s.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where a schedule's exports go.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "lowercase", deny_unknown_fields)]
pub enum Delivery {
    /// Kept in the export history only.
    None,
    /// Copied into a directory under an allow-listed root.
    Directory {
        /// Absolute directory.
        path: String,
        /// File name template (`{{name}}`, `{{date}}`, `{{export_type}}`, `{{format}}`);
        /// default: the export's download name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        filename: Option<String>,
        /// Overrides `[delivery] require_mount` for this schedule.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        require_mount: Option<bool>,
    },
    /// Sent by e-mail through `[smtp]`.
    Email {
        /// Addresses in allow-listed domains.
        recipients: Vec<String>,
        /// Subject template (`{{date}}`, `{{name}}`, …).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subject: Option<String>,
    },
    /// A JSON notice POSTed to a URL with an allow-listed prefix.
    Webhook {
        /// Target URL.
        url: String,
        /// Key of the `X-Kasad-Signature: sha256=<hex HMAC of the body>` header.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secret: Option<String>,
    },
}

/// A stored schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleRecord {
    /// `sch_…`.
    pub id: String,
    /// Owner (the creator); runs export as this user.
    pub user_id: u32,
    /// Owner's name at creation.
    pub username: String,
    /// Display name (also `{{name}}` in templates).
    pub name: String,
    /// 5-field cron expression.
    pub schedule: String,
    /// IANA zone of the expression and of relative ranges.
    pub timezone: String,
    /// Paused when false.
    pub enabled: bool,
    /// The export request, `date_range` possibly relative.
    pub export_config: Value,
    /// Where the file goes.
    pub delivery: Delivery,
    /// Created, UTC ms.
    pub created_ms: i64,
    /// Last changed, UTC ms.
    pub updated_ms: i64,
    /// Occurrences at or before this time (UTC ms) have been handled (run or skipped).
    pub handled_ms: i64,
    /// The latest run.
    pub last_run: Option<LastRun>,
    /// Bumped by every change through the API (the runner's records do not bump it), so a
    /// writer can tell that the schedule changed under it.
    #[serde(default)]
    pub revision: u64,
}

/// How a run ended (or that it is still going).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Exporting or delivering.
    Running,
    /// Exported and delivered.
    Completed,
    /// The export failed (or could not be created).
    Failed,
    /// Exported, but every delivery attempt failed; the export stays downloadable.
    DeliveryFailed,
}

/// The latest run of a schedule: `{"at","status","export_id","error"}` plus what delivery did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastRun {
    /// Start, UTC ms.
    pub at_ms: i64,
    /// Outcome.
    pub status: RunStatus,
    /// The export it made.
    pub export_id: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// What delivery did ("written to …", "sent to …", "webhook answered 200").
    pub delivered: Option<String>,
    /// `schedule`, `missed` (caught up after a stop) or `manual` (run now).
    pub trigger: String,
}
