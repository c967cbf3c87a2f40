//! Polling a device that speaks SMART JSON (over KLAP v2): one batch for its components, its
//! info and its energy; for a strip, the child list and one `control_child` batch per metered
//! child. A batch the device cannot take falls back to single requests. Energy comes from
//! `get_emeter_data` where the device has it, else `get_energy_usage` / `get_current_power`
//! (see [`SmartEnergy::combine`]); missing voltage and current stay empty.

use super::device::{Extra, Polled};
use crate::clock::Clock;
use crate::domain::energy::DAY_MS;
use crate::domain::{DailyEnergy, DeviceId, DeviceInfo, DeviceType, Family, Reading, Transport};
use crate::protocol::client::Connection;
use crate::protocol::smart::{self, SmartEnergy, SmartInfo};
use crate::protocol::{Error, Result};
use serde_json::{Value, json};
use std::net::SocketAddr;

/// Most children read from a paged child list (real strips have up to 6).
const MAX_CHILDREN: usize = 32;

/// Most days of totals asked for at once (a quarter, as `get_energy_data` allows).
const MAX_DAYS: i64 = 93;

const ENERGY: [&str; 3] = ["get_energy_usage", "get_emeter_data", "get_current_power"];

/// `req` addressed to the device itself, or wrapped for its `child`.
fn addressed(child: Option<&str>, req: Value) -> Value {
    match child {
        Some(id) => smart::for_child(id, req),
        None => req,
    }
}

/// The answer to an [`addressed`] request: the device's own, or unwrapped from
/// `control_child`.
fn answer_of(child: Option<&str>, resp: Value) -> Result<Value> {
    match child {
        Some(_) => smart::child_result(&resp).cloned(),
        None => Ok(resp),
    }
}

/// Asks `method` alone: the outer error is the exchange's, the inner one the device's.
async fn single(conn: &mut Connection, child: Option<&str>, method: &str) -> Result<Result<Value>> {
    let resp = conn
        .request(&addressed(child, smart::request(method, None)))
        .await?;
    Ok(answer_of(child, resp).and_then(|r| smart::result(&r, method).cloned()))
}

/// Sends `methods` as one batch (to the device, or wrapped for `child`); when the device
/// refuses the batch as a whole, sends them one by one.
async fn call_many(
    conn: &mut Connection,
    child: Option<&str>,
    methods: &[&str],
) -> Result<Vec<Result<Value>>> {
    let batch = smart::multiple(methods.iter().map(|m| smart::request(m, None)).collect());
    let resp = conn.request(&addressed(child, batch)).await?;
    match answer_of(child, resp).and_then(|r| smart::responses(&r, methods)) {
        // A method the batch left unanswered is asked on its own (as python-kasa does).
        Ok(mut r) => {
            for (m, a) in methods.iter().zip(r.iter_mut()) {
                if matches!(a, Err(Error::Decode(_))) {
                    *a = single(conn, child, m).await?;
                }
            }
            Ok(r)
        }
        Err(Error::Device { .. }) => {
            let mut out = Vec::with_capacity(methods.len());
            for m in methods {
                out.push(single(conn, child, m).await?);
            }
            Ok(out)
        }
        Err(e) => Err(e),
    }
}

/// Energy from the answers to [`ENERGY`]; `None` when the device has no meter. An error other
/// than "no such method" fails the poll.
fn energy(answers: &[Result<Value>]) -> Result<Option<SmartEnergy>> {
    let mut got: [Option<&Value>; 3] = [None; 3];
    for (slot, a) in got.iter_mut().zip(answers) {
        match a {
            Ok(v) => *slot = Some(v),
            Err(e) if smart::is_optional_miss(e) => {}
            Err(e) => return Err(Error::Decode(e.to_string())),
        }
    }
    if got.iter().all(Option::is_none) {
        return Ok(None);
    }
    Ok(Some(SmartEnergy::combine(got[0], got[1], got[2])))
}

