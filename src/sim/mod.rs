//! A simulator of legacy Kasa devices that speaks the real protocol on loopback sockets.
//!
//! Owns: device models (HS110 hw1 with v1 float fields, HS110 hw4 and KP115 with v2 integer
//! fields, HS300 with six metered outlets, HS100 without a meter), time-varying household loads
//! whose energy counter is the exact integral of the power they report, and fault injection
//! (delay, hang, drop mid-frame, garbage, `err_code` replies, counter reset). Used by
//! `kasad demo`, the tests and the benchmarks. Binds only the addresses it is given; callers
//! pass 127.0.0.x.

pub mod device;
pub mod load;
pub mod server;

pub use device::{Model, SimDevice, SimSpec};
pub use load::Load;
pub use server::{Fault, SimHandle, fleet_ip, fleet_spec, start, start_fleet};
