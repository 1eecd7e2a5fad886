//! Sign-in for people: a session cookie that stands in for an account's keys, for the web app.
//!
//! - `POST /api/v1/session` with `{"access_key", "secret_key"}` sets the cookie `osprey_session`
//!   (HttpOnly, SameSite=Strict, Path=/, Secure when `vault.public_url` is https) and answers
//!   `{"account", "csrf_token"}`. `GET` answers the same for a live cookie; `DELETE` signs out.
//! - A request that carries no keys of its own but a live session cookie is served as that
//!   session's account. A state-changing request (anything but GET, HEAD and OPTIONS) served so
//!   must also carry the session's token in `X-CSRF-Token`.
//! - Sign-in takes `application/json` only, and refuses a cross-site `Origin` or
//!   `Sec-Fetch-Site: cross-site`: no form on another site can sign a browser into an account
//!   (login CSRF). Clients that send no `Origin` (curl, scripts) are not affected.
//! - Its keys are checked by `auth::check_keys`, with every other key check's failure limit.
//!
//! Invariants: the database holds only SHA-256 digests of session tokens, so its contents sign
//! nobody in; a session belongs to one account and holds a keyed fingerprint of the keys it was
//! made with; it ends at its expiry, at sign-out, or as soon as its account's keys are not the
//! ones it was made with (rotated or removed), on every replica that has the new keys.

use crate::db::db_error;
use crate::error::{json_error, ApiResult};
use crate::AppState;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use osprey_core::error::ResultExt;
use osprey_core::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;

pub const COOKIE: &str = "osprey_session";
pub const CSRF_HEADER: &str = "x-csrf-token";
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    access_key: String,
    secret_key: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionView {
    pub(crate) account: String,
    /// Send it back in `X-CSRF-Token` with every state-changing request.
    csrf_token: String,
    /// Unix milliseconds.
    expires_ms: i64,
}

#[utoipa::path(post, path = "/api/v1/session", tag = "session", request_body = SignIn, security(()),
    responses((status = 200, description = "Signed in; the cookie is set", body = SessionView),
        (status = 403, description = "Wrong keys, or a cross-site request"),
        (status = 415, description = "Not application/json"),
        (status = 429, description = "Too many failed key checks from this client")))]
pub async fn sign_in(State(s): State<Arc<AppState>>, request: Request) -> ApiResult<Response> {
    let client = crate::auth::client_ip(&s, &request);
    same_site_json(&s, request.headers())?;
    let body = axum::body::to_bytes(request.into_body(), MAX_SIGN_IN_BYTES).await.map_err(|_| {
        Error::new(ErrorKind::TooLarge, format!("sign-in body is larger than {MAX_SIGN_IN_BYTES} bytes"))
    })?;
    let form: SignIn = serde_json::from_slice(&body)
        .map_err(|e| Error::invalid(format!("sign-in wants {{\"access_key\", \"secret_key\"}}: {e}")))?;
    let account = match crate::auth::check_keys(&s, client, &form.access_key, &form.secret_key) {
        Ok(account) => account,
        Err(refused) => return Ok(crate::auth::refusal(refused)),
    };
    let now = s.clock.timestamp().millis();
    let token = random_token();
    let view = SessionView {
        account: account.name.clone(),
        csrf_token: random_token(),
        expires_ms: now + SESSION_TTL.as_millis() as i64,
    };
    sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
        .bind(now)
        .execute(s.db.pool())
        .await
        .kind_ctx(ErrorKind::Unavailable, db_error("remove expired sessions"))?;
    sqlx::query(
        "INSERT INTO sessions (token_sha256, account, csrf_token, created_at, expires_at, keys_fingerprint) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(digest(&token))
    .bind(&view.account)
    .bind(&view.csrf_token)
    .bind(now)
    .bind(view.expires_ms)
    .bind(keys_fingerprint(&s, &form.access_key, &form.secret_key))
    .execute(s.db.pool())
    .await
    .kind_ctx(ErrorKind::Unavailable, db_error("store a session"))?;
    let cookie = cookie(&s, &token, SESSION_TTL.as_secs());
    Ok(([(header::SET_COOKIE, cookie)], Json(view)).into_response())
}

/// Most bytes a sign-in body may have: two keys and their JSON.
const MAX_SIGN_IN_BYTES: usize = 4096;

/// Refuses what a form or a page on another site can send: a body that is not JSON (a form
/// posts `text/plain` or form encoding), or a request a browser marks as cross-site.
fn same_site_json(s: &AppState, headers: &HeaderMap) -> Result<()> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if content_type.split(';').next().map(str::trim) != Some("application/json") {
        return Err(Error::new(ErrorKind::UnsupportedMedia, "sign-in takes Content-Type application/json"));
    }
    let cross_site = headers.get("sec-fetch-site").is_some_and(|v| v.as_bytes() == b"cross-site");
    let origin = headers.get(header::ORIGIN).map(|v| v.to_str().unwrap_or("null"));
    if cross_site || origin.is_some_and(|o| !same_origin(s, headers, o)) {
        return Err(Error::new(ErrorKind::PermissionDenied, "sign-in from another site is refused"));
    }
    Ok(())
}

/// Whether `origin` names the vault: the host the request was sent to, or `vault.public_url`.
fn same_origin(s: &AppState, headers: &HeaderMap, origin: &str) -> bool {
    let Some((_, authority)) = origin.split_once("://") else { return false };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let public = s.config.public_url();
    let public = public.split_once("://").map(|(_, rest)| rest.trim_end_matches('/').to_string());
    host == Some(authority) || public.as_deref() == Some(authority)
}

