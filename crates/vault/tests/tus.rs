//! Resumable uploads (tus 1.0.0) over real HTTP: an upload cut off at 40% resumes after a vault
//! restart and completes byte-identical with one event; protocol mistakes get tus's answers and
//! leave nothing behind.

mod common;

use common::*;
use osprey_bus::{Bus, EmbeddedBus};
use osprey_core::{ChunkEvent, TOPIC_CHUNKS};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

const KERBEROS: [(&str, &str); 6] = [
    ("X-Kerberos-Storage-AccessKey", ALICE.0),
    ("X-Kerberos-Storage-SecretAccessKey", ALICE.1),
    ("X-Kerberos-Storage-Provider", "local"),
    ("X-Kerberos-Storage-FileName", FILE_NAME),
    ("X-Kerberos-Storage-Device", "camera-device-1"),
    ("X-Kerberos-Storage-Directory", "alice"),
];

fn tus(t: &TestVault, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
    tus_with(t, method, path, &[])
}

/// A tus request with the Kerberos headers, some replaced.
fn tus_with(t: &TestVault, method: reqwest::Method, path: &str, replace: &[(&str, &str)]) -> reqwest::RequestBuilder {
    let mut r = t.http.request(method, format!("{}{path}", t.base)).header("Tus-Resumable", "1.0.0");
    for (name, value) in KERBEROS {
        let value = replace.iter().find(|(n, _)| *n == name).map_or(value, |(_, v)| *v);
        r = r.header(name, value);
    }
    r
}

async fn create(t: &TestVault, length: usize) -> String {
    let resp = tus(t, reqwest::Method::POST, "/storage/tus/").header("Upload-Length", length).send().await.unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    assert!(resp.headers().contains_key("upload-expires"));
    resp.headers()["location"].to_str().unwrap().to_string()
}

async fn offset(t: &TestVault, location: &str) -> u64 {
    let resp = tus(t, reqwest::Method::HEAD, location).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    resp.headers()["upload-offset"].to_str().unwrap().parse().unwrap()
}

fn patch(t: &TestVault, location: &str, at: usize, bytes: Vec<u8>) -> reqwest::RequestBuilder {
    tus(t, reqwest::Method::PATCH, location)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", at)
        .body(bytes)
}

/// Sends a PATCH for all of `body` but only `sent` of its bytes, then drops the connection.
async fn patch_cut_off(t: &TestVault, location: &str, body: &[u8], sent: usize) {
    let addr = t.base.trim_start_matches("http://");
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "PATCH {location} HTTP/1.1\r\nHost: {addr}\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in KERBEROS {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(&body[..sent]).await.unwrap();
    sock.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(sock);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_cut_off_at_40_percent_resumes_after_a_restart() {
    let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::in_memory().await.unwrap());
    let mut t = TestVault::start(bus.clone()).await;
    let body = mp4_bytes(1_500_000, 3);
    let location = create(&t, body.len()).await;
    assert_eq!(offset(&t, &location).await, 0);

    let cut = body.len() * 4 / 10;
    patch_cut_off(&t, &location, &body, cut).await;
    eventually("the bytes before the cut to be kept", Duration::from_secs(10), || {
        let (t, location) = (&t, &location);
        async move { offset(t, location).await == cut as u64 }
    })
    .await;
    assert!(t.stored_files().is_empty(), "nothing stored before the last byte");

    t.restart(bus.clone()).await;
    assert_eq!(offset(&t, &location).await, cut as u64, "the offset survives a restart");
    let wrong = patch(&t, &location, 0, body[..10].to_vec()).send().await.unwrap();
    assert_eq!(wrong.status(), 409, "a PATCH at the wrong offset is refused");
    let done = patch(&t, &location, cut, body[cut..].to_vec()).send().await.unwrap();
    assert_eq!(done.status(), 204);
    assert_eq!(done.headers()["upload-offset"].to_str().unwrap(), body.len().to_string());
    let chunk_id = done.headers()["x-osprey-chunk-id"].to_str().unwrap().to_string();

    let link: serde_json::Value =
        json(t.api(ALICE, &format!("/api/v1/recordings/{chunk_id}/url")).send().await.unwrap()).await;
    let stored = t.http.get(link["url"].as_str().unwrap()).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(Sha256::digest(&stored), Sha256::digest(&body), "byte-identical");

    let mut consumer = bus.subscribe(TOPIC_CHUNKS, "tus-test").await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(10), consumer.recv()).await.unwrap().unwrap();
    consumer.commit(&m).await.unwrap();
    let event: ChunkEvent = serde_json::from_slice(&m.payload).unwrap();
    assert_eq!(event.chunk_id.as_str(), chunk_id);
    assert!(tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await.is_err(), "one event");
    let gone = tus(&t, reqwest::Method::HEAD, &location).send().await.unwrap();
    assert_eq!(gone.status(), 404, "a finished upload is cleaned up");
    assert!(!t.dir.path().join("tus").read_dir().unwrap().any(|_| true), "no partial files left");
}

