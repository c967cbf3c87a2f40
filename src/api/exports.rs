//! `/api/exports/...`: the Data Export System endpoints of the spec — formats, devices,
//! metrics, create, status, download (ranges, digest, tickets), history, delete, preview and
//! stats — with ownership checks, the rolling rate limit and audit events.

use super::AppState;
use super::devices::blocking;
use super::error::{ApiError, ApiJson, ApiQuery};
use super::guard::{CurrentUser, issue_ticket};
use crate::audit::{Event, EventType, Severity};
use crate::auth::Role;
use crate::clock::rfc3339;
use crate::export::fields::{PROVENANCE_FIELDS, TEXT_FIELDS, VALUE_FIELDS};
use crate::export::jobs::{CreateError, PREVIEW_NICE, in_background};
use crate::export::request::{CreateRequest, DateRange, Devices, OptionsBody};
use crate::export::{ExportRecord, FORMATS, Status};
use axum::Extension;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

fn not_found(id: &str) -> ApiError {
    ApiError::not_found_what(
        "EXPORT_NOT_FOUND",
        "Export not found",
        format!("Export with ID '{id}' does not exist or you don't have access"),
    )
}

pub(super) fn is_admin(cu: &CurrentUser) -> bool {
    cu.user.role == Role::Admin
}

/// Beyond DATA_EXPORT: audit_logs exports need AUDIT_READ, configuration exports (users,
/// settings) SYSTEM_CONFIG — to create them and, while they exist, to see or download them.
pub(super) fn type_permission(cu: &CurrentUser, export_type: &str) -> Result<(), ApiError> {
    let extra =
        crate::export::ExportType::parse(export_type).and_then(crate::export::extra_permission);
    match extra.filter(|p| !cu.user.has(*p)) {
        Some(p) => Err(ApiError::permission_denied(p)),
        None => Ok(()),
    }
}

/// The export `id` if it exists, is not deleted, and `cu` may see it (owner or admin, holding
/// the permission its type needs). Denials are audited.
async fn owned(st: &AppState, cu: &CurrentUser, id: &str) -> Result<ExportRecord, ApiError> {
    let store = st.store.clone();
    let key = id.to_owned();
    let rec = blocking(move || store.export(&key))
        .await??
        .filter(|r| r.deleted_ms.is_none())
        .ok_or_else(|| not_found(id))?;
    if rec.user_id != cu.user.id && !is_admin(cu) {
        let mut ev = cu.event(EventType::PermissionDenied, Severity::Warning);
        ev.resource = Some(format!("export:{id}"));
        ev.details =
            json!({"user_id": cu.user.id, "attempted_export": id, "export_owner": rec.username});
        st.audit(ev).await;
        return Err(
            ApiError::access_denied("You don't have access to this export")
                .with("export_owner", rec.username),
        );
    }
    type_permission(cu, rec.export_type.name())?;
    Ok(rec)
}

fn human_size(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{:.1} KB", b / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1} MB", b / 1_048_576.0),
        _ => format!("{:.1} GB", b / 1_073_741_824.0),
    }
}

/// The status body of an export (spec field names, plus the documented extras); the
/// `download_link` ticket is the viewer's.
fn status_json(st: &AppState, viewer: &CurrentUser, rec: &ExportRecord) -> Value {
    let now = st.clock.now_ms();
    let expired = rec.is_expired(now);
    let status = if expired { Status::Expired } else { rec.status };
    let running = st.work.exporter.progress(&rec.id);
    let progress = match status {
        Status::Completed => 100,
        Status::Processing => running.unwrap_or(rec.progress),
        _ => rec.progress,
    };
    let url = format!("/api/exports/download/{}", rec.id);
    let mut v = json!({
        "export_id": rec.id,
        "export_type": rec.export_type,
        "format": rec.format,
        "compression": rec.compression,
        "status": status,
        "progress": progress,
        "created_at": rfc3339(rec.created_ms),
        "started_at": rec.started_ms.map(rfc3339),
        "completed_at": rec.completed_ms.map(rfc3339),
        "estimated_completion": rec.estimated_ms.map(rfc3339),
        "file_name": rec.file_name,
        "file_size": rec.file_size,
        "record_count": rec.record_count,
        "checksum_sha256": rec.checksum_sha256,
        "download_url": url,
        "expires_at": rec.expires_ms.map(rfc3339),
        "retention_days": rec.retention_days,
        "compliance_hold": rec.compliance_hold,
        "user_id": rec.user_id,
        "username": rec.username,
        "error": rec.error,
        "summary": rec.summary,
    });
    if expired {
        v["expired_at"] = json!(rec.expires_ms.map(rfc3339));
    }
    if status == Status::Completed {
        let (ticket, exp) = issue_ticket(st, &rec.id, viewer, now);
        let base = st.site.public_url.clone().unwrap_or_default();
        v["download_link"] = json!(format!("{base}{url}?ticket={ticket}"));
        v["download_link_expires_at"] = json!(rfc3339(exp));
    }
    v
}

