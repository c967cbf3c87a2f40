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
