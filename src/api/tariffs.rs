//! `GET /api/tariffs` (the versions and the one in force) and `PUT /api/tariffs` (a new
//! version from its `effective_from`; earlier versions never change). Both need SYSTEM_CONFIG;
//! a change is audited in the same transaction that stores it. `POST /api/tariffs/compare`
//! (SYSTEM_CONFIG) prices a period's history under several tariffs (what-if).

use super::AppState;
use super::devices::blocking;
use super::error::{ApiError, ApiJson};
use super::guard::CurrentUser;
use crate::audit::{EventType, Severity};
use crate::store::audit::Pending;
use crate::tariff::{Compiled, Tariff, Versions};
use axum::extract::State;
use axum::{Extension, Json};
use serde_json::{Value, json};

fn view(versions: &Versions, now_ms: i64) -> Value {
    let list: Vec<Value> = versions
        .0
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({
                "version": i + 1,
                "effective_from": (c.from_ms != i64::MIN).then(|| crate::clock::rfc3339(c.from_ms)),
                "timezone": c.tz.name(),
                "summary": c.describe(),
                "tariff": c.source,
            })
        })
        .collect();
    let current = versions.index_at(now_ms) + 1;
    json!({"in_force": current, "versions": list})
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("VALIDATION_ERROR", message)
}

/// `GET /api/tariffs`.
pub async fn get(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let ex = st.work.exporter.clone();
    let versions = blocking(move || ex.tariffs())
        .await?
        .map_err(ApiError::internal)?;
    Ok(Json(view(&versions, st.clock.now_ms())))
}

/// `PUT /api/tariffs`: appends a version. The body is a whole tariff; it is stored with its
/// zone written out and `effective_from` as an instant.
pub async fn put(
    State(st): State<AppState>,
    Extension(cu): Extension<CurrentUser>,
    ApiJson(body): ApiJson<Tariff>,
) -> Result<Json<Value>, ApiError> {
    let now = st.clock.now_ms();
    let tz = st.site.timezone;
    if body.effective_from.is_none() {
        return Err(invalid(
            "effective_from: say when the new prices start (YYYY-MM-DD or RFC 3339)",
        ));
    }
    let new = Compiled::new(&body, tz).map_err(|e| invalid(e.to_string()))?;
    // No retroactive prices: costs already computed must not change.
    if new.from_ms < now {
        return Err(invalid(
            "effective_from: must not be in the past (past costs never change); use a later date or time on a quarter hour",
        ));
    }
    let pinned = new.pinned();
    let ex = st.work.exporter.clone();
    let (store, key) = (st.store.clone(), st.auth.audit_key.clone());
    let mut ev = cu.event(EventType::TariffChanged, Severity::Warning);
    ev.resource = Some("tariffs".into());
    ev.details = json!({"effective_from": pinned.effective_from, "summary": new.describe()});
    let versions = blocking(move || -> Result<Versions, ApiError> {
        let seed = ex.tariffs().map_err(ApiError::internal)?.0[0].pinned();
        // Keep the configured tariff as version 1 before the first change.
        store.tariffs_seed(&seed)?;
        let check = |old: &[Tariff]| -> Result<(), ApiError> {
            let mut all = old.to_vec();
            all.push(pinned.clone());
            let v = Versions::compile_with(&all, tz, true).map_err(|e| invalid(e.to_string()))?;
            let before = &v.0[v.0.len() - 2];
            if before.source.currency != new.source.currency {
                return Err(invalid(format!(
                    "currency: stays {} (a cost analysis adds amounts across versions)",
                    before.source.currency
                )));
            }
            Ok(())
        };
        store.tariff_append(&pinned, check, Some(Pending::new(&key, ev, now)))??;
        ex.tariffs().map_err(ApiError::internal)
    })
    .await??;
    Ok(Json(view(&versions, now)))
}

/// Longest period a comparison prices, days.
pub const MAX_COMPARE_DAYS: i64 = 400;

/// `POST /api/tariffs/compare` body.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompareBody {
    date_range: CompareRange,
    #[serde(default)]
    devices: Option<Value>,
    tariffs: Vec<Value>,
}

/// `date_range` of a comparison: dates (inclusive) or RFC 3339 times.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompareRange {
    start: String,
    end: String,
}