/// `GET /api/exports/formats`.
pub async fn formats() -> Json<Value> {
    let list: Vec<Value> = FORMATS
        .iter()
        .map(|f| json!({"id": f.id, "name": f.name, "description": f.description, "mime_type": f.mime_type, "extension": f.extension}))
        .collect();
    Json(json!({ "formats": list }))
}

/// `GET /api/exports/devices`.
pub async fn devices(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let rows = super::devices::device_rows(&st).await?;
    let out: Vec<Value> = rows
        .into_iter()
        .map(|d| {
            json!({
                "device_id": d["device_id"], "device_ip": d["device_ip"], "device_name": d["device_name"],
                "device_type": d["device_type"], "model": d["model"], "parent_id": d["parent_id"],
                "has_emeter": d["has_emeter"], "last_seen": d["last_seen"], "data_points": d["data_points"],
            })
        })
        .collect();
    Ok(Json(json!({ "devices": out })))
}

/// `GET /api/exports/metrics`.
pub async fn metrics() -> Json<Value> {
    let mut list: Vec<Value> = TEXT_FIELDS
        .iter()
        .map(|f| {
            let t = if f.name == "timestamp" {
                "datetime"
            } else {
                "string"
            };
            json!({"field": f.name, "name": f.title, "description": f.description, "data_type": t, "unit": null})
        })
        .collect();
    list.extend(VALUE_FIELDS.iter().map(|f| {
        let t = if f.name == "is_on" {
            "boolean"
        } else {
            "float"
        };
        json!({"field": f.name, "name": f.title, "description": f.description, "data_type": t,
               "unit": if f.unit.is_empty() { None } else { Some(f.unit) },
               "default_aggregation": f.default_agg.name()})
    }));
    // Opt-in: named in `fields`, never among the default columns.
    list.extend(PROVENANCE_FIELDS.iter().map(|f| {
        let t = if f.name == "quality" {
            "string"
        } else {
            "float"
        };
        json!({"field": f.name, "name": f.title, "description": f.description, "data_type": t,
               "unit": null, "default": false})
    }));
    Json(json!({
        "metrics": list,
        "formula_variables": crate::export::fields::FORMULA_VARS,
    }))
}

/// The 429 of the export rate limit, with `Retry-After`.
pub(super) fn rate_limited(st: &AppState, retry_at_ms: i64, limit: u32) -> Response {
    ApiError::rate_limited(
        "Export rate limit exceeded. Please try again later.",
        &format!("{limit} per hour"),
        retry_at_ms,
        st.clock.now_ms(),
    )
    .into_response()
}

/// `POST /api/exports/create`.
pub async fn create(
    State(st): State<AppState>,
    Extension(cu): Extension<CurrentUser>,
    ApiJson(body): ApiJson<CreateRequest>,
) -> Result<Response, ApiError> {
    type_permission(&cu, &body.export_type)?;
    let exporter = st.work.exporter.clone();
    let (uid, name) = (cu.user.id, cu.user.username.clone());
    let audit_body = json!({
        "export_type": body.export_type, "format": body.format, "devices": body.devices,
        "date_range": body.date_range, "aggregation": body.aggregation,
    });
    let res = blocking(move || exporter.create(uid, &name, body, crate::export::jobs::Origin::Api))
        .await?;
    let (rec, background) = match res {
        Ok(x) => x,
        Err(CreateError::RateLimited {
            retry_at_ms,
            count,
            limit,
        }) => {
            let mut ev = cu.event(EventType::RateLimitExceeded, Severity::Warning);
            ev.resource = Some("POST /api/exports/create".into());
            ev.details = json!({"user_id": cu.user.id, "export_count": count, "limit": limit});
            st.audit(ev).await;
            return Ok(rate_limited(&st, retry_at_ms, limit));
        }
        Err(e) => return Err(e.into()),
    };
    let mut details = audit_body;
    details["user"] = json!(cu.user.username);
    st.audit(cu.did(Event::about_export(EventType::DataExport, &rec.id, details)))
        .await;
    let job = st.work.exporter.spawn(rec.id.clone());
    let rec = if background {
        rec
    } else {
        let _ = job.await;
        let store = st.store.clone();
        let id = rec.id.clone();
        blocking(move || store.export(&id)).await??.unwrap_or(rec)
    };
    Ok(Json(status_json(&st, &cu, &rec)).into_response())
}

