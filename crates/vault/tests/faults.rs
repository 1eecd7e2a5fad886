//! Faults a vault meets every day, against real servers: clients that hang up right after their
//! last byte and retry at once while others upload (on SQLite, and on PostgreSQL with two
//! replicas sharing one store), and an S3 server stopped in the middle of a write. Afterwards
//! every acknowledged chunk has its bytes, exactly one row and one event, and the reconciliation
//! (`osprey vault check`) finds nothing: no orphan, no leftover.

use osprey_bus::{Bus, EmbeddedBus};
use osprey_core::SystemClock;
use osprey_testkit::{mp4_like_bytes, Postgres, S3Server};
use osprey_vault::{AccountConfig, Setup};
use rand::Rng;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

const ACCESS: &str = "cam-access";
const SECRET: &str = "cam-secret-1";

fn config(dir: &Path, database_url: Option<String>, storage: &Path) -> Setup {
    let mut c = Setup::new(dir);
    c.vault.listen = "127.0.0.1:0".parse().unwrap();
    c.vault.fsync = false;
    c.vault.database_url = database_url;
    c.vault.max_upload_bytes = 64 << 20;
    let local = osprey_store::ProviderConfig { path: Some(storage.to_path_buf()), ..Default::default() };
    c.providers.insert("local".into(), local);
    c.vault.accounts = vec![AccountConfig {
        name: "cams".into(),
        access_key: ACCESS.into(),
        secret_key: SECRET.into(),
        providers: vec![],
        main_provider: None,
    }];
    c
}

async fn start(config: &Setup, bus: &Arc<dyn Bus>) -> osprey_vault::Vault {
    let providers = config.providers().unwrap();
    osprey_vault::Vault::start(config.clone(), bus.clone(), providers, Arc::new(SystemClock)).await.unwrap()
}

fn name(i: usize) -> String {
    format!("{}_6-967003_gate_0-0-0-0_0_{i}.mp4", 1_700_000_000 + i)
}

fn head(addr: &str, name: &str, length: usize) -> String {
    format!(
        "POST /storage HTTP/1.1\r\nHost: {addr}\r\nContent-Type: video/mp4\r\nContent-Length: {length}\r\n\
         X-Kerberos-Storage-AccessKey: {ACCESS}\r\nX-Kerberos-Storage-SecretAccessKey: {SECRET}\r\n\
         X-Kerberos-Storage-Provider: local\r\nX-Kerberos-Storage-FileName: {name}\r\n\
         X-Kerberos-Storage-Device: gate\r\n\r\n"
    )
}

/// A Kerberos upload of `name` with `body`.
fn upload(http: &reqwest::Client, addr: &str, name: &str, body: impl Into<reqwest::Body>) -> reqwest::RequestBuilder {
    http.post(format!("http://{addr}/storage"))
        .header("Content-Type", "video/mp4")
        .header("X-Kerberos-Storage-AccessKey", ACCESS)
        .header("X-Kerberos-Storage-SecretAccessKey", SECRET)
        .header("X-Kerberos-Storage-Provider", "local")
        .header("X-Kerberos-Storage-FileName", name)
        .header("X-Kerberos-Storage-Device", "gate")
        .body(body)
}

/// Uploads until a 200 (a 503 means another upload of the chunk is finishing: retry at once).
async fn upload_until_stored(http: &reqwest::Client, addr: &str, name: &str, body: &[u8]) -> serde_json::Value {
    for _ in 0..2000 {
        let resp = upload(http, addr, name, body.to_vec()).send().await;
        let Ok(resp) = resp else { continue };
        let status = resp.status();
        let text = resp.text().await.unwrap();
        match status.as_u16() {
            200 => return serde_json::from_str(&text).unwrap(),
            503 => tokio::time::sleep(Duration::from_millis(2)).await,
            _ => panic!("{name}: {status} {text}"),
        }
    }
    panic!("{name} was never stored");
}

