//! The SMART request protocol as simulated devices answer it (kasa-protocol.md §1e), on top
//! of a [`SimDevice`]: `component_nego`, `get_device_info` (base64 nickname), the energy
//! methods in their real units (`get_energy_usage` mW and Wh, `get_current_power` whole W,
//! `get_emeter_data` mW/mV/mA/Wh, whose `energy_wh` is the month's energy as in the KP125M
//! fw 1.2.3 dump), `get_device_usage`, `get_device_time`, `get_connect_cloud_state`,
//! `get_emeter_vgain_igain`, `set_device_info`, `multipleRequest` batches, and for strips
//! `get_child_device_list`, `get_child_device_component_list` and `control_child`. Unknown
//! methods get −1002.

use super::device::SimDevice;
use super::server::SimHandle;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

/// SMART error code for a method the device does not know.
pub const UNKNOWN_METHOD: i64 = -1002;

/// Answers one SMART request (bytes of JSON) with the device's JSON.
pub fn answer(h: &SimHandle, req: &[u8], now_ms: i64) -> Vec<u8> {
    let Ok(req) = serde_json::from_slice::<Value>(req) else {
        return json!({"error_code": -1003}).to_string().into_bytes();
    };
    let forced = match h.fault() {
        Some(super::Fault::ErrCode(c)) => Some(c),
        _ => None,
    };
    let refuse_batch = h.fault() == Some(super::Fault::RefuseBatch);
    let resp = h.with_device(|d| {
        if refuse_batch && req.get("method").and_then(Value::as_str) == Some("multipleRequest") {
            return error(-1003);
        }
        if refuse_batch
            && req
                .pointer("/params/requestData/method")
                .and_then(Value::as_str)
                == Some("multipleRequest")
        {
            return ok(json!({"responseData": error(-1003)}));
        }
        call(d, &req, None, forced, now_ms)
    });
    resp.to_string().into_bytes()
}

fn ok(result: Value) -> Value {
    json!({"error_code": 0, "result": result})
}

fn error(code: i64) -> Value {
    json!({"error_code": code})
}

/// One call: `outlet` is `None` for the device itself, `Some(i)` inside `control_child`.
fn call(
    d: &mut SimDevice,
    req: &Value,
    outlet: Option<usize>,
    forced: Option<i64>,
    now_ms: i64,
) -> Value {
    let method = req.get("method").and_then(Value::as_str).unwrap_or("");
    let params = req.get("params").unwrap_or(&Value::Null);
    if let Some(code) = forced {
        return error(code);
    }
    let strip = d.outlet_count() > 1;
    let meter = d.spec().model.has_meter();
    let o = outlet.unwrap_or(0);
    match method {
        "multipleRequest" => {
            let Some(reqs) = params.get("requests").and_then(Value::as_array) else {
                return error(-1008);
            };
            let responses: Vec<Value> = reqs
                .iter()
                .map(|r| {
                    let mut a = call(d, r, outlet, forced, now_ms);
                    a["method"] = r.get("method").cloned().unwrap_or(Value::Null);
                    a
                })
                .collect();
            ok(json!({"responses": responses}))
        }
        "component_nego" => ok(json!({"component_list": components(d, outlet).0})),
        "get_device_info" => ok(device_info(d, outlet, now_ms)),
        "get_connect_cloud_state" => ok(json!({"status": 0})),
        "get_device_time" => {
            let (_, offset_min) = d.local_time(now_ms);
            ok(json!({"timestamp": now_ms / 1000, "time_diff": offset_min, "region": "UTC"}))
        }
        "get_device_usage" => {
            let (today, _) = d.day_and_month_wh(o, now_ms);
            let on = d.on_time_s(o, now_ms) / 60;
            ok(
                json!({"time_usage": {"today": on.min(1440), "past7": on, "past30": on},
                "power_usage": {"today": today, "past7": today, "past30": today},
                "saved_power": {"today": 0, "past7": 0, "past30": 0}}),
            )
        }
        "get_emeter_vgain_igain" if meter && (!strip || outlet.is_some()) => {
            ok(json!({"v_gain": 62_000, "i_gain": 11_200}))
        }
        "get_child_device_component_list" if strip && outlet.is_none() => {
            let list: Vec<Value> = (0..d.outlet_count())
                .map(|i| {
                    let (nego, _) = components(d, Some(i));
                    json!({"device_id": d.child_id(i), "component_list": nego})
                })
                .collect();
            ok(json!({"child_component_list": list, "start_index": 0, "sum": list.len()}))
        }
        "set_device_info" => match params.get("device_on").and_then(Value::as_bool) {
            Some(on) if !strip || outlet.is_some() => {
                d.set_relay(o, on, now_ms);
                json!({"error_code": 0})
            }
            _ => error(-1008),
        },
        "get_energy_usage" | "get_current_power" | "get_emeter_data"
            if meter && (!strip || outlet.is_some()) =>
        {
            meter_data(d, method, o, now_ms)
        }
        "get_energy_data" if meter && (!strip || outlet.is_some()) => {
            energy_data(d, params, o, now_ms)
        }
        "get_child_device_list" if strip && outlet.is_none() => {
            let list: Vec<Value> = (0..d.outlet_count())
                .map(|i| device_info(d, Some(i), now_ms))
                .collect();
            ok(json!({"child_device_list": list, "start_index": 0, "sum": list.len()}))
        }
        "control_child" if strip && outlet.is_none() => {
            let id = params
                .get("device_id")
                .and_then(Value::as_str)
                .unwrap_or("");
            let Some(i) = (0..d.outlet_count()).find(|&i| d.child_id(i) == id) else {
                return error(-1008);
            };
            let inner = params.get("requestData").unwrap_or(&Value::Null);
            ok(json!({"responseData": call(d, inner, Some(i), forced, now_ms)}))
        }
        _ => error(UNKNOWN_METHOD),
    }
}

