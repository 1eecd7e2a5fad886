//! The Kerberos Vault endpoints besides the uploads: the agent's Verify (`POST /ping`) and
//! heartbeat (`POST /devices/heartbeat`), and how Kerberos consumers fetch a recording
//! (`GET /storage` for a signed link, `GET /storage/blob` for the bytes). Each is also served
//! under `/api`, where Kerberos deployments put the vault.

use crate::api::stream_object;
use crate::db::Recording;
use crate::error::ApiResult;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Json;
use osprey_core::{Error, ErrorKind, ObjectKey, Result};
use osprey_kerberos::wire::{self, header, Heartbeat};
use serde_json::{json, Value};
use std::sync::Arc;

/// How long the link `GET /storage` answers with stays valid.
const LINK_TTL_SECS: u64 = 3600;
/// Largest heartbeat body read; the agent's is a few kilobytes.
pub const MAX_HEARTBEAT_BYTES: usize = 64 << 10;

/// `POST /ping`: the agent's Verify button checks its keys here before its test upload.
pub async fn ping(State(s): State<Arc<AppState>>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    s.accounts.authenticate(&headers)?;
    Ok(Json(json!({"data": "pong"})))
}

/// `POST /devices/heartbeat`: a device says it is alive, every 10 s. Kerberos agents send no
/// keys with it, so an unsigned heartbeat only refreshes a device already known to an account
/// (one that uploaded there); a heartbeat with keys is recorded for their account. Either way a
/// well-formed heartbeat gets 200, so an agent does not log an error every 10 s.
pub async fn heartbeat(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> ApiResult<Json<Value>> {
    let beat: Heartbeat = serde_json::from_slice(&body)
        .map_err(|e| Error::invalid(format!("heartbeat is not the expected JSON: {e}")))?;
    beat.validate()?;
    let signed = header(&headers, wire::ACCESS_KEY)?.is_some() || headers.contains_key("authorization");
    let accounts: Vec<String> = match signed {
        true => vec![s.accounts.authenticate(&headers)?.name.clone()],
        false => s.accounts.iter().map(|(a, _, _)| a.name.clone()).collect(),
    };
    let facts = serde_json::to_string(&beat).expect("heartbeats serialise");
    let now = s.clock.timestamp();
    let mut recorded = 0;
    for account in accounts {
        if signed || s.db.has_device(&account, &beat.key).await? {
            s.db.record_heartbeat(&account, &beat.key, now, &facts).await?;
            recorded += 1;
        }
    }
    if recorded == 0 {
        tracing::debug!(device = %beat.key, "heartbeat from a device no account knows yet; not recorded");
    }
    Ok(Json(json!({"data": "ok"})))
}

/// `GET /storage`: a signed link to a recording, as hub-pipeline-classifier asks for one.
pub async fn link(State(s): State<Arc<AppState>>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    let recording = requested(&s, &headers).await?;
    let ttl = LINK_TTL_SECS.min(s.config.vault.max_url_ttl.as_secs());
    let (url, _) = s.download_url(&recording.chunk_id, &recording.provider, &recording.object_key, ttl).await?;
    Ok(Json(json!({"data": url})))
}

/// `GET /storage/blob`: the recording's bytes.
pub async fn blob(State(s): State<Arc<AppState>>, headers: HeaderMap) -> ApiResult<Response> {
    let recording = requested(&s, &headers).await?;
    stream_object(&s, &recording).await
}

/// The recording a Kerberos read names: `FileName` is the event's `payload.key`, `Provider` the event's `source`, or empty for any of the
/// account's providers. Another account's recording does not exist for the caller.
async fn requested(s: &AppState, headers: &HeaderMap) -> Result<Recording> {
    let account = s.accounts.authenticate(headers)?;
    let name = header(headers, wire::FILE_NAME)?
        .ok_or_else(|| Error::invalid("missing header X-Kerberos-Storage-filename"))?;
    let not_found = || Error::new(ErrorKind::NotFound, format!("no recording {name}"));
    // Keys are `<account>/…`: a key outside the caller's space is nobody's for this request.
    if !name.starts_with(&format!("{}/", account.name)) {
        return Err(not_found());
    }
    let key = ObjectKey::parse(&name)?;
    let providers: Vec<String> = match header(headers, wire::PROVIDER)? {
        Some(p) => vec![p],
        None => s.providers.iter().map(|p| p.name().to_string()).collect(),
    };
    for provider in providers {
        match s.db.recording_by_key(&provider, key.as_str()).await? {
            Some(r) if r.account == account.name && r.deleting_at.is_none() => return Ok(r),
            _ => continue,
        }
    }
    Err(not_found())
}
