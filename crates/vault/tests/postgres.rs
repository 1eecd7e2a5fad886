//! A vault on PostgreSQL (a real server started on 127.0.0.1): uploads, retries, listing and
//! events behave as on SQLite, and the metadata survives a vault restart.

use osprey_bus::{Bus, EmbeddedBus};
use osprey_core::{SystemClock, TOPIC_CHUNKS};
use osprey_testkit::{mp4_like_bytes, vault_get, Postgres};
use osprey_vault::{AccountConfig, Setup};
use std::sync::Arc;
use std::time::Duration;

async fn start(config: &Setup, bus: &Arc<dyn Bus>) -> osprey_vault::Vault {
    let providers = config.providers().unwrap();
    osprey_vault::Vault::start(config.clone(), bus.clone(), providers, Arc::new(SystemClock)).await.unwrap()
}

/// A vault on PostgreSQL at `database_url`, with one account, `k` / `secret-1`.
fn config(dir: &std::path::Path, database_url: String) -> Setup {
    let mut config = Setup::new(dir);
    config.vault.listen = "127.0.0.1:0".parse().unwrap();
    config.vault.fsync = false;
    config.vault.database_url = Some(database_url);
    config.vault.accounts = vec![AccountConfig::new("cams", "k", "secret-1")];
    config
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
    let config = config(dir.path(), server.database("vault"));
    let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::in_memory().await.unwrap());
    let vault = start(&config, &bus).await;
    assert!(!dir.path().join("osprey.db").exists(), "no SQLite file when PostgreSQL is configured");

    for i in 0..5 {
        let name = format!("{}_6-967003_gate_0-0-0-0_0_{i}.mp4", 1_700_000_000 + i);
        let resp = upload(&vault, &name, mp4_like_bytes(10_000, i as u8)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    }
    let name = "1700000000_6-967003_gate_0-0-0-0_0_0.mp4";
    let again: serde_json::Value =
        upload(&vault, name, mp4_like_bytes(10_000, 0)).send().await.unwrap().json().await.unwrap();
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

/// Two vault replicas on one database and one store: while one is writing a chunk, the other
/// tells a second upload of it to retry (503) rather than writing the same object at once; the
/// retry then finds the chunk stored. One object, one row, one event.
#[tokio::test(flavor = "multi_thread")]
async fn replicas_on_one_database_write_each_chunk_once() {
    use futures::SinkExt;
    let Some(server) = Postgres::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), server.database("replicas"));
    let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::in_memory().await.unwrap());
    let (a, b) = (start(&config, &bus).await, start(&config, &bus).await);
    let name = "1700000100_6-967003_gate_0-0-0-0_0_0.mp4";
    let bytes = mp4_like_bytes(400_000, 7);

    // A slow upload to replica A: the first half, then a pause.
    let (mut pieces, body) = futures::channel::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(2);
    let slow = tokio::spawn(upload(&a, name, Vec::new()).body(reqwest::Body::wrap_stream(body)).send());
    pieces.send(Ok(bytes::Bytes::copy_from_slice(&bytes[..200_000]))).await.unwrap();
    // Time for A to read the headers and claim the chunk (it claims before reading the body).
    tokio::time::sleep(Duration::from_secs(1)).await;

    let busy = upload(&b, name, bytes.clone()).send().await.unwrap();
    assert_eq!(busy.status(), 503, "replica B while A writes: {}", busy.text().await.unwrap());
    assert!(busy.text().await.unwrap().contains("in progress"));

    pieces.send(Ok(bytes::Bytes::copy_from_slice(&bytes[200_000..]))).await.unwrap();
    drop(pieces);
    let stored = slow.await.unwrap().unwrap();
    assert_eq!(stored.status(), 200, "{}", stored.text().await.unwrap());
    // The retry a 503 asks for. A releases its claim before answering, so the first retry
    // should find the chunk stored; a few more are allowed, as any client would make.
    let mut again = serde_json::Value::Null;
    for _ in 0..10 {
        let response = upload(&b, name, bytes.clone()).send().await.unwrap();
        let status = response.status();
        again = response.json().await.unwrap();
        if status != 503 {
            break;
        }
        eprintln!("retry answered 503: {again}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(again["duplicate"], true, "{again}");

    let list = vault_get(&format!("http://{}", b.addr), "/api/v1/recordings", ("k", "secret-1")).await;
    let rows = list["recordings"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{list}");
    let key = rows[0]["object_key"].as_str().unwrap();
    let object = std::fs::read(dir.path().join("storage/local").join(key)).unwrap();
    assert_eq!(object, bytes, "the stored object is the upload's bytes");

    let mut consumer = bus.subscribe(TOPIC_CHUNKS, "test").await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(10), consumer.recv()).await.expect("an event").unwrap();
    consumer.commit(&m).await.unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await.is_err(), "one event");
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

/// Two vault replicas on one PostgreSQL database both run a re-analysis job's queue: each
/// recording is queued once, however their turns interleave, and the job ends at its total.
#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_queue_each_recording_of_a_reanalysis_once() {
    let Some(server) = Postgres::start() else { return };
    let url = server.database("replicas");
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::in_memory().await.unwrap());
    let a = start(&config(dir_a.path(), url.clone()), &bus).await;
    for i in 0..12 {
        let name = format!("{}_6-967003_gate_0-0-0-0_0_{i}.mp4", 1_700_000_000 + i);
        let resp = upload(&a, &name, mp4_like_bytes(4_000, i as u8)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    }
    let b = start(&config(dir_b.path(), url.clone()), &bus).await;
    let job: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{}/api/v1/reanalyse", a.addr))
        .basic_auth("k", Some("secret-1"))
        .json(&serde_json::json!({"group": "default", "from": 1_699_999_000, "to": 1_700_000_100, "rate": 8}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(job["total"], 12, "{job}");
    let path = format!("/api/v1/reanalyse/{}", job["id"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = vault_get(&format!("http://{}", b.addr), &path, ("k", "secret-1")).await;
        if now["state"] == "done" {
            assert_eq!(now["queued"], 12, "{now}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the job did not finish: {now}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    let (rows, chunks): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(DISTINCT chunk_id) FROM outbox WHERE topic = 'osprey.reanalyse.default'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((rows, chunks), (12, 12), "each recording queued once");
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}