/// `GET /api/exports/{export_id}`.
pub async fn status(
    State(st): State<AppState>,
    Extension(cu): Extension<CurrentUser>,
    super::error::ApiPath(id): super::error::ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let rec = owned(&st, &cu, &id).await?;
    Ok(Json(status_json(&st, &cu, &rec)))
}

/// `DELETE /api/exports/{export_id}`: deletes the file, or cancels a queued/running job.
pub async fn remove(
    State(st): State<AppState>,
    Extension(cu): Extension<CurrentUser>,
    super::error::ApiPath(id): super::error::ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    owned(&st, &cu, &id).await?;
    let exporter = st.work.exporter.clone();
    let key = id.clone();
    let rec = blocking(move || exporter.delete(&key))
        .await?
        .map_err(|e| match e {
            crate::store::Error::ComplianceHold => ApiError::compliance_hold(
                "This export is under a compliance hold and cannot be deleted",
            ),
            other => other.into(),
        })?
        .ok_or_else(|| not_found(&id))?;
    let details = json!({"filename": rec.file_name, "user": cu.user.username,
        "cancelled": rec.status == Status::Cancelled});
    st.audit(cu.did(Event::about_export(EventType::DataDeleted, &id, details)))
        .await;
    Ok(Json(json!({
        "message": "Export deleted successfully",
        "export_id": id,
        "deleted_at": rec.deleted_ms.map(rfc3339),
    })))
}

/// `?limit&offset` of the history.
#[derive(Debug, Deserialize)]
pub struct Page {
    limit: Option<usize>,
    offset: Option<usize>,
}

fn visible(cu: &CurrentUser, r: &ExportRecord) -> bool {
    is_admin(cu) || r.user_id == cu.user.id
}

/// `GET /api/exports/history?limit&offset`: newest first, deleted ones left out.
pub async fn history(
    State(st): State<AppState>,
    Extension(cu): Extension<CurrentUser>,
    ApiQuery(q): ApiQuery<Page>,
) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(10);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::bad_request(
            "INVALID_QUERY",
            "limit must be between 1 and 100",
        ));
    }
    let offset = q.offset.unwrap_or(0);
    let store = st.store.clone();
    let mut all: Vec<ExportRecord> = blocking(move || store.exports())
        .await??
        .into_iter()
        .filter(|r| r.deleted_ms.is_none() && visible(&cu, r))
        .collect();
    all.reverse();
    let total = all.len();
    let now = st.clock.now_ms();
    let page: Vec<Value> = all
        .iter()
        .skip(offset)
        .take(limit)
        .map(|r| {
            let status = if r.is_expired(now) {
                Status::Expired
            } else {
                r.status
            };
            json!({
                "export_id": r.id, "export_type": r.export_type, "format": r.format,
                "status": status, "created_at": rfc3339(r.created_ms),
                "completed_at": r.completed_ms.map(rfc3339),
                "file_name": r.file_name, "file_size": r.file_size, "record_count": r.record_count,
                "user_id": r.user_id, "username": r.username, "retention_days": r.retention_days,
                "expires_at": r.expires_ms.map(rfc3339),
                "download_url": format!("/api/exports/download/{}", r.id),
            })
        })
        .collect();
    Ok(Json(json!({
        "exports": page, "total": total, "page": offset / limit + 1, "per_page": limit,
        "limit": limit, "offset": offset,
    })))
}

