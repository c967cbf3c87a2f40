//! `/api/audit`: querying and verifying the audit log (AUDIT_READ).

use super::AppState;
use super::error::{ApiError, ApiQuery};
use crate::audit::{EventType, Severity};
use crate::store::audit::AuditFilter;
use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

/// Query string of `GET /api/audit` (lists are comma-separated).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    event_types: Option<String>,
    severity_levels: Option<String>,
    users: Option<String>,
    start: Option<String>,
    end: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
}

fn list_of<T>(
    field: &str,
    s: &Option<String>,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Vec<T>, ApiError> {
    s.iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|x| {
            parse(x).ok_or_else(|| ApiError::validation(format!("{field}: unknown value {x:?}")))
        })
        .collect()
}

fn time(field: &str, s: &Option<String>) -> Result<Option<i64>, ApiError> {
    s.as_deref()
        .map(|v| {
            chrono::DateTime::parse_from_rfc3339(v)
                .map(|t| t.timestamp_millis())
                .map_err(|_| {
                    ApiError::validation(format!("{field}: expected an RFC 3339 time, got {v:?}"))
                })
        })
        .transpose()
}

/// `GET /api/audit`.
pub async fn list(
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    let f = AuditFilter {
        event_types: list_of("event_types", &q.event_types, EventType::parse)?,
        severities: list_of("severity_levels", &q.severity_levels, Severity::parse)?,
        users: list_of("users", &q.users, |u| Some(u.to_owned()))?,
        start_ms: time("start", &q.start)?,
        end_ms: time("end", &q.end)?,
    };
    let limit = q.limit.unwrap_or(100).min(1000);
    let offset = q.offset.unwrap_or(0);
    let store = st.store.clone();
    let (entries, total) =
        tokio::task::spawn_blocking(move || store.audit_query(&f, limit, offset))
            .await
            .map_err(ApiError::internal)??;
    let rows: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!({"seq": e.seq, "timestamp": crate::clock::rfc3339(e.ts_ms), "event_type": e.event.event_type,
                "severity": e.event.severity, "user_id": e.event.user_id, "username": e.event.username,
                "client_address": e.event.client, "resource": e.event.resource, "details": e.event.details})
        })
        .collect();
    Ok(Json(
        json!({"entries": rows, "total": total, "limit": limit, "offset": offset}),
    ))
}

/// `GET /api/audit/verify`.
pub async fn verify(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let (store, s2) = (st.store.clone(), st.clone());
    let v = tokio::task::spawn_blocking(move || store.audit_verify(&s2.auth.audit_key))
        .await
        .map_err(ApiError::internal)??;
    Ok(Json(serde_json::to_value(v).map_err(ApiError::internal)?))
}
