//! Uploading chunks to a vault the way a Kerberos Agent does: resumable (tus 1.0.0) where the
//! vault offers it, so a dropped connection costs only the bytes in flight, else the plain
//! `POST /storage`.

use osprey_core::{Error, ErrorKind, Result};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

/// Bytes sent per tus PATCH.
const TUS_PIECE: usize = 4 << 20;
/// Tries to resume one tus upload after dropped connections before giving up the attempt.
const TUS_RESUMES: u32 = 5;

/// How a tus attempt ended.
enum Tus {
    Stored(serde_json::Value),
    /// The vault does not speak tus (404/405/501 on creation).
    NotOffered,
    /// The vault no longer knows the upload: it expired, or the request reached another vault
    /// replica, which keeps no copy of this one's partial uploads.
    Lost,
}

const TUS_UNKNOWN: u8 = 0;
const TUS_YES: u8 = 1;
const TUS_NO: u8 = 2;

#[derive(Debug, Clone)]
pub struct VaultTarget {
    /// e.g. `http://127.0.0.1:8080`
    pub url: String,
    pub access_key: String,
    pub secret_key: String,
    pub provider: String,
    pub directory: String,
}

pub struct Uploader {
    target: VaultTarget,
    http: reqwest::Client,
    attempts: u32,
    /// Whether the vault speaks tus, once known.
    tus: AtomicU8,
}

impl Uploader {
    pub fn new(target: VaultTarget, attempts: u32) -> Self {
        Uploader { target, http: reqwest::Client::new(), attempts: attempts.max(1), tus: AtomicU8::new(TUS_UNKNOWN) }
    }

