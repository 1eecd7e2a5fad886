//! A vault storing to a real S3-compatible server (s3s-fs on 127.0.0.1): Kerberos uploads land
//! in the bucket, retries are recognised, and events carry the store's own pre-signed links.

use osprey_bus::{Bus, EmbeddedBus};
use osprey_core::{ChunkEvent, SystemClock, TOPIC_CHUNKS};
use osprey_testkit::{mp4_like_bytes, S3Server};
use osprey_vault::{AccountConfig, Setup};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn uploads_land_in_s3_and_events_carry_presigned_links() {
    let Some(server) = S3Server::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut config = Setup::new(dir.path());
    config.vault.listen = "127.0.0.1:0".parse().unwrap();
    config.providers.insert("s3".into(), server.provider_config());
    config.vault.accounts = vec![AccountConfig::new("cams", "k", "secret-1")];
    let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::in_memory().await.unwrap());
    let providers = config.providers().unwrap();
    let vault = osprey_vault::Vault::start(config, bus.clone(), providers, Arc::new(SystemClock)).await.unwrap();
    let upload = |body: Vec<u8>| {
        reqwest::Client::new()
            .post(format!("http://{}/storage", vault.addr))
            .header("Content-Type", "video/mp4")
            .header("X-Kerberos-Storage-AccessKey", "k")
            .header("X-Kerberos-Storage-SecretAccessKey", "secret-1")
            .header("X-Kerberos-Storage-Provider", "s3")
            .header("X-Kerberos-Storage-FileName", "1700000000_6-967003_gate_0-0-0-0_0_1.mp4")
            .header("X-Kerberos-Storage-Directory", "cams")
            .body(body)
            .send()
    };
    let body = mp4_like_bytes(3 * 1024 * 1024, 7);
    let first = upload(body.clone()).await.unwrap();
    assert_eq!(first.status(), 200);
    let first: serde_json::Value = first.json().await.unwrap();
    assert_eq!(server.files(), vec!["cams/1700000000_6-967003_gate_0-0-0-0_0_1.mp4".to_string()]);

    let again: serde_json::Value = upload(body.clone()).await.unwrap().json().await.unwrap();
    assert_eq!(again["duplicate"], true, "a retry is recognised against the stored object");
    assert_eq!(upload(mp4_like_bytes(1000, 8)).await.unwrap().status(), 409);
    assert_eq!(server.files().len(), 1, "nothing left behind by the retry or the conflict");

    let mut consumer = bus.subscribe(TOPIC_CHUNKS, "test").await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(10), consumer.recv()).await.unwrap().unwrap();
    let event: ChunkEvent = serde_json::from_slice(&m.payload).unwrap();
    assert_eq!(event.chunk_id.as_str(), first["chunk_id"].as_str().unwrap());
    assert_eq!(event.source, "s3");
    let url = &event.payload.signed_url;
    assert!(url.starts_with(&server.endpoint()) && url.contains("X-Amz-Signature="), "the store's own link: {url}");
    let fetched = reqwest::get(url).await.unwrap().error_for_status().unwrap().bytes().await.unwrap();
    assert_eq!(Sha256::digest(&fetched), Sha256::digest(&body));
    vault.stop().await.unwrap();
}