#[tokio::test(flavor = "multi_thread")]
async fn protocol_mistakes_get_tus_answers_and_leave_nothing() {
    let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::in_memory().await.unwrap());
    let t = TestVault::start(bus).await;

    let options = t.http.request(reqwest::Method::OPTIONS, format!("{}/storage/tus/", t.base)).send().await.unwrap();
    assert_eq!(options.status(), 204);
    assert_eq!(options.headers()["tus-version"], "1.0.0");
    assert!(options.headers()["tus-extension"].to_str().unwrap().contains("creation"));
    assert_eq!(options.headers()["tus-max-size"].to_str().unwrap(), MAX_UPLOAD.to_string());

    let no_version = t.http.post(format!("{}/storage/tus/", t.base)).header("Upload-Length", 10).send().await.unwrap();
    assert_eq!(no_version.status(), 412);
    let too_big =
        tus(&t, reqwest::Method::POST, "/storage/tus/").header("Upload-Length", MAX_UPLOAD + 1).send().await.unwrap();
    assert_eq!(too_big.status(), 413);
    let bad_key =
        tus_with(&t, reqwest::Method::POST, "/storage/tus/", &[("X-Kerberos-Storage-SecretAccessKey", "wrong")])
            .header("Upload-Length", 10)
            .send()
            .await
            .unwrap();
    assert_eq!(bad_key.status(), 403, "credentials are checked at creation");
    let two_keys = tus(&t, reqwest::Method::POST, "/storage/tus/")
        .header("Upload-Length", 10)
        .header("X-Kerberos-Storage-SecretAccessKey", "another")
        .send()
        .await
        .unwrap();
    assert_eq!(two_keys.status(), 400, "a repeated credential header is refused");
    let bad_name =
        tus_with(&t, reqwest::Method::POST, "/storage/tus/", &[("X-Kerberos-Storage-FileName", "../escape.mp4")])
            .header("Upload-Length", 10)
            .send()
            .await
            .unwrap();
    assert_eq!(bad_name.status(), 400, "names are checked at creation");

    let location = create(&t, 1000).await;
    let other = t
        .http
        .head(format!("{}{location}", t.base))
        .header("Tus-Resumable", "1.0.0")
        .header("X-Kerberos-Storage-AccessKey", BOB.0)
        .header("X-Kerberos-Storage-SecretAccessKey", BOB.1)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404, "another account's upload does not exist for it");
    let wrong_type =
        tus(&t, reqwest::Method::PATCH, &location).header("Upload-Offset", 0).body(vec![0u8; 10]).send().await.unwrap();
    assert_eq!(wrong_type.status(), 415);
    let not_mp4 = patch(&t, &location, 0, vec![7u8; 100]).send().await.unwrap();
    assert_eq!(not_mp4.status(), 415, "the first bytes must be an MP4 box");
    assert_eq!(offset(&t, &location).await, 0, "refused bytes are not kept");
    let past_end = patch(&t, &location, 0, mp4_bytes(2000, 1)).send().await.unwrap();
    assert_eq!(past_end.status(), 413, "more than Upload-Length");
    assert_eq!(tus(&t, reqwest::Method::DELETE, &location).send().await.unwrap().status(), 204);
    assert_eq!(tus(&t, reqwest::Method::HEAD, &location).send().await.unwrap().status(), 404);
    let traversal = tus(&t, reqwest::Method::HEAD, "/storage/tus/..%2F..%2Fosprey.db").send().await.unwrap();
    assert_eq!(traversal.status(), 404);

    let expiring = create(&t, 1000).await;
    t.clock.advance(Duration::from_secs(24 * 3600 + 1));
    assert_eq!(tus(&t, reqwest::Method::HEAD, &expiring).send().await.unwrap().status(), 404, "expired");
    assert!(t.stored_files().is_empty());
}
