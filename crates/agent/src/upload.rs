//! Uploading chunks to a vault with the Kerberos Agent's `POST /storage`.

use osprey_core::{Error, ErrorKind, Result};
use std::time::Duration;

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
}

impl Uploader {
    pub fn new(target: VaultTarget, attempts: u32) -> Self {
        Uploader { target, http: reqwest::Client::new(), attempts: attempts.max(1) }
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
        let t = &self.target;
        let response = self
            .http
            .post(format!("{}/storage", t.url.trim_end_matches('/')))
            .header("Content-Type", "video/mp4")
            .header("X-Kerberos-Storage-AccessKey", &t.access_key)
            .header("X-Kerberos-Storage-SecretAccessKey", &t.secret_key)
            .header("X-Kerberos-Storage-Provider", &t.provider)
            .header("X-Kerberos-Storage-FileName", file_name)
            .header("X-Kerberos-Storage-Device", camera)
            .header("X-Kerberos-Storage-Capture", "IPCamera")
            .header("X-Kerberos-Storage-Directory", &t.directory)
            .body(bytes.to_vec())
            .send()
            .await
            .map_err(|e| Error::unavailable(format!("cannot reach vault {}", t.url)).with_source(e))?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if status.is_success() {
            return Ok(body);
        }
        let kind = if status.is_server_error() { ErrorKind::Unavailable } else { ErrorKind::InvalidInput };
        Err(Error::new(kind, format!("vault refused {file_name}: {status} {}", body["error"].as_str().unwrap_or(""))))
    }
}
