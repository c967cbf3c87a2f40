//! `GET /api/openapi.json`: the OpenAPI 3.1 document, generated from the route table.

use super::guard::Access;
use super::routes;
use axum::Json;
use serde_json::{Map, Value, json};

fn error_ref(desc: &str) -> Value {
    json!({"description": desc, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
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
