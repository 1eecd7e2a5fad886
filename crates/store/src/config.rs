//! A provider's typed config, the `[providers.<name>]` sections of the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use osprey_core::config::Secret;
use osprey_core::{Error, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// A directory on local disk.
    Local,
    /// In memory, lost on exit: for tests.
    Memory,
    /// Amazon S3 or an S3-compatible store (MinIO, Ceph, Storj and R2 gateways).
    S3,
    /// Google Cloud Storage.
    Gcs,
    /// Azure Blob Storage.
    Azure,
}

/// A storage provider. Which keys apply depends on `kind`; credentials left out are taken from
/// the environment the way each cloud's own tools do (AWS_*, GOOGLE_*, AZURE_STORAGE_*).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    /// `local`: directory; defaults to `<data_dir>/storage/<name>`.
    pub path: Option<PathBuf>,
    /// `s3`, `gcs`: bucket; `azure`: container.
    pub bucket: Option<String>,
    /// `s3`: endpoint of an S3-compatible store, e.g. `http://minio:9000`; `azure`: blob endpoint
    /// (Azurite).
    pub endpoint: Option<String>,
    /// `s3`: region; `us-east-1` when unset.
    pub region: Option<String>,
    /// `s3`: access key id; `azure`: storage account name.
    pub access_key_id: Option<String>,
    /// `s3`: secret access key; `azure`: storage account key.
    pub secret_access_key: Option<Secret>,
    /// `s3`: `https://endpoint/bucket/key` addressing (most S3-compatible stores) rather than
    /// `https://bucket.endpoint/key`.
    pub path_style: bool,
    /// Allow plain-HTTP endpoints (a store on a private network).
    pub allow_http: bool,
    /// `gcs`: service account key file.
    pub service_account_path: Option<PathBuf>,
    /// Signed download links from the store itself (S3, GCS, Azure pre-signing) rather than
    /// links to the vault.
    pub presign: bool,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        ProviderConfig {
            kind: ProviderKind::Local,
            path: None,
            bucket: None,
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            path_style: false,
            allow_http: false,
            service_account_path: None,
            presign: true,
        }
    }
}

impl ProviderConfig {
    /// The providers when the file names none: one local provider, `local`, in the data directory.
    pub fn defaults() -> BTreeMap<String, ProviderConfig> {
        BTreeMap::from([("local".to_string(), ProviderConfig::default())])
    }

    /// Where a `local` provider keeps its objects: `path`, else `<data_dir>/storage/<name>`.
    pub fn local_path(&self, name: &str, data_dir: &Path) -> PathBuf {
        self.path.clone().unwrap_or_else(|| data_dir.join("storage").join(name))
    }

    /// Checks the section `providers.<name>`; the name too, since it appears in object paths.
    pub fn validate(&self, name: &str) -> Result<()> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(Error::invalid(format!(
                "invalid config: provider name {name:?} may use only letters, digits, - and _"
            )));
        }
        let bad = |what: &str| Err(Error::invalid(format!("invalid config: providers.{name}.{what}")));
        let cloud = matches!(self.kind, ProviderKind::S3 | ProviderKind::Gcs | ProviderKind::Azure);
        if self.kind != ProviderKind::Local && self.path.is_some() {
            return bad("path is only for local providers");
        }
        if cloud && self.bucket.as_deref().is_none_or(str::is_empty) {
            return bad("bucket is needed for s3, gcs and azure providers");
        }
        if !cloud && (self.bucket.is_some() || self.endpoint.is_some() || self.access_key_id.is_some()) {
            return bad("bucket, endpoint and keys are only for s3, gcs and azure providers");
        }
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            return bad("access_key_id and secret_access_key go together");
        }
        if let Some(endpoint) = &self.endpoint {
            if !(endpoint.starts_with("https://") || (self.allow_http && endpoint.starts_with("http://"))) {
                return bad("endpoint must be an https:// URL (http:// with allow_http = true)");
            }
        }
        Ok(())
    }
}
