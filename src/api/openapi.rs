//! `GET /api/openapi.json`: the OpenAPI 3.1 document, generated from the route table.

use super::guard::Access;
use super::routes;
use axum::Json;
use serde_json::{Map, Value, json};

fn error_ref(desc: &str) -> Value {
    json!({"description": desc, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

/// An error answer that says when to try again (`Retry-After`, seconds).
fn retry_ref(desc: &str) -> Value {
    let mut v = error_ref(desc);
    v["headers"] = json!({"Retry-After": {"description": "Seconds until a retry may succeed",
        "schema": {"type": "integer"}}});
    v
}

/// The answers a route has beyond the common ones: the limits of the hardening rules.
fn extra(method: &str, path: &str) -> Vec<(&'static str, Value)> {
    let throttled = || {
        retry_ref(
            "RATE_LIMIT_EXCEEDED: too many failed attempts from this address (5 per 15 minutes) or for this username (a delay of 2 s doubling up to 30 s)",
        )
    };
    match (method, path) {
        ("POST", "/auth/login") => vec![
            (
                "400",
                error_ref(
                    "VALIDATION_ERROR: malformed body, a username over 64 characters or a password over 1,024 bytes (counted against the address)",
                ),
            ),
            ("429", throttled()),
            (
                "503",
                retry_ref(
                    "SERVICE_BUSY: too many password checks are waiting ([auth] login_queue)",
                ),
            ),
        ],
        ("POST", "/auth/refresh") => vec![("429", throttled())],
        ("POST", "/users") | ("PATCH", "/users/{user_id}") | ("DELETE", "/users/{user_id}") => {
            vec![
                (
                    "403",
                    error_ref(
                        "PERMISSION_DENIED: USER_MANAGE is missing, or a privilege rule refuses the change (granting what you do not hold, changing an admin without being one, changing your own role or permissions)",
                    ),
                ),
                (
                    "503",
                    retry_ref("SERVICE_BUSY: too many password hashes are waiting"),
                ),
            ]
        }
        ("GET" | "POST", "/exports/preview") => vec![
            (
                "400",
                error_ref(
                    "VALIDATION_ERROR, also when COUNT(DISTINCT ...) exceeds [exports] distinct_budget (the field is named) or more than [exports] max_custom_fields are given",
                ),
            ),
            (
                "429",
                retry_ref("RATE_LIMIT_EXCEEDED: [exports] preview_rate_per_minute per user"),
            ),
        ],
        ("POST", "/exports/create") => vec![
            (
                "429",
                retry_ref("RATE_LIMIT_EXCEEDED: [exports] rate_limit_per_hour per user"),
            ),
            (
                "507",
                error_ref("EXPORT_QUOTA_EXCEEDED or INSUFFICIENT_STORAGE"),
            ),
        ],
        ("POST", "/exports/schedule") | ("PUT", "/exports/schedules/{schedule_id}") => vec![
            (
                "400",
                error_ref(
                    "INVALID_SCHEDULE (also: runs more often than [schedules] min_interval), SCHEDULE_LIMIT_EXCEEDED ([schedules] max_per_user), INVALID_DELIVERY",
                ),
            ),
            (
                "403",
                error_ref(
                    "PERMISSION_DENIED: DATA_EXPORT is missing, or delivery.require_mount: false without SYSTEM_CONFIG",
                ),
            ),
        ],
        ("POST", "/exports/schedules/{schedule_id}/run") => vec![
            (
                "429",
                retry_ref(
                    "RATE_LIMIT_EXCEEDED: [exports] rate_limit_per_hour or [schedules] max_runs_per_hour",
                ),
            ),
            (
                "507",
                error_ref(
                    "EXPORT_QUOTA_EXCEEDED: the quota, or the owner's share of it ([schedules] quota_share_percent)",
                ),
            ),
        ],
        _ => vec![],
    }
}

/// The document as JSON.
pub fn build() -> Value {
    let mut paths = Map::new();
    for (d, _) in routes() {
        let mut op = Map::new();
        op.insert("summary".into(), json!(d.summary));
        let mut responses = Map::new();
        responses.insert("200".into(), json!({"description": "Success"}));
        responses.insert("400".into(), error_ref("Invalid request"));
        match d.access {
            Access::Open => {
                op.insert("security".into(), json!([]));
            }
            Access::Authenticated => {
                responses.insert("401".into(), error_ref("Missing or invalid bearer token"));
            }
            Access::Requires(p) | Access::Ticket(p) => {
                if matches!(d.access, Access::Ticket(_)) {
                    op.insert(
                        "x-download-ticket".into(),
                        json!("or ?ticket= from the export's download_link"),
                    );
                }
                op.insert("x-required-permission".into(), json!(p.name()));
                responses.insert("401".into(), error_ref("Missing or invalid bearer token"));
                responses.insert("403".into(), error_ref(&format!("Requires {}", p.name())));
            }
        }
        let params: Vec<Value> = d
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if !params.is_empty() {
            op.insert("parameters".into(), Value::Array(params));
        }
        for (code, v) in extra(d.method.as_str(), d.path) {
            responses.insert(code.into(), v);
        }
        op.insert("responses".into(), Value::Object(responses));
        let entry = paths
            .entry(format!("/api{}", d.path))
            .or_insert_with(|| Value::Object(Map::new()));
        entry[d.method.as_str().to_lowercase()] = Value::Object(op);
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "kasad", "version": env!("CARGO_PKG_VERSION")},
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": {"Error": {"type": "object", "required": ["detail", "error_code", "message"],
                "properties": {"detail": {"type": "string"}, "error_code": {"type": "string"}, "message": {"type": "string"}}}},
        },
        "paths": paths,
    })
}

/// Handler.
pub async fn document() -> Json<Value> {
    Json(build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_shows_the_limits_answers() {
        let doc = build();
        let login = &doc["paths"]["/api/auth/login"]["post"]["responses"];
        for code in ["400", "429", "503"] {
            assert!(login[code].is_object(), "login lacks {code}: {login}");
        }
        assert!(login["429"]["headers"]["Retry-After"].is_object());
        let patch = &doc["paths"]["/api/users/{user_id}"]["patch"]["responses"];
        assert!(
            patch["403"]["description"]
                .as_str()
                .unwrap()
                .contains("own role")
        );
        let preview = &doc["paths"]["/api/exports/preview"]["get"]["responses"];
        assert!(
            preview["429"].is_object() && preview["400"].to_string().contains("distinct_budget")
        );
        let sched = &doc["paths"]["/api/exports/schedule"]["post"]["responses"];
        assert!(sched["400"].to_string().contains("SCHEDULE_LIMIT_EXCEEDED"));
        assert!(sched["403"].to_string().contains("require_mount"));
    }
}
