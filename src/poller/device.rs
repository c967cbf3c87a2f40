//! Polling one plug or strip: sysinfo (and the meter in the same round trip once we know the
//! device has one), then one meter request per strip outlet on the same connection; after a
//! gap in our readings, also the device's clock and its day totals for the gap's days.

use super::registry::infos_from_sysinfo;
use crate::clock::Clock;
use crate::domain::energy::DAY_MS;
use crate::domain::{DailyEnergy, DeviceId, DeviceInfo, Reading};
use crate::protocol::client::Connection;
use crate::protocol::messages::{self, Realtime, SysInfo};
use crate::protocol::{Error, Result};
use std::net::SocketAddr;

/// What one successful poll produced.
#[derive(Debug, Clone)]
pub struct Polled {
    /// Device records (parent first, then outlets).
    pub infos: Vec<DeviceInfo>,
    /// One reading per plug, or per outlet of a strip.
    pub readings: Vec<Reading>,
    /// Day totals of each metered plug or outlet, when asked for after a gap.
    pub days: Vec<DailyEnergy>,
    /// False when a request was left unanswered (the connection must not be reused).
    pub clean: bool,
}

/// Most months of day totals read after a gap (one request per month and outlet); a longer
/// gap is spread in proportion to time.
const MAX_GAP_MONTHS: usize = 13;

/// What to read besides the readings.
#[derive(Debug, Clone, Copy)]
pub struct Extra {
    /// When the device was last read (the last successful poll, or the newest stored reading
    /// after a restart), if that is a gap worth shaping ago.
    pub gap_from_ms: Option<i64>,
    /// When the device was last read, however recently (SMART devices: a device-local month
    /// that began since then restarts their counter).
    pub last_seen_ms: Option<i64>,
    /// The day totals must be in by then; past it the gap is spread in proportion to time.
    pub deadline: tokio::time::Instant,
}

fn meter_or_none(r: Result<Realtime>, id: &str) -> Result<Option<Realtime>> {
    match r {
        Ok(rt) => Ok(Some(rt)),
        Err(e) if e.is_not_supported() => Ok(None),
        Err(e @ Error::Device { .. }) => {
            tracing::debug!(device = id, error = %e, "meter read failed");
            Err(e)
        }
        Err(e) => Err(e),
    }
}

fn reading(
    id: DeviceId,
    ts_ms: i64,
    rt: Option<Realtime>,
    relay_on: bool,
    rssi: Option<i32>,
) -> Reading {
    let rt = rt.unwrap_or_default();
    Reading {
        device_id: id,
        ts_ms,
        power_mw: rt.power_mw,
        voltage_mv: rt.voltage_mv,
        current_ma: rt.current_ma,
        counter_wh: rt.total_wh,
        relay_on,
        rssi,
    }
}

