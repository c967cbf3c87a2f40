//! Built-in web pages, embedded in the binary (no CDN, nothing fetched at run time).

use axum::response::Html;

/// `GET /`: the live device overview.
pub async fn index() -> Html<&'static str> {
    Html(include_str!("../../web/index.html"))
}
