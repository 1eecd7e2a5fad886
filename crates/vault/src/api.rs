//! The JSON API under `/api/v1` and signed downloads.

use crate::db::{ListFilter, Recording};
use crate::error::{json_error, ApiError, ApiResult};
use crate::AppState;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use osprey_core::{ChunkId, Error, ErrorKind, ObjectKey, Result, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Arc;

const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1000;
const DEFAULT_URL_TTL_SECS: u64 = 3600;

pub(crate) fn query<T>(q: std::result::Result<Query<T>, QueryRejection>) -> Result<T> {
    q.map(|Query(t)| t).map_err(|r| Error::invalid(format!("invalid query: {}", r.body_text())))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    device: Option<String>,
    /// Unix milliseconds, inclusive.
    from_ms: Option<i64>,
    to_ms: Option<i64>,
    /// Unix seconds (`to`: its whole second): the old names, kept one release.
    from: Option<i64>,
    to: Option<i64>,
    limit: Option<i64>,
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/recordings", params(ListParams), tag = "recordings",
    responses((status = 200, description = "Recordings, newest first: `{recordings, next_cursor}`", body = Object)))]
pub async fn list(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    params: std::result::Result<Query<ListParams>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let account = s.accounts.authenticate(&headers)?;
    let p = query(params)?;
    let limit = p.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Error::invalid(format!("limit must be between 1 and {MAX_PAGE}")).into());
    }
    let (from, to) = crate::params::range(p.from_ms, p.to_ms, p.from, p.to)?;
    let filter = ListFilter {
        account: account.name.clone(),
        device: p.device,
        from: from.map(Timestamp::from_millis),
        to: to.map(Timestamp::from_millis),
        after: p.cursor.as_deref().map(parse_cursor).transpose()?,
        limit,
    };
    let recordings = s.db.list(&filter).await?;
    let next = (recordings.len() as i64 == limit)
        .then(|| recordings.last().map(|r| format!("{}.{}", r.recorded_at.millis(), r.chunk_id)))
        .flatten();
    let recordings: Vec<RecordingView> = recordings.iter().map(RecordingView::from).collect();
    Ok(Json(json!({"recordings": recordings, "next_cursor": next})))
}

/// A cursor is `<recorded_at in ms>.<chunk id>` of the last recording of the previous page.
fn parse_cursor(cursor: &str) -> Result<(Timestamp, String)> {
    let bad = || Error::invalid(format!("invalid cursor {cursor:?}"));
    let (at, id) = cursor.split_once('.').ok_or_else(bad)?;
    let id = ChunkId::parse(id).ok_or_else(bad)?;
    Ok((Timestamp::from_millis(at.parse().map_err(|_| bad())?), id.to_string()))
}

/// A recording as the API shows it: the row without its deletion state, its times in unix
/// milliseconds (`recorded_ms`, `uploaded_ms`, `lost_ms`); `recorded_at` (seconds), `uploaded_at`
/// and `lost_at` (milliseconds) are the old names, kept one release.
#[derive(Debug, Serialize)]
pub struct RecordingView<'a> {
    chunk_id: &'a ChunkId,
    account: &'a str,
    provider: &'a str,
    object_key: &'a ObjectKey,
    device: &'a str,
    camera: &'a str,
    capture: &'a str,
    size: i64,
    sha256: &'a str,
    recorded_ms: i64,
    uploaded_ms: i64,
    recorded_at: i64,
    uploaded_at: i64,
    duration_ms: Option<i64>,
    fps: Option<f64>,
    region: &'a str,
    changes: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lost_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lost_at: Option<i64>,
}