/// `get_energy_usage`, `get_current_power` and `get_emeter_data` of outlet `o`.
fn meter_data(d: &mut SimDevice, method: &str, o: usize, now_ms: i64) -> Value {
    let (p, v, c, _) = d.meter(o, now_ms);
    let (today, month) = d.day_and_month_wh(o, now_ms);
    match method {
        "get_energy_usage" => {
            let (local, _) = d.local_time(now_ms);
            ok(
                json!({"current_power": p, "today_energy": today, "month_energy": month,
                "today_runtime": d.on_time_s(o, now_ms).min(1440 * 60) / 60,
                "month_runtime": d.on_time_s(o, now_ms) / 60, "local_time": local,
                "electricity_charge": [0, 0, 0]}),
            )
        }
        "get_current_power" => ok(json!({"current_power": p / 1000})),
        _ => ok(json!({"power_mw": p, "voltage_mv": v, "current_ma": c, "energy_wh": month})),
    }
}

/// `get_energy_data`: daily history (interval 1440). Timestamps are device-local midnights
/// written as if UTC; the start must be a quarter's first day; one Wh value per day from
/// there up to the end's day (today at most).
fn energy_data(d: &mut SimDevice, params: &Value, o: usize, now_ms: i64) -> Value {
    let ts = |k: &str| params.get(k).and_then(Value::as_i64);
    let (Some(start), Some(end), Some(1440)) =
        (ts("start_timestamp"), ts("end_timestamp"), ts("interval"))
    else {
        return error(-1008);
    };
    let (first, last) = (start.div_euclid(86_400), end.div_euclid(86_400));
    let (local, _) = d.local_time(now_ms);
    let today = chrono::NaiveDateTime::parse_from_str(&local, "%Y-%m-%d %H:%M:%S")
        .map_or(last, |t| t.and_utc().timestamp().div_euclid(86_400));
    let last = last.min(today);
    if crate::protocol::smart::quarter_start(first) != Some(first)
        || last < first
        || last - first >= 93
    {
        return error(-1008);
    }
    let data: Vec<i64> = (first..=last)
        .map(|day| d.local_day_wh(o, day, now_ms))
        .collect();
    ok(
        json!({"data": data, "start_timestamp": start, "end_timestamp": end,
        "interval": 1440, "local_time": local}),
    )
}

/// The components a device (or one child) announces, and whether it has a meter.
fn components(d: &SimDevice, outlet: Option<usize>) -> (Vec<Value>, bool) {
    let strip = d.outlet_count() > 1;
    let meter = d.spec().model.has_meter() && (!strip || outlet.is_some());
    let mut list = vec![json!({"id": "device", "ver_code": 2})];
    if outlet.is_none() {
        list.push(json!({"id": "time", "ver_code": 1}));
    }
    if meter {
        list.push(json!({"id": "energy_monitoring", "ver_code": 2}));
    }
    if strip && outlet.is_none() {
        list.push(json!({"id": "child_device", "ver_code": 1}));
        list.push(json!({"id": "control_child", "ver_code": 2}));
    }
    (list, meter)
}

fn device_info(d: &SimDevice, outlet: Option<usize>, now_ms: i64) -> Value {
    let spec = d.spec();
    let model = spec.model.name();
    let bare = model.split('(').next().unwrap_or(model);
    let region = model
        .split_once('(')
        .map_or("", |(_, r)| r.trim_end_matches(')'));
    let (_, offset_min) = d.local_time(now_ms);
    let o = outlet.unwrap_or(0);
    let strip = d.outlet_count() > 1;
    let (id, nickname) = match outlet {
        Some(i) => (d.child_id(i), d.outlet_alias(i).to_owned()),
        None => (spec.device_id.clone(), spec.alias.clone()),
    };
    let mut v = json!({
        "device_id": id, "model": bare, "type": "SMART.KASAPLUG", "hw_ver": spec.model.hw_ver(),
        "fw_ver": spec.model.sw_ver(), "mac": spec.mac.replace(':', "-"),
        "nickname": B64.encode(nickname), "ssid": B64.encode("home"), "rssi": d.rssi_dbm(now_ms),
        "signal_level": 3, "region": "America/New_York", "time_diff": offset_min,
        "specs": region, "lang": "en_US", "overheated": false,
    });
    if !strip || outlet.is_some() {
        v["device_on"] = json!(d.relay_on(o));
        v["on_time"] = json!(d.on_time_s(o, now_ms));
    }
    if let Some(i) = outlet {
        v["position"] = json!(i + 1);
        v["parent_device_id"] = json!(spec.device_id);
    }
    v
}