fn reading(
    id: DeviceId,
    ts_ms: i64,
    e: Option<&SmartEnergy>,
    on: bool,
    rssi: Option<i32>,
) -> Reading {
    let e = e.cloned().unwrap_or_default();
    Reading {
        device_id: id,
        ts_ms,
        power_mw: e.power_mw,
        voltage_mv: e.voltage_mv,
        current_ma: e.current_ma,
        counter_wh: e.counter_wh,
        relay_on: on,
        rssi,
    }
}

/// The children of a strip, following `start_index` / `sum` paging.
async fn children(conn: &mut Connection) -> Result<Vec<SmartInfo>> {
    let mut out: Vec<SmartInfo> = Vec::new();
    loop {
        let params = (!out.is_empty()).then(|| json!({"start_index": out.len()}));
        let resp = conn
            .request(&smart::request("get_child_device_list", params))
            .await?;
        let r = smart::result(&resp, "get_child_device_list")?;
        let list = r
            .get("child_device_list")
            .and_then(Value::as_array)
            .ok_or_else(|| Error::Decode("get_child_device_list has no list".into()))?;
        for c in list {
            out.push(SmartInfo::parse(c)?);
        }
        let sum = r.get("sum").and_then(Value::as_u64).unwrap_or(0) as usize;
        if list.is_empty() || out.len() >= sum.min(MAX_CHILDREN) {
            return Ok(out);
        }
    }
}

/// The device's own energy per local day since it was last read, when its counter restarted
/// meanwhile (a device-local month began: `month_energy` and `energy_wh` start again from 0)
/// or after a gap: the store then counts the old month's last minutes from these day totals
/// instead of losing them to the counter's restart. `None` when not needed, or when the device
/// cannot say (`get_energy_data` unknown: the restart then counts as a reset).
async fn day_totals(
    conn: &mut Connection,
    child: Option<&str>,
    id: &DeviceId,
    ts_ms: i64,
    e: &SmartEnergy,
    extra: Extra,
) -> Option<DailyEnergy> {
    use chrono::Datelike;
    let from = extra.gap_from_ms.or(extra.last_seen_ms)?;
    let offset = smart::utc_offset_ms(e.local_time.as_deref()?, ts_ms)?;
    let day = |ms: i64| (ms + offset).div_euclid(DAY_MS);
    let month =
        |d: i64| chrono::DateTime::from_timestamp(d * 86_400, 0).map(|t| (t.year(), t.month()));
    let (first, last) = (day(from), day(ts_ms));
    if extra.gap_from_ms.is_none() && month(first) == month(last) {
        return None;
    }
    if last < first || last - first >= MAX_DAYS {
        return None;
    }
    let fetch = quarters(conn, child, first, last);
    let res = match tokio::time::timeout_at(extra.deadline, fetch).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout(std::time::Duration::ZERO)),
    };
    match res {
        Ok(data) => Some(DailyEnergy {
            device_id: id.clone(),
            at_ms: ts_ms,
            days: (first..=last)
                .zip(data)
                .map(|(d, wh)| (d * DAY_MS - offset, wh))
                .collect(),
        }),
        Err(err) => {
            tracing::info!(device = %id, error = %err,
                "no day totals from the device: its counter restart counts as a reset");
            None
        }
    }
}

/// The device's Wh for each local day `first..=last`: one daily `get_energy_data` per quarter
/// the days touch (a daily request must start on a quarter's first day).
async fn quarters(
    conn: &mut Connection,
    child: Option<&str>,
    first: i64,
    last: i64,
) -> Result<Vec<i64>> {
    let mut out = Vec::new();
    let mut day = first;
    while day <= last {
        let q0 = smart::quarter_start(day)
            .ok_or_else(|| Error::Decode(format!("day {day} is out of range")))?;
        let next = smart::quarter_start(q0 + 93).unwrap_or(i64::MAX);
        let upto = last.min(next - 1);
        let req = addressed(child, smart::energy_data_request(q0, upto));
        let r = answer_of(child, conn.request(&req).await?)?;
        let data = smart::energy_data(smart::result(&r, "get_energy_data")?)?;
        for d in day..=upto {
            let i = usize::try_from(d - q0).unwrap_or(usize::MAX);
            out.push(*data.get(i).ok_or_else(|| {
                Error::Decode(format!("get_energy_data has no value for day {}", d - q0))
            })?);
        }
        day = upto + 1;
    }
    Ok(out)
}