/// Polls the device at `addr` over `conn`. `known_meter` says whether an earlier poll found a
/// meter (then sysinfo and realtime share one request).
pub async fn poll(
    conn: &mut Connection,
    addr: SocketAddr,
    known_meter: bool,
    extra: Extra,
    clock: &dyn Clock,
) -> Result<Polled> {
    let req = if known_meter {
        messages::sysinfo_and_realtime_request()
    } else {
        messages::sysinfo_request()
    };
    let resp = conn.request(&req).await?;
    let ts_ms = clock.now_ms();
    let sys = SysInfo::from_response(&resp)?;
    let infos = infos_from_sysinfo(addr, &sys).map_err(|e| Error::Decode(e.to_string()))?;
    let mut readings = Vec::new();
    if sys.children.is_empty() {
        let rt = if !sys.has_emeter {
            None
        } else if known_meter {
            meter_or_none(Realtime::from_response(&resp), &sys.device_id)?
        } else {
            let r = conn.request(&messages::realtime_request(None)).await?;
            meter_or_none(Realtime::from_response(&r), &sys.device_id)?
        };
        readings.push(reading(
            infos[0].device_id.clone(),
            ts_ms,
            rt,
            sys.relay_on.unwrap_or(false),
            sys.rssi,
        ));
    } else {
        for (child, info) in sys.children.iter().zip(&infos[1..]) {
            let rt = if sys.has_emeter {
                let r = conn
                    .request(&messages::realtime_request(Some(info.device_id.as_str())))
                    .await?;
                meter_or_none(Realtime::from_response(&r), info.device_id.as_str())?
            } else {
                None
            };
            readings.push(reading(
                info.device_id.clone(),
                ts_ms,
                rt,
                child.on,
                sys.rssi,
            ));
        }
    }
    let (mut days, mut clean) = (Vec::new(), true);
    if let (Some(from), true) = (extra.gap_from_ms, sys.has_emeter) {
        let ids: Vec<(DeviceId, Option<&str>)> = if sys.children.is_empty() {
            vec![(infos[0].device_id.clone(), None)]
        } else {
            (infos[1..].iter())
                .map(|i| (i.device_id.clone(), Some(i.device_id.as_str())))
                .collect()
        };
        let fetch = daily_energy(conn, &ids, from, ts_ms);
        match tokio::time::timeout_at(extra.deadline, fetch).await {
            Ok(Ok(d)) => days = d,
            Ok(Err(e)) => {
                tracing::info!(device = %infos[0].device_id, error = %e,
                    "day totals unavailable: the gap is spread in proportion to time");
                // A device's refusal leaves the connection in step; anything else may not.
                clean = matches!(e, Error::Device { .. } | Error::Decode(_));
            }
            Err(_) => {
                tracing::info!(device = %infos[0].device_id,
                    "day totals took too long: the gap is spread in proportion to time");
                clean = false;
            }
        }
    }
    Ok(Polled {
        infos,
        readings,
        days,
        clean,
    })
}

/// The day totals (`get_daystat`) of each `(device, outlet id)` for every device-local day
/// from the one holding `from_ms` to the one holding `now_ms`; days are placed in UTC by the
/// device's clock (`time.get_time`). Empty when the gap spans more than [`MAX_GAP_MONTHS`].
async fn daily_energy(
    conn: &mut Connection,
    ids: &[(DeviceId, Option<&str>)],
    from_ms: i64,
    now_ms: i64,
) -> Result<Vec<DailyEnergy>> {
    use chrono::Datelike;
    let offset = messages::utc_offset_ms(&conn.request(&messages::time_request()).await?, now_ms)?;
    let day_of = |ms: i64| (ms + offset).div_euclid(DAY_MS);
    let date = |day: i64| {
        chrono::DateTime::from_timestamp(day * 86_400, 0)
            .map(|d| d.date_naive())
            .ok_or_else(|| Error::Decode(format!("day {day} is out of range")))
    };
    let (first, last) = (day_of(from_ms), day_of(now_ms));
    let mut months = vec![];
    let mut d = date(first)?.with_day(1).expect("day 1 exists");
    while d <= date(last)? && months.len() <= MAX_GAP_MONTHS {
        months.push((d.year(), d.month()));
        d = d + chrono::Months::new(1);
    }
    if months.len() > MAX_GAP_MONTHS {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for (id, child) in ids {
        let mut wh = std::collections::HashMap::new();
        for &(y, m) in &months {
            let r = conn
                .request(&messages::daystat_request(y, m, *child))
                .await?;
            for s in messages::parse_stats(&r, "get_daystat")? {
                wh.insert((s.year, s.month, s.day), s.energy_wh);
            }
        }
        let mut days = Vec::new();
        for day in first..=last {
            let d = date(day)?;
            let e = wh.get(&(d.year(), d.month(), d.day())).copied();
            days.push((day * DAY_MS - offset, e.unwrap_or(0)));
        }
        out.push(DailyEnergy {
            device_id: id.clone(),
            at_ms: now_ms,
            days,
        });
    }
    Ok(out)
}