/// `GET /api/exports/stats` (scoped like the history; deleted exports still count).
pub async fn stats(
    State(st): State<AppState>,
    Extension(cu): Extension<CurrentUser>,
) -> Result<Json<Value>, ApiError> {
    let store = st.store.clone();
    let all: Vec<ExportRecord> = blocking(move || store.exports())
        .await??
        .into_iter()
        .filter(|r| visible(&cu, r))
        .collect();
    let month_start = crate::domain::rollup::period_start(
        st.clock.now_ms(),
        crate::domain::rollup::Period::Month,
        st.site.timezone,
    );
    let mut types: BTreeMap<String, u64> = crate::export::ExportType::ALL
        .iter()
        .map(|t| (t.name().to_owned(), 0))
        .collect();
    let mut formats: BTreeMap<String, u64> = FORMATS.iter().map(|f| (f.id.to_owned(), 0)).collect();
    let mut bytes = 0;
    for r in &all {
        *types.entry(r.export_type.name().to_owned()).or_default() += 1;
        *formats.entry(r.format.info().id.to_owned()).or_default() += 1;
        if r.status == Status::Completed || r.status == Status::Expired {
            bytes += r.file_size.unwrap_or(0);
        }
    }
    let popular = formats
        .iter()
        .filter(|(_, n)| **n > 0)
        .max_by_key(|(_, n)| **n)
        .map(|(f, _)| f.clone());
    Ok(Json(json!({
        "total_exports": all.len(),
        "exports_this_month": all.iter().filter(|r| r.created_ms >= month_start).count(),
        "total_data_exported": human_size(bytes),
        "total_data_exported_bytes": bytes,
        "most_popular_format": popular,
        "export_types": types,
        "formats": formats,
    })))
}

/// Query of `GET /api/exports/preview`.
#[derive(Debug, Deserialize)]
pub struct PreviewQuery {
    export_type: Option<String>,
    devices: Option<String>,
    start: Option<String>,
    end: Option<String>,
    fields: Option<String>,
    aggregation: Option<String>,
    timezone: Option<String>,
    limit: Option<usize>,
}

fn split(s: Option<String>) -> Option<Vec<String>> {
    s.map(|s| {
        s.split(',')
            .map(|x| x.trim().to_owned())
            .filter(|x| !x.is_empty())
            .collect()
    })
}

/// `GET /api/exports/preview?export_type&devices&start&end&fields&aggregation&timezone&limit`.
pub async fn preview_get(
    State(st): State<AppState>,
    Extension(cu): Extension<CurrentUser>,
    ApiQuery(q): ApiQuery<PreviewQuery>,
) -> Result<Json<Value>, ApiError> {
    let body = CreateRequest {
        export_type: q.export_type.unwrap_or_else(|| "device_data".into()),
        format: "csv".into(),
        devices: split(q.devices).map(Devices::List),
        date_range: (q.start.is_some() || q.end.is_some()).then_some(DateRange {
            start: q.start,
            end: q.end,
        }),
        fields: split(q.fields),
        aggregation: q.aggregation,
        options: q.timezone.map(|t| OptionsBody {
            timezone: Some(t),
            ..OptionsBody::default()
        }),
        ..CreateRequest::default()
    };
    preview(st, &cu, body, q.limit).await
}

/// `POST /api/exports/preview` with a create body (`?limit=`, default 5).
pub async fn preview_post(
    State(st): State<AppState>,
    Extension(cu): Extension<CurrentUser>,
    ApiQuery(q): ApiQuery<PreviewLimit>,
    ApiJson(body): ApiJson<CreateRequest>,
) -> Result<Json<Value>, ApiError> {
    preview(st, &cu, body, q.limit).await
}

/// `?limit=` of the POST preview.
#[derive(Debug, Deserialize)]
pub struct PreviewLimit {
    limit: Option<usize>,
}

