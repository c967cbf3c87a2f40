//! Typed requests and responses of the legacy protocol, with unit normalisation at the edge.
//!
//! Hardware generations differ: "v1" devices (HS110 hw1) report `power` W, `voltage` V,
//! `current` A and `total` kWh as floats; "v2" devices (HS110 hw2+, KP115, HS300) report
//! `power_mw`, `voltage_mv`, `current_ma` and `total_wh` as integers. Both become integer mW,
//! mV, mA and Wh here. Errors come as `err_code` either on the module or on the method.

use super::{Error, Result};
use serde_json::{Value, json};

/// `{"system":{"get_sysinfo":{}}}`.
pub fn sysinfo_request() -> Value {
    json!({"system": {"get_sysinfo": {}}})
}

/// Sysinfo and the meter's realtime values in one round trip (for plugs known to have a meter).
pub fn sysinfo_and_realtime_request() -> Value {
    json!({"system": {"get_sysinfo": {}}, "emeter": {"get_realtime": {}}})
}

/// Wraps a request so it addresses one strip outlet (`context.child_ids`).
pub fn for_child(mut req: Value, child_id: Option<&str>) -> Value {
    if let (Some(id), Some(obj)) = (child_id, req.as_object_mut()) {
        obj.insert("context".into(), json!({"child_ids": [id]}));
    }
    req
}

/// `emeter.get_realtime`, optionally for one outlet.
pub fn realtime_request(child_id: Option<&str>) -> Value {
    for_child(json!({"emeter": {"get_realtime": {}}}), child_id)
}

/// `emeter.get_daystat` for a month.
pub fn daystat_request(year: i32, month: u32, child_id: Option<&str>) -> Value {
    for_child(
        json!({"emeter": {"get_daystat": {"year": year, "month": month}}}),
        child_id,
    )
}

/// `time.get_time`: the device's local clock.
pub fn time_request() -> Value {
    json!({"time": {"get_time": {}}})
}

/// The device's UTC offset in ms from its local clock (a `time.get_time` answer) read at
/// `now_ms`, rounded to 15 minutes (every zone's offset is a multiple of it). An error when
/// the clock is further off than any zone (the device has no time yet).
pub fn utc_offset_ms(resp: &Value, now_ms: i64) -> Result<i64> {
    let t = extract(resp, "time", "get_time")?;
    let field = |k: &str| {
        t.get(k)
            .and_then(Value::as_i64)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| Error::Decode(format!("time.get_time has no valid '{k}'")))
    };
    let (h, m, sec) = (field("hour")?, field("min")?, field("sec")?);
    let local = chrono::NaiveDate::from_ymd_opt(
        i32::try_from(field("year")?).unwrap_or(0),
        field("month")?,
        field("mday")?,
    )
    .and_then(|d| d.and_hms_opt(h, m, sec))
    .ok_or_else(|| Error::Decode("time.get_time is not a valid date and time".into()))?;
    zone_offset_ms(local, now_ms).ok_or_else(|| {
        Error::Decode(format!(
            "the device clock is {} h off UTC: not set",
            (local.and_utc().timestamp_millis() - now_ms) / 3_600_000
        ))
    })
}

/// The UTC offset of a device whose clock reads `local` at `now_ms`, rounded to 15 minutes
/// (every zone's offset is a multiple of it); `None` when further off than any zone.
pub fn zone_offset_ms(local: chrono::NaiveDateTime, now_ms: i64) -> Option<i64> {
    const QUARTER: i64 = 900_000;
    let off = (local.and_utc().timestamp_millis() - now_ms + QUARTER / 2).div_euclid(QUARTER);
    let off = off.checked_mul(QUARTER)?;
    (off.abs() <= 14 * 3_600_000).then_some(off)
}

/// `emeter.get_monthstat` for a year.
pub fn monthstat_request(year: i32, child_id: Option<&str>) -> Value {
    for_child(
        json!({"emeter": {"get_monthstat": {"year": year}}}),
        child_id,
    )
}

/// `system.set_relay_state`, optionally for one outlet.
pub fn set_relay_request(on: bool, child_id: Option<&str>) -> Value {
    for_child(
        json!({"system": {"set_relay_state": {"state": u8::from(on)}}}),
        child_id,
    )
}

