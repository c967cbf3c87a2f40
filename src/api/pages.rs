//! Built-in web pages, embedded in the binary (no CDN, nothing fetched at run time).
//!
//! Owns: the page shell at `/` and the static assets under `/static/` (plain ES modules and
//! one stylesheet from `web/`, no build step). Everything the pages show comes from the JSON
//! API with the user's token; the CSP (`default-src 'self'`) allows nothing else.

use super::error::ApiError;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};

/// The embedded assets: file name, content type, content.
const ASSETS: &[(&str, &str, &str)] = &[
    ("style.css", CSS, include_str!("../../web/style.css")),
    ("app.js", JS, include_str!("../../web/app.js")),
    ("api.js", JS, include_str!("../../web/api.js")),
    ("ui.js", JS, include_str!("../../web/ui.js")),
    ("chart.js", JS, include_str!("../../web/chart.js")),
    ("devices.js", JS, include_str!("../../web/devices.js")),
    ("detail.js", JS, include_str!("../../web/detail.js")),
    ("insights.js", JS, include_str!("../../web/insights.js")),
    ("alerts.js", JS, include_str!("../../web/alerts.js")),
    ("export.js", JS, include_str!("../../web/export.js")),
    ("history.js", JS, include_str!("../../web/history.js")),
    ("schedules.js", JS, include_str!("../../web/schedules.js")),
    ("admin.js", JS, include_str!("../../web/admin.js")),
    (
        "icon.svg",
        "image/svg+xml",
        include_str!("../../web/icon.svg"),
    ),
];
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// `GET /`: the page shell; the script draws the login form or the pages.
pub async fn index() -> Html<&'static str> {
    Html(include_str!("../../web/index.html"))
}

/// `GET /static/{file}`: one embedded asset. They change only with the binary, so browsers
/// revalidate (`no-cache`) but never fetch a stale one after an upgrade.
pub async fn asset(super::error::ApiPath(file): super::error::ApiPath<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, mime, body)) => (
            [
                (header::CONTENT_TYPE, *mime),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *body,
        )
            .into_response(),
        None => ApiError::not_found_what("NOT_FOUND", "Not found", format!("No asset {file:?}"))
            .into_response(),
    }
}
