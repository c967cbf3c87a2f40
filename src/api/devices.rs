//! `/api/devices`: the device list, on-demand discovery and reading series.

use super::AppState;
use super::error::{ApiError, ApiQuery};
use crate::clock::rfc3339;
use crate::domain::{DeviceId, DeviceStatus, DeviceType};
use crate::series::{self, Point, Resolution, SeriesError};
use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;

/// Runs blocking store work off the runtime.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)
}

/// Query of `GET /api/devices`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    forgotten: bool,
}

/// `GET /api/devices` (`?forgotten=true`: the forgotten ones).
pub async fn list(
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    if q.forgotten {
        return Ok(Json(forgotten(&st).await?));
    }
    Ok(Json(json!({ "devices": device_rows(&st).await? })))
}

/// `GET /api/devices?forgotten=true`: forgotten devices, with when they were forgotten.
async fn forgotten(st: &AppState) -> Result<Value, ApiError> {
    let store = st.store.clone();
    let recs = blocking(move || store.forgotten_devices()).await??;
    let rows: Vec<Value> = recs
        .iter()
        .map(|r| {
            json!({"device_id": r.info.device_id, "device_name": r.name(),
                "device_alias": r.info.name, "device_type": r.info.device_type,
                "model": r.info.model, "parent_id": r.info.parent_id, "room": r.labels.room,
                "forgotten_at": r.forgotten_ms.map(crate::clock::rfc3339)})
        })
        .collect();
    Ok(json!({"devices": rows}))
}

/// Every stored device with its live status, as `/api/devices` lists it.
pub async fn device_rows(st: &AppState) -> Result<Vec<Value>, ApiError> {
    let store = st.store.clone();
    let devices = blocking(move || store.devices()).await??;
    let live: HashMap<DeviceId, _> = st
        .devices
        .registry
        .snapshot()
        .into_iter()
        .map(|e| (e.info.device_id.clone(), e))
        .collect();
    let mut strip_points: HashMap<DeviceId, u64> = HashMap::new();
    for d in &devices {
        if let Some(p) = &d.record.info.parent_id {
            *strip_points.entry(p.clone()).or_default() += d.data_points;
        }
    }
    // Devices known only from a 20002 answer (not identified yet: no credential accepted, an
    // unsupported transport, or not polled yet) are listed from what they announced.
    let provisional = live
        .values()
        .filter(|e| e.provisional)
        .map(|e| device_row(&e.info, None, Some(e), None, 0));
    let records: Vec<crate::store::DeviceRecord> =
        devices.iter().map(|d| d.record.clone()).collect();
    let out: Vec<Value> = devices
        .iter()
        .map(|d| {
            let i = &d.record.info;
            let entry = live.get(i.parent_id.as_ref().unwrap_or(&i.device_id));
            let last_seen = entry.and_then(|e| e.last_seen_ms).or(d.last_reading_ms);
            let points = if i.device_type == DeviceType::Strip {
                strip_points.get(&i.device_id).copied().unwrap_or(0)
            } else {
                d.data_points
            };
            device_row(i, Some((&d.record, &records)), entry, last_seen, points)
        })
        .chain(provisional)
        .collect();
    Ok(out)
}

/// One row of `/api/devices`: the record (with its labels, when stored: `rec` and every
/// record, for an outlet's room), with status, address and last error from the live registry
/// `entry` of the device (or of its strip).
fn device_row(
    i: &crate::domain::DeviceInfo,
    rec: Option<(&crate::store::DeviceRecord, &[crate::store::DeviceRecord])>,
    entry: Option<&crate::poller::registry::Entry>,
    last_seen: Option<i64>,
    points: u64,
) -> Value {
    let labels = rec.map(|(r, _)| r.labels.clone()).unwrap_or_default();
    let name = rec.map_or(i.name.as_str(), |(r, _)| r.name());
    let room = rec.and_then(|(r, all)| r.room(all));
    let status = entry.map_or(DeviceStatus::Offline, |e| e.status);
    let address = entry.map_or(i.address.clone(), |e| e.addr.to_string());
    let ip = crate::domain::device::host_of(&address).to_owned();
    json!({
        "device_id": i.device_id, "device_ip": ip, "device_name": name,
        "device_alias": i.name, "room": room, "rated_power_w": labels.rated_power_w,
        "notes": labels.notes,
        "load_kind": labels.load_kind.unwrap_or(crate::domain::labels::LoadKind::Auto),
        "run_threshold_w": labels.run_threshold_w,
        "device_type": i.device_type, "model": i.model, "hw_ver": i.hw_ver,
        "sw_ver": i.sw_ver, "transport": i.transport, "has_emeter": i.has_emeter,
        "online": status == DeviceStatus::Online, "status": status,
        "last_seen": last_seen.map(rfc3339), "data_points": points,
        "parent_id": i.parent_id, "outlet_index": i.outlet_index, "mac": i.mac,
        "latitude": i.latitude, "longitude": i.longitude,
        "last_error": entry.and_then(|e| e.last_error.clone()),
    })
}

