//! A simulator of Kasa devices that speaks the real protocols on loopback sockets.
//!
//! Owns: device models (HS110 hw1 with v1 float fields, HS110 hw4 and KP115 with v2 integer
//! fields, HS300 with six metered outlets, HS100 without a meter), time-varying household loads
//! whose energy counter is the exact integral of the power they report, and fault injection
//! (delay, hang, drop mid-frame, garbage, `err_code` replies, counter reset). Newer devices
//! (HS100 UK over KLAP v1, KP125M and the P316M strip speaking SMART over KLAP v2) answer
//! HTTP and the UDP 20002 probe, with wrong-credential and dropped-session faults. Used by
//! `kasad demo`, the tests and the benchmarks. Binds only the addresses it is given; callers
//! pass 127.0.0.x.

pub mod aes;
pub mod device;
pub mod klap;
pub mod load;
pub mod server;
pub mod smart;

pub use device::{Model, SimDevice, SimSpec};
pub use klap::{KlapHandle, KlapSpec, KlapStats, start_klap};
pub use load::Load;
pub use server::{Fault, SimHandle, fleet_ip, fleet_spec, start, start_fleet};
