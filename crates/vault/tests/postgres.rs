//! A vault on PostgreSQL (a real server started on 127.0.0.1): uploads, retries, listing and
//! events behave as on SQLite, and the metadata survives a vault restart.

use osprey_bus::{Bus, EmbeddedBus};
use osprey_core::config::{AccountConfig, Config};
use osprey_core::{SystemClock, TOPIC_CHUNKS};
use osprey_testkit::{mp4_like_bytes, vault_get, Postgres};
use std::sync::Arc;
use std::time::Duration;

async fn start(config: &Config, bus: &Arc<dyn Bus>) -> osprey_vault::Vault {
    let providers = osprey_store::Providers::from_config(config).unwrap();
    osprey_vault::Vault::start(config.clone(), bus.clone(), providers, Arc::new(SystemClock)).await.unwrap()
}

fn upload(vault: &osprey_vault::Vault, name: &str, body: Vec<u8>) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .post(format!("http://{}/storage", vault.addr))
        .header("Content-Type", "video/mp4")
        .header("X-Kerberos-Storage-AccessKey", "k")
        .header("X-Kerberos-Storage-SecretAccessKey", "secret-1")
        .header("X-Kerberos-Storage-Provider", "local")
        .header("X-Kerberos-Storage-FileName", name)
        .header("X-Kerberos-Storage-Directory", "cams")
        .body(body)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vault_on_postgres_stores_lists_and_announces() {
    let Some(server) = Postgres::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
    config.vault.listen = "127.0.0.1:0".parse().unwrap();
    config.vault.fsync = false;
    config.vault.database_url = Some(server.database("vault"));
    config.vault.accounts = vec![AccountConfig { name: "cams".into(), access_key: "k".into(), secret_key: "secret-1".into(), providers: vec![] }];
    let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::in_memory().await.unwrap());
    let vault = start(&config, &bus).await;
    assert!(!dir.path().join("osprey.db").exists(), "no SQLite file when PostgreSQL is configured");

    for i in 0..5 {
        let name = format!("{}_6-967003_gate_0-0-0-0_0_{i}.mp4", 1_700_000_000 + i);
        let resp = upload(&vault, &name, mp4_like_bytes(10_000, i as u8)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    }
    let name = "1700000000_6-967003_gate_0-0-0-0_0_0.mp4";
    let again: serde_json::Value = upload(&vault, name, mp4_like_bytes(10_000, 0)).send().await.unwrap().json().await.unwrap();
    assert_eq!(again["duplicate"], true);
    assert_eq!(upload(&vault, name, mp4_like_bytes(10_000, 9)).send().await.unwrap().status(), 409);

    let mut consumer = bus.subscribe(TOPIC_CHUNKS, "test").await.unwrap();
    for _ in 0..5 {
        let m = tokio::time::timeout(Duration::from_secs(10), consumer.recv()).await.expect("an event").unwrap();
        consumer.commit(&m).await.unwrap();
    }
    assert!(tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await.is_err(), "one event per chunk");

    vault.stop().await.unwrap();
    let vault = start(&config, &bus).await;
    let list = vault_get(&format!("http://{}", vault.addr), "/api/v1/recordings?limit=3", ("k", "secret-1")).await;
    let rows = list["recordings"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{list}");
    assert_eq!(rows[0]["recorded_at"], 1_700_000_004, "newest first, after a restart");
    assert!(list["next_cursor"].is_string());
    vault.stop().await.unwrap();
}