    /// Uploads one chunk; retries failures that may pass (connection, 5xx) with backoff.
    /// Returns the vault's JSON answer.
    pub async fn upload(&self, camera: &str, file_name: &str, bytes: &[u8]) -> Result<serde_json::Value> {
        let mut wait = Duration::from_millis(200);
        let mut attempt = 1;
        loop {
            match self.try_upload(camera, file_name, bytes).await {
                Err(e) if e.kind() == ErrorKind::Unavailable && attempt < self.attempts => {
                    tracing::warn!(file_name, attempt, error = %e, "upload failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(10));
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn try_upload(&self, camera: &str, file_name: &str, bytes: &[u8]) -> Result<serde_json::Value> {
        if self.tus.load(Ordering::Relaxed) != TUS_NO {
            match self.tus_upload(camera, file_name, bytes).await? {
                Tus::Stored(answer) => return Ok(answer),
                Tus::NotOffered => {
                    tracing::info!(vault = %self.target.url, "vault has no resumable uploads; using POST /storage");
                    self.tus.store(TUS_NO, Ordering::Relaxed);
                }
                Tus::Lost => {
                    tracing::warn!(file_name, "the vault no longer has this resumable upload (expired, or another replica); sending the chunk whole");
                }
            }
        }
        let response = self
            .kerberos(self.http.post(self.url("/storage")), camera, file_name)
            .header("Content-Type", "video/mp4")
            .body(bytes.to_vec())
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if status.is_success() {
            return Ok(body);
        }
        Err(refused(file_name, status, body["error"].as_str().unwrap_or("")))
    }

    /// A tus upload: create, then PATCH in pieces, resuming from the vault's offset after a
    /// dropped connection.
    async fn tus_upload(&self, camera: &str, file_name: &str, bytes: &[u8]) -> Result<Tus> {
        let created = self
            .kerberos(self.http.post(self.url("/storage/tus/")), camera, file_name)
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Length", bytes.len())
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
            return Err(refused(file_name, status, body["error"].as_str().unwrap_or("")));
        }
        self.tus.store(TUS_YES, Ordering::Relaxed);
        let location = created
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Error::unavailable("vault created a tus upload without a Location"))?;
        let location = if location.starts_with("http") { location.to_string() } else { self.url(location) };
        let mut offset = 0usize;
        let mut resumes = 0;
        loop {
            let end = (offset + TUS_PIECE).min(bytes.len());
            let sent = self
                .kerberos(self.http.patch(&location), camera, file_name)
                .header("Tus-Resumable", "1.0.0")
                .header("Content-Type", "application/offset+octet-stream")
                .header("Upload-Offset", offset)
                .body(bytes[offset..end].to_vec())
                .send()
                .await;
            let mut conflict = None;
            let response = match sent {
                Ok(r) if r.status().as_u16() == 409 => {
                    conflict = Some(r.json::<serde_json::Value>().await.unwrap_or_default()["error"].as_str().unwrap_or("").to_string());
                    None
                }
                Ok(r) if r.status().is_server_error() => None,
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::debug!(file_name, offset, error = %e, "tus PATCH interrupted");
                    None
                }
            };
            let Some(response) = response else {
                // Ask the vault what it has, and go on from there.
                resumes += 1;
                if resumes > TUS_RESUMES {
                    return Err(Error::unavailable(format!("upload of {file_name} kept failing at byte {offset}")));
                }
                tokio::time::sleep(Duration::from_millis(200 * resumes as u64)).await;
                offset = match self.tus_offset(&location, camera, file_name).await? {
                    Some(offset) => offset,
                    // A 409 that ended the upload: the chunk is stored with other bytes.
                    None if conflict.is_some() => {
                        return Err(refused(file_name, reqwest::StatusCode::CONFLICT, conflict.as_deref().unwrap_or("")));
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
                return Err(refused(file_name, status, body["error"].as_str().unwrap_or("")));
            }
            offset = end;
            if offset == bytes.len() {
                let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                let duplicate = header("x-osprey-duplicate") == "true";
                return Ok(Tus::Stored(serde_json::json!({"chunk_id": header("x-osprey-chunk-id"), "duplicate": duplicate})));
            }
        }
    }

    /// Bytes the vault holds of an upload; `None` when it has no such upload (any more).
    async fn tus_offset(&self, location: &str, camera: &str, file_name: &str) -> Result<Option<usize>> {
        let response = self
            .kerberos(self.http.head(location), camera, file_name)
            .header("Tus-Resumable", "1.0.0")
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if response.status().as_u16() == 404 {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(Error::unavailable(format!("vault cannot say how much of {file_name} it has: {}", response.status())));
        }
        response
            .headers()
            .get("upload-offset")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .map(Some)
            .ok_or_else(|| Error::unavailable("vault answered HEAD without Upload-Offset"))
    }

    /// The Kerberos headers every request to the vault carries.
    fn kerberos(&self, request: reqwest::RequestBuilder, camera: &str, file_name: &str) -> reqwest::RequestBuilder {
        let t = &self.target;
        request
            .header("X-Kerberos-Storage-AccessKey", &t.access_key)
            .header("X-Kerberos-Storage-SecretAccessKey", &t.secret_key)
            .header("X-Kerberos-Storage-Provider", &t.provider)
            .header("X-Kerberos-Storage-FileName", file_name)
            .header("X-Kerberos-Storage-Device", camera)
            .header("X-Kerberos-Storage-Capture", "IPCamera")
            .header("X-Kerberos-Storage-Directory", &t.directory)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.target.url.trim_end_matches('/'))
    }

    fn unreachable(&self, e: reqwest::Error) -> Error {
        Error::unavailable(format!("cannot reach vault {}", self.target.url)).with_source(e)
    }
}

/// A vault's refusal: 5xx may pass (retry later), 4xx will not.
fn refused(file_name: &str, status: reqwest::StatusCode, error: &str) -> Error {
    let kind = if status.is_server_error() { ErrorKind::Unavailable } else { ErrorKind::InvalidInput };
    Error::new(kind, format!("vault refused {file_name}: {status} {error}"))
}
