//! The insights: `GET /api/insights` (every metered device and the household),
//! `GET /api/insights/devices/{device_id}` (one device), and the budget
//! (`GET`/`PUT /api/insights/settings`, SYSTEM_CONFIG, audited as `SETTINGS_CHANGED`).

use super::AppState;
use super::devices::blocking;
use super::error::{ApiError, ApiJson, ApiPath};
use super::guard::CurrentUser;
use crate::audit::{EventType, Severity};
use crate::clock::rfc3339;
use crate::insights::{self, DeviceInsight, Report, Stored};
use crate::store::audit::Pending;
use axum::extract::State;
use axum::{Extension, Json};
use serde_json::{Value, json};
use std::sync::Arc;

/// Rounds money and energy for the API.
fn r(x: f64, decimals: i32) -> f64 {
    let m = 10f64.powi(decimals);
    (x * m).round() / m
}

fn date_of(ms: i64, tz: chrono_tz::Tz) -> String {
    use chrono::TimeZone;
    tz.timestamp_millis_opt(ms)
        .unwrap()
        .date_naive()
        .to_string()
}

fn device_json(d: &DeviceInsight) -> Value {
    let cycles = d.cycles.as_ref().map(|c| {
        json!({
            "cycles_today": c.today.cycles,
            "cycles_per_day": c.per_day.map(|x| r(x, 1)),
            "mean_on_minutes": c.today.mean_on_minutes().map(|x| r(x, 1)),
            "mean_on_w": c.today.mean_on_w().map(|x| r(x, 1)),
            "duty_pct": c.today.ratio().map(|x| r(100.0 * x, 1)),
            "baseline_duty_pct": c.drift.map(|x| r(100.0 * x.baseline_ratio, 1)),
            "baseline_days": c.drift.map(|x| x.baseline_days),
            "drift_pct": c.drift.map(|x| r(x.pct, 1)),
            "drifting": c.drift.is_some_and(|x| x.drifting()),
        })
    });
    let runs = d.runs.as_ref().map(|rs| {
        rs.runs
            .iter()
            .map(|p| {
                json!({
                    "start": rfc3339(p.run.start_ms),
                    "end": rfc3339(p.run.end_ms),
                    "duration_minutes": r(p.run.duration_ms() as f64 / 60_000.0, 1),
                    "energy_kwh": r(p.run.energy_wh as f64 / 1_000.0, 3),
                    "cost": r(p.cost, 4),
                    "peak_w": r(p.run.peak_w, 1),
                    "running": p.run.running,
                })
            })
            .collect::<Vec<Value>>()
    });
    let unusual: Vec<Value> = d
        .unusual
        .iter()
        .map(|u| {
            json!({
                "date": u.date.to_string(),
                "energy_kwh": r(u.kwh, 3),
                "typical_kwh": r(u.typical_kwh, 3),
                "difference_kwh": r(u.kwh - u.typical_kwh, 3),
                "direction": if u.kwh > u.typical_kwh { "high" } else { "low" },
                "weeks_compared": u.weeks,
            })
        })
        .collect();
    json!({
        "device_id": d.id, "device_name": d.name, "room": d.room, "device_type": d.device_type,
        "always_on_w": r(d.always_on.watts, 2),
        "always_on_kwh_per_year": r(d.always_on.kwh_per_year(), 2),
        "always_on_cost_per_year": r(d.always_on_cost_per_year, 2),
        "basis_hours": r(d.always_on.basis_hours, 2),
        "learning": d.always_on.learning(),
        "load_kind": d.load_kind.name(),
        "load_kind_source": if d.kind_set { "set" } else { "learned" },
        "cycles": cycles,
        "runs": runs,
        "runs_per_week": d.runs.as_ref().map(|x| r(x.per_week, 1)),
        "run_threshold_w": d.runs.as_ref().map(|x| r(x.threshold_w, 1)),
        "unusual_days": unusual,
        "period_kwh": r(d.period_kwh, 3),
        "period_cost": r(d.period_cost, 2),
        "summary": d.summary(),
    })
}

