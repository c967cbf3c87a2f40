//! The SMART request protocol spoken inside KLAP v2 and AES (kasa-protocol.md §1e): request
//! envelopes, `multipleRequest` batches and `control_child` wrapping, error codes, and the
//! device and energy answers with their units normalised at the edge (`get_energy_usage`
//! power mW, `get_current_power` whole W, `get_emeter_data` mW/mV/mA; energy Wh).

use super::{Error, Result};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

/// The device does not know the method (tolerated for the optional energy methods).
pub const UNKNOWN_METHOD: i64 = -1002;
/// The device could not parse the request (a batch it cannot take: retry singly).
pub const JSON_DECODE_FAIL: i64 = -1003;
/// Bad parameters (tolerated for the optional energy methods).
pub const PARAMS_ERROR: i64 = -1008;

/// A request: `{"method":…, "params":…}` (params omitted when `None`).
pub fn request(method: &str, params: Option<Value>) -> Value {
    match params {
        Some(p) => json!({"method": method, "params": p}),
        None => json!({"method": method}),
    }
}

/// Several requests in one round trip.
pub fn multiple(requests: Vec<Value>) -> Value {
    request("multipleRequest", Some(json!({"requests": requests})))
}

/// A request addressed to one child of a strip.
pub fn for_child(child_id: &str, inner: Value) -> Value {
    request(
        "control_child",
        Some(json!({"device_id": child_id, "requestData": inner})),
    )
}

fn device_error(method: &str, code: i64) -> Error {
    Error::Device {
        module: "smart".into(),
        method: method.into(),
        code,
        msg: match code {
            UNKNOWN_METHOD => "unknown method".into(),
            JSON_DECODE_FAIL => "JSON decode failed".into(),
            PARAMS_ERROR => "parameters error".into(),
            9999 => "session timeout".into(),
            -1501 | 1111 => "login failed".into(),
            _ => "device error".into(),
        },
    }
}

/// The `result` of an answer to `method` (an empty object when a `set_*` call returns none).
pub fn result<'a>(resp: &'a Value, method: &str) -> Result<&'a Value> {
    static EMPTY: std::sync::LazyLock<Value> = std::sync::LazyLock::new(|| json!({}));
    match resp.get("error_code").and_then(Value::as_i64) {
        Some(0) => Ok(resp.get("result").unwrap_or(&EMPTY)),
        Some(code) => Err(device_error(method, code)),
        None => Err(Error::Decode(format!("{method}: answer has no error_code"))),
    }
}

/// The answers of a `multipleRequest`, in request order; a method the batch did not answer
/// is an error of its own.
pub fn responses(resp: &Value, methods: &[&str]) -> Result<Vec<Result<Value>>> {
    let list = result(resp, "multipleRequest")?
        .get("responses")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::Decode("multipleRequest answer has no responses".into()))?;
    Ok(methods
        .iter()
        .map(|m| {
            list.iter()
                .find(|r| r.get("method").and_then(Value::as_str) == Some(m))
                .ok_or_else(|| Error::Decode(format!("batch did not answer {m}")))
                .and_then(|r| result(r, m).cloned())
        })
        .collect())
}

/// The answer inside a `control_child` answer.
pub fn child_result(resp: &Value) -> Result<&Value> {
    let data = result(resp, "control_child")?
        .get("responseData")
        .ok_or_else(|| Error::Decode("control_child answer has no responseData".into()))?;
    Ok(data)
}

/// True for the codes that mean "this optional method is not there".
pub fn is_optional_miss(e: &Error) -> bool {
    matches!(e, Error::Device { module, code, .. }
        if module == "smart" && (*code == UNKNOWN_METHOD || *code == PARAMS_ERROR))
}

/// The first day of the quarter holding device-local `day` (days since 1970-01-01 in local
/// time); `None` out of range.
pub fn quarter_start(day: i64) -> Option<i64> {
    use chrono::Datelike;
    let d = chrono::DateTime::from_timestamp(day.checked_mul(86_400)?, 0)?.date_naive();
    let q = chrono::NaiveDate::from_ymd_opt(d.year(), (d.month0() / 3) * 3 + 1, 1)?;
    Some(
        q.signed_duration_since(chrono::NaiveDate::default())
            .num_days(),
    )
}