/// Returns `resp[module][method]` after checking `err_code` at both levels.
pub fn extract<'a>(resp: &'a Value, module: &str, method: &str) -> Result<&'a Value> {
    let m = resp
        .get(module)
        .ok_or_else(|| Error::Decode(format!("answer has no '{module}' module")))?;
    check_err(m, module, "*")?;
    let r = m
        .get(method)
        .ok_or_else(|| Error::Decode(format!("answer has no '{module}.{method}'")))?;
    check_err(r, module, method)?;
    Ok(r)
}

fn check_err(v: &Value, module: &str, method: &str) -> Result<()> {
    match v.get("err_code").and_then(Value::as_i64) {
        Some(0) | None => Ok(()),
        Some(code) => Err(Error::Device {
            module: module.into(),
            method: method.into(),
            code,
            msg: v
                .get("err_msg")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .into(),
        }),
    }
}

/// A number that may arrive as a JSON number or a numeric string (some firmware and the
/// reference simulator send strings).
fn num(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn text(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .into()
}

/// Converts a v1 float (W, V, A, kWh) to integer milli-units, rounding to nearest.
fn milli(v: f64) -> i64 {
    (v * 1000.0).round() as i64
}

/// One outlet of a strip as listed in its sysinfo.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildInfo {
    /// Child id as reported (full, or a short index in some UDP answers).
    pub id: String,
    /// Outlet name.
    pub alias: String,
    /// Relay state.
    pub on: bool,
}

/// The fields of `system.get_sysinfo` that the daemon uses.
#[derive(Debug, Clone, PartialEq)]
pub struct SysInfo {
    /// `deviceId`.
    pub device_id: String,
    /// `alias`.
    pub alias: String,
    /// `model`.
    pub model: String,
    /// `hw_ver`.
    pub hw_ver: String,
    /// `sw_ver`.
    pub sw_ver: String,
    /// `mac` (or `mic_mac`).
    pub mac: String,
    /// `type` / `mic_type`.
    pub kind: String,
    /// Has the `ENE` feature (energy meter).
    pub has_emeter: bool,
    /// Plug relay state (absent on strips).
    pub relay_on: Option<bool>,
    /// Wi-Fi signal in dBm.
    pub rssi: Option<i32>,
    /// Strip outlets.
    pub children: Vec<ChildInfo>,
    /// Latitude in degrees (`latitude` or `latitude_i` / 10⁴).
    pub latitude: Option<f64>,
    /// Longitude in degrees.
    pub longitude: Option<f64>,
}

impl SysInfo {
    /// Parses the object found at `system.get_sysinfo`.
    pub fn parse(v: &Value) -> Result<Self> {
        let device_id = text(v, "deviceId");
        if device_id.is_empty() {
            return Err(Error::Decode("sysinfo has no deviceId".into()));
        }
        let kind = Some(text(v, "type"))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| text(v, "mic_type"));
        let mac = Some(text(v, "mac"))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| text(v, "mic_mac"));
        let children = v
            .get("children")
            .and_then(Value::as_array)
            .map(|cs| {
                cs.iter()
                    .map(|c| ChildInfo {
                        id: text(c, "id"),
                        alias: text(c, "alias"),
                        on: num(c.get("state")).is_some_and(|s| s != 0.0),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let coord =
            |f: &str, fi: &str| num(v.get(f)).or_else(|| num(v.get(fi)).map(|x| x / 10_000.0));
        Ok(Self {
            device_id,
            alias: text(v, "alias"),
            model: text(v, "model"),
            hw_ver: text(v, "hw_ver"),
            sw_ver: text(v, "sw_ver"),
            mac,
            kind,
            has_emeter: text(v, "feature").split(':').any(|f| f == "ENE"),
            relay_on: num(v.get("relay_state")).map(|s| s != 0.0),
            rssi: num(v.get("rssi")).map(|r| r as i32),
            children,
            latitude: coord("latitude", "latitude_i"),
            longitude: coord("longitude", "longitude_i"),
        })
    }

    /// Parses a whole answer that contains `system.get_sysinfo`.
    pub fn from_response(resp: &Value) -> Result<Self> {
        Self::parse(extract(resp, "system", "get_sysinfo")?)
    }
}

/// Meter values normalised to integer milli-units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Realtime {
    /// mW.
    pub power_mw: Option<i64>,
    /// mV.
    pub voltage_mv: Option<i64>,
    /// mA.
    pub current_ma: Option<i64>,
    /// Cumulative counter, Wh.
    pub total_wh: Option<i64>,
}

impl Realtime {
    /// Parses `emeter.get_realtime` in either field generation (v2 names win when both exist).
    pub fn parse(v: &Value) -> Self {
        let pick = |v2: &str, v1: &str| {
            num(v.get(v2))
                .map(|x| x.round() as i64)
                .or_else(|| num(v.get(v1)).map(milli))
        };
        Self {
            power_mw: pick("power_mw", "power"),
            voltage_mv: pick("voltage_mv", "voltage"),
            current_ma: pick("current_ma", "current"),
            total_wh: pick("total_wh", "total"),
        }
    }

    /// Parses a whole answer that contains `emeter.get_realtime`.
    pub fn from_response(resp: &Value) -> Result<Self> {
        Ok(Self::parse(extract(resp, "emeter", "get_realtime")?))
    }
}

/// One entry of `get_daystat` (day > 0) or `get_monthstat` (day = 0), in Wh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnergyStat {
    /// Year (device-local).
    pub year: i32,
    /// Month 1–12.
    pub month: u32,
    /// Day 1–31, or 0 for a month total.
    pub day: u32,
    /// Energy, Wh.
    pub energy_wh: i64,
}