/// `POST /api/tariffs/compare`: the stored history of a period priced under each tariff.
pub async fn compare(
    State(st): State<AppState>,
    ApiJson(body): ApiJson<CompareBody>,
) -> Result<Json<Value>, ApiError> {
    use crate::domain::bill::period;
    let tz = st.site.timezone;
    let r = &body.date_range;
    let (start, end) = period(
        ("date_range.start", "date_range.end"),
        &r.start,
        &r.end,
        tz,
        MAX_COMPARE_DAYS,
    )
    .map_err(|e| ApiError::bad_request("INVALID_DATE_RANGE", e.to_string()))?;
    let tariffs: Vec<(String, Compiled)> =
        crate::tariff::compare::named(&body.tariffs, "tariffs", tz)
            .map_err(invalid)?
            .into_iter()
            .map(|n| {
                Ok((
                    n.name,
                    Compiled::new(&n.tariff, tz).map_err(|e| invalid(e.to_string()))?,
                ))
            })
            .collect::<Result<_, ApiError>>()?;
    let currency = tariffs[0].1.source.currency.clone();
    if tariffs.iter().any(|(_, c)| c.source.currency != currency) {
        return Err(invalid(
            "tariffs: every tariff of a comparison uses one currency",
        ));
    }
    let wanted: Vec<String> = match &body.devices {
        None => vec!["all".into()],
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if a.len() <= 100 => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect(),
        Some(_) => {
            return Err(invalid(
                "devices: \"all\" or a list of up to 100 device ids, IPs or room: names",
            ));
        }
    };
    let store = st.store.clone();
    let decimals = tariffs[0].1.decimals;
    let results = blocking(move || -> Result<Vec<Value>, ApiError> {
        let records = store.device_records()?;
        let chosen = crate::store::select::select(&wanted, &records)
            .map_err(|e| ApiError::bad_request(e.code, e.message))?;
        let ids: Vec<_> = chosen.iter().map(|r| r.info.device_id.clone()).collect();
        let mut out = Vec::new();
        for (name, c) in &tariffs {
            let p = crate::tariff::compare::price_under(&store, c, &ids, start, end, tz)?;
            let money = |m: i64| crate::tariff::engine::minor_value(m, p.decimals);
            let mut per_device: Vec<Value> = chosen
                .iter()
                .zip(&p.per_device)
                .map(|(r, m)| json!({"device_id": r.info.device_id, "device_name": r.name(), "cost": money(*m)}))
                .collect();
            per_device.push(json!({"device_id": null, "device_name": "fixed charges", "cost": money(p.per_device[ids.len()])}));
            let per_month: Vec<Value> = p
                .per_month
                .iter()
                .map(|(t, m)| {
                    use chrono::TimeZone;
                    let d = tz.timestamp_millis_opt(*t).unwrap().date_naive();
                    json!({"month": d.format("%Y-%m").to_string(), "cost": money(*m)})
                })
                .collect();
            let by_band: Vec<Value> = p
                .by_band
                .iter()
                .map(|(b, mwh, m)| json!({"band": b, "kwh": *mwh as f64 / 1e6, "cost": money(*m)}))
                .collect();
            out.push(json!({"name": name, "total": money(p.total), "energy_cost": money(p.energy_cost), "by_band": by_band,
                "fixed_charges": money(p.fixed_charges), "taxes": money(p.taxes),
                "per_device": per_device, "per_month": per_month, "minor_total": p.total}));
        }
        Ok(out)
    })
    .await??;
    let first = results[0]["minor_total"].as_i64().unwrap_or(0);
    let cheapest = (0..results.len())
        .min_by_key(|i| results[*i]["minor_total"].as_i64().unwrap_or(i64::MAX))
        .unwrap_or(0);
    let results: Vec<Value> = results
        .into_iter()
        .map(|mut r| {
            let m = r["minor_total"].as_i64().unwrap_or(0);
            r["savings"] = json!(crate::tariff::engine::minor_value(first - m, decimals));
            r.as_object_mut().map(|o| o.remove("minor_total"));
            r
        })
        .collect();
    Ok(Json(json!({"currency": currency,
        "date_range": {"start": crate::clock::rfc3339(start), "end": crate::clock::rfc3339(end)},
        "results": results, "cheapest": {"index": cheapest, "name": results[cheapest]["name"]}})))
}
