//! kasad — a local energy-data appliance for TP-Link Kasa plugs and power strips.
//!
//! # Layout
//! - [`clock`]: the one injectable wall clock.
//! - [`config`]: settings from TOML + `KASAD_*` environment, validated.
//! - [`domain`]: pure types and maths (ids, readings, energy accounting, rollups).
//! - [`auth`]: roles, permissions, passwords, tokens, keys, throttling; [`audit`]: the
//!   audit vocabulary and hash chain.
//! - [`protocol`]: the legacy Kasa protocol (XOR cipher, framing, messages, client, discovery).
//! - [`sim`]: simulated devices speaking the real protocol on loopback (demo, tests, bench).
//! - [`poller`]: registry, discovery rounds and poll cycles.
//! - [`store`]: redb persistence (schema, writer task, queries).
//! - [`series`]: raw and rolled-up reading series for the API.
//! - [`export`]: the export engine (jobs, rows, formats, retention); [`cron`]: its scheduler.
//! - [`tariff`]: tariff versions and the cost engine.
//! - [`api`]: the axum HTTP API.
//! - [`app`]: composition root and ordered shutdown; [`demo`]: `kasad demo`.
//! - [`admin`]: `kasad user …` / `kasad audit verify`, directly or over the admin socket.
//! - [`shutdown`]: OS signals (used by `main` only); [`telemetry`]: logging setup.
//!
//! Data flow: discovery → registry → poller → store writer → API.

pub mod admin;
pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod backup;
pub mod bench;
pub mod clock;
pub mod config;
pub mod cron;
pub mod demo;
pub mod domain;
pub mod export;
pub mod healthcheck;
pub mod import;
pub mod live;
pub mod loadgen;
pub mod mdns;
pub mod metrics;
pub mod mqtt;
pub mod poller;
pub mod protocol;
pub mod retention;
pub mod schedule;
pub mod sdnotify;
pub mod series;
pub mod shutdown;
pub mod sim;
pub mod store;
pub mod tariff;
pub mod telemetry;