/// The keyed fingerprint a session keeps of its account's keys.
fn keys_fingerprint(s: &AppState, access: &str, secret: &str) -> String {
    s.signer.fingerprint(&["osprey session keys", access, secret])
}

/// `null` when signed out: the app asks on every load, and that is no error.
#[utoipa::path(get, path = "/api/v1/session", tag = "session", security(()),
    responses((status = 200, description = "The session of the cookie, or null", body = Option<SessionView>)))]
pub async fn current(State(s): State<Arc<AppState>>, headers: HeaderMap) -> ApiResult<Json<Option<SessionView>>> {
    Ok(Json(live(&s, &headers).await?))
}

#[utoipa::path(delete, path = "/api/v1/session", tag = "session", security(()),
    responses((status = 204, description = "Signed out; the cookie is cleared")))]
pub async fn sign_out(State(s): State<Arc<AppState>>, headers: HeaderMap) -> ApiResult<Response> {
    // The CSRF check ran in `resolve`: this route is state-changing like any other.
    if let Some(token) = cookie_token(&headers) {
        let digest = digest(token);
        sqlx::query("DELETE FROM sessions WHERE token_sha256 = $1")
            .bind(&digest)
            .execute(s.db.pool())
            .await
            .kind_ctx(ErrorKind::Unavailable, db_error("remove a session"))?;
        // This replica's streams of the session end now; other replicas' at their next look.
        s.live.send(crate::live::Note::session_ended(digest)).ok();
    }
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie(&s, "", 0))]).into_response())
}

/// The session a request is served as: the digest of its token (streams look it up again).
#[derive(Debug, Clone)]
pub struct SessionRef(pub String);

/// Serves a request that carries a live session cookie (and no keys) as the session's account,
/// after checking the CSRF token of a state-changing one.
pub async fn resolve(State(s): State<Arc<AppState>>, mut request: Request, next: Next) -> Response {
    let headers = request.headers();
    let has_keys = headers.contains_key(header::AUTHORIZATION)
        || headers.contains_key(osprey_kerberos::wire::ACCESS_KEY)
        || headers.contains_key(osprey_kerberos::wire::SECRET_KEY);
    let Some(token) = cookie_token(headers).filter(|_| !has_keys) else {
        return next.run(request).await;
    };
    let digest = digest(token);
    let session = match by_digest(&s, &digest).await {
        Ok(Some(session)) => session,
        Ok(None) => return next.run(request).await,
        Err(e) => return crate::error::ApiError(e).into_response(),
    };
    let safe = matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let sent = headers.get(CSRF_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
    if !safe && !bool::from(sent.ct_eq(session.csrf_token.as_bytes())) {
        return json_error(StatusCode::FORBIDDEN, ErrorKind::PermissionDenied, "missing or wrong X-CSRF-Token");
    }
    let Some((access, secret)) = s.accounts.keys_of(&session.account) else {
        return next.run(request).await;
    };
    // The handlers authenticate as they do for API clients: with the account's own keys.
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{access}:{secret}"));
    let value = HeaderValue::from_str(&format!("Basic {basic}")).expect("base64 is a header value");
    request.headers_mut().insert(header::AUTHORIZATION, value);
    request.extensions_mut().insert(SessionRef(digest));
    next.run(request).await
}

/// The live session of the request's cookie, if any.
async fn live(s: &AppState, headers: &HeaderMap) -> Result<Option<SessionView>> {
    match cookie_token(headers) {
        Some(token) => by_digest(s, &digest(token)).await,
        None => Ok(None),
    }
}

/// The session with this token digest, if it has not expired and its account's keys are still
/// the ones it was made with. A session whose keys changed is removed.
pub async fn by_digest(s: &AppState, digest: &str) -> Result<Option<SessionView>> {
    let row: Option<(String, String, i64, String)> = sqlx::query_as(
        "SELECT account, csrf_token, expires_at, keys_fingerprint FROM sessions \
         WHERE token_sha256 = $1 AND expires_at > $2",
    )
    .bind(digest)
    .bind(s.clock.timestamp().millis())
    .fetch_optional(s.db.pool())
    .await
    .kind_ctx(ErrorKind::Unavailable, db_error("read a session"))?;
    let Some((account, csrf_token, expires_ms, fingerprint)) = row else { return Ok(None) };
    let current = s.accounts.keys_of(&account).map(|(access, secret)| keys_fingerprint(s, access, secret));
    if !current.is_some_and(|c| bool::from(c.as_bytes().ct_eq(fingerprint.as_bytes()))) {
        tracing::info!(%account, "session ended: its account's keys changed");
        sqlx::query("DELETE FROM sessions WHERE token_sha256 = $1")
            .bind(digest)
            .execute(s.db.pool())
            .await
            .kind_ctx(ErrorKind::Unavailable, db_error("remove a session"))?;
        return Ok(None);
    }
    Ok(Some(SessionView { account, csrf_token, expires_ms }))
}

fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == COOKIE && value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|(_, value)| value)
}

fn cookie(s: &AppState, token: &str, max_age: u64) -> String {
    let secure = if s.config.public_url().starts_with("https://") { "; Secure" } else { "" };
    format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}")
}

fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_well_formed_session_cookie_is_read() {
        let token = "ab".repeat(32);
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, format!("other=1; {COOKIE}={token}").parse().unwrap());
        assert_eq!(cookie_token(&h), Some(token.as_str()));
        h.insert(header::COOKIE, format!("{COOKIE}=short; x={token}").parse().unwrap());
        assert_eq!(cookie_token(&h), None);
    }
}