/// Parses `day_list` / `month_list` entries of `get_daystat` / `get_monthstat`.
pub fn parse_stats(resp: &Value, method: &str) -> Result<Vec<EnergyStat>> {
    let r = extract(resp, "emeter", method)?;
    let list = r
        .get("day_list")
        .or_else(|| r.get("month_list"))
        .and_then(Value::as_array)
        .ok_or_else(|| Error::Decode(format!("{method} has no list")))?;
    Ok(list
        .iter()
        .filter_map(|e| {
            let energy_wh = num(e.get("energy_wh"))
                .map(|x| x.round() as i64)
                .or_else(|| num(e.get("energy")).map(milli))?;
            Some(EnergyStat {
                year: num(e.get("year"))? as i32,
                month: num(e.get("month"))? as u32,
                day: num(e.get("day")).unwrap_or(0.0) as u32,
                energy_wh,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_floats_become_integer_milli_units() {
        let v = json!({"current":0.014937,"power":0.928511,"total":55.139,"voltage":231.067823,"err_code":0});
        assert_eq!(
            Realtime::parse(&v),
            Realtime {
                power_mw: Some(929),
                voltage_mv: Some(231_068),
                current_ma: Some(15),
                total_wh: Some(55_139)
            }
        );
    }

    #[test]
    fn v2_integers_pass_through() {
        let v = json!({"current_ma":451,"power_mw":61753,"total_wh":16323,"voltage_mv":230837,"err_code":0});
        assert_eq!(
            Realtime::parse(&v),
            Realtime {
                power_mw: Some(61_753),
                voltage_mv: Some(230_837),
                current_ma: Some(451),
                total_wh: Some(16_323)
            }
        );
    }

    #[test]
    fn missing_fields_stay_none() {
        let r = Realtime::parse(&json!({"power_mw": 5000, "err_code": 0}));
        assert_eq!(r.power_mw, Some(5000));
        assert_eq!(r.current_ma, None);
    }

    #[test]
    fn module_level_error_is_reported() {
        let resp = json!({"emeter":{"err_code":-1,"err_msg":"module not support"}});
        let e = Realtime::from_response(&resp).unwrap_err();
        assert!(e.is_not_supported());
        assert!(matches!(e, Error::Device { ref method, code: -1, .. } if method == "*"));
    }

    #[test]
    fn method_level_error_is_reported() {
        let resp =
            json!({"emeter":{"get_realtime":{"err_code":-1,"err_msg":"module not support"}}});
        let e = Realtime::from_response(&resp).unwrap_err();
        assert!(e.is_not_supported());
        assert!(matches!(e, Error::Device { ref method, .. } if method == "get_realtime"));
    }

    #[test]
    fn strip_requests_carry_the_child_context() {
        let id = "8006AF35494E7DB13DDE9B8F40BF2E001E77031902";
        assert_eq!(
            realtime_request(Some(id)),
            json!({"context":{"child_ids":[id]},"emeter":{"get_realtime":{}}})
        );
        assert_eq!(
            set_relay_request(false, Some(id)),
            json!({"context":{"child_ids":[id]},"system":{"set_relay_state":{"state":0}}})
        );
        assert_eq!(
            realtime_request(None),
            json!({"emeter":{"get_realtime":{}}})
        );
    }

    #[test]
    fn sysinfo_of_a_strip_lists_children_and_meter() {
        let v = json!({"system":{"get_sysinfo":{
            "deviceId":"ABC","alias":"Strip","model":"HS300(US)","hw_ver":"1.0","sw_ver":"1.0.21",
            "mac":"50:C7:BF:00:00:01","mic_type":"IOT.SMARTPLUGSWITCH","feature":"TIM:ENE","rssi":-60,
            "latitude_i": 525200, "longitude_i": 134050,
            "children":[{"id":"ABC00","alias":"a","state":1},{"id":"01","alias":"b","state":0}],
            "err_code":0}}});
        let s = SysInfo::from_response(&v).unwrap();
        assert!(s.has_emeter);
        assert_eq!(s.kind, "IOT.SMARTPLUGSWITCH");
        assert_eq!(s.relay_on, None);
        assert_eq!(s.children.len(), 2);
        assert!(s.children[0].on && !s.children[1].on);
        assert_eq!(s.latitude, Some(52.52));
        assert_eq!(s.rssi, Some(-60));
    }

    #[test]
    fn sysinfo_accepts_string_coordinates_and_old_type_field() {
        let v = json!({"deviceId":"X1","type":"IOT.SMARTPLUGSWITCH","feature":"TIM","relay_state":1,
            "latitude":"39.8", "longitude":"-104.9"});
        let s = SysInfo::parse(&v).unwrap();
        assert!(!s.has_emeter);
        assert_eq!(s.relay_on, Some(true));
        assert_eq!(s.latitude, Some(39.8));
        assert!(SysInfo::parse(&json!({"alias": "no id"})).is_err());
    }

    #[test]
    fn the_device_clock_gives_its_utc_offset() {
        let now = crate::clock::utc("2026-11-25T18:20:07Z");
        let at = |d: u32, h: u32, m: u32, s: u32| {
            json!({"time":{"get_time":{"year":2026,"month":11,"mday":d,"wday":3,"hour":h,
                "min":m,"sec":s,"err_code":0}}})
        };
        // Kathmandu (+05:45), a device clock a few seconds behind.
        assert_eq!(utc_offset_ms(&at(26, 0, 5, 1), now).unwrap(), 20_700_000);
        // New York in winter (-05:00), across the date line of the day.
        assert_eq!(utc_offset_ms(&at(25, 13, 20, 9), now).unwrap(), -18_000_000);
        assert_eq!(utc_offset_ms(&at(25, 18, 20, 7), now).unwrap(), 0);
        // A clock never set (2000-01-01), or an answer without a field, is an error.
        let unset =
            json!({"time":{"get_time":{"year":2000,"month":1,"mday":1,"hour":0,"min":0,"sec":3}}});
        assert!(utc_offset_ms(&unset, now).is_err());
        assert!(utc_offset_ms(&json!({"time":{"get_time":{"year":2026}}}), now).is_err());
        assert!(utc_offset_ms(&at(31, 0, 0, 0), now).is_err());
    }

    #[test]
    fn daystat_in_both_generations() {
        let v2 = json!({"emeter":{"get_daystat":{"day_list":[{"year":2026,"month":11,"day":24,"energy_wh":20}],"err_code":0}}});
        assert_eq!(parse_stats(&v2, "get_daystat").unwrap()[0].energy_wh, 20);
        let v1 = json!({"emeter":{"get_monthstat":{"month_list":[{"year":2026,"month":6,"energy":1.25}],"err_code":0}}});
        let m = parse_stats(&v1, "get_monthstat").unwrap();
        assert_eq!((m[0].month, m[0].day, m[0].energy_wh), (6, 0, 1_250));
    }
}