/// `POST /api/devices/discover`: runs a discovery round now.
pub async fn discover(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let found = st.devices.discovery.discover_now().await?;
    Ok(Json(json!({ "found": found })))
}

/// Query of the readings endpoint.
#[derive(Debug, Deserialize)]
pub struct ReadingsQuery {
    start: Option<String>,
    end: Option<String>,
    resolution: Option<String>,
    timezone: Option<String>,
}

/// Parses RFC 3339, or a plain date (`YYYY-MM-DD`, local midnight in `tz`).
fn parse_time(field: &str, s: &str, tz: chrono_tz::Tz) -> Result<i64, ApiError> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(crate::domain::rollup::local_midnight(d, tz));
    }
    Err(ApiError::bad_request(
        "INVALID_DATE",
        format!(
            "{field} must be an RFC 3339 time (2026-11-25T10:00:00Z) or a date (2026-11-25), got {s:?}"
        ),
    ))
}

fn kwh(mwh: i64) -> f64 {
    mwh as f64 / 1_000_000.0
}

fn point_json(p: &Point, rollup: bool) -> Value {
    let unit = |v: Option<f64>| v.map(|x| x.round() / 1000.0);
    let mut v = json!({
        "timestamp": rfc3339(p.ts_ms),
        "power_w": unit(p.power_mw), "voltage": unit(p.voltage_mv), "current": unit(p.current_ma),
        "energy_kwh": kwh(p.energy_mwh), "total_kwh": p.counter_wh.map(|c| c as f64 / 1000.0),
        "is_on": p.is_on,
        "quality": p.quality(!rollup),
    });
    if rollup {
        v["measured_share"] = json!(p.measured_share());
        v["power_min_w"] = json!(p.power_min_mw.map(|x| x as f64 / 1000.0));
        v["power_max_w"] = json!(p.power_max_mw.map(|x| x as f64 / 1000.0));
        v["on_seconds"] = json!(p.on_ms.map(|x| x / 1000));
        v["samples"] = json!(p.samples);
    }
    v
}

/// `GET /api/devices/{device_id}/readings?start&end&resolution&timezone`.
pub async fn readings(
    State(st): State<AppState>,
    super::error::ApiPath(device_id): super::error::ApiPath<String>,
    ApiQuery(q): ApiQuery<ReadingsQuery>,
) -> Result<Json<Value>, ApiError> {
    let id = DeviceId::parse(&device_id).map_err(|_| ApiError::device_not_found(&device_id))?;
    let tz: chrono_tz::Tz = match &q.timezone {
        Some(t) => t.parse().map_err(|_| {
            ApiError::bad_request("INVALID_TIMEZONE", format!("unknown IANA time zone {t:?}"))
        })?,
        None => st.site.timezone,
    };
    let res_text = q.resolution.as_deref().unwrap_or("raw");
    let res = Resolution::parse(res_text).ok_or_else(|| {
        ApiError::bad_request(
            "INVALID_RESOLUTION",
            format!("resolution must be raw, 15m, hour, day, week or month, got {res_text:?}"),
        )
    })?;
    let end = match &q.end {
        Some(s) => parse_time("end", s, tz)?,
        None => st.clock.now_ms() + 1,
    };
    let start = match &q.start {
        Some(s) => parse_time("start", s, tz)?,
        None => end - 86_400_000,
    };
    if start >= end {
        return Err(ApiError::invalid_date_range(
            "Start date must be before end date",
        ));
    }
    let store = st.store.clone();
    let sid = id.clone();
    let points = blocking(move || series::series(&store, &sid, start, end, res, tz))
        .await?
        .map_err(|e| match e {
            SeriesError::TooManyRows => ApiError::bad_request("RANGE_TOO_LARGE", e.to_string()),
            SeriesError::Store(s) => s.into(),
        })?;
    let rollup = res != Resolution::Raw;
    Ok(Json(json!({
        "device_id": id,
        "resolution": res_text,
        "timezone": tz.name(),
        "start": rfc3339(start),
        "end": rfc3339(end),
        "readings": points.iter().map(|p| point_json(p, rollup)).collect::<Vec<_>>(),
    })))
}