async fn preview(
    st: AppState,
    cu: &CurrentUser,
    mut body: CreateRequest,
    limit: Option<usize>,
) -> Result<Json<Value>, ApiError> {
    let per_minute = st
        .work
        .exporter
        .config()
        .settings
        .exports
        .preview_rate_per_minute;
    let now = st.clock.now_ms();
    if let Err(l) = st.auth.previews.hit(cu.user.id, now, per_minute, 60_000) {
        if l.first {
            let mut ev = cu.event(EventType::RateLimitExceeded, Severity::Warning);
            ev.resource = Some("/api/exports/preview".into());
            ev.details = json!({"limit": format!("{per_minute} previews per minute"),
                "note": "further refusals until the next allowed preview are not logged"});
            st.audit(ev).await;
        }
        return Err(ApiError::rate_limited(
            "Preview rate limit exceeded. Please try again shortly.",
            &format!("{per_minute} per minute"),
            l.retry_at_ms,
            now,
        ));
    }
    let limit = limit.unwrap_or(5);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::bad_request(
            "INVALID_QUERY",
            "limit must be between 1 and 100",
        ));
    }
    if body.export_type != "device_data" {
        return Err(ApiError::bad_request(
            "VALIDATION_ERROR",
            "previews show device_data; create the export to see other types",
        ));
    }
    if crate::export::Format::parse(&body.format).is_none() {
        body.format = "csv".into();
    }
    // A preview reads every row of the request: it waits for a preview slot (as many as
    // export slots, apart from them, so it never queues behind running exports), stops
    // counting at max_records_per_export, and stops when the client goes away.
    let _slot = st.work.exporter.preview_slot().await;
    let cancel = CancelOnDrop::default();
    let ctl = cancel.0.clone();
    let exporter = st.work.exporter.clone();
    let s = &exporter.config().settings.exports;
    let limits = crate::export::pipeline::Limits {
        max_records: s.max_records_per_export,
        max_bytes: u64::MAX,
        distinct_budget: s.distinct_budget,
    };
    let preview = move || {
        let limit = limit.min(usize::try_from(limits.max_records).unwrap_or(usize::MAX));
        exporter.preview(&body, limit, limits, &ctl)
    };
    let out = in_background("kasad-preview", PREVIEW_NICE, preview)
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::from)?;
    Ok(Json(json!({
        "preview": out.rows,
        "total_records": out.total,
        "total_records_capped": out.capped,
        "estimated_file_size": human_size(out.csv_bytes),
        "estimated_file_size_bytes": out.csv_bytes,
        "summary": out.summary,
        "preview_note": format!("Showing first {} records", out.rows.len()),
    })))
}

/// Sets its flag when dropped (a handler future dropped because the client went away).
#[derive(Debug, Default)]
struct CancelOnDrop(std::sync::Arc<crate::export::pipeline::Control>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0
            .cancel
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// `GET /api/exports/download/{export_id}`: the file, streamed, with `Content-Disposition`,
/// `Content-Length`, `ETag`, `Repr-Digest` and single `Range` support
/// ([`crate::export::download`] decides which).
pub async fn download(
    State(st): State<AppState>,
    Extension(cu): Extension<CurrentUser>,
    super::error::ApiPath(id): super::error::ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    use crate::export::download::{Answer, Ask, answer, check};
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let rec = owned(&st, &cu, &id).await?;
    check(&rec, st.clock.now_ms())?;
    let path = st.work.exporter.path_of(&rec);
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| ApiError::internal(format!("export file {} missing: {e}", path.display())))?;
    let len = file.metadata().await.map_err(ApiError::internal)?.len();
    let text = |h: header::HeaderName| headers.get(h).and_then(|v| v.to_str().ok());
    let ask = Ask {
        if_none_match: text(header::IF_NONE_MATCH),
        // An If-Range that is not text matches no ETag: the whole file.
        if_range: headers
            .get(header::IF_RANGE)
            .map(|v| v.to_str().unwrap_or("\u{0}")),
        range: text(header::RANGE),
    };
    let (answer, list) = answer(&rec, len, ask);
    let mut h = HeaderMap::new();
    for (k, v) in list {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(header::HeaderName::from_static(k), v);
        }
    }
    let (status, start, count) = match answer {
        Answer::NotModified => return Ok((StatusCode::NOT_MODIFIED, h).into_response()),
        Answer::Unsatisfiable => {
            let mut resp = ApiError::range_not_satisfiable(len).into_response();
            resp.headers_mut().extend(h);
            return Ok(resp);
        }
        Answer::Whole => (StatusCode::OK, 0, len),
        Answer::Part { start, count } => (StatusCode::PARTIAL_CONTENT, start, count),
    };
    if start == 0 {
        let name = rec.file_name.clone().unwrap_or_else(|| rec.disk_name());
        let details = json!({"filename": name, "size": len, "format": rec.format,
            "user": cu.user.username, "range": status == StatusCode::PARTIAL_CONTENT});
        st.audit(cu.did(Event::about_export(EventType::DataExported, &id, details)))
            .await;
    }
    file.seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(ApiError::internal)?;
    let stream = tokio_util::io::ReaderStream::with_capacity(file.take(count), 64 * 1024);
    Ok((status, h, Body::from_stream(stream)).into_response())
}

/// `POST /api/exports/cleanup`: the retention sweep the cron schedule runs, now.
pub async fn cleanup(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let ex = st.work.exporter.clone();
    let (expired, notified) = blocking(move || ex.cleanup()).await??;
    let n = notified.len();
    // Notices of scheduled exports go out in the background (each may take a timeout).
    let sch = st.work.scheduler.clone();
    tokio::spawn(async move { sch.notify_expiring(notified).await });
    Ok(Json(json!({"expired": expired, "notified": n})))
}