impl<'a> From<&'a Recording> for RecordingView<'a> {
    fn from(r: &'a Recording) -> Self {
        RecordingView {
            chunk_id: &r.chunk_id,
            account: &r.account,
            provider: &r.provider,
            object_key: &r.object_key,
            device: &r.device,
            camera: &r.camera,
            capture: &r.capture,
            size: r.size,
            sha256: &r.sha256,
            recorded_ms: r.recorded_at.millis(),
            uploaded_ms: r.uploaded_at.millis(),
            recorded_at: r.recorded_at.secs(),
            uploaded_at: r.uploaded_at.millis(),
            duration_ms: r.duration_ms,
            fps: r.fps,
            region: &r.region,
            changes: r.changes,
            lost_ms: r.lost_at.map(Timestamp::millis),
            lost_at: r.lost_at.map(Timestamp::millis),
        }
    }
}

/// The recording `id` if it exists and belongs to the caller's account.
pub(crate) async fn owned(s: &AppState, headers: &HeaderMap, id: &str) -> Result<Recording> {
    let account = s.accounts.authenticate(headers)?;
    let not_found = || Error::not_found(format!("no recording {id:?}"));
    let id = ChunkId::parse(id).ok_or_else(not_found)?;
    match s.db.recording(id.as_str()).await? {
        Some(r) if r.account == account.name && r.deleting_at.is_none() => Ok(r),
        _ => Err(not_found()),
    }
}

#[utoipa::path(get, path = "/api/v1/recordings/{id}", tag = "recordings",
    params(("id" = String, Path, description = "Chunk id")),
    responses((status = 200, description = "The recording", body = Object), (status = 404, description = "No such recording in this account")))]
pub async fn get(State(s): State<Arc<AppState>>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let recording = owned(&s, &headers, &id).await?;
    Ok(Json(json!(RecordingView::from(&recording))))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UrlParams {
    /// Seconds the link stays valid.
    ttl: Option<u64>,
}

#[utoipa::path(get, path = "/api/v1/recordings/{id}/url", tag = "recordings",
    params(("id" = String, Path, description = "Chunk id"), UrlParams),
    responses((status = 200, description = "A time-limited download link: `{url, expires_ms}` (`expires`, seconds: the old name)", body = Object)))]
pub async fn signed_url(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    params: std::result::Result<Query<UrlParams>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let recording = owned(&s, &headers, &id).await?;
    let ttl = query(params)?.ttl.unwrap_or(DEFAULT_URL_TTL_SECS);
    let max = s.config.vault.max_url_ttl.as_secs();
    if ttl == 0 || ttl > max {
        return Err(Error::invalid(format!("ttl must be between 1 and {max} seconds")).into());
    }
    let (url, expires) = s.download_url(&recording.chunk_id, &recording.provider, &recording.object_key, ttl).await?;
    // `expires` (seconds) is the old name, kept one release.
    Ok(Json(json!({"url": url, "expires_ms": expires.saturating_mul(1000), "expires": expires})))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DownloadParams {
    expires: Option<i64>,
    signature: Option<String>,
}

/// Authenticated by its signature alone, so a link can be handed to a worker or a browser.
#[utoipa::path(get, path = "/api/v1/download/{id}", tag = "recordings", security(()),
    params(("id" = String, Path, description = "Chunk id"), DownloadParams),
    responses((status = 200, description = "The MP4, authenticated by the link's signature", content_type = "video/mp4", body = Vec<u8>)))]
pub async fn download(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    params: std::result::Result<Query<DownloadParams>, QueryRejection>,
) -> ApiResult<Response> {
    let p = query(params)?;
    let (Some(expires), Some(signature)) = (p.expires, p.signature) else {
        return Err(Error::new(ErrorKind::Unauthenticated, "download link needs expires and signature").into());
    };
    s.signer.verify(&id, expires, &signature)?;
    let recording = s.db.recording(&id).await?.ok_or_else(|| Error::not_found(format!("no recording {id:?}")))?;
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok()).map(str::to_string);
    match range {
        Some(range) => stream_range(&s, &recording, &range).await,
        None => stream_object(&s, &recording).await,
    }
}

