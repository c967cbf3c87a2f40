//! Pure domain types and arithmetic: devices, readings, energy accounting and rollup buckets.
//!
//! Owns: the units every other module speaks (integer mW, mV, mA, Wh, mWh; UTC Unix ms), the
//! device identity rules and the energy/rollup maths. Must not do I/O, and must not import
//! tokio, axum or redb — everything here is unit- and property-tested in isolation.

pub mod alert;
pub mod bill;
pub mod device;
pub mod energy;
pub mod export;
pub mod labels;
pub mod provenance;
pub mod reading;
pub mod rollup;
pub mod schedule;
pub mod tariff;

pub use device::{DeviceId, DeviceInfo, DeviceStatus, DeviceType, Family, Transport};
pub use labels::DeviceLabels;
pub use reading::{DailyEnergy, Reading};
pub use rollup::{BUCKET_MS, Bucket};
