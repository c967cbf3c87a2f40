//! Built-in web pages, embedded in the binary (no CDN, nothing fetched at run time).

use axum::http::header;
use axum::response::{Html, IntoResponse};

/// `GET /`: the live device overview (with a login form).
pub async fn index() -> Html<&'static str> {
    Html(include_str!("../../web/index.html"))
}

/// `GET /app.js`: the page's script (separate so the CSP needs no inline scripts).
pub async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../web/app.js"),
    )
}
