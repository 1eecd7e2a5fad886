use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use osprey_core::{Error, ErrorKind};

/// An Osprey error as an HTTP response: a status from its kind and `{"error", "kind"}` JSON.
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

pub fn status(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
        ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::UnsupportedMedia => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorKind::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = status(self.0.kind());
        // The client gets the message, which names keys and providers; the causes (paths,
        // database text, store errors) go to the log only.
        if status.is_server_error() {
            tracing::warn!(error = %self.0, "request failed");
        } else {
            tracing::debug!(error = %self.0, "request refused");
        }
        json_error(status, self.0.kind(), self.0.message())
    }
}

/// A 429 with `Retry-After` (whole seconds, at least 1): a limit the client must wait out.
pub fn too_many_requests(message: &str, retry_after: std::time::Duration) -> Response {
    let mut resp = json_error(StatusCode::TOO_MANY_REQUESTS, ErrorKind::PermissionDenied, message);
    let secs = axum::http::HeaderValue::from(retry_after.as_secs().max(1));
    resp.headers_mut().insert(axum::http::header::RETRY_AFTER, secs);
    resp
}

pub fn json_error(status: StatusCode, kind: ErrorKind, message: &str) -> Response {
    let body = serde_json::json!({"error": message, "kind": kind.as_str()});
    (status, Json(body)).into_response()
}

/// Gives an error answer that is not JSON yet (the framework's own 404, 405, 413, 400 for a bad
/// path or query) the JSON error body every other answer has; its headers (`Allow`) are kept.
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if status.as_u16() < 400 || is_json {
        return response;
    }
    let (kind, message) = match status {
        StatusCode::NOT_FOUND => (ErrorKind::NotFound, "no such endpoint".to_string()),
        StatusCode::METHOD_NOT_ALLOWED => (ErrorKind::InvalidInput, "method not allowed for this endpoint".to_string()),
        StatusCode::PAYLOAD_TOO_LARGE => (ErrorKind::TooLarge, "request body is too large".to_string()),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (ErrorKind::UnsupportedMedia, "unsupported media type".to_string()),
        s if s.is_server_error() => (ErrorKind::Internal, "internal error".to_string()),
        s => (ErrorKind::InvalidInput, s.canonical_reason().unwrap_or("bad request").to_lowercase()),
    };
    let (mut parts, _) = response.into_parts();
    let fresh = json_error(status, kind, &message);
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    let (fresh_parts, body) = fresh.into_parts();
    parts.headers.extend(fresh_parts.headers);
    Response::from_parts(parts, body)
}
