//! The export engine: a create request becomes a persisted job, rendered off the async runtime
//! into a file that is written to a temporary name, fsynced, hashed and renamed, then served
//! until it expires.
//!
//! - [`request`]: the create body, validated into a [`request::Plan`].
//! - [`rows`]: device_data rows from the store: raw readings or 15-minute buckets, filters,
//!   aggregation, custom fields and privacy.
//! - [`formula`]: the safe evaluator of custom-field formulas.
//! - [`render`]: the writers (CSV, JSON), number and time formatting,
//!   compression, the reader → formatter → writer pipeline.
//! - [`excel`]: the Excel writer; [`pdf`]: the PDF writer.
//! - [`audit_log`]: the audit_logs export and its verification.
//! - [`configuration`]: the configuration export.
//! - [`report`]: the system_report export (one model, rendered by every format);
//!   [`cost`]: the cost_analysis export on the same model.
//! - [`jobs`]: the queue, the runner, restart recovery, deletion and expiry cleanup.

pub mod devices;
pub mod download;
pub mod fields;
pub mod filters;
pub mod format;
pub mod formula;
pub mod jobs;
pub mod kind;
pub mod output;
pub mod pipeline;
pub mod plan;
pub mod report;
pub mod request;
pub mod signed;

pub use crate::domain::export::{
    Compression, ExportRecord, ExportType, FORMATS, Format, FormatInfo, Status,
};

pub use kind::extra_permission;
