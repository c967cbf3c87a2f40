//! Utility bills (`/api/bills`, SYSTEM_CONFIG): recorded, edited and deleted, each change
//! audited as `BILL_CHANGED` with the old and new bill; every answer carries the bill
//! reconciled with what the plugs measured ([`crate::bills`]).

use super::AppState;
use super::devices::blocking;
use super::error::{ApiError, ApiJson, ApiPath};
use super::guard::CurrentUser;
use crate::audit::{EventType, Severity};
use crate::clock::rfc3339;
use crate::domain::bill::{Bill, BillBody};
use crate::store::audit::Pending;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{Value, json};

/// Most bills kept.
pub const MAX_BILLS: usize = 1_000;

fn not_found(id: &str) -> ApiError {
    ApiError::not_found_what(
        "BILL_NOT_FOUND",
        "Bill not found",
        format!("No bill {id:?}"),
    )
}

fn r(x: f64, d: i32) -> f64 {
    let m = 10f64.powi(d);
    (x * m).round() / m
}

/// The bill with its reconciliation.
async fn view(st: &AppState, b: Bill) -> Result<Value, ApiError> {
    let (store, ex) = (st.store.clone(), st.work.exporter.clone());
    let bill = b.clone();
    let (rec, currency) = blocking(move || -> Result<_, ApiError> {
        let tariffs = ex.tariffs().map_err(ApiError::internal)?;
        let currency = tariffs.at(bill.start_ms).source.currency.clone();
        Ok((crate::bills::reconcile(&store, &tariffs, &bill)?, currency))
    })
    .await??;
    let mut v = json!(b.body);
    v["bill_id"] = json!(b.bill_id);
    v["period_start"] = json!(rfc3339(b.start_ms));
    v["period_end"] = json!(rfc3339(b.end_ms));
    v["currency"] = json!(currency);
    v["measured_kwh"] = json!(r(rec.measured_kwh, 3));
    v["coverage"] = json!(r(rec.coverage, 4));
    v["untracked_kwh"] = json!(r(rec.untracked_kwh, 3));
    v["untracked_negative"] = json!(rec.untracked_kwh < 0.0);
    v["effective_price"] = json!(r(rec.effective_price, 6));
    v["priced_energy_cost"] = json!(r(rec.priced_energy_cost, 2));
    v["difference"] = json!(r(rec.difference, 2));
    v["created_at"] = json!(rfc3339(b.created_ms));
    v["updated_at"] = json!(rfc3339(b.updated_ms));
    Ok(v)
}

fn checked(st: &AppState, body: &BillBody) -> Result<(i64, i64), ApiError> {
    body.check(st.site.timezone)
        .map_err(|e| ApiError::bad_request("VALIDATION_ERROR", e.to_string()))
}

async fn save(
    st: &AppState,
    cu: &CurrentUser,
    old: Option<&Bill>,
    new: &Bill,
) -> Result<(), ApiError> {
    let (store, key, now) = (
        st.store.clone(),
        st.auth.audit_key.clone(),
        st.clock.now_ms(),
    );
    let mut ev = cu.event(EventType::BillChanged, Severity::Info);
    ev.resource = Some(format!("bill:{}", new.bill_id));
    ev.details = json!({"bill_id": new.bill_id, "old": old.map(|b| &b.body), "new": new.body});
    let b = new.clone();
    blocking(move || store.bill_put(&b, Pending::new(&key, ev, now))).await??;
    Ok(())
}

/// `GET /api/bills`: newest period first.
pub async fn list(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let store = st.store.clone();
    let mut bills = blocking(move || store.bills()).await??;
    bills.sort_by_key(|b| std::cmp::Reverse(b.start_ms));
    let mut out = Vec::new();
    for b in bills {
        out.push(view(&st, b).await?);
    }
    Ok(Json(json!({"bills": out})))
}

/// `GET /api/bills/{bill_id}`.
pub async fn get(
    State(st): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let b = st.store.bill(&id)?.ok_or_else(|| not_found(&id))?;
    Ok(Json(view(&st, b).await?))
}

/// `POST /api/bills` → 201.
pub async fn create(
    State(st): State<AppState>,
    Extension(cu): Extension<CurrentUser>,
    ApiJson(body): ApiJson<BillBody>,
) -> Result<Response, ApiError> {
    let (start_ms, end_ms) = checked(&st, &body)?;
    if st.store.bills()?.len() >= MAX_BILLS {
        return Err(ApiError::bad_request(
            "LIMIT_EXCEEDED",
            format!("at most {MAX_BILLS} bills"),
        ));
    }
    let now = st.clock.now_ms();
    let bill = Bill {
        bill_id: format!("bill_{}", crate::random::random_token::<9>()),
        body,
        start_ms,
        end_ms,
        created_ms: now,
        updated_ms: now,
    };
    save(&st, &cu, None, &bill).await?;
    Ok((StatusCode::CREATED, Json(view(&st, bill).await?)).into_response())
}

/// `PUT /api/bills/{bill_id}`: the whole bill again.
pub async fn put(
    State(st): State<AppState>,
    Extension(cu): Extension<CurrentUser>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<BillBody>,
) -> Result<Json<Value>, ApiError> {
    let old = st.store.bill(&id)?.ok_or_else(|| not_found(&id))?;
    let (start_ms, end_ms) = checked(&st, &body)?;
    let new = Bill {
        body,
        start_ms,
        end_ms,
        updated_ms: st.clock.now_ms(),
        ..old.clone()
    };
    save(&st, &cu, Some(&old), &new).await?;
    Ok(Json(view(&st, new).await?))
}

/// `DELETE /api/bills/{bill_id}` → 204.
pub async fn delete(
    State(st): State<AppState>,
    Extension(cu): Extension<CurrentUser>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let old = st.store.bill(&id)?.ok_or_else(|| not_found(&id))?;
    let (store, key, now) = (
        st.store.clone(),
        st.auth.audit_key.clone(),
        st.clock.now_ms(),
    );
    let mut ev = cu.event(EventType::BillChanged, Severity::Info);
    ev.resource = Some(format!("bill:{id}"));
    ev.details = json!({"bill_id": id, "old": old.body, "new": null});
    blocking(move || store.bill_delete(&id, Pending::new(&key, ev, now))).await??;
    Ok(StatusCode::NO_CONTENT)
}
