//! kasad's integration tests: one binary, one module per area.

mod api;
mod binary;
mod energy;
mod helpers;
mod interop;
mod poller;