/// `get_energy_data`, daily (interval 1440), for the quarter starting on local day
/// `quarter_start` up to day `last`. As the tapo crate documents, a daily request must start
/// on the first day of a quarter and answers one Wh value per day from there; the timestamps
/// are local midnights written as if UTC.
pub fn energy_data_request(quarter_start: i64, last: i64) -> Value {
    request(
        "get_energy_data",
        Some(
            json!({"start_timestamp": quarter_start * 86_400, "end_timestamp": last * 86_400,
            "interval": 1440}),
        ),
    )
}

/// The daily values of a `get_energy_data` result, the first being the requested start's.
pub fn energy_data(result: &Value) -> Result<Vec<i64>> {
    result
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::Decode("get_energy_data has no data".into()))?
        .iter()
        .map(|v| v.as_i64().filter(|&wh| wh >= 0))
        .collect::<Option<_>>()
        .ok_or_else(|| Error::Decode("get_energy_data holds a value that is no energy".into()))
}

/// The device's UTC offset in ms from its `local_time` read at `now_ms`, rounded to 15 minutes
/// (every zone's offset is a multiple of it); `None` when it is unreadable or further off than
/// any zone.
pub fn utc_offset_ms(local_time: &str, now_ms: i64) -> Option<i64> {
    let t = chrono::NaiveDateTime::parse_from_str(local_time, "%Y-%m-%d %H:%M:%S").ok()?;
    super::messages::zone_offset_ms(t, now_ms)
}

/// What `get_device_info` says.
#[derive(Debug, Clone, PartialEq)]
pub struct SmartInfo {
    /// `device_id`.
    pub device_id: String,
    /// `nickname`, base64-decoded.
    pub nickname: String,
    /// `model` (no region).
    pub model: String,
    /// `hw_ver`.
    pub hw_ver: String,
    /// `fw_ver`.
    pub fw_ver: String,
    /// `mac`.
    pub mac: String,
    /// `device_on` (absent on a strip's parent).
    pub device_on: Option<bool>,
    /// `rssi`, dBm.
    pub rssi: Option<i32>,
}

fn text(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

impl SmartInfo {
    /// Parses a `get_device_info` result (or one entry of `get_child_device_list`).
    pub fn parse(v: &Value) -> Result<Self> {
        let device_id = text(v, "device_id");
        if device_id.is_empty() {
            return Err(Error::Decode("get_device_info has no device_id".into()));
        }
        let raw = text(v, "nickname");
        let nickname = B64
            .decode(&raw)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or(raw);
        Ok(Self {
            device_id,
            nickname,
            model: text(v, "model"),
            hw_ver: text(v, "hw_ver"),
            fw_ver: text(v, "fw_ver"),
            mac: text(v, "mac"),
            device_on: v.get("device_on").and_then(Value::as_bool),
            rssi: v
                .get("rssi")
                .and_then(Value::as_i64)
                .and_then(|r| i32::try_from(r).ok()),
        })
    }
}

/// Meter values of one plug or child, in integer milli-units and Wh.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SmartEnergy {
    /// Power, mW.
    pub power_mw: Option<i64>,
    /// Voltage, mV (only `get_emeter_data` has it).
    pub voltage_mv: Option<i64>,
    /// Current, mA (only `get_emeter_data` has it).
    pub current_ma: Option<i64>,
    /// The energy counter, Wh: `get_emeter_data.energy_wh`, else `month_energy`. Both run
    /// over the device-local month.
    pub counter_wh: Option<i64>,
    /// `today_energy`, Wh.
    pub today_wh: Option<i64>,
    /// `month_energy`, Wh.
    pub month_wh: Option<i64>,
    /// `get_energy_usage.local_time`: the device's clock, `YYYY-MM-DD HH:MM:SS`.
    pub local_time: Option<String>,
}

fn int(v: Option<&Value>, k: &str) -> Option<i64> {
    v.and_then(|v| v.get(k)).and_then(Value::as_i64)
}

