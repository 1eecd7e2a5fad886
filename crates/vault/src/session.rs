//! Sign-in for people: a session cookie that stands in for an account's keys, for the web app.
//!
//! - `POST /api/v1/session` with `{"access_key", "secret_key"}` sets the cookie `osprey_session`
//!   (HttpOnly, SameSite=Strict, Path=/, Secure when `vault.public_url` is https) and answers
//!   `{"account", "csrf_token"}`. `GET` answers the same for a live cookie; `DELETE` signs out.
//! - A request that carries no keys of its own but a live session cookie is served as that
//!   session's account. A state-changing request (anything but GET, HEAD and OPTIONS) served so
//!   must also carry the session's token in `X-CSRF-Token`.
//! - Failed sign-ins are limited per client address: `MAX_FAILURES` within `FAILURE_WINDOW`,
//!   then 429 with `Retry-After` until the oldest failure leaves the window.
//!
//! Invariants: the database holds only SHA-256 digests of session tokens, so its contents sign
//! nobody in; a session belongs to one account and ends at its expiry, at sign-out, or when its
//! account leaves the config.

use crate::db::db_error;
use crate::error::{json_error, ApiResult};
use crate::AppState;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use osprey_core::error::ResultExt;
use osprey_core::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use subtle::ConstantTimeEq;

pub const COOKIE: &str = "osprey_session";
pub const CSRF_HEADER: &str = "x-csrf-token";
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
pub const MAX_FAILURES: usize = 10;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(300);

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    access_key: String,
    secret_key: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionView {
    account: String,
    /// Send it back in `X-CSRF-Token` with every state-changing request.
    csrf_token: String,
    /// Unix milliseconds.
    expires_ms: i64,
}

/// Failed sign-ins per client address, as unix ms, oldest first.
#[derive(Default)]
pub struct Failures(Mutex<HashMap<IpAddr, VecDeque<i64>>>);

impl Failures {
    /// How long `ip` must wait before trying again, if it is over the limit at `now`.
    fn wait(&self, ip: IpAddr, now: i64) -> Option<Duration> {
        let mut all = self.0.lock().unwrap();
        let window = FAILURE_WINDOW.as_millis() as i64;
        let seen = all.get_mut(&ip)?;
        while seen.front().is_some_and(|at| *at <= now - window) {
            seen.pop_front();
        }
        if seen.is_empty() {
            all.remove(&ip);
            return None;
        }
        (seen.len() >= MAX_FAILURES).then(|| Duration::from_millis((seen[0] + window - now).max(1000) as u64))
    }

    fn failed(&self, ip: IpAddr, now: i64) {
        let mut all = self.0.lock().unwrap();
        // Bounded: a flood from many addresses cannot grow this without end.
        if all.len() > 100_000 {
            all.clear();
        }
        all.entry(ip).or_default().push_back(now);
    }
}

#[utoipa::path(post, path = "/api/v1/session", tag = "session", request_body = SignIn, security(()),
    responses((status = 200, description = "Signed in; the cookie is set", body = SessionView),
        (status = 403, description = "Wrong keys"), (status = 429, description = "Too many failed sign-ins")))]
pub async fn sign_in(
    State(s): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let now = s.clock.timestamp().millis();
    if let Some(wait) = s.failures.wait(peer.ip(), now) {
        let mut resp =
            json_error(StatusCode::TOO_MANY_REQUESTS, ErrorKind::PermissionDenied, "too many failed sign-ins; wait");
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait.as_secs()));
        return Ok(resp);
    }
    let form: SignIn = serde_json::from_slice(&body)
        .map_err(|e| Error::invalid(format!("sign-in wants {{\"access_key\", \"secret_key\"}}: {e}")))?;
    let Some(account) = s.accounts.with_keys(&form.access_key, &form.secret_key) else {
        s.failures.failed(peer.ip(), now);
        tracing::info!(client = %peer.ip(), "failed sign-in");
        return Err(Error::new(ErrorKind::PermissionDenied, "access key or secret key is wrong").into());
    };
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
        "INSERT INTO sessions (token_sha256, account, csrf_token, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(digest(&token))
    .bind(&view.account)
    .bind(&view.csrf_token)
    .bind(now)
    .bind(view.expires_ms)
    .execute(s.db.pool())
    .await
    .kind_ctx(ErrorKind::Unavailable, db_error("store a session"))?;
    let cookie = cookie(&s, &token, SESSION_TTL.as_secs());
    Ok(([(header::SET_COOKIE, cookie)], Json(view)).into_response())
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
        sqlx::query("DELETE FROM sessions WHERE token_sha256 = $1")
            .bind(digest(token))
            .execute(s.db.pool())
            .await
            .kind_ctx(ErrorKind::Unavailable, db_error("remove a session"))?;
    }
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie(&s, "", 0))]).into_response())
}

/// Serves a request that carries a live session cookie (and no keys) as the session's account,
/// after checking the CSRF token of a state-changing one.
pub async fn resolve(State(s): State<Arc<AppState>>, mut request: Request, next: Next) -> Response {
    let headers = request.headers();
    let has_keys = headers.contains_key(header::AUTHORIZATION)
        || headers.contains_key(osprey_kerberos::wire::ACCESS_KEY)
        || headers.contains_key(osprey_kerberos::wire::SECRET_KEY);
    if has_keys || cookie_token(headers).is_none() {
        return next.run(request).await;
    }
    let session = match live(&s, headers).await {
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
    next.run(request).await
}

/// The live session of the request's cookie, if any, whose account is still configured.
async fn live(s: &AppState, headers: &HeaderMap) -> Result<Option<SessionView>> {
    let Some(token) = cookie_token(headers) else { return Ok(None) };
    let row: Option<(String, String, i64)> = sqlx::query_as(
        "SELECT account, csrf_token, expires_at FROM sessions WHERE token_sha256 = $1 AND expires_at > $2",
    )
    .bind(digest(token))
    .bind(s.clock.timestamp().millis())
    .fetch_optional(s.db.pool())
    .await
    .kind_ctx(ErrorKind::Unavailable, db_error("read a session"))?;
    Ok(row
        .filter(|(account, _, _)| s.accounts.keys_of(account).is_some())
        .map(|(account, csrf_token, expires_ms)| SessionView { account, csrf_token, expires_ms }))
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
    fn failures_are_limited_per_address_within_the_window() {
        let f = Failures::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for i in 0..MAX_FAILURES as i64 {
            assert_eq!(f.wait(a, i), None);
            f.failed(a, i);
        }
        let wait = f.wait(a, 100).expect("over the limit");
        assert_eq!(wait, Duration::from_millis(FAILURE_WINDOW.as_millis() as u64 - 100));
        assert_eq!(f.wait(b, 100), None, "another address is not held back");
        assert_eq!(f.wait(a, FAILURE_WINDOW.as_millis() as i64), None, "the oldest left the window");
    }

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