fn report_json(rep: &Report, tz: chrono_tz::Tz) -> Value {
    let f = &rep.forecast;
    let p = f.projection;
    json!({
        "computed_at": rfc3339(rep.computed_ms),
        "currency": rep.currency,
        "devices": rep.devices.iter().map(device_json).collect::<Vec<Value>>(),
        "always_on_total_w": r(rep.always_on_total_w, 2),
        "always_on_total_cost_per_year": r(rep.always_on_total_cost_per_year, 2),
        "forecast": {
            "period_start": date_of(f.period_start_ms, tz),
            "period_end": date_of(f.period_end_ms - 1, tz),
            "cost_so_far": r(f.cost_so_far, 2),
            "projected_cost": p.map(|x| r(x.projected, 2)),
            "low": p.map(|x| r(x.low, 2)),
            "high": p.map(|x| r(x.high, 2)),
            "budget": f.budget,
            "over_budget": f.budget.zip(p).map(|(b, x)| x.projected > b),
            "days": f.days.iter().map(|d| json!({"date": d.date.to_string(), "cost": r(d.cost, 4)})).collect::<Vec<Value>>(),
        },
    })
}

/// The report as of now (cached for a poll interval).
pub async fn report(st: &AppState) -> Result<Arc<Report>, ApiError> {
    let (store, ex, svc) = (
        st.store.clone(),
        st.work.exporter.clone(),
        st.work.insights.clone(),
    );
    let (now, tz) = (st.clock.now_ms(), st.site.timezone);
    let max_age = i64::try_from(st.devices.poll_interval.as_millis()).unwrap_or(60_000);
    blocking(move || -> Result<Arc<Report>, ApiError> {
        let tariffs = ex.tariffs().map_err(ApiError::internal)?;
        Ok(svc.report(&store, &tariffs, now, tz, max_age)?)
    })
    .await?
}

/// `GET /api/insights`.
pub async fn list(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let rep = report(&st).await?;
    Ok(Json(report_json(&rep, st.site.timezone)))
}

/// `GET /api/insights/devices/{device_id}`.
pub async fn one(
    State(st): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let rep = report(&st).await?;
    rep.devices
        .iter()
        .find(|d| d.id.as_str() == id)
        .map(|d| Json(device_json(d)))
        .ok_or_else(|| ApiError::device_not_found(&id))
}

/// The budget in force and where it comes from: `api`, `config` or `none`.
fn settings_json(stored: Option<Stored>, params: &insights::Params) -> Value {
    let source = match (stored, params.budget) {
        (Some(_), _) => "api",
        (None, Some(_)) => "config",
        (None, None) => "none",
    };
    json!({"monthly_budget": params.budget, "source": source})
}

/// `GET /api/insights/settings`.
pub async fn settings(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let (store, svc) = (st.store.clone(), st.work.insights.clone());
    let (stored, params) = blocking(move || -> Result<_, ApiError> {
        let s: Option<Stored> = store.setting(insights::SETTING)?;
        Ok((s, svc.params(&store)?))
    })
    .await??;
    Ok(Json(settings_json(stored, &params)))
}

/// `PUT /api/insights/settings`: `{"monthly_budget": 80.0}` (or `null` for none).
pub async fn put_settings(
    State(st): State<AppState>,
    Extension(cu): Extension<CurrentUser>,
    ApiJson(body): ApiJson<Stored>,
) -> Result<Json<Value>, ApiError> {
    if let Some(b) = body.monthly_budget
        && !(b.is_finite() && b > 0.0 && b < 1e12)
    {
        return Err(ApiError::bad_request(
            "VALIDATION_ERROR",
            "monthly_budget: a positive amount in the tariff's currency, or null for none",
        ));
    }
    let (store, svc, key, now) = (
        st.store.clone(),
        st.work.insights.clone(),
        st.auth.audit_key.clone(),
        st.clock.now_ms(),
    );
    let mut ev = cu.event(EventType::SettingsChanged, Severity::Info);
    ev.resource = Some("insights".into());
    let params = blocking(move || -> Result<_, ApiError> {
        let before = svc.params(&store)?;
        ev.details = json!({"setting": "insights",
            "old": {"monthly_budget": before.budget}, "new": {"monthly_budget": body.monthly_budget}});
        store.setting_put(insights::SETTING, &body, Some(Pending::new(&key, ev, now)))?;
        svc.invalidate();
        Ok(svc.params(&store)?)
    })
    .await??;
    Ok(Json(settings_json(Some(body), &params)))
}
