//! Resumable uploads: tus 1.0.0 core + creation (+ termination) under `/storage/tus/`, as a
//! Kerberos Agent speaks it. The Kerberos headers (keys, provider, file name, ...) come with every
//! request and are checked at creation, before a byte is accepted. Bytes are appended to a file
//! under `<data_dir>/tus/` and flushed before each PATCH is answered, so an upload resumes after a
//! dropped connection or a vault restart. When the last byte arrives the chunk is stored and its
//! event emitted exactly as for a plain upload, once.

use crate::error::ApiResult;
use crate::ingest::{accept, answer, looks_like_mp4, not_mp4, store_body};
use crate::AppState;
use axum::body::Body;
use axum::extract::OriginalUri;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use osprey_core::error::ResultExt;
use osprey_core::{Error, ErrorKind, Result, Timestamp};
use osprey_kerberos::{wire, TusMetadata};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

const VERSION: &str = "1.0.0";
const OFFSET_CONTENT_TYPE: &str = "application/offset+octet-stream";
/// Request headers kept with an upload to finish it with; secrets are never written down.
const KEPT_HEADERS: [&str; 10] = [
    wire::PROVIDER,
    wire::FILE_NAME,
    wire::DIRECTORY,
    wire::DEVICE,
    wire::CAPTURE,
    wire::CLOUD_KEY,
    wire::FPS,
    wire::DURATION,
    wire::TIMESTAMP,
    "upload-metadata",
];

/// What is kept on disk beside an upload's bytes.
#[derive(Debug, Serialize, Deserialize)]
struct Upload {
    account: String,
    length: u64,
    #[serde(default, rename = "created_ms")]
    created: Option<Timestamp>,
    /// Unix seconds, as uploads begun before times were kept in milliseconds say it.
    #[serde(default, rename = "created_at", skip_serializing)]
    created_secs: Option<i64>,
    headers: Vec<(String, String)>,
}

impl Upload {
    /// When the upload is removed unfinished, `expiry` after it was created.
    fn expires(&self, expiry: Duration) -> Timestamp {
        let created = self.created.unwrap_or_else(|| Timestamp::from_secs(self.created_secs.unwrap_or(0)));
        created + expiry
    }
}

/// Whether the upload an upload file (`<id>.json`) describes is past `expiry` at `now`; a file
/// that is not one counts as expired. Both the expiry sweep and reconciliation ask this.
pub(crate) fn expired(file: &[u8], expiry: Duration, now: Timestamp) -> bool {
    serde_json::from_slice::<Upload>(file).map(|u| now > u.expires(expiry)).unwrap_or(true)
}

/// Where the uploads in progress are kept: `<id>.json` beside `<id>.part`.
pub(crate) fn dir(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("tus")
}

fn paths(s: &AppState, id: &str) -> Result<(PathBuf, PathBuf)> {
    // Ids are ours: 32 hex digits. Anything else names no upload (and no path).
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
        return Err(Error::not_found("no such upload"));
    }
    let dir = dir(&s.config.data_dir);
    Ok((dir.join(format!("{id}.json")), dir.join(format!("{id}.part"))))
}

/// Every answer under `/storage/tus/`, errors included, says which tus version it speaks (a
/// layer over all tus routes, so no handler can forget it).
pub async fn with_version(mut response: Response) -> Response {
    response.headers_mut().insert("tus-resumable", HeaderValue::from_static(VERSION));
    response.headers_mut().insert("cache-control", HeaderValue::from_static("no-store"));
    response
}

