//! Cloud providers: S3 (and S3-compatible stores), Google Cloud Storage and Azure Blob, each an
//! `object_store` backend whose own URL signing is used for download links.

use crate::config::{ProviderConfig, ProviderKind};
use crate::Provider;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::signer::Signer;
use object_store::ObjectStore;
use osprey_core::{Error, Result};
use std::sync::Arc;

/// Builds the provider `config` describes; credentials it leaves out come from the environment.
pub fn build(name: &str, config: &ProviderConfig) -> Result<Provider> {
    let bucket = config.bucket.clone().unwrap_or_default();
    let built = match config.kind {
        ProviderKind::S3 => s3(config, &bucket).map(signing),
        ProviderKind::Gcs => gcs(config, &bucket).map(signing),
        ProviderKind::Azure => azure(config, &bucket).map(signing),
        ProviderKind::Local | ProviderKind::Memory => unreachable!("not a cloud provider"),
    };
    let (store, signer) = built.map_err(|e| Error::invalid(format!("provider {name}: {e}")))?;
    let signer = if config.presign { Some(signer) } else { None };
    Ok(Provider::with_signer(name, store, signer))
}

fn signing<T: ObjectStore + Signer>(store: T) -> (Arc<dyn ObjectStore>, Arc<dyn Signer>) {
    let store = Arc::new(store);
    (store.clone(), store)
}

fn s3(config: &ProviderConfig, bucket: &str) -> object_store::Result<object_store::aws::AmazonS3> {
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_region(config.region.clone().unwrap_or_else(|| "us-east-1".into()))
        .with_virtual_hosted_style_request(!config.path_style)
        .with_allow_http(config.allow_http);
    if let Some(endpoint) = &config.endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    if let (Some(id), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
        builder = builder.with_access_key_id(id).with_secret_access_key(secret.expose());
    }
    builder.build()
}

fn gcs(config: &ProviderConfig, bucket: &str) -> object_store::Result<object_store::gcp::GoogleCloudStorage> {
    let mut builder = GoogleCloudStorageBuilder::from_env().with_bucket_name(bucket);
    if let Some(path) = &config.service_account_path {
        builder = builder.with_service_account_path(path.display().to_string());
    }
    builder.build()
}

fn azure(config: &ProviderConfig, container: &str) -> object_store::Result<object_store::azure::MicrosoftAzure> {
    let mut builder =
        MicrosoftAzureBuilder::from_env().with_container_name(container).with_allow_http(config.allow_http);
    if let Some(endpoint) = &config.endpoint {
        builder = builder.with_endpoint(endpoint.clone());
    }
    if let (Some(account), Some(key)) = (&config.access_key_id, &config.secret_access_key) {
        builder = builder.with_account(account).with_access_key(key.expose());
    }
    builder.build()
}