/// Polls the SMART device at `addr` over `conn` (already set up for `transport`).
pub async fn poll(
    conn: &mut Connection,
    addr: SocketAddr,
    transport: Transport,
    extra: Extra,
    clock: &dyn Clock,
) -> Result<Polled> {
    let mut methods = vec!["component_nego", "get_device_info"];
    methods.extend(ENERGY);
    let answers = call_many(conn, None, &methods).await?;
    let ts_ms = clock.now_ms();
    let mut answers = answers.into_iter();
    let components = answers
        .next()
        .unwrap_or_else(|| Err(Error::Decode("no answer".into())))?;
    let info = SmartInfo::parse(
        &answers
            .next()
            .unwrap_or_else(|| Err(Error::Decode("no answer".into())))?,
    )?;
    let rest: Vec<Result<Value>> = answers.collect();
    let strip = components
        .get("component_list")
        .and_then(Value::as_array)
        .is_some_and(|l| {
            l.iter()
                .any(|c| c["id"] == "child_device" || c["id"] == "control_child")
        });
    let id = DeviceId::parse(&info.device_id).map_err(|e| Error::Decode(e.to_string()))?;
    let mut base = DeviceInfo {
        device_id: id.clone(),
        parent_id: None,
        outlet_index: None,
        address: addr.to_string(),
        name: info.nickname.clone(),
        device_type: if strip {
            DeviceType::Strip
        } else {
            DeviceType::Plug
        },
        model: info.model.clone(),
        hw_ver: info.hw_ver.clone(),
        sw_ver: info.fw_ver.clone(),
        transport,
        family: Family::Smart,
        has_emeter: false,
        mac: info.mac.clone(),
        latitude: None,
        longitude: None,
    };
    if !strip {
        let e = energy(&rest)?;
        base.has_emeter = e.is_some();
        let days = match &e {
            Some(e) => day_totals(conn, None, &id, ts_ms, e, extra).await,
            None => None,
        };
        let r = reading(
            id,
            ts_ms,
            e.as_ref(),
            info.device_on.unwrap_or(false),
            info.rssi,
        );
        return Ok(Polled {
            infos: vec![base],
            readings: vec![r],
            days: days.into_iter().collect(),
            clean: true,
        });
    }
    let kids = children(conn).await?;
    let mut infos = vec![base.clone()];
    let mut readings = Vec::with_capacity(kids.len());
    let mut days = Vec::new();
    for (i, k) in kids.iter().enumerate() {
        let answers = call_many(conn, Some(&k.device_id), &ENERGY).await?;
        let e = energy(&answers)?;
        let cid = DeviceId::outlet(&id, &k.device_id).map_err(|e| Error::Decode(e.to_string()))?;
        if let Some(e) = &e {
            days.extend(day_totals(conn, Some(&k.device_id), &cid, ts_ms, e, extra).await);
        }
        infos[0].has_emeter |= e.is_some();
        infos.push(DeviceInfo {
            device_id: cid.clone(),
            parent_id: Some(id.clone()),
            outlet_index: Some(u8::try_from(i).unwrap_or(u8::MAX)),
            name: k.nickname.clone(),
            device_type: DeviceType::StripOutlet,
            has_emeter: e.is_some(),
            ..base.clone()
        });
        readings.push(reading(
            cid,
            ts_ms,
            e.as_ref(),
            k.device_on.unwrap_or(false),
            info.rssi,
        ));
    }
    Ok(Polled {
        infos,
        readings,
        days,
        clean: true,
    })
}

/// Switches a SMART plug, or one child of a SMART strip.
pub async fn set_relay(conn: &mut Connection, child: Option<&DeviceId>, on: bool) -> Result<()> {
    let child = child.map(DeviceId::as_str);
    let req = smart::request("set_device_info", Some(json!({"device_on": on})));
    let resp = conn.request(&addressed(child, req)).await?;
    smart::result(&answer_of(child, resp)?, "set_device_info").map(|_| ())
}