/// `GET /api/v1/devices`: the account's cameras, with when each last uploaded and last sent a
/// heartbeat; with `events_since`, also each one's events per label since then and the picture
/// of its newest event, so a page of 500 cameras needs one call.
#[utoipa::path(get, path = "/api/v1/devices", tag = "devices", params(DevicesParams),
    responses((status = 200, description = "The account's cameras: `{devices}`", body = Object)))]
pub async fn devices(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    params: std::result::Result<Query<DevicesParams>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let account = s.accounts.authenticate(&headers)?;
    let p = query(params)?;
    let since = crate::params::either("events_since", p.events_since_ms, p.events_since, false)?;
    let devices: Vec<Value> = s.db.devices(&account.name).await?.iter().map(device_view).collect();
    let Some(since) = since else { return Ok(Json(json!({"devices": devices}))) };
    let mut recent = s.db.device_events(&account.name, since).await?;
    let devices: Vec<Value> = devices
        .into_iter()
        .map(|d| {
            let events = recent.remove(d["device"].as_str().unwrap_or_default()).unwrap_or_default();
            let thumbnail = events.newest_event.map(crate::search::thumbnail_url);
            let mut v = d;
            v["events_since"] = json!({"counts": events.counts, "newest_event": events.newest_event,
                                       "thumbnail_url": thumbnail});
            v
        })
        .collect();
    Ok(Json(json!({"devices": devices})))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DevicesParams {
    /// Unix milliseconds: count each camera's events from the hour holding this time on.
    events_since_ms: Option<i64>,
    /// Unix seconds: the old name, kept one release.
    events_since: Option<i64>,
}

/// A camera as the API shows it: its times in unix milliseconds (`last_upload_ms`,
/// `last_recorded_ms`, `last_heartbeat_ms`) beside the old names, kept one release
/// (`last_recorded_at` in seconds, `last_upload_at` and `last_heartbeat_at` in milliseconds).
fn device_view(d: &crate::db::Device) -> Value {
    let mut v = json!(d);
    v["last_upload_ms"] = json!(d.last_upload_at);
    v["last_heartbeat_ms"] = json!(d.last_heartbeat_at);
    v
}

/// `GET /api/v1/system`: the account's view of the system: the outbox, storage per provider,
/// results per model (with those of the last hour: the workers' throughput) and recordings
/// waiting for a result (their lag).
#[utoipa::path(get, path = "/api/v1/system", tag = "system",
    responses((status = 200, description = "`{outbox_pending, storage, models, not_analysed, since}`", body = Object)))]
pub async fn system(State(s): State<Arc<AppState>>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    let account = s.accounts.authenticate(&headers)?;
    let since = s.clock.timestamp().millis() - crate::search::HOUR_MS;
    let facts = s.db.account_system(&account.name, since).await?;
    let mut v = json!(facts);
    v["outbox_pending"] = json!(s.db.pending_count().await?);
    v["since_ms"] = json!(since);
    v["since"] = json!(since);
    Ok(Json(v))
}

fn provider_of<'a>(s: &'a AppState, recording: &Recording) -> Result<&'a osprey_store::Provider> {
    s.providers.get(&recording.provider).ok_or_else(|| {
        Error::unavailable(format!("provider {:?} of this recording is not configured", recording.provider))
    })
}

fn disposition(recording: &Recording) -> String {
    format!("attachment; filename=\"{}\"", recording.object_key.file_name())
}

