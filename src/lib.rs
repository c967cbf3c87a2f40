//! kasad — a local energy-data appliance for TP-Link Kasa plugs and power strips.
//!
//! # Layout
//!
//! From the bottom up (docs/development.md, "Layers"): a module imports from its own layer
//! and the layers below, never from above, and no imports close a circle, as
//! `tests/api/layers.rs` checks.
//!
//! - 0 leaves: [`domain`] (pure types and rules), [`clock`] (the one injectable clock),
//!   [`random`], [`tls`], [`localtime`], [`numfmt`], [`cron`].
//! - 1 settings: [`config`] (TOML + `KASAD_*` environment, validated).
//! - 2 wire: [`protocol`] (the Kasa protocols), [`auth`] (identity), [`audit`] (vocabulary and
//!   hash chain), [`sim`] (simulated devices on loopback), [`notify`] (e-mail and webhooks).
//! - 3 storage: [`store`] (redb, one writer task), [`series`] (raw and rolled-up series).
//! - 4 engines: [`poller`], [`tariff`], [`export`], [`schedule`], [`retention`], [`live`],
//!   [`import`], [`backup`], [`insights`], [`alerts`], [`bills`].
//! - 5 faces: [`api`] (axum), [`mqtt`], [`metrics`], [`mdns`], [`sdnotify`], [`admin`].
//! - 6 top: [`app`] (composition, ordered shutdown), [`cli`] (one file per subcommand, the
//!   demo and the signals among them), [`telemetry`] (logging).
//!
//! Data flow: discovery → registry → poller → store writer → API.

pub mod admin;
pub mod alerts;
pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod backup;
pub mod bills;
pub mod cli;
pub mod clock;
pub mod config;
pub mod cron;
pub mod domain;
pub mod export;
pub mod import;
pub mod insights;
pub mod live;
pub mod localtime;
pub mod mdns;
pub mod metrics;
pub mod mqtt;
pub mod notify;
pub mod numfmt;
pub mod poller;
pub mod protocol;
pub mod push;
pub mod random;
pub mod retention;
pub mod schedule;
pub mod sdnotify;
pub mod series;
pub mod sim;
pub mod store;
pub mod tariff;
pub mod telemetry;
pub mod tls;
