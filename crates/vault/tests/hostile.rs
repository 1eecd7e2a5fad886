//! Hostile requests against a real vault: another account's names, traversal, truncated and fake
//! MP4s, lying lengths, slow headers, too many connections, tus misuse, methods and paths the
//! vault does not serve. Each gets its status and a JSON error that names no server path and no
//! SQL, and leaves nothing behind: no object, no row, no event, no tus file.

mod common;

use common::*;
use osprey_bus::EmbeddedBus;
use reqwest::Method;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn vault() -> TestVault {
    let mut t = TestVault::start_with(Arc::new(EmbeddedBus::in_memory().await.unwrap()), |c| {
        c.vault.header_read_timeout = Duration::from_secs(1);
        c.vault.max_connections_per_client = 8;
        c.vault.live_streams_per_client = 4;
    })
    .await;
    // A new connection per request: with a 1 s header deadline an idle pooled one is closed by
    // the vault, and the connection-limit check below counts connections exactly.
    t.http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    t
}

/// Checks an error answer: its status, a JSON body with `error` and `kind`, and nothing in it
/// that belongs to the server (a path, database text).
async fn refused(what: &str, resp: reqwest::Response, status: u16) -> serde_json::Value {
    assert_eq!(resp.status(), status, "{what}");
    let content_type = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string());
    let text = resp.text().await.unwrap();
    if status == 405 || content_type.is_some() || !text.is_empty() {
        assert_eq!(content_type.as_deref(), Some("application/json"), "{what}: {text}");
    }
    if text.is_empty() {
        return serde_json::Value::Null; // HEAD: no body
    }
    let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{what}: not JSON: {text}"));
    assert!(body["error"].is_string() && body["kind"].is_string(), "{what}: {body}");
    for leak in ["/tmp", "/root", "/home", "sqlite", "SQL", "UNIQUE", "constraint", "os error", "osprey.db"] {
        assert!(!text.contains(leak), "{what}: answer shows {leak:?}: {text}");
    }
    body
}

fn mp4(len: usize, seed: u8) -> Vec<u8> {
    mp4_bytes(len, seed)
}

fn tus(t: &TestVault, creds: (&str, &str), method: Method, path: &str) -> reqwest::RequestBuilder {
    tus_as(t, creds, method, path, 77)
}

/// A tus request with `creds` for the chunk named `file_name(n)`.
fn tus_as(t: &TestVault, creds: (&str, &str), method: Method, path: &str, n: usize) -> reqwest::RequestBuilder {
    t.http
        .request(method, format!("{}{path}", t.base))
        .header("Tus-Resumable", "1.0.0")
        .header("X-Kerberos-Storage-AccessKey", creds.0)
        .header("X-Kerberos-Storage-SecretAccessKey", creds.1)
        .header("X-Kerberos-Storage-Provider", "local")
        .header("X-Kerberos-Storage-FileName", file_name(n))
        .header("X-Kerberos-Storage-Device", "cam")
}

/// A raw HTTP/1.1 request: `head` (without the blank line) and `body`, then the write side
/// closed; returns what the server answered before closing.
async fn raw(t: &TestVault, head: &str, body: &[u8]) -> String {
    let addr = t.base.trim_start_matches("http://").to_string();
    let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    socket.write_all(format!("{head}\r\n\r\n").as_bytes()).await.unwrap();
    socket.write_all(body).await.unwrap();
    socket.shutdown().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer)).await.unwrap().ok();
    String::from_utf8_lossy(&answer).to_string()
}

