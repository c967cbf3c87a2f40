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

/// A device's own energy per device-local day (`get_daystat`), read when it comes back after
/// a gap in our readings. It only shapes the counter delta over the gap's days, or stands in
/// for it when a counter reset made the delta unusable; it is never added on top of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailyEnergy {
    /// Which device (or outlet).
    pub device_id: DeviceId,
    /// The time of the reading they came with (the first after the gap).
    pub at_ms: i64,
    /// Consecutive device-local days, oldest first: (start, UTC ms; energy, Wh). A day lasts
    /// until the next one starts; the last one (the day of the poll) lasts 24 hours. A day the
    /// device listed no energy for is 0.
    pub days: Vec<(i64, i64)>,
}

impl DailyEnergy {
    /// Start of the day holding `ts_ms` (the last day starting at or before it).
    pub fn day_start(&self, ts_ms: i64) -> Option<i64> {
        self.days.iter().rev().find(|d| d.0 <= ts_ms).map(|d| d.0)
    }
}