/// `rounds` of: send a whole chunk, hang up 2-30 ms later, retry at once (on the next replica),
/// while four clients upload chunks of their own. Returns every chunk acknowledged, by key.
async fn hang_up_then_retry(addrs: &[String], rounds: usize) -> BTreeMap<String, String> {
    let acked: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut background = Vec::new();
    for client in 0..4 {
        let (acked, stop, addr) = (acked.clone(), stop.clone(), addrs[client % addrs.len()].clone());
        background.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let (n, body) = (name(100_000 + client * 10_000 + i), mp4_like_bytes(50_000 + i * 13, i as u8));
                let stored = upload_until_stored(&http, &addr, &n, &body).await;
                acked
                    .lock()
                    .unwrap()
                    .insert(stored["key"].as_str().unwrap().to_string(), hex::encode(Sha256::digest(&body)));
                i += 1;
            }
        }));
    }
    let http = reqwest::Client::new();
    for round in 0..rounds {
        let (n, body) = (name(round), mp4_like_bytes(200_000 + round * 7, round as u8));
        let first = &addrs[round % addrs.len()];
        let mut socket = tokio::net::TcpStream::connect(first).await.unwrap();
        socket.write_all(head(first, &n, body.len()).as_bytes()).await.unwrap();
        socket.write_all(&body).await.unwrap();
        let wait = rand::rng().random_range(2..=30);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        drop(socket);
        let stored = upload_until_stored(&http, &addrs[(round + 1) % addrs.len()], &n, &body).await;
        acked.lock().unwrap().insert(stored["key"].as_str().unwrap().to_string(), hex::encode(Sha256::digest(&body)));
    }
    stop.store(true, Ordering::Relaxed);
    for task in background {
        task.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    acked
}

