//! The export kinds, one file each: what a kind's request may hold, what it reads from the
//! store, and the rows or document it produces.
//!
//! - [`device_data`]: readings or their aggregates per device, filtered, with custom fields.
//! - [`cost_analysis`]: priced energy per device, period, band and tier.
//! - [`system_report`]: the report of devices, energy, cost, health and usage patterns.
//! - [`audit_logs`]: audit entries with their hash chain, and the check of an exported file.
//! - [`configuration`]: devices, users and settings (never secrets).

pub mod audit_logs;
pub mod configuration;
pub mod cost_analysis;
pub mod device_data;
pub mod system_report;
