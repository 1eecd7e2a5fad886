//! Uploading chunks to a vault the way a Kerberos Agent does: resumable (tus 1.0.0) where the
//! vault offers it, so a dropped connection costs only the bytes in flight, else the plain
//! `POST /storage`. Osprey's agent and the vault's forwarder both upload through this client.

use crate::name::FileName;
use crate::wire::{self, UploadAnswer, UploadHeaders};
use bytes::Bytes;
use osprey_core::{Backoff, Clock, Error, ErrorKind, Result, SystemClock};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Bytes sent per tus PATCH: the Kerberos agent's default (and the S3 multipart minimum).
pub const TUS_PIECE: usize = 8 << 20;
/// Resuming one tus upload after dropped connections: five resumes, then the attempt fails.
const TUS_RESUME: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2)).attempts(6);
const TUS_VERSION: &str = "1.0.0";
/// Retrying a whole upload while the vault is unavailable, for a caller with no retry of its own.
pub const UPLOAD_RETRY: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));

/// How a tus attempt ended.
enum Tus {
    Stored(UploadAnswer),
    /// The vault does not speak tus (404/405/501 on creation).
    NotOffered,
    /// The vault no longer knows the upload: it expired, or the request reached another vault
    /// replica, which keeps no copy of this one's partial uploads.
    Lost,
}

const TUS_UNKNOWN: u8 = 0;
const TUS_YES: u8 = 1;
const TUS_NO: u8 = 2;

/// A vault and the account to upload into.
#[derive(Debug, Clone)]
pub struct VaultTarget {
    /// e.g. `http://127.0.0.1:8080`, or a Kerberos-style `https://vault.example.com/api`.
    pub url: String,
    pub access_key: String,
    pub secret_key: String,
    /// Empty: the account's main provider.
    pub provider: String,
    pub directory: String,
}

/// One chunk to upload: its bytes and what the headers say about it. Provider and directory
/// come from the target.
#[derive(Debug, Clone)]
pub struct Upload {
    pub headers: UploadHeaders,
    pub bytes: Bytes,
}

impl Upload {
    /// A chunk named as a Kerberos agent names it, from camera `device`: start and duration are
    /// read from the name where it carries them, as a Kerberos agent's metadata file holds them.
    pub fn named(device: &str, file_name: &str, bytes: impl Into<Bytes>) -> Upload {
        let name = FileName::parse(file_name);
        let headers = UploadHeaders {
            file_name: file_name.to_string(),
            device: Some(device.to_string()),
            capture: Some("IPCamera".to_string()),
            timestamp_ms: name.as_ref().map(FileName::start_ms),
            duration_ms: name.as_ref().and_then(FileName::duration_ms),
            ..Default::default()
        };
        Upload { headers, bytes: bytes.into() }
    }
}

pub struct Client {
    target: VaultTarget,
    http: reqwest::Client,
    retry: Backoff,
    clock: Arc<dyn Clock>,
    /// Whether the vault speaks tus, once known.
    tus: AtomicU8,
}

impl Client {
    /// A client that retries an upload under `retry` while the vault is unavailable.
    pub fn new(target: VaultTarget, retry: Backoff) -> Self {
        // No overall timeout (a large chunk on a slow uplink takes as long as it takes), but a
        // vault that stops answering is noticed, as the Kerberos agent's transport does.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(300))
            .build()
            .expect("a client with timeouts builds");
        Client { target, http, retry, clock: Arc::new(SystemClock), tus: AtomicU8::new(TUS_UNKNOWN) }
    }

    /// The clock retries sleep on.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Uploads one chunk; retries failures that may pass (connection, 5xx) with backoff.
    pub async fn upload(&self, upload: &Upload) -> Result<UploadAnswer> {
        let upload = self.routed(upload);
        let what = format!("upload of {}", upload.headers.file_name);
        osprey_core::retry::retry(&self.retry, self.clock.as_ref(), &what, || self.try_upload(&upload)).await.0
    }

    /// The upload with the target's provider and directory where it names none.
    fn routed(&self, upload: &Upload) -> Upload {
        let mut upload = upload.clone();
        let some = |s: &str| Some(s.to_string()).filter(|s| !s.is_empty());
        upload.headers.provider = upload.headers.provider.or_else(|| some(&self.target.provider));
        upload.headers.directory = upload.headers.directory.or_else(|| some(&self.target.directory));
        upload
    }

    async fn try_upload(&self, upload: &Upload) -> Result<UploadAnswer> {
        let file_name = &upload.headers.file_name;
        if self.tus.load(Ordering::Relaxed) != TUS_NO {
            match self.tus_upload(upload).await? {
                Tus::Stored(answer) => return Ok(answer),
                Tus::NotOffered => {
                    tracing::info!(vault = %self.target.url, "vault has no resumable uploads; using POST /storage");
                    self.tus.store(TUS_NO, Ordering::Relaxed);
                }
                Tus::Lost => {
                    tracing::warn!(%file_name, "the vault no longer has this resumable upload (expired, or another replica); sending the chunk whole");
                }
            }
        }
        let response = self
            .kerberos(self.http.post(self.url("/storage")), &upload.headers)
            .header("Content-Type", "video/mp4")
            .body(upload.bytes.clone())
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if status.is_success() {
            return serde_json::from_value(body)
                .map_err(|e| Error::unavailable("vault answered an upload with unexpected JSON").with_source(e));
        }
        Err(refused(file_name, status, &body))
    }