fn upload_head(t: &TestVault, length: usize) -> String {
    format!(
        "POST /storage HTTP/1.1\r\nHost: {}\r\nContent-Type: video/mp4\r\nContent-Length: {length}\r\n\
         X-Kerberos-Storage-AccessKey: {}\r\nX-Kerberos-Storage-SecretAccessKey: {}\r\n\
         X-Kerberos-Storage-Provider: local\r\nX-Kerberos-Storage-FileName: {}\r\nX-Kerberos-Storage-Device: cam",
        t.base.trim_start_matches("http://"),
        ALICE.0,
        ALICE.1,
        file_name(99)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_requests_are_refused_with_json_and_leave_nothing() {
    let t = vault().await;
    // What there is to attack: one chunk of Alice's, one resumable upload of hers.
    let alice_body = mp4(20_000, 1);
    let stored = json(t.kerberos_upload(ALICE, FILE_NAME, alice_body.clone()).send().await.unwrap()).await;
    let alice_id = stored["chunk_id"].as_str().unwrap().to_string();
    let alice_key = stored["key"].as_str().unwrap().to_string();
    let resp = tus(&t, ALICE, Method::POST, "/storage/tus/").header("Upload-Length", "5000").send().await.unwrap();
    assert_eq!(resp.status(), 201);
    let alice_tus = resp.headers()["location"].to_str().unwrap().to_string();
    let mut count = 0;

    // Another account: cannot read, confirm, overwrite or pre-empt Alice's names.
    let dir_alice = [("X-Kerberos-Storage-Directory", "alice")];
    let same = json(t.kerberos_upload_with(BOB, FILE_NAME, alice_body.clone(), &dir_alice).send().await.unwrap()).await;
    assert_eq!(same["duplicate"], false, "Bob's upload must not confirm Alice's chunk: {same}");
    assert_ne!(same["chunk_id"], alice_id.as_str());
    assert!(same["key"].as_str().unwrap().starts_with("bob/"), "{same}");
    // Bob takes a name first; Alice's own upload of it is still hers, not a conflict.
    let first = t.kerberos_upload_with(BOB, &file_name(50), mp4(20_000, 2), &dir_alice).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let hers = json(t.kerberos_upload(ALICE, &file_name(50), mp4(20_000, 9)).send().await.unwrap()).await;
    assert_eq!(
        (hers["duplicate"].as_bool(), hers["key"].as_str()),
        (Some(false), Some(format!("alice/{}", file_name(50)).as_str())),
        "{hers}"
    );
    count += 3;
    let blob = t
        .http
        .get(format!("{}/storage/blob", t.base))
        .header("X-Kerberos-Storage-FileName", &alice_key)
        .header("X-Kerberos-Storage-Provider", "local")
        .header("X-Kerberos-Storage-AccessKey", BOB.0)
        .header("X-Kerberos-Storage-SecretAccessKey", BOB.1);
    refused("bob reads alice's blob", blob.send().await.unwrap(), 404).await;
    for path in [format!("/api/v1/recordings/{alice_id}"), format!("/api/v1/recordings/{alice_id}/url")] {
        refused(&format!("bob GET {path}"), t.api(BOB, &path).send().await.unwrap(), 404).await;
    }
    for method in [Method::HEAD, Method::DELETE] {
        refused(
            &format!("bob {method} alice's tus upload"),
            tus(&t, BOB, method, &alice_tus).send().await.unwrap(),
            404,
        )
        .await;
    }
    let bob_patch = tus(&t, BOB, Method::PATCH, &alice_tus)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "0")
        .body(mp4(100, 3));
    refused("bob PATCHes alice's tus upload", bob_patch.send().await.unwrap(), 404).await;
    count += 6;

    // Names that would leave the account's space, or are not names.
    for (directory, file) in [
        ("..", "a.mp4"),
        ("alice/../..", "a.mp4"),
        ("/etc", "a.mp4"),
        ("alice", "../x.mp4"),
        ("alice", "a/b.mp4"),
        ("_staging", "a.mp4"),
        ("alice", ".hidden.mp4"),
        ("a%2F..%2Fb", "a.mp4"),
        ("alice", "a\tb.mp4"),
        ("bob/../alice", "a.mp4"),
    ] {
        let r = t.kerberos_upload_with(ALICE, file, mp4(100, 4), &[("X-Kerberos-Storage-Directory", directory)]);
        refused(&format!("name {directory:?}/{file:?}"), r.send().await.unwrap(), 400).await;
        count += 1;
    }

    // Bodies that are not a complete MP4.
    let whole = mp4(30_000, 5);
    let mut ff = whole[..24].to_vec();
    ff.extend(std::iter::repeat_n(0xffu8, 4000));
    let mut trailing = whole.clone();
    trailing.extend_from_slice(b"junk");
    let mut no_moov = whole[..24].to_vec();
    no_moov.extend_from_slice(&whole[32..]);
    for (what, body) in [
        ("text", b"this is not a video at all".to_vec()),
        ("empty", vec![]),
        ("first half", whole[..whole.len() / 2].to_vec()),
        ("ftyp then 0xff", ff),
        ("no moov", no_moov),
        ("trailing bytes", trailing),
    ] {
        let body = refused(what, t.kerberos_upload(ALICE, &file_name(1), body).send().await.unwrap(), 415).await;
        assert_eq!(body["kind"], "unsupported_media", "{what}");
        count += 1;
    }

    // Lying lengths.
    let answer = raw(&t, &upload_head(&t, 100_000), &whole[..]).await;
    assert!(!answer.contains(" 200 "), "a body shorter than its Content-Length was stored: {answer}");
    let too_long = raw(&t, &upload_head(&t, 10), &whole[..]).await;
    assert!(!too_long.contains(" 200 "), "a body longer than its Content-Length was stored: {too_long}");
    let big = t.kerberos_upload(ALICE, &file_name(2), mp4(MAX_UPLOAD as usize, 6));
    refused("declared too large", big.send().await.unwrap(), 413).await;
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
        mp4(MAX_UPLOAD as usize, 6).chunks(64 << 10).map(|c| Ok(c.to_vec())).collect();
    let streamed =
        t.kerberos_upload(ALICE, &file_name(2), vec![]).body(reqwest::Body::wrap_stream(futures::stream::iter(pieces)));
    refused("streamed too large", streamed.send().await.unwrap(), 413).await;
    count += 4;

    // Headers.
    let html = t.kerberos_upload_with(ALICE, &file_name(3), mp4(100, 7), &[("Content-Type", "text/html")]);
    refused("content type", html.send().await.unwrap(), 415).await;
    let twice = t.kerberos_upload(ALICE, &file_name(3), mp4(100, 7)).header("X-Kerberos-Storage-AccessKey", BOB.0);
    refused("access key twice", twice.send().await.unwrap(), 400).await;
    let none =
        t.http.post(format!("{}/storage", t.base)).header("X-Kerberos-Storage-Provider", "local").body(mp4(100, 7));
    refused("no credentials", none.send().await.unwrap(), 401).await;
    refused(
        "wrong secret",
        t.kerberos_upload((ALICE.0, "wrong-secret"), &file_name(3), mp4(100, 7)).send().await.unwrap(),
        403,
    )
    .await;
    let long = "x".repeat(2000);
    for (what, header, value, status) in [
        ("unknown provider", "X-Kerberos-Storage-Provider", "nowhere", 400),
        ("fps", "X-Kerberos-Storage-Fps", "fast", 400),
        ("timestamp", "X-Kerberos-Storage-Timestamp", "-5", 400),
        ("long device", "X-Kerberos-Storage-Device", long.as_str(), 400),
    ] {
        let r = t.kerberos_upload_with(ALICE, &file_name(3), mp4(100, 7), &[(header, value)]);
        refused(what, r.send().await.unwrap(), status).await;
    }
    let forbidden =
        t.kerberos_upload_with(BOB, &file_name(3), mp4(100, 7), &[("X-Kerberos-Storage-Provider", "archive")]);
    refused("provider not allowed", forbidden.send().await.unwrap(), 403).await;
    count += 9;

    // Methods and paths the vault does not serve, bad links and queries.
    refused("DELETE /storage", t.http.delete(format!("{}/storage", t.base)).send().await.unwrap(), 405).await;
    refused("GET /storage without keys", t.http.get(format!("{}/storage", t.base)).send().await.unwrap(), 401).await;
    refused("PUT recordings", t.http.put(format!("{}/api/v1/recordings", t.base)).send().await.unwrap(), 405).await;
    refused("unknown path", t.http.get(format!("{}/nope", t.base)).send().await.unwrap(), 404).await;
    refused(
        "traversal path",
        t.http
            .get(format!("{}/api/v1/download/..%2F..%2Fetc%2Fpasswd?expires=1&signature=00", t.base))
            .send()
            .await
            .unwrap(),
        403,
    )
    .await;
    refused(
        "forged link",
        t.http
            .get(format!("{}/api/v1/download/{alice_id}?expires=9999999999&signature=00", t.base))
            .send()
            .await
            .unwrap(),
        403,
    )
    .await;
    refused("bad query", t.api(ALICE, "/api/v1/recordings?limit=abc").send().await.unwrap(), 400).await;
    count += 7;

    // tus misuse.
    let unversioned = t.http.post(format!("{}/storage/tus/", t.base)).header("Upload-Length", "10");
    let resp = unversioned.send().await.unwrap();
    assert_eq!(
        resp.headers().get("tus-resumable").map(|v| v.to_str().unwrap()),
        Some("1.0.0"),
        "tus errors say their version"
    );
    refused("tus without version", resp, 412).await;
    let over = tus(&t, ALICE, Method::POST, "/storage/tus/").header("Upload-Length", (MAX_UPLOAD + 1).to_string());
    refused("tus too large", over.send().await.unwrap(), 413).await;
    let deferred = tus(&t, ALICE, Method::POST, "/storage/tus/").header("Upload-Defer-Length", "1");
    refused("tus deferred length", deferred.send().await.unwrap(), 400).await;
    let patch = |offset: &str, content_type: &str, body: Vec<u8>| {
        tus(&t, ALICE, Method::PATCH, &alice_tus)
            .header("Content-Type", content_type.to_string())
            .header("Upload-Offset", offset.to_string())
            .body(body)
    };
    refused("tus wrong offset", patch("7", "application/offset+octet-stream", mp4(10, 1)).send().await.unwrap(), 409)
        .await;
    refused("tus wrong content type", patch("0", "video/mp4", mp4(10, 1)).send().await.unwrap(), 415).await;
    refused(
        "tus past its length",
        patch("0", "application/offset+octet-stream", mp4(6000, 1)).send().await.unwrap(),
        413,
    )
    .await;
    refused(
        "tus not an mp4",
        patch("0", "application/offset+octet-stream", vec![b'x'; 100]).send().await.unwrap(),
        415,
    )
    .await;
    refused(
        "tus traversal id",
        tus(&t, ALICE, Method::HEAD, "/storage/tus/..%2F..%2Fosprey.db").send().await.unwrap(),
        404,
    )
    .await;
    refused(
        "tus unknown id",
        tus(&t, ALICE, Method::HEAD, &format!("/storage/tus/{}", "a".repeat(32))).send().await.unwrap(),
        404,
    )
    .await;
    count += 9;
    // A complete tus upload whose bytes are not a complete MP4: refused at the last byte, removed.
    let mut fake = mp4(5000, 8)[..24].to_vec();
    fake.resize(5000, 0xff);
    let resp = tus(&t, ALICE, Method::POST, "/storage/tus/").header("Upload-Length", "5000").send().await.unwrap();
    let fake_tus = resp.headers()["location"].to_str().unwrap().to_string();
    let last = tus(&t, ALICE, Method::PATCH, &fake_tus)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "0")
        .body(fake);
    refused("tus upload of a fake mp4", last.send().await.unwrap(), 415).await;
    refused("tus fake upload is gone", tus(&t, ALICE, Method::HEAD, &fake_tus).send().await.unwrap(), 404).await;
    count += 2;

    // Slow headers: half a header is cut off after header_read_timeout_secs.
    let addr = t.base.trim_start_matches("http://").to_string();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"POST /storage HTTP/1.1\r\nHost: x\r\nX-Kerberos-Sto").await.unwrap();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "a connection that never finished its headers was left open");
    // Too many connections from one client: the ninth is closed at once, the others still work.
    let mut open = Vec::new();
    for _ in 0..8 {
        open.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let mut ninth = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(2), ninth.read(&mut byte)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "the connection past the limit was served: {read:?}");
    drop((open, ninth));
    count += 2;
    assert!(count >= 40, "{count} hostile requests");

    // Alice's upload and chunk are untouched; nothing else was kept.
    // The vault frees a client's places as it sees those connections close: until then a new
    // one is closed at once, as above.
    let mut deleted = None;
    for _ in 0..100 {
        if let Ok(resp) = tus(&t, ALICE, Method::DELETE, &alice_tus).send().await {
            deleted = Some(resp);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    refused("alice deletes her upload", deleted.expect("a connection once the others closed"), 204).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let db = t.db().await;
    let rows = db.all_recordings().await.unwrap();
    assert_eq!(rows.len(), 4, "alice's two chunks and bob's two: {rows:?}");
    for r in &rows {
        assert_eq!(db.event_count(r.chunk_id.as_str()).await.unwrap(), 1, "one event per chunk");
    }
    let alice_row = rows.iter().find(|r| r.chunk_id.as_str() == alice_id).unwrap();
    assert_eq!(alice_row.sha256, hex::encode(Sha256::digest(&alice_body)));
    let stored = std::fs::read(t.storage_root().join("local").join(&alice_key)).unwrap();
    assert_eq!(stored, alice_body, "alice's bytes are hers");
    assert_eq!(t.stored_files().len(), 4, "{:?}", t.stored_files());
    let tus_dir: Vec<_> =
        std::fs::read_dir(t.dir.path().join("tus")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(tus_dir.is_empty(), "tus files left: {tus_dir:?}");
    assert_eq!(t.check().await, Vec::<String>::new(), "vault check finds nothing");
}

/// The hostile corpus (`samples/hostile/`): files valid at the top level whose insides hang,
/// abort or exhaust a demuxer. Each is refused with 415 JSON, by POST and by tus, and nothing is
/// kept or announced; a good chunk after them is stored.
#[tokio::test]
async fn hostile_mp4s_are_refused_before_they_are_stored() {
    let t = vault().await;
    for (i, (name, bytes)) in osprey_testkit::hostile_mp4s().into_iter().enumerate() {
        let resp = t.kerberos_upload(ALICE, &file_name(100 + i), bytes.clone()).send().await.unwrap();
        let body = refused(&name, resp, 415).await;
        assert_eq!(body["kind"], "unsupported_media", "{name}: {body}");
        assert!(body["error"].as_str().unwrap().starts_with("body is not a complete MP4 file"), "{name}: {body}");

        let created = tus_as(&t, ALICE, Method::POST, "/storage/tus/", 200 + i)
            .header("Upload-Length", bytes.len().to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201, "{name}");
        let location = created.headers()["location"].to_str().unwrap().to_string();
        let path = location.strip_prefix(&t.base).unwrap_or(&location).to_string();
        let patched = tus_as(&t, ALICE, Method::PATCH, &path, 200 + i)
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Offset", "0")
            .body(bytes)
            .send()
            .await
            .unwrap();
        refused(&format!("{name} by tus"), patched, 415).await;
    }
    assert!(t.stored_files().is_empty(), "{:?}", t.stored_files());
    let health = json(t.http.get(format!("{}/healthz", t.base)).send().await.unwrap()).await;
    assert_eq!(health["outbox_pending"], 0, "nothing announced");
    let list = json(t.api(ALICE, "/api/v1/recordings").send().await.unwrap()).await;
    assert_eq!(list["recordings"].as_array().unwrap().len(), 0);
    let good = t.kerberos_upload(ALICE, FILE_NAME, mp4(5000, 9)).send().await.unwrap();
    assert_eq!(good.status(), 200);
}