/// `POST /api/devices/{device_id}/relay` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Relay {
    on: bool,
}

/// `POST /api/devices/{device_id}/relay`: switches a plug, or one strip outlet.
pub async fn relay(
    State(st): State<AppState>,
    axum::Extension(cu): axum::Extension<super::guard::CurrentUser>,
    super::error::ApiPath(device_id): super::error::ApiPath<String>,
    super::error::ApiJson(body): super::error::ApiJson<Relay>,
) -> Result<Json<Value>, ApiError> {
    let id = DeviceId::parse(&device_id).map_err(|_| ApiError::device_not_found(&device_id))?;
    let entry = st
        .devices
        .registry
        .find(&id)
        .ok_or_else(|| ApiError::device_not_found(&device_id))?;
    if entry.info.device_type == DeviceType::Strip && entry.info.device_id == id {
        return Err(ApiError::validation(
            "device_id: switch a strip's outlets one by one (use an outlet id)",
        ));
    }
    let outlet = (entry.info.device_id != id).then_some(&id);
    let res = (st.devices.conns)
        .set_relay(&entry.target(), outlet, body.on, st.devices.poll_timeout)
        .await;
    let mut ev = cu.event(
        crate::audit::EventType::DeviceControlled,
        crate::audit::Severity::Info,
    );
    ev.resource = Some(format!("device:{id}"));
    ev.details = json!({"on": body.on, "ok": res.is_ok(), "error": res.as_ref().err().map(ToString::to_string)});
    st.audit(ev).await;
    res.map_err(|e| ApiError::device_error(format!("The device did not switch: {e}")))?;
    Ok(Json(json!({"device_id": id, "on": body.on})))
}

/// `GET /api/devices/live`: per device the newest reading (within three poll intervals) and
/// today's energy and cost (taxes included, in the daemon's zone) — what the device cards show.
/// A strip is the sum of its outlets.
pub async fn live(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let tz = st.site.timezone;
    let LiveNow {
        rows,
        now,
        day_start,
        currency,
        decimals,
    } = blocking(live_now(&st)).await??;
    let devices: Vec<Value> = rows
        .iter()
        .map(|l| {
            json!({
                "device_id": l.id, "is_on": l.is_on, "reading_at": l.ts_ms.map(rfc3339),
                "power_w": l.power_mw.map(|mw| mw as f64 / 1000.0),
                "today_energy_kwh": kwh(l.today_mwh),
                "today_cost": crate::tariff::engine::minor_value(
                    crate::tariff::engine::to_minor(l.today_cost, decimals), decimals),
            })
        })
        .collect();
    Ok(Json(json!({
        "at": rfc3339(now), "day_start": rfc3339(day_start), "timezone": tz.name(),
        "currency": currency, "poll_interval_s": st.devices.poll_interval.as_secs_f64(),
        "devices": devices,
    })))
}

/// Every device now (see [`crate::live::snapshot`]) with what its numbers mean.
pub(super) struct LiveNow {
    /// The devices.
    pub rows: Vec<crate::live::Live>,
    /// When, UTC ms.
    pub now: i64,
    /// Start of today in the daemon's zone, UTC ms.
    pub day_start: i64,
    /// Currency of the tariff in force.
    pub currency: String,
    /// Its minor-unit decimals.
    pub decimals: u8,
}

/// The work behind `/api/devices/live` and `/metrics`: newest readings within three poll
/// intervals, today's energy and cost. Blocking; run it through [`blocking`].
pub(super) fn live_now(
    st: &AppState,
) -> impl FnOnce() -> Result<LiveNow, ApiError> + Send + 'static {
    let now = st.clock.now_ms();
    let (tz, interval) = (st.site.timezone, st.devices.poll_interval);
    let (store, exporter) = (st.store.clone(), st.work.exporter.clone());
    move || {
        let tariffs = exporter.tariffs().map_err(ApiError::internal)?;
        let (rows, day_start) = crate::live::today(&store, &tariffs, now, tz, interval)?;
        let c = tariffs.at(now);
        Ok(LiveNow {
            rows,
            now,
            day_start,
            currency: c.source.currency.clone(),
            decimals: c.decimals,
        })
    }
}