impl SmartEnergy {
    /// Combines the answers of `get_energy_usage`, `get_emeter_data` and `get_current_power`
    /// (each optional) with python-kasa's precedence.
    pub fn combine(usage: Option<&Value>, emeter: Option<&Value>, current: Option<&Value>) -> Self {
        let power_mw = int(emeter, "power_mw")
            .or_else(|| int(usage, "current_power"))
            .or_else(|| int(current, "current_power").map(|w| w.saturating_mul(1000)));
        let month_wh = int(usage, "month_energy");
        Self {
            power_mw,
            voltage_mv: int(emeter, "voltage_mv"),
            current_ma: int(emeter, "current_ma"),
            counter_wh: int(emeter, "energy_wh").or(month_wh),
            today_wh: int(usage, "today_energy"),
            month_wh,
            local_time: usage
                .and_then(|u| u.get("local_time"))
                .and_then(Value::as_str)
                .map(str::to_owned),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_normalised_with_python_kasas_precedence() {
        // KP125M fw 1.2.3 values: get_energy_usage mW, get_current_power W, emeter_data mW.
        let usage = json!({"current_power": 1003, "today_energy": 20, "month_energy": 971});
        let current = json!({"current_power": 1});
        let emeter =
            json!({"power_mw": 1010, "voltage_mv": 121_000, "current_ma": 12, "energy_wh": 971});
        let all = SmartEnergy::combine(Some(&usage), Some(&emeter), Some(&current));
        assert_eq!(all.power_mw, Some(1010));
        assert_eq!((all.voltage_mv, all.current_ma), (Some(121_000), Some(12)));
        assert_eq!(
            (all.counter_wh, all.today_wh, all.month_wh),
            (Some(971), Some(20), Some(971))
        );
        let old_fw = SmartEnergy::combine(Some(&usage), None, Some(&current));
        assert_eq!(old_fw.power_mw, Some(1003), "get_energy_usage is mW");
        assert_eq!(
            (old_fw.voltage_mv, old_fw.current_ma),
            (None, None),
            "missing stays empty"
        );
        assert_eq!(old_fw.counter_wh, Some(971));
        let only_w = SmartEnergy::combine(None, None, Some(&current));
        assert_eq!(only_w.power_mw, Some(1000), "get_current_power is whole W");
        assert_eq!(only_w.counter_wh, None);
    }

    #[test]
    fn daily_history_starts_on_the_quarters_first_day() {
        let day = |y, m, d| {
            chrono::NaiveDate::from_ymd_opt(y, m, d)
                .unwrap()
                .signed_duration_since(chrono::NaiveDate::default())
                .num_days()
        };
        assert_eq!(quarter_start(day(2025, 11, 30)), Some(day(2025, 10, 1)));
        assert_eq!(quarter_start(day(2025, 12, 1)), Some(day(2025, 10, 1)));
        assert_eq!(quarter_start(day(2026, 1, 1)), Some(day(2026, 1, 1)));
        assert_eq!(quarter_start(day(2026, 3, 31)), Some(day(2026, 1, 1)));
        assert_eq!(quarter_start(i64::MAX), None);
        let r = json!({"data": [1, 2, 3]});
        assert_eq!(energy_data(&r).unwrap(), vec![1, 2, 3]);
        assert!(energy_data(&json!({"data": [1, -2]})).is_err());
        assert!(energy_data(&json!({})).is_err());
    }

    #[test]
    fn device_info_decodes_the_nickname() {
        let v = json!({"device_id": "80AB", "nickname": B64.encode("Küche"), "model": "KP125M",
            "device_on": true, "rssi": -50});
        let i = SmartInfo::parse(&v).unwrap();
        assert_eq!(i.nickname, "Küche");
        assert_eq!((i.device_on, i.rssi), (Some(true), Some(-50)));
        assert!(SmartInfo::parse(&json!({"nickname": "x"})).is_err());
    }

    #[test]
    fn batches_and_errors() {
        let resp = json!({"error_code": 0, "result": {"responses": [
            {"method": "get_device_info", "error_code": 0, "result": {"device_id": "A"}},
            {"method": "get_emeter_data", "error_code": -1002},
        ]}});
        let r = responses(
            &resp,
            &["get_device_info", "get_emeter_data", "get_energy_usage"],
        )
        .unwrap();
        assert_eq!(r[0].as_ref().unwrap()["device_id"], "A");
        assert!(is_optional_miss(r[1].as_ref().unwrap_err()));
        assert!(r[2].is_err(), "a method missing from the batch is an error");
        assert!(!is_optional_miss(r[2].as_ref().unwrap_err()));
        let e = result(&json!({"error_code": -1003}), "multipleRequest").unwrap_err();
        assert!(matches!(
            e,
            Error::Device {
                code: JSON_DECODE_FAIL,
                ..
            }
        ));
        assert_eq!(
            result(&json!({"error_code": 0}), "set_device_info").unwrap(),
            &json!({})
        );
        let child = json!({"error_code": 0, "result": {"responseData": {"error_code": 0, "result": {"x": 1}}}});
        assert_eq!(result(child_result(&child).unwrap(), "m").unwrap()["x"], 1);
        assert_eq!(
            for_child("C1", request("get_device_info", None)),
            json!({"method": "control_child", "params": {"device_id": "C1", "requestData": {"method": "get_device_info"}}})
        );
    }
}
