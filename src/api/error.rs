//! The one HTTP error type: every failure renders as
//! `{"detail", "error_code", "message", ...extra}` with a fitting status code, including
//! unknown routes, wrong methods and malformed query strings. 5xx bodies are opaque; the cause
//! is logged once.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// An API error.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    detail: &'static str,
    message: String,
    extra: Map<String, Value>,
    retry_after_s: Option<i64>,
}

impl ApiError {
    /// A new error.
    pub fn new(
        status: StatusCode,
        code: &'static str,
        detail: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code,
            detail,
            message: message.into(),
            extra: Map::new(),
            retry_after_s: None,
        }
    }

    /// Sends `Retry-After: <seconds>` (at least 1).
    pub fn retry_after(mut self, seconds: i64) -> Self {
        self.retry_after_s = Some(seconds.max(1));
        self
    }

    /// The message shown to the client.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// 503: the server is busy (a full queue); try again after `retry_s` seconds.
    pub fn busy(message: impl Into<String>, retry_s: i64) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_BUSY",
            "Service busy",
            message,
        )
        .retry_after(retry_s)
    }

    /// Adds an extra field to the body.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.into(), value.into());
        self
    }

    /// 400 with a validation code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, "Invalid request", message)
    }

    /// 401 with `WWW-Authenticate: Bearer`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "Not authenticated",
            message,
        )
    }

    /// 403 naming the missing permission.
    pub fn permission_denied(p: crate::auth::Permission) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "Permission denied",
            format!("You don't have the {} permission this requires", p.name()),
        )
        .with("required_permission", p.name())
    }

    /// 409 with its code and detail.
    pub fn conflict(code: &'static str, detail: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, detail, message)
    }

    /// 403 for a record of someone else's.
    pub fn access_denied(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "ACCESS_DENIED",
            "Access denied",
            message,
        )
    }

    /// 409 while a compliance hold keeps records from being removed.
    pub fn compliance_hold(message: impl Into<String>) -> Self {
        Self::conflict("COMPLIANCE_HOLD", "Compliance hold", message)
    }

    /// 410 for what existed and is gone.
    pub fn gone(code: &'static str, detail: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::GONE, code, detail, message)
    }

    /// 400 for a range whose start is not before its end.
    pub fn invalid_date_range(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "INVALID_DATE_RANGE",
            "Invalid date range",
            message,
        )
    }

    /// 416 for a `Range` outside a file of `len` bytes.
    pub fn range_not_satisfiable(len: u64) -> Self {
        Self::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "RANGE_NOT_SATISFIABLE",
            "Range not satisfiable",
            format!("The file has {len} bytes"),
        )
    }

    /// 502 when a device did not do what it was asked.
    pub fn device_error(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_GATEWAY,
            "DEVICE_ERROR",
            "Device error",
            message,
        )
    }

    /// 403 with the reason a privilege rule refused the change.
    pub fn forbidden(reason: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "Permission denied",
            reason,
        )
    }

    /// 429 with the limit and when to retry (in the body as a time, in `Retry-After` as the
    /// seconds from `now_ms`).
    pub fn rate_limited(message: &str, limit: &str, retry_at_ms: i64, now_ms: i64) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMIT_EXCEEDED",
            "Rate limit exceeded",
            message,
        )
        .with("limit", limit)
        .with("retry_after", crate::clock::rfc3339(retry_at_ms))
        .retry_after((retry_at_ms - now_ms + 999).div_euclid(1000))
    }

    /// 400 naming the bad field.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "Validation error",
            message,
        )
    }

    /// 404 for a missing record of some kind.
    pub fn not_found_what(
        code: &'static str,
        detail: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, detail, message)
    }

    /// 404 for a missing device.
    pub fn device_not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "DEVICE_NOT_FOUND",
            "Device not found",
            format!("Device with ID '{id}' does not exist"),
        )
    }

    /// 500 with the cause logged, not shown.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            "Internal error",
            "The server could not complete the request; the cause has been logged",
        )
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = Map::new();
        body.insert("detail".into(), self.detail.into());
        body.insert("error_code".into(), self.code.into());
        body.insert("message".into(), self.message.into());
        body.extend(self.extra);
        let mut resp = (self.status, Json(Value::Object(body))).into_response();
        if let Some(s) = self.retry_after_s
            && let Ok(v) = axum::http::HeaderValue::from_str(&s.to_string())
        {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, v);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

impl From<crate::store::Error> for ApiError {
    fn from(e: crate::store::Error) -> Self {
        match e {
            crate::store::Error::UnknownDevice(id) => ApiError::device_not_found(&id),
            crate::store::Error::NotFound(what) => {
                ApiError::not_found_what("NOT_FOUND", "Not found", format!("No such {what}"))
            }
            crate::store::Error::Conflict(m) => ApiError::conflict("CONFLICT", "Conflict", m),
            crate::store::Error::Refused(m) => ApiError::forbidden(m),
            crate::store::Error::Invalid(m) => ApiError::validation(m),
            crate::store::Error::ComplianceHold => ApiError::compliance_hold(
                "A compliance hold is active; audit entries cannot be removed",
            ),
            e @ crate::store::Error::DiskFull { .. } => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "INSUFFICIENT_STORAGE",
                "Insufficient storage",
                e.to_string(),
            ),
            other => ApiError::internal(other),
        }
    }
}

impl From<crate::export::download::DownloadError> for ApiError {
    fn from(e: crate::export::download::DownloadError) -> Self {
        use crate::export::download::DownloadError;
        match &e {
            DownloadError::Expired { expired_at } => {
                let at = expired_at.clone();
                Self::gone("EXPORT_EXPIRED", "Export expired", e.to_string()).with("expired_at", at)
            }
            DownloadError::NotReady { status, .. } => {
                let status = status.clone();
                Self::conflict("EXPORT_NOT_READY", "Export not ready", e.to_string())
                    .with("status", status)
            }
        }
    }
}

