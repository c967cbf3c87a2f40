//! Price series of dynamic tariffs (SYSTEM_CONFIG): `PUT /api/tariffs/prices/{series}?layout=`
//! stores an upload (CSV, JSON, or an aWATTar or Octopus Agile answer), `POST …/fetch` fetches
//! one from an allowed URL, `GET …` lists a range with its gaps. Each store is audited as
//! `TARIFF_CHANGED`.

use super::AppState;
use super::devices::blocking;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiText};
use super::guard::CurrentUser;
use crate::audit::{EventType, Severity};
use crate::clock::rfc3339;
use crate::store::audit::Pending;
use crate::store::prices::PricePoint;
use crate::tariff::prices::{Layout, fetch, parse};
use axum::extract::State;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

fn series_ok(name: &str) -> Result<(), ApiError> {
    if crate::domain::tariff::series_name_ok(name) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "VALIDATION_ERROR",
            "series: 1 to 64 letters, digits, '-' or '_'",
        ))
    }
}

fn layout_of(s: Option<&str>) -> Result<Layout, ApiError> {
    Layout::parse(s.unwrap_or("csv")).ok_or_else(|| {
        ApiError::bad_request("VALIDATION_ERROR", "layout: csv, json, awattar or octopus")
    })
}

/// Stores `points` in `series`, audited; what was stored.
async fn store(
    st: &AppState,
    cu: &CurrentUser,
    series: String,
    points: Vec<PricePoint>,
    how: &str,
) -> Result<Value, ApiError> {
    let (store, key, now) = (
        st.store.clone(),
        st.auth.audit_key.clone(),
        st.clock.now_ms(),
    );
    let (from, to) = (points[0].start_ms, points[points.len() - 1].end_ms);
    let mut ev = cu.event(EventType::TariffChanged, Severity::Info);
    ev.resource = Some(format!("prices:{series}"));
    ev.details = json!({"series": series, "intervals": points.len(), "from": rfc3339(from), "to": rfc3339(to), "source": how});
    let n = points.len();
    let s = series.clone();
    blocking(move || store.prices_put(&s, &points, Pending::new(&key, ev, now))).await??;
    Ok(json!({"series": series, "stored": n, "from": rfc3339(from), "to": rfc3339(to)}))
}

/// `?layout=` of an upload.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    layout: Option<String>,
}

/// `PUT /api/tariffs/prices/{series}?layout=csv|json|awattar|octopus`.
pub async fn upload(
    State(st): State<AppState>,
    Extension(cu): Extension<CurrentUser>,
    ApiPath(series): ApiPath<String>,
    ApiQuery(q): ApiQuery<UploadQuery>,
    ApiText(body): ApiText,
) -> Result<Json<Value>, ApiError> {
    series_ok(&series)?;
    let layout = layout_of(q.layout.as_deref())?;
    let points = parse(layout, &body).map_err(|e| ApiError::bad_request("VALIDATION_ERROR", e))?;
    Ok(Json(store(&st, &cu, series, points, "upload").await?))
}

/// `POST /api/tariffs/prices/{series}/fetch` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchBody {
    url: String,
    layout: String,
}

/// `POST /api/tariffs/prices/{series}/fetch`: `{"url", "layout"}`, the URL under
/// `[delivery] webhook_allow`.
pub async fn fetch_now(
    State(st): State<AppState>,
    Extension(cu): Extension<CurrentUser>,
    ApiPath(series): ApiPath<String>,
    ApiJson(body): ApiJson<FetchBody>,
) -> Result<Json<Value>, ApiError> {
    series_ok(&series)?;
    let layout = layout_of(Some(&body.layout))?;
    let points = fetch(&body.url, layout, st.work.alerts.settings())
        .await
        .map_err(|e| ApiError::bad_request("INVALID_DELIVERY", e))?;
    Ok(Json(
        store(&st, &cu, series, points, &crate::notify::origin(&body.url)).await?,
    ))
}

/// `GET …?start=&end=` (RFC 3339 or dates).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeQuery {
    start: String,
    end: String,
}

/// `GET /api/tariffs/prices/{series}?start=&end=`: the intervals and the gaps between them.
pub async fn list(
    State(st): State<AppState>,
    ApiPath(series): ApiPath<String>,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> Result<Json<Value>, ApiError> {
    series_ok(&series)?;
    let tz = st.site.timezone;
    let (start, end) = crate::domain::bill::period(("start", "end"), &q.start, &q.end, tz, 400)
        .map_err(|e| ApiError::bad_request("INVALID_DATE_RANGE", e.to_string()))?;
    let (store, s) = (st.store.clone(), series.clone());
    let pts = blocking(move || store.price_points(&s, start, end)).await??;
    let mut gaps = Vec::new();
    let mut at = start;
    for p in &pts {
        if p.start_ms > at {
            gaps.push(json!({"start": rfc3339(at), "end": rfc3339(p.start_ms)}));
        }
        at = at.max(p.end_ms);
    }
    if at < end {
        gaps.push(json!({"start": rfc3339(at), "end": rfc3339(end)}));
    }
    let prices: Vec<Value> = pts
        .iter()
        .map(|p| json!({"start": rfc3339(p.start_ms), "end": rfc3339(p.end_ms), "price_per_kwh": p.micro as f64 / 1e6}))
        .collect();
    Ok(Json(
        json!({"series": series, "prices": prices, "gaps": gaps}),
    ))
}