    /// A tus upload: create, then PATCH in pieces, resuming from the vault's offset after a
    /// dropped connection.
    async fn tus_upload(&self, upload: &Upload) -> Result<Tus> {
        let (file_name, bytes) = (&upload.headers.file_name, &upload.bytes);
        let created = self
            .kerberos(self.http.post(self.url("/storage/tus/")), &upload.headers)
            .header("Tus-Resumable", TUS_VERSION)
            .header("Upload-Length", bytes.len())
            .header("Upload-Metadata", upload.headers.to_metadata().encode())
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = created.status().as_u16();
        if matches!(status, 404 | 405 | 501) {
            return Ok(Tus::NotOffered);
        }
        if status != 201 {
            let status = created.status();
            let body: serde_json::Value = created.json().await.unwrap_or_default();
            return Err(refused(file_name, status, &body));
        }
        self.tus.store(TUS_YES, Ordering::Relaxed);
        let location = created
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Error::unavailable("vault created a tus upload without a Location"))?;
        let location = self.upload_url(location)?;
        let mut offset = 0usize;
        let mut resumes = TUS_RESUME.start(self.clock.as_ref());
        loop {
            let end = (offset + TUS_PIECE).min(bytes.len());
            let sent = self
                .kerberos(self.http.patch(&location), &upload.headers)
                .header("Tus-Resumable", TUS_VERSION)
                .header("Content-Type", "application/offset+octet-stream")
                .header("Upload-Offset", offset)
                .body(bytes.slice(offset..end))
                .send()
                .await;
            let mut conflict = None;
            let response = match sent {
                Ok(r) if r.status().as_u16() == 409 => {
                    conflict = Some(r.json::<serde_json::Value>().await.unwrap_or_default());
                    None
                }
                Ok(r) if r.status().is_server_error() => None,
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::debug!(%file_name, offset, error = %e, "tus PATCH interrupted");
                    None
                }
            };
            let Some(response) = response else {
                // Ask the vault what it has, and go on from there.
                let Some(wait) = resumes.failed(self.clock.as_ref()) else {
                    return Err(Error::unavailable(format!("upload of {file_name} kept failing at byte {offset}")));
                };
                self.clock.sleep(wait).await;
                offset = match self.tus_offset(&location, &upload.headers).await? {
                    Some(offset) => offset,
                    // A 409 that ended the upload: the chunk is stored with other bytes.
                    None if conflict.is_some() => {
                        return Err(refused(
                            file_name,
                            reqwest::StatusCode::CONFLICT,
                            conflict.as_ref().expect("checked"),
                        ));
                    }
                    None => return Ok(Tus::Lost),
                };
                continue;
            };
            if matches!(response.status().as_u16(), 404 | 410) {
                return Ok(Tus::Lost);
            }
            if !response.status().is_success() {
                let status = response.status();
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                return Err(refused(file_name, status, &body));
            }
            offset = end;
            if offset == bytes.len() {
                let header =
                    |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                return Ok(Tus::Stored(UploadAnswer {
                    chunk_id: header("x-osprey-chunk-id"),
                    duplicate: header("x-osprey-duplicate") == "true",
                    size: bytes.len() as i64,
                    ..Default::default()
                }));
            }
        }
    }

    /// Bytes the vault holds of an upload; `None` when it has no such upload (any more).
    async fn tus_offset(&self, location: &str, headers: &UploadHeaders) -> Result<Option<usize>> {
        let response = self
            .kerberos(self.http.head(location), headers)
            .header("Tus-Resumable", TUS_VERSION)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if matches!(response.status().as_u16(), 404 | 410) {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(Error::unavailable(format!(
                "vault cannot say how much of {} it has: {}",
                headers.file_name,
                response.status()
            )));
        }
        response
            .headers()
            .get("upload-offset")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .map(Some)
            .ok_or_else(|| Error::unavailable("vault answered HEAD without Upload-Offset"))
    }

    /// The upload's URL: like the Kerberos agent, the target's tus address plus the last segment
    /// of `Location`, so a proxy that rewrites hosts or paths cannot send us elsewhere.
    fn upload_url(&self, location: &str) -> Result<String> {
        let path = location.split(['?', '#']).next().unwrap_or("");
        let id = path.trim_end_matches('/').rsplit('/').next().filter(|id| !id.is_empty());
        let id = id.ok_or_else(|| {
            Error::unavailable(format!("vault gave a tus Location without an upload id: {location:?}"))
        })?;
        Ok(self.url(&format!("/storage/tus/{id}")))
    }

    /// The Kerberos headers every request to the vault carries.
    fn kerberos(&self, mut request: reqwest::RequestBuilder, headers: &UploadHeaders) -> reqwest::RequestBuilder {
        request =
            request.header(wire::ACCESS_KEY, &self.target.access_key).header(wire::SECRET_KEY, &self.target.secret_key);
        for (name, value) in headers.to_pairs() {
            request = request.header(name, value);
        }
        request
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.target.url.trim_end_matches('/'))
    }

    fn unreachable(&self, e: reqwest::Error) -> Error {
        Error::unavailable(format!("cannot reach vault {}", self.target.url)).with_source(e)
    }
}

/// A vault's refusal, with the kind its status means: 5xx may pass (retry later), the rest
/// will not.
fn refused(file_name: &str, status: reqwest::StatusCode, body: &serde_json::Value) -> Error {
    let kind = match status.as_u16() {
        401 => ErrorKind::Unauthenticated,
        403 => ErrorKind::PermissionDenied,
        409 => ErrorKind::Conflict,
        413 => ErrorKind::TooLarge,
        415 => ErrorKind::UnsupportedMedia,
        _ if status.is_server_error() => ErrorKind::Unavailable,
        _ => ErrorKind::InvalidInput,
    };
    Error::new(kind, format!("vault refused {file_name}: {status} {}", body["error"].as_str().unwrap_or("")))
}
