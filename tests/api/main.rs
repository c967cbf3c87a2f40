//! kasad's integration tests: one binary, one module per area.

mod api;
mod audit_export;
mod audit_log;
mod auth;
mod backup;
mod binary;
mod browser;
mod config_export;
mod diskfull;
mod energy;
mod excel;
mod exports;
mod helpers;
mod import;
mod interop;
mod mdns;
mod metrics;
mod mqtt;
mod packaging;
mod pdf;
mod poller;
mod report;
mod schedules;
mod storage;
mod sweep;
mod tariffs;