fn with(status: StatusCode, headers: &[(&'static str, String)]) -> Response {
    let mut response = status.into_response();
    for (name, value) in headers {
        let value = HeaderValue::from_str(value).expect("header values we write are ascii");
        response.headers_mut().insert(HeaderName::from_static(name), value);
    }
    response
}

fn check_version(headers: &HeaderMap) -> Result<()> {
    match headers.get("tus-resumable").and_then(|v| v.to_str().ok()) {
        Some(VERSION) => Ok(()),
        Some(other) => Err(Error::new(
            ErrorKind::PreconditionFailed,
            format!("tus version {other:?} is not supported; use {VERSION}"),
        )),
        None => Err(Error::new(ErrorKind::PreconditionFailed, "missing Tus-Resumable header")),
    }
}

fn number(headers: &HeaderMap, name: &str) -> Result<Option<u64>> {
    let Some(value) = headers.get(name) else { return Ok(None) };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .map(Some)
        .ok_or_else(|| Error::invalid(format!("{name} must be a non-negative integer")))
}

/// `OPTIONS /storage/tus/`: what this server supports.
pub async fn options(State(s): State<Arc<AppState>>) -> Response {
    with(
        StatusCode::NO_CONTENT,
        &[
            ("tus-version", VERSION.into()),
            ("tus-extension", "creation,termination,expiration".into()),
            ("tus-max-size", s.config.vault.max_upload_bytes.to_string()),
        ],
    )
}

/// `POST /storage/tus/`: creates an upload after checking its credentials and headers.
pub async fn create(
    State(s): State<Arc<AppState>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> ApiResult<Response> {
    check_version(&headers)?;
    if headers.get("upload-defer-length").is_some() {
        return Err(Error::invalid("Upload-Defer-Length is not supported: send Upload-Length").into());
    }
    let length = number(&headers, "upload-length")?.ok_or_else(|| Error::invalid("missing Upload-Length header"))?;
    let max = s.config.vault.max_upload_bytes;
    if length > max {
        return Err(Error::new(ErrorKind::TooLarge, format!("upload is larger than the limit of {max} bytes")).into());
    }
    if number(&headers, "content-length")?.unwrap_or(0) > 0 {
        return Err(Error::invalid("creation-with-upload is not supported: send the bytes with PATCH").into());
    }
    let metadata = TusMetadata::from_headers(&headers)?;
    let accepted = accept(&s, &headers, metadata.as_ref())?;
    let upload = Upload {
        account: accepted.account.clone(),
        length,
        created: Some(s.clock.timestamp()),
        created_secs: None,
        headers: KEPT_HEADERS
            .iter()
            .filter_map(|name| {
                headers.get(*name).and_then(|v| v.to_str().ok()).map(|v| (name.to_string(), v.to_string()))
            })
            .collect(),
    };
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (meta, part) = paths(&s, &id)?;
    write_new(&meta, &part, &upload).await?;
    metrics::counter!(crate::metrics::TUS_UPLOADS_CREATED_TOTAL).increment(1);
    let expires = httpdate(upload.expires(s.config.vault.tus_expiry).secs());
    // Under the prefix the request came by (`/api/storage/tus/` when the agent's URI ends in /api).
    let prefix = if uri.path().starts_with("/api/") { "/api" } else { "" };
    Ok(with(StatusCode::CREATED, &[("location", format!("{prefix}/storage/tus/{id}")), ("upload-expires", expires)]))
}

/// `HEAD /storage/tus/{id}`: how many bytes the vault has.
pub async fn head(State(s): State<Arc<AppState>>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult<Response> {
    check_version(&headers)?;
    let (upload, offset) = open(&s, &headers, &id).await?;
    Ok(with(StatusCode::OK, &[("upload-offset", offset.to_string()), ("upload-length", upload.length.to_string())]))
}

/// `PATCH /storage/tus/{id}`: appends bytes at `Upload-Offset`; the last byte stores the chunk.
pub async fn patch(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    check_version(&headers)?;
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    if content_type != OFFSET_CONTENT_TYPE {
        return Err(Error::new(
            ErrorKind::UnsupportedMedia,
            format!("PATCH needs Content-Type: {OFFSET_CONTENT_TYPE}"),
        )
        .into());
    }
    let _busy = Busy::claim(&s, &id)?;
    let (upload, offset) = open(&s, &headers, &id).await?;
    let claimed = number(&headers, "upload-offset")?.ok_or_else(|| Error::invalid("missing Upload-Offset header"))?;
    if claimed != offset {
        return Err(Error::new(
            ErrorKind::Conflict,
            format!("Upload-Offset {claimed} does not match the {offset} bytes received"),
        )
        .into());
    }
    let (_, part) = paths(&s, &id)?;
    let received = append(&part, offset, upload.length, body).await;
    let offset = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(offset);
    received?;
    if offset < upload.length {
        return Ok(with(StatusCode::NO_CONTENT, &[("upload-offset", offset.to_string())]));
    }
    let stored = finish(&s, &id, &upload, &headers).await?;
    let chunk_id = stored["chunk_id"].as_str().unwrap_or_default().to_string();
    let duplicate = stored["duplicate"].as_bool().unwrap_or(false).to_string();
    Ok(with(
        StatusCode::NO_CONTENT,
        &[("upload-offset", offset.to_string()), ("x-osprey-chunk-id", chunk_id), ("x-osprey-duplicate", duplicate)],
    ))
}

/// `DELETE /storage/tus/{id}`: abandons an upload.
pub async fn delete(State(s): State<Arc<AppState>>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult<Response> {
    check_version(&headers)?;
    let _busy = Busy::claim(&s, &id)?;
    open(&s, &headers, &id).await?;
    remove(&s, &id).await;
    Ok(with(StatusCode::NO_CONTENT, &[]))
}

/// The upload `id` as the request's account may see it, and the bytes received so far.
async fn open(s: &AppState, headers: &HeaderMap, id: &str) -> Result<(Upload, u64)> {
    let account = s.accounts.authenticate(headers)?;
    let (meta, part) = paths(s, id)?;
    let not_found = || Error::not_found("no such upload");
    let text = tokio::fs::read(&meta).await.map_err(|_| not_found())?;
    let upload: Upload = serde_json::from_slice(&text).map_err(|_| not_found())?;
    // Another account's upload, or one past its time, does not exist for this request.
    let expired = s.clock.timestamp() > upload.expires(s.config.vault.tus_expiry);
    if upload.account != account.name || expired {
        return Err(not_found());
    }
    let offset = tokio::fs::metadata(&part).await.map(|m| m.len()).map_err(|_| not_found())?;
    Ok((upload, offset))
}

/// Appends the request body at `offset`, refusing bytes past `length` and an upload that does
/// not start like an MP4. What arrived before a dropped connection is kept and flushed.
async fn append(part: &PathBuf, offset: u64, length: u64, body: Body) -> Result<()> {
    let io = |e: std::io::Error| Error::unavailable("cannot write upload").with_source(e);
    let mut file = tokio::fs::OpenOptions::new().append(true).open(part).await.map_err(io)?;
    let mut stream = body.into_data_stream();
    let mut at = offset;
    let mut result = Ok(());
    while let Some(piece) = stream.next().await {
        let piece = match piece {
            Ok(p) => p,
            Err(e) => {
                result = Err(Error::invalid("upload body failed").with_source(e));
                break;
            }
        };
        if at + piece.len() as u64 > length {
            result = Err(Error::new(ErrorKind::TooLarge, format!("more bytes than the Upload-Length of {length}")));
            break;
        }
        if at < 8 {
            let mut head = tokio::fs::read(part).await.map_err(io)?;
            head.extend_from_slice(&piece[..piece.len().min(8 - at as usize)]);
            if head.len() >= 8 && !looks_like_mp4(&head) {
                result = Err(not_mp4());
                break;
            }
        }
        file.write_all(&piece).await.map_err(io)?;
        at += piece.len() as u64;
    }
    file.sync_all().await.map_err(io)?;
    result
}

/// Stores the complete upload like a plain one and removes it; a failure that may pass leaves
/// it in place, so a PATCH at the final offset with no body tries again.
async fn finish(s: &Arc<AppState>, id: &str, upload: &Upload, request: &HeaderMap) -> Result<serde_json::Value> {
    let mut headers = HeaderMap::new();
    for (name, value) in &upload.headers {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            headers.insert(n, v);
        }
    }
    for name in [wire::ACCESS_KEY, wire::SECRET_KEY, "authorization"] {
        if let Some(v) = request.get(name) {
            headers.insert(HeaderName::from_static(name), v.clone());
        }
    }
    let metadata = TusMetadata::from_headers(&headers)?;
    let accepted = accept(s, &headers, metadata.as_ref())?;
    let (_, part) = paths(s, id)?;
    let file = tokio::fs::File::open(&part).await.kind_ctx(ErrorKind::Unavailable, || "cannot read upload".into())?;
    let body = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20);
    let result = answer(store_body(s, accepted, Some(upload.length), body).await);
    match &result {
        Err(e) if e.kind() == ErrorKind::Unavailable => {}
        _ => remove(s, id).await,
    }
    if result.is_ok() {
        metrics::counter!(crate::metrics::TUS_UPLOADS_COMPLETED_TOTAL).increment(1);
    }
    result
}

async fn write_new(meta: &PathBuf, part: &PathBuf, upload: &Upload) -> Result<()> {
    let io = |e: std::io::Error| Error::unavailable("cannot create upload").with_source(e);
    tokio::fs::create_dir_all(meta.parent().expect("in the tus directory")).await.map_err(io)?;
    tokio::fs::File::create(part).await.map_err(io)?.sync_all().await.map_err(io)?;
    let tmp = meta.with_extension("json.tmp");
    let mut f = tokio::fs::File::create(&tmp).await.map_err(io)?;
    f.write_all(&serde_json::to_vec(upload).expect("uploads serialise")).await.map_err(io)?;
    f.sync_all().await.map_err(io)?;
    tokio::fs::rename(&tmp, meta).await.map_err(io)
}

async fn remove(s: &AppState, id: &str) {
    if let Ok((meta, part)) = paths(s, id) {
        tokio::fs::remove_file(&meta).await.ok();
        tokio::fs::remove_file(&part).await.ok();
    }
}

/// Removes uploads past `vault.tus_expiry_secs`; returns how many.
pub(crate) async fn remove_expired(s: &AppState) -> usize {
    let Ok(mut entries) = tokio::fs::read_dir(dir(&s.config.data_dir)).await else { return 0 };
    let mut removed = 0;
    while let Ok(Some(entry)) = entries.next_entry().await {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(id) = name.strip_suffix(".json") else { continue };
        let Ok(text) = tokio::fs::read(entry.path()).await else { continue };
        if expired(&text, s.config.vault.tus_expiry, s.clock.timestamp()) {
            remove(s, id).await;
            removed += 1;
        }
    }
    removed
}

/// One request at a time per upload: a second PATCH while one is running is refused.
struct Busy<'a> {
    state: &'a AppState,
    id: String,
}

impl<'a> Busy<'a> {
    fn claim(state: &'a AppState, id: &str) -> Result<Self> {
        let key = format!("tus:{id}");
        if !state.uploading.lock().unwrap().insert(key.clone()) {
            return Err(Error::new(ErrorKind::Conflict, "this upload is being written by another request"));
        }
        Ok(Busy { state, id: key })
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.state.uploading.lock().unwrap().remove(&self.id);
    }
}

/// An HTTP date (RFC 7231) for `Upload-Expires`.
fn httpdate(unix_secs: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + if month <= 2 { 1 } else { 0 };
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn http_dates() {
        assert_eq!(super::httpdate(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(super::httpdate(1_700_000_000), "Tue, 14 Nov 2023 22:13:20 GMT");
        assert_eq!(super::httpdate(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
    }

    /// Upload files written before times were milliseconds say `created_at` in seconds; both
    /// forms give the same expiry, and a file that is not an upload gives none.
    #[test]
    fn upload_files_old_and_new_expire_alike() {
        let hour = std::time::Duration::from_secs(3600);
        let old = br#"{"account":"a","length":10,"created_at":1700000000,"headers":[]}"#;
        let new = br#"{"account":"a","length":10,"created_ms":1700000000000,"headers":[]}"#;
        let expected = osprey_core::Timestamp::from_secs(1_700_003_600);
        for file in [&old[..], &new[..]] {
            assert!(!super::expired(file, hour, expected));
            assert!(super::expired(file, hour, expected + std::time::Duration::from_millis(1)));
        }
        assert!(super::expired(b"{not json", hour, expected), "not an upload file");
    }
}
