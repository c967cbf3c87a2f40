//! `GET /api/tariffs` (the versions and the one in force) and `PUT /api/tariffs` (a new
//! version from its `effective_from`; earlier versions never change). Both need SYSTEM_CONFIG;
//! a change is audited in the same transaction that stores it.

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
    let current = versions.0.partition_point(|c| c.from_ms <= now_ms).max(1);
    json!({"in_force": current, "versions": list})
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("VALIDATION_ERROR", message)
}

/// `GET /api/tariffs`.
pub async fn get(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let ex = st.exporter.clone();
    let versions = blocking(move || ex.tariffs())
        .await?
        .map_err(ApiError::internal)?;
    Ok(Json(view(&versions, st.clock.now_ms())))
}

/// `PUT /api/tariffs`: appends a version.
pub async fn put(
    State(st): State<AppState>,
    Extension(cu): Extension<CurrentUser>,
    ApiJson(body): ApiJson<Tariff>,
) -> Result<Json<Value>, ApiError> {
    let now = st.clock.now_ms();
    let tz = st.timezone;
    let new = Compiled::new(&body, tz).map_err(|e| invalid(e.to_string()))?;
    if body.effective_from.is_none() {
        return Err(invalid(
            "effective_from: say when the new prices start (YYYY-MM-DD or RFC 3339)",
        ));
    }
    // No retroactive prices: costs already shown for past days must not change.
    let today =
        crate::domain::rollup::period_start(now, crate::domain::rollup::Period::Day, new.tz);
    if new.from_ms < today {
        return Err(invalid(
            "effective_from: must be today or later (past costs never change)",
        ));
    }
    let ex = st.exporter.clone();
    let (store, key) = (st.store.clone(), st.auth.audit_key.clone());
    let mut ev = cu.event(EventType::TariffChanged, Severity::Warning);
    ev.resource = Some("tariffs".into());
    ev.details = json!({"effective_from": body.effective_from, "summary": new.describe()});
    let versions = blocking(move || -> Result<Versions, ApiError> {
        let old = ex.tariffs().map_err(ApiError::internal)?;
        if old.current().from_ms >= new.from_ms {
            return Err(invalid(format!(
                "effective_from: must be later than the newest version's ({})",
                crate::clock::rfc3339(old.current().from_ms.max(0))
            )));
        }
        if store.tariffs()?.is_empty() {
            // Keep the configured tariff as version 1 before the first change.
            store.tariffs_seed(&old.current().source)?;
        }
        store.tariff_append(&body, Some(Pending::new(&key, ev, now)))?;
        ex.tariffs().map_err(ApiError::internal)
    })
    .await??;
    Ok(Json(view(&versions, now)))
}
