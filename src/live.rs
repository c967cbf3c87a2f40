//! The present state of every device: its newest reading and today's energy and cost.
//!
//! Owns: what the device cards (`GET /api/devices/live`) and `/metrics` show. A strip is the
//! sum of its outlets (power, energy, cost; on when any outlet is), never its own rows.

use crate::domain::{DeviceId, DeviceType};
use crate::store::{Result, Store};
use crate::tariff::Versions;
use crate::tariff::engine::{self, Pico};

/// One device now.
#[derive(Debug, Clone, Default)]
pub struct Live {
    /// The device.
    pub id: Option<DeviceId>,
    /// Its name, model and type.
    pub name: String,
    /// Model.
    pub model: String,
    /// Plug, strip or outlet.
    pub device_type: Option<DeviceType>,
    /// Time of the newest reading within the freshness window, UTC ms.
    pub ts_ms: Option<i64>,
    /// Power, mW.
    pub power_mw: Option<i64>,
    /// Voltage, mV (plugs and outlets).
    pub voltage_mv: Option<i64>,
    /// Current, mA.
    pub current_ma: Option<i64>,
    /// The device's energy counter, Wh (plugs and outlets).
    pub counter_wh: Option<i64>,
    /// Relay state.
    pub is_on: Option<bool>,
    /// Energy since `day_start`, mWh.
    pub today_mwh: i64,
    /// Its cost, taxes included.
    pub today_cost: Pico,
}

impl Live {
    /// Adds an outlet to its strip.
    fn add(&mut self, o: &Live) {
        self.today_mwh += o.today_mwh;
        self.today_cost += o.today_cost;
        if let Some(p) = o.power_mw {
            self.power_mw = Some(self.power_mw.unwrap_or(0) + p);
        }
        if let Some(on) = o.is_on {
            self.is_on = Some(self.is_on.unwrap_or(false) || on);
        }
        self.ts_ms = self.ts_ms.max(o.ts_ms);
    }
}

/// Every device now, as the device cards, `/metrics` and MQTT show it: the newest reading
/// within three poll intervals and what was used since the start of today in `tz`; returns
/// the rows and that start.
pub fn today(
    store: &Store,
    tariffs: &Versions,
    now_ms: i64,
    tz: chrono_tz::Tz,
    poll_interval: std::time::Duration,
) -> Result<(Vec<Live>, i64)> {
    use crate::domain::rollup::{Period, period_start};
    let day_start = period_start(now_ms, Period::Day, tz);
    let fresh_ms = 3 * i64::try_from(poll_interval.as_millis()).unwrap_or(i64::MAX / 4);
    Ok((
        snapshot(store, tariffs, now_ms, day_start, fresh_ms)?,
        day_start,
    ))
}

/// Every stored device as of `now_ms`: the newest reading not older than `fresh_ms`, and the
/// energy and cost (priced by `tariffs`) since `day_start_ms`.
pub fn snapshot(
    store: &Store,
    tariffs: &Versions,
    now_ms: i64,
    day_start_ms: i64,
    fresh_ms: i64,
) -> Result<Vec<Live>> {
    let devices = store.devices()?;
    let ids: Vec<DeviceId> = devices
        .iter()
        .map(|d| d.record.info.device_id.clone())
        .collect();
    let mut out: Vec<Live> = vec![Live::default(); ids.len()];
    engine::price(store, tariffs, &ids, day_start_ms, now_ms + 1, |p| {
        out[p.dev].today_mwh += p.mwh;
        out[p.dev].today_cost += p.cost + p.tax;
    })?;
    for (k, id) in ids.iter().enumerate() {
        if devices[k].record.info.device_type == DeviceType::Strip {
            out[k] = Live::default();
            continue;
        }
        let newest = store
            .scan_samples(id, now_ms - fresh_ms, now_ms + 1)?
            .last()
            .transpose()?;
        if let Some(s) = newest {
            let l = &mut out[k];
            l.ts_ms = Some(s.ts_ms);
            l.power_mw = s.power_mw;
            l.voltage_mv = s.voltage_mv;
            l.current_ma = s.current_ma;
            l.counter_wh = s.counter_wh;
            l.is_on = Some(s.relay_on);
        }
    }
    for (k, d) in devices.iter().enumerate() {
        if let Some(parent) = &d.record.info.parent_id
            && let Some(pk) = ids.iter().position(|i| i == parent)
        {
            let o = out[k].clone();
            out[pk].add(&o);
        }
    }
    for (l, d) in out.iter_mut().zip(devices) {
        l.name = d.record.name().to_owned();
        let i = d.record.info;
        l.id = Some(i.device_id);
        l.model = i.model;
        l.device_type = Some(i.device_type);
    }
    Ok(out)
}