/// Every acknowledged chunk intact with one row and one event; no object without a row; the
/// reconciliation finds nothing.
async fn assert_intact(config: &Setup, storage: &Path, acked: &BTreeMap<String, String>) {
    let db = osprey_vault::db::Db::open(&config.database_url()).await.unwrap();
    let rows = db.all_recordings().await.unwrap();
    assert_eq!(rows.len(), acked.len(), "one row per acknowledged chunk");
    for r in &rows {
        let sha =
            acked.get(r.object_key.as_str()).unwrap_or_else(|| panic!("row {} was never acknowledged", r.object_key));
        assert_eq!(&r.sha256, sha, "{}", r.object_key);
        let bytes = std::fs::read(storage.join(r.object_key.as_str()))
            .unwrap_or_else(|_| panic!("object of {} is gone", r.object_key));
        assert_eq!(&hex::encode(Sha256::digest(&bytes)), sha, "object of {} holds other bytes", r.object_key);
        assert_eq!(db.event_count(r.chunk_id.as_str()).await.unwrap(), 1, "{}: one event", r.object_key);
    }
    let files = osprey_testkit::files_under(storage);
    assert_eq!(
        files.len(),
        rows.len(),
        "objects without rows or leftovers: {:?}",
        files.iter().filter(|f| !acked.contains_key(*f)).collect::<Vec<_>>()
    );
    let report = osprey_vault::reconcile::check_from_config(config, Arc::new(SystemClock), false).await.unwrap();
    assert!(report.findings.is_empty(), "vault check: {:?}", report.findings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hang_ups_then_retries_lose_nothing_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("store");
    let config = config(dir.path(), None, &storage);
    let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::in_memory().await.unwrap());
    let vault = start(&config, &bus).await;
    let acked = hang_up_then_retry(&[vault.addr.to_string()], 120).await;
    vault.stop().await.unwrap();
    assert!(acked.len() >= 120);
    assert_intact(&config, &storage, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hang_ups_then_retries_on_two_replicas_over_postgres() {
    let Some(server) = Postgres::start() else { return };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let storage = dir_a.path().join("shared-store");
    let url = server.database("faults");
    let (config_a, config_b) =
        (config(dir_a.path(), Some(url.clone()), &storage), config(dir_b.path(), Some(url), &storage));
    let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::in_memory().await.unwrap());
    let (a, b) = (start(&config_a, &bus).await, start(&config_b, &bus).await);
    let acked = hang_up_then_retry(&[a.addr.to_string(), b.addr.to_string()], 100).await;
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    assert_intact(&config_a, &storage, &acked).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_s3_server_stopped_mid_write_leaves_nothing_behind() {
    let Some(mut s3) = S3Server::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), None, &dir.path().join("unused"));
    config.providers.insert("local".into(), s3.provider_config());
    let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::in_memory().await.unwrap());
    let vault = start(&config, &bus).await;
    let addr = vault.addr.to_string();
    // A 20 MB chunk streamed slowly: multipart parts go to S3, then the server stops.
    let body = mp4_like_bytes(20 << 20, 3);
    let (mut pieces, stream) = futures::channel::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(1);
    let http = reqwest::Client::new();
    let request = upload(&http, &addr, &name(1), reqwest::Body::wrap_stream(stream)).send();
    let sending = tokio::spawn(request);
    use futures::SinkExt;
    for piece in body[..12 << 20].chunks(1 << 20) {
        pieces.send(Ok(bytes::Bytes::copy_from_slice(piece))).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    s3.stop();
    for piece in body[12 << 20..].chunks(1 << 20) {
        if pieces.send(Ok(bytes::Bytes::copy_from_slice(piece))).await.is_err() {
            break;
        }
    }
    drop(pieces);
    let answer = sending.await.unwrap();
    if let Ok(resp) = answer {
        assert_ne!(resp.status(), 200, "a write to a stopped server was acknowledged");
    }
    s3.restart();
    let db = osprey_vault::db::Db::open(&config.database_url()).await.unwrap();
    assert!(db.all_recordings().await.unwrap().is_empty(), "no row for a failed write");
    assert_eq!(db.pending_count().await.unwrap(), 0, "no event for a failed write");
    let left: Vec<String> = s3.files().into_iter().filter(|f| !f.starts_with(".")).collect();
    assert!(left.is_empty(), "objects left in S3: {left:?}");
    // The retry stores it once S3 is back.
    let stored = upload_until_stored(&http, &addr, &name(1), &body).await;
    assert_eq!(stored["duplicate"], false);
    let report = osprey_vault::reconcile::check_from_config(&config, Arc::new(SystemClock), false).await.unwrap();
    assert!(report.findings.is_empty(), "vault check: {:?}", report.findings);
    vault.stop().await.unwrap();
}

/// A client that hangs up right after its last byte and retries at once on the same vault gets
/// its chunk's answer (200, stored or duplicate) at the first try: the retry waits for the first
/// upload of the chunk, which finishes on its own, instead of being told it is in progress.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_at_once_on_the_same_vault_is_answered_at_the_first_try() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("store");
    let config = config(dir.path(), None, &storage);
    let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::in_memory().await.unwrap());
    let vault = start(&config, &bus).await;
    let addr = vault.addr.to_string();
    let http = reqwest::Client::new();
    let mut acked = BTreeMap::new();
    for round in 0..30 {
        let (n, body) = (name(500 + round), mp4_like_bytes(400_000 + round * 11, round as u8));
        let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
        socket.write_all(head(&addr, &n, body.len()).as_bytes()).await.unwrap();
        socket.write_all(&body).await.unwrap();
        drop(socket);
        let resp = upload(&http, &addr, &n, body.clone()).send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert_eq!(status, 200, "round {round}: {text}");
        let stored: serde_json::Value = serde_json::from_str(&text).unwrap();
        acked.insert(stored["key"].as_str().unwrap().to_string(), hex::encode(Sha256::digest(&body)));
    }
    vault.stop().await.unwrap();
    assert_intact(&config, &storage, &acked).await;
}
