//! Signed statements: the public key that signs them, and the check of an uploaded one (the
//! same as `kasad statement verify`). Issuing is an export (`export_type: "statement"`).

use super::AppState;
use super::devices::blocking;
use super::error::{ApiError, ApiQuery};
use crate::auth::signing::StatementKey;
use crate::export::signed;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

/// Largest statement the check accepts.
pub const MAX_UPLOAD: usize = 32 * 1024 * 1024;

fn key_error(e: crate::auth::signing::KeyError) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "STATEMENT_KEY_UNAVAILABLE",
        "The statement key cannot be used",
        e.to_string(),
    )
}

/// `GET /api/statements/public-key`: the key that signs statements (made at first use).
pub async fn public_key(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    use base64::Engine;
    let dir = st.work.exporter.data_dir().to_path_buf();
    let key = blocking(move || StatementKey::load_or_create(&dir))
        .await?
        .map_err(key_error)?;
    Ok(Json(json!({
        "algorithm": "Ed25519",
        "public_key": base64::engine::general_purpose::STANDARD.encode(key.public_key()),
        "fingerprint": key.fingerprint(),
    })))
}

/// `POST /api/statements/verify` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyQuery {
    /// The fingerprint the signer must have.
    public_key: Option<String>,
}

/// `POST /api/statements/verify`: the body is a statement file (PDF, JSON or CSV). 200 with
/// the signer's fingerprint when untouched and signed by this appliance's key (or by the
/// `public_key` fingerprint asked for); 422 `STATEMENT_INVALID` naming the problem — a
/// statement re-signed by another key included.
pub async fn verify(
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<VerifyQuery>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                "Request body too large",
                format!("A statement to check is at most {} MiB", MAX_UPLOAD >> 20),
            )
        } else {
            ApiError::validation(e.body_text())
        }
    })?;
    let dir = st.work.exporter.data_dir().to_path_buf();
    let expected = match q.public_key {
        Some(fp) => fp,
        None => blocking(move || StatementKey::load_or_create(&dir))
            .await?
            .map_err(key_error)?
            .fingerprint(),
    };
    let checked = blocking(move || signed::verify(&body, Some(&expected))).await?;
    match checked {
        Ok(v) => Ok(Json(json!({
            "valid": true,
            "format": v.format,
            "fingerprint": v.fingerprint,
        }))),
        Err(e) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "STATEMENT_INVALID",
            "The statement does not verify",
            e.to_string(),
        )),
    }
}
