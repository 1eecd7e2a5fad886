//! The web app (`web/` in the repository), built into the binary: `/` serves its page and
//! `/app/*` its script and style, so it works offline and needs no Node at build time. The
//! bundle is committed; CI rebuilds it and fails when the committed one is stale.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

const INDEX: &str = include_str!("../../../web/dist/index.html");
const FILES: &[(&str, &str, &[u8])] = &[
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("../../../web/dist/app.js")),
    ("app.css", "text/css; charset=utf-8", include_bytes!("../../../web/dist/app.css")),
    ("icon.svg", "image/svg+xml", include_bytes!("../../../web/dist/icon.svg")),
];

/// Scripts, styles, media and requests from this origin only; pictures may also be `data:` and
/// `blob:` (the canvas' snapshots); no framing.
const POLICY: &str = "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; \
     style-src 'self'; script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     frame-ancestors 'none'; form-action 'self'";

pub(crate) fn routes() -> Router<Arc<crate::AppState>> {
    Router::new().route("/", get(index)).route("/app/{file}", get(asset))
}

async fn index() -> Response {
    let mut resp = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response();
    guard(resp.headers_mut());
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

async fn asset(Path(file): Path<String>, request: HeaderMap) -> Response {
    let Some((_, kind, bytes)) = FILES.iter().find(|(name, _, _)| *name == file) else {
        return crate::api::not_found().await.into_response();
    };
    let etag = etag(bytes);
    let mut resp = if request.get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == etag.as_bytes()) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, *kind)], *bytes).into_response()
    };
    guard(resp.headers_mut());
    let h = resp.headers_mut();
    h.insert(header::ETAG, HeaderValue::from_str(&etag).expect("hex is a header value"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

fn guard(h: &mut HeaderMap) {
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
}

fn etag(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("\"{}\"", &hex::encode(sha2::Sha256::digest(bytes))[..16])
}
