//! Exports as data: the export types, the output formats and compressions, a job's status,
//! and the job record the store keeps.

use serde::{Deserialize, Serialize};

/// What an export holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportType {
    /// Readings or their aggregates per device.
    DeviceData,
    /// Energy priced by the tariff.
    CostAnalysis,
    /// The report of sections.
    SystemReport,
    /// The audit log.
    AuditLogs,
    /// The setup (devices, users, settings).
    Configuration,
    /// A signed statement of some devices' energy and cost.
    Statement,
}

impl ExportType {
    /// Every type, in the spec's order.
    pub const ALL: [ExportType; 6] = [
        ExportType::DeviceData,
        ExportType::CostAnalysis,
        ExportType::SystemReport,
        ExportType::AuditLogs,
        ExportType::Configuration,
        ExportType::Statement,
    ];

    /// Its name in the API (`device_data`, …).
    pub fn name(self) -> &'static str {
        match self {
            ExportType::DeviceData => "device_data",
            ExportType::CostAnalysis => "cost_analysis",
            ExportType::SystemReport => "system_report",
            ExportType::AuditLogs => "audit_logs",
            ExportType::Configuration => "configuration",
            ExportType::Statement => "statement",
        }
    }

    /// The type called `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == s)
    }
}

impl std::fmt::Display for ExportType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl PartialEq<&str> for ExportType {
    fn eq(&self, other: &&str) -> bool {
        self.name() == *other
    }
}

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// RFC 4180 CSV.
    Csv,
    /// `{"metadata":…,"data":[…]}`.
    Json,
    /// An Office Open XML workbook (.xlsx).
    Excel,
    /// A PDF report.
    Pdf,
    /// Home Assistant long-term statistics (CSV for the "Import Statistics" integration).
    HaStatistics,
}

/// Description of a format for `GET /api/exports/formats`.
#[derive(Debug, Clone, Copy)]
pub struct FormatInfo {
    /// The format.
    pub format: Format,
    /// Id used in requests.
    pub id: &'static str,
    /// Display name.
    pub name: &'static str,
    /// One line.
    pub description: &'static str,
    /// MIME type of the uncompressed file.
    pub mime_type: &'static str,
    /// File extension with the dot.
    pub extension: &'static str,
}

/// The formats this build produces.
pub const FORMATS: [FormatInfo; 5] = [
    FormatInfo {
        format: Format::Csv,
        id: "csv",
        name: "CSV",
        description: "Comma-separated values",
        mime_type: "text/csv",
        extension: ".csv",
    },
    FormatInfo {
        format: Format::Json,
        id: "json",
        name: "JSON",
        description: "JavaScript Object Notation",
        mime_type: "application/json",
        extension: ".json",
    },
    FormatInfo {
        format: Format::Excel,
        id: "excel",
        name: "Excel",
        description: "Excel workbook: typed cells, frozen header, Summary and Devices sheets, optional charts",
        mime_type: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        extension: ".xlsx",
    },
    FormatInfo {
        format: Format::Pdf,
        id: "pdf",
        name: "PDF",
        description: "PDF report: title block, paged table, summary, optional charts",
        mime_type: "application/pdf",
        extension: ".pdf",
    },
    FormatInfo {
        format: Format::HaStatistics,
        id: "ha_statistics",
        name: "Home Assistant statistics",
        description: "device_data as hourly energy (state, sum) and power (mean, min, max) statistics for Home Assistant's Import Statistics integration",
        mime_type: "text/csv",
        extension: ".csv",
    },
];

impl Format {
    /// Parses a format id.
    pub fn parse(s: &str) -> Option<Self> {
        FORMATS.iter().find(|f| f.id == s).map(|f| f.format)
    }

    /// Its description.
    pub fn info(self) -> &'static FormatInfo {
        FORMATS
            .iter()
            .find(|f| f.format == self)
            .unwrap_or(&FORMATS[0])
    }
}

/// Optional compression of the finished file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Plain file.
    #[default]
    None,
    /// `.gz`.
    Gzip,
    /// `.zip` holding the one file.
    Zip,
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Waiting for a free slot.
    Queued,
    /// Being rendered.
    Processing,
    /// File ready.
    Completed,
    /// Rendering failed (see `error`).
    Failed,
    /// Deleted while queued or processing.
    Cancelled,
    /// Past `expires_at`; the file is gone.
    Expired,
}

/// An export job as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportRecord {
    /// Opaque, unguessable id (`exp_` + 24 URL-safe characters).
    pub id: String,
    /// Owner.
    pub user_id: u32,
    /// Owner's name at creation.
    pub username: String,
    /// What it holds.
    pub export_type: ExportType,
    /// `csv`, `json`, ….
    pub format: Format,
    /// Compression of the file.
    pub compression: Compression,
    /// State.
    pub status: Status,
    /// 0–100 (100 when completed).
    pub progress: u8,
    /// Created, UTC ms.
    pub created_ms: i64,
    /// Last start of rendering, UTC ms.
    pub started_ms: Option<i64>,
    /// Finished, UTC ms.
    pub completed_ms: Option<i64>,
    /// Expected completion, UTC ms.
    pub estimated_ms: Option<i64>,
    /// The validated request (devices resolved to ids), rendered again after a restart.
    pub request: serde_json::Value,
    /// Download file name.
    pub file_name: Option<String>,
    /// Bytes of the finished file.
    pub file_size: Option<u64>,
    /// Data rows in the file.
    pub record_count: Option<u64>,
    /// SHA-256 of the file, hex.
    pub checksum_sha256: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// Results of aggregate custom fields.
    pub summary: Option<serde_json::Value>,
    /// Retention of its type at creation.
    pub retention_days: u32,
    /// Removed automatically when expired.
    pub auto_delete: bool,
    /// Never removed while held.
    pub compliance_hold: bool,
    /// When the file expires (null: kept until deleted).
    pub expires_ms: Option<i64>,
    /// The expiry notice was written to the audit log.
    pub notice_sent: bool,
    /// Deleted (tombstone: kept so the rate limit counts it), UTC ms.
    pub deleted_ms: Option<i64>,
    /// Created by a schedule (not counted by the rate limit).
    pub scheduled: bool,
    /// The schedule that created it (its retention notice goes through that schedule's
    /// e-mail or webhook).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_id: Option<String>,
}

impl ExportRecord {
    /// File name on disk inside the exports directory.
    pub fn disk_name(&self) -> String {
        format!("{}{}", self.id, self.suffix())
    }

    /// Extension including compression, e.g. `.csv.gz`.
    pub fn suffix(&self) -> String {
        let ext = self.format.info().extension;
        match self.compression {
            Compression::None => ext.to_owned(),
            Compression::Gzip => format!("{ext}.gz"),
            Compression::Zip => ".zip".to_owned(),
        }
    }

    /// MIME type of the downloaded file.
    pub fn mime_type(&self) -> &'static str {
        match self.compression {
            Compression::None => self.format.info().mime_type,
            Compression::Gzip => "application/gzip",
            Compression::Zip => "application/zip",
        }
    }

    /// Whether `now_ms` is past expiry.
    pub fn is_expired(&self, now_ms: i64) -> bool {
        self.status == Status::Expired
            || (self.status == Status::Completed
                && self.auto_delete
                && !self.compliance_hold
                && self.expires_ms.is_some_and(|e| now_ms >= e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_types_read_and_write_their_api_names() {
        for t in ExportType::ALL {
            assert_eq!(ExportType::parse(t.name()), Some(t));
            assert_eq!(serde_json::to_value(t).unwrap(), t.name());
        }
        assert_eq!(ExportType::parse("nope"), None);
    }
}