pub(crate) async fn stream_object(s: &AppState, recording: &Recording) -> ApiResult<Response> {
    let (size, body) = provider_of(s, recording)?.get(&recording.object_key).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "video/mp4".to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
            (header::ACCEPT_RANGES, "bytes".to_string()),
            (header::CONTENT_DISPOSITION, disposition(recording)),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// A `Range` request, as a browser's video element makes to seek: one range gets a 206 with
/// those bytes; a range past the end a 416; several ranges, or a unit other than bytes, the
/// whole object (which RFC 9110 allows).
async fn stream_range(s: &AppState, recording: &Recording, range: &str) -> ApiResult<Response> {
    let size = u64::try_from(recording.size).unwrap_or(0);
    let wanted = match ByteRange::parse(range, size) {
        ByteRange::Whole => return stream_object(s, recording).await,
        ByteRange::Unsatisfiable => {
            let status = StatusCode::RANGE_NOT_SATISFIABLE;
            let mut answer = json_error(status, ErrorKind::InvalidInput, "the range is outside the recording");
            answer.headers_mut().insert(header::CONTENT_RANGE, format!("bytes */{size}").parse().expect("ascii"));
            return Ok(answer);
        }
        ByteRange::Part(wanted) => wanted,
    };
    let body = provider_of(s, recording)?.get_range(&recording.object_key, wanted.clone()).await?;
    Ok((
        StatusCode::PARTIAL_CONTENT,
        [
            (header::CONTENT_TYPE, "video/mp4".to_string()),
            (header::CONTENT_LENGTH, (wanted.end - wanted.start).to_string()),
            (header::CONTENT_RANGE, format!("bytes {}-{}/{size}", wanted.start, wanted.end - 1)),
            (header::ACCEPT_RANGES, "bytes".to_string()),
            (header::CONTENT_DISPOSITION, disposition(recording)),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// What a `Range` header asks of an object of `size` bytes.
#[derive(Debug, PartialEq)]
enum ByteRange {
    Whole,
    Part(std::ops::Range<u64>),
    Unsatisfiable,
}

impl ByteRange {
    fn parse(header: &str, size: u64) -> ByteRange {
        let Some(spec) = header.trim().strip_prefix("bytes=") else { return ByteRange::Whole };
        if spec.contains(',') {
            return ByteRange::Whole;
        }
        let Some((first, last)) = spec.trim().split_once('-') else { return ByteRange::Whole };
        let number = |s: &str| s.trim().parse::<u64>().ok();
        let range = match (first.trim().is_empty(), number(first), number(last)) {
            // `bytes=-N`: the last N bytes.
            (true, _, Some(n)) if n > 0 => size.saturating_sub(n)..size,
            (false, Some(a), None) if last.trim().is_empty() => a..size,
            (false, Some(a), Some(b)) if a <= b => a..b.saturating_add(1).min(size),
            _ => return ByteRange::Whole,
        };
        if range.start >= size {
            return ByteRange::Unsatisfiable;
        }
        ByteRange::Part(range)
    }
}

pub async fn health(State(s): State<Arc<AppState>>) -> Response {
    let pending = match s.db.ping().await {
        Ok(()) => s.db.pending_count().await,
        Err(e) => Err(e),
    };
    match pending {
        Ok(n) => Json(json!({"status": "ok", "outbox_pending": n})).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "unavailable", "error": e.to_string()})))
            .into_response(),
    }
}

pub async fn not_found() -> ApiError {
    ApiError(Error::not_found("no such endpoint"))
}

#[cfg(test)]
mod tests {
    use super::ByteRange::{self, *};

    #[test]
    fn ranges_are_read_as_rfc_9110_says() {
        assert_eq!(ByteRange::parse("bytes=0-99", 1000), Part(0..100));
        assert_eq!(ByteRange::parse("bytes=500-", 1000), Part(500..1000));
        assert_eq!(ByteRange::parse("bytes=-100", 1000), Part(900..1000));
        assert_eq!(ByteRange::parse("bytes=-5000", 1000), Part(0..1000));
        assert_eq!(ByteRange::parse("bytes=900-5000", 1000), Part(900..1000));
        assert_eq!(ByteRange::parse("bytes=1000-", 1000), Unsatisfiable);
        assert_eq!(ByteRange::parse("bytes=5-1", 1000), Whole);
        assert_eq!(ByteRange::parse("bytes=0-1,5-9", 1000), Whole);
        assert_eq!(ByteRange::parse("items=0-1", 1000), Whole);
        assert_eq!(ByteRange::parse("bytes=x-y", 1000), Whole);
    }
}
