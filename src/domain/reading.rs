//! One sample from one device (or strip outlet).

use super::DeviceId;

/// A reading as it leaves the protocol edge: integer milli-units, UTC ms.
///
/// Meter fields are `None` for devices without an energy meter (relay state only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    /// Which device (or outlet).
    pub device_id: DeviceId,
    /// When it was taken, UTC Unix ms.
    pub ts_ms: i64,
    /// Power, milliwatts.
    pub power_mw: Option<i64>,
    /// Voltage, millivolts.
    pub voltage_mv: Option<i64>,
    /// Current, milliamps.
    pub current_ma: Option<i64>,
    /// The device's cumulative energy counter, watt-hours (resets on reboot/erase).
    pub counter_wh: Option<i64>,
    /// Relay closed (load powered).
    pub relay_on: bool,
    /// Wi-Fi signal, dBm.
    pub rssi: Option<i32>,
}
