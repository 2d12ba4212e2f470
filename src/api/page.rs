//! The status page: one HTML file with its style and script inline (no build
//! step, no external assets), compiled into the binary. It polls `status`
//! beside itself every 1.5 s; the standby/active buttons post to `failover/…`.

use axum::http::header;
use axum::response::IntoResponse;

const PAGE: &str = include_str!("status.html");

pub(super) async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
}