impl From<crate::poller::discovery::DiscoveryError> for ApiError {
    fn from(e: crate::poller::discovery::DiscoveryError) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "DISCOVERY_UNAVAILABLE",
            "Discovery unavailable",
            e.to_string(),
        )
    }
}

impl From<crate::export::jobs::CreateError> for ApiError {
    fn from(e: crate::export::jobs::CreateError) -> Self {
        use crate::export::jobs::CreateError;
        match e {
            CreateError::Invalid(r) => {
                let status = if r.code == "DEVICE_NOT_FOUND" {
                    StatusCode::NOT_FOUND
                } else {
                    StatusCode::BAD_REQUEST
                };
                let detail = match r.code {
                    "INVALID_DATE_RANGE" => "Invalid date range",
                    "DEVICE_NOT_FOUND" => "Device not found",
                    _ => "Invalid request",
                };
                ApiError::new(status, r.code, detail, r.message)
            }
            CreateError::Quota(_) | CreateError::UserQuota(_) => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "EXPORT_QUOTA_EXCEEDED",
                "Insufficient storage",
                e.to_string(),
            ),
            CreateError::DiskFull { .. } => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "INSUFFICIENT_STORAGE",
                "Insufficient storage",
                e.to_string(),
            ),
            CreateError::Store(s) => s.into(),
            CreateError::Tariff(_) | CreateError::Record(_) => ApiError::internal(e),
            CreateError::RateLimited { .. } => ApiError::internal("rate limit mapped elsewhere"),
        }
    }
}

impl From<crate::schedule::Invalid> for ApiError {
    fn from(e: crate::schedule::Invalid) -> Self {
        ApiError::bad_request(e.code, e.message)
    }
}

impl From<crate::schedule::runner::RunError> for ApiError {
    fn from(e: crate::schedule::runner::RunError) -> Self {
        use crate::schedule::runner::RunError;
        match e {
            RunError::Busy => ApiError::conflict(
                "SCHEDULE_RUNNING",
                "Schedule running",
                "The previous run of this schedule is still going",
            ),
            RunError::Invalid(i) => i.into(),
            RunError::Create(c) => c.into(),
            RunError::Limit(m) => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMIT_EXCEEDED",
                "Rate limit exceeded",
                m,
            )
            .retry_after(60),
            RunError::Owner(m) => ApiError::conflict(
                "SCHEDULE_OWNER_INVALID",
                "Schedule owner invalid",
                format!("the schedule's owner {m}"),
            ),
            RunError::Store(s) => s.into(),
        }
    }
}

/// Answer for unknown routes.
pub async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "Not found",
        "No such endpoint",
    )
}

/// Answer for a known route with the wrong method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "Method not allowed",
        "This endpoint does not support that HTTP method",
    )
}

/// `Query` whose rejection is an [`ApiError`].
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| ApiQuery(q))
            .map_err(|e: QueryRejection| ApiError::bad_request("INVALID_QUERY", e.body_text()))
    }
}

/// `Path` whose rejection is an [`ApiError`]: 400 `INVALID_PATH` (an id that is not UTF-8 or not
/// of the parameter's type).
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(p)| ApiPath(p))
            .map_err(|e: PathRejection| ApiError::bad_request("INVALID_PATH", e.body_text()))
    }
}

/// `Json` whose rejection is an [`ApiError`]: 400 `VALIDATION_ERROR` naming the field for bad
/// JSON, wrong types or unknown values; 413 for bodies over the limit; 415 without a JSON
/// content type.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(JsonRejection::BytesRejection(e))
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "PAYLOAD_TOO_LARGE",
                    "Request body too large",
                    "The request body exceeds the size limit",
                ))
            }
            Err(JsonRejection::BytesRejection(e)) if timed_out(&e) => Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "REQUEST_TIMEOUT",
                "Request timeout",
                "The request body did not arrive in time",
            )),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                "Unsupported media type",
                "Send the body as JSON with Content-Type: application/json",
            )),
            Err(e) => Err(ApiError::validation(e.body_text())),
        }
    }
}

/// A text body (a price upload): 413 over the limit, 408 when it does not arrive in time, 400
/// when it is not UTF-8 — all in the API's error body.
#[derive(Debug)]
pub struct ApiText(pub String);

impl<S: Send + Sync> FromRequest<S> for ApiText {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = match axum::body::Bytes::from_request(req, state).await {
            Ok(b) => b,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "PAYLOAD_TOO_LARGE",
                    "Request body too large",
                    "The request body exceeds the size limit",
                ));
            }
            Err(e) if timed_out(&e) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "REQUEST_TIMEOUT",
                    "Request timeout",
                    "The request body did not arrive in time",
                ));
            }
            Err(e) => return Err(ApiError::validation(e.body_text())),
        };
        String::from_utf8(bytes.to_vec())
            .map(ApiText)
            .map_err(|_| ApiError::validation("The body is not UTF-8 text"))
    }
}

/// Whether a body read failed on the server's body timeout.
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.is::<super::server::BodyTimeout>() {
            return true;
        }
        cause = c.source();
    }
    false
}

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::OptionalFromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, Self::Rejection> {
        let has_body = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .is_some_and(|v| v != "0")
            || req
                .headers()
                .contains_key(axum::http::header::TRANSFER_ENCODING);
        if has_body {
            <Self as FromRequest<S>>::from_request(req, state)
                .await
                .map(Some)
        } else {
            Ok(None)
        }
    }
}
