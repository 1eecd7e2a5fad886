//! An edge vault forwards every chunk to a central vault once, including the chunks it stored
//! while the central vault was down, and nothing again after a restart.

use osprey_bus::{Bus, EmbeddedBus};
use osprey_core::{SystemClock, TOPIC_CHUNKS};
use osprey_testkit::{free_port, mp4_like_bytes, vault_get};
use osprey_vault::{AccountConfig, ForwardConfig, Setup};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn vault_config(dir: &std::path::Path, port: u16) -> Setup {
    let mut c = Setup::new(dir);
    c.vault.listen = format!("127.0.0.1:{port}").parse().unwrap();
    c.vault.fsync = false;
    c.vault.accounts = vec![AccountConfig::new("site", "site-key", "site-secret")];
    c
}

async fn start(config: &Setup, bus: &Arc<dyn Bus>) -> osprey_vault::Vault {
    let providers = config.providers().unwrap();
    osprey_vault::Vault::start(config.clone(), bus.clone(), providers, Arc::new(SystemClock)).await.unwrap()
}

async fn upload(port: u16, i: usize) {
    let resp = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/storage"))
        .header("Content-Type", "video/mp4")
        .header("X-Kerberos-Storage-AccessKey", "site-key")
        .header("X-Kerberos-Storage-SecretAccessKey", "site-secret")
        .header("X-Kerberos-Storage-Provider", "local")
        .header("X-Kerberos-Storage-FileName", format!("{}_6-967003_yard_0-0-0-0_0_{i}.mp4", 1_700_000_000 + i))
        .header("X-Kerberos-Storage-Directory", "yard")
        .header("X-Kerberos-Storage-Device", "yard-cam")
        .header("X-Kerberos-Storage-Duration", "10")
        .body(mp4_like_bytes(50_000, i as u8))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

async fn central_recordings(port: u16) -> Vec<serde_json::Value> {
    let list =
        vault_get(&format!("http://127.0.0.1:{port}"), "/api/v1/recordings?limit=100", ("site-key", "site-secret"))
            .await;
    list["recordings"].as_array().unwrap().clone()
}

async fn wait_for(port: u16, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = central_recordings(port).await;
        if got.len() >= n || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_chunk_reaches_the_central_vault_once() {
    let dir = tempfile::tempdir().unwrap();
    let (edge_port, central_port) = (free_port(), free_port());
    let central_config = vault_config(&dir.path().join("central"), central_port);
    let mut edge_config = vault_config(&dir.path().join("edge"), edge_port);
    edge_config.vault.forward = Some(ForwardConfig {
        url: format!("http://127.0.0.1:{central_port}"),
        access_key: "site-key".into(),
        secret_key: "site-secret".into(),
        provider: "local".into(),
        concurrency: 2,
    });
    edge_config.validate().unwrap();
    let edge_bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::in_memory().await.unwrap());
    let central_bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::in_memory().await.unwrap());

    // The central vault is down while the edge stores three chunks.
    let edge = start(&edge_config, &edge_bus).await;
    for i in 0..3 {
        upload(edge_port, i).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let central = start(&central_config, &central_bus).await;
    for i in 3..5 {
        upload(edge_port, i).await;
    }
    let got = wait_for(central_port, 5).await;
    assert_eq!(got.len(), 5, "every chunk, including those stored during the outage");
    let mut keys: Vec<&str> = got.iter().map(|r| r["object_key"].as_str().unwrap()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 5);
    assert!(
        got.iter().all(|r| r["device"] == "yard-cam" && r["duration_ms"] == 10_000),
        "metadata travels with the chunk"
    );

    // A restarted edge forwards nothing again.
    edge.stop().await.unwrap();
    let edge = start(&edge_config, &edge_bus).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(central_recordings(central_port).await.len(), 5);
    let mut events = central_bus.subscribe(TOPIC_CHUNKS, "count").await.unwrap();
    let mut n = 0;
    while let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(500), events.recv()).await {
        events.commit(&m).await.unwrap();
        n += 1;
    }
    assert_eq!(n, 5, "one event per chunk on the central vault");
    edge.stop().await.unwrap();
    central.stop().await.unwrap();
}
