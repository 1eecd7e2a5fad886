//! Ingest, listing and downloads over real HTTP.

mod common;

use common::*;
use osprey_bus::EmbeddedBus;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn vault() -> TestVault {
    TestVault::start(Arc::new(EmbeddedBus::in_memory().await.unwrap())).await
}

#[tokio::test]
async fn kerberos_upload_is_stored_listed_and_downloadable() {
    let t = vault().await;
    let body = mp4_bytes(300_000, 1);
    let resp = t.kerberos_upload(ALICE, FILE_NAME, body.clone()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let stored = json(resp).await;
    assert_eq!(stored["key"], format!("alice/{FILE_NAME}"));
    assert_eq!(stored["size"], body.len());
    assert_eq!(stored["sha256"], hex::encode(Sha256::digest(&body)));
    assert_eq!(stored["duplicate"], false);
    let id = stored["chunk_id"].as_str().unwrap().to_string();

    let list = json(t.api(ALICE, "/api/v1/recordings").send().await.unwrap()).await;
    let recordings = list["recordings"].as_array().unwrap();
    assert_eq!(recordings.len(), 1);
    let r = &recordings[0];
    assert_eq!(r["chunk_id"], id);
    assert_eq!(r["device"], "camera-device-1");
    assert_eq!(r["camera"], "frontdoor", "instance name comes from the file name");
    assert_eq!(r["capture"], "IPCamera");
    assert_eq!(r["recorded_at"], 1_700_000_000);
    assert_eq!(r["region"], "200-200-400-400");
    assert_eq!(r["changes"], 24);

    let one = json(t.api(ALICE, &format!("/api/v1/recordings/{id}")).send().await.unwrap()).await;
    assert_eq!(&one, r);

    let link = json(t.api(ALICE, &format!("/api/v1/recordings/{id}/url?ttl=60")).send().await.unwrap()).await;
    let url = link["url"].as_str().unwrap();
    assert!(url.starts_with(&t.base));
    // The signed link needs no credentials.
    let download = t.http.get(url).send().await.unwrap();
    assert_eq!(download.status(), 200);
    assert_eq!(download.headers()["content-type"], "video/mp4");
    assert_eq!(download.bytes().await.unwrap().as_ref(), &body[..]);

    // Kerberos ML consumers download with the object key and provider.
    let blob = t
        .http
        .get(format!("{}/storage/blob", t.base))
        .header("X-Kerberos-Storage-FileName", format!("alice/{FILE_NAME}"))
        .header("X-Kerberos-Storage-Provider", "local")
        .header("X-Kerberos-Storage-AccessKey", ALICE.0)
        .header("X-Kerberos-Storage-SecretAccessKey", ALICE.1)
        .send()
        .await
        .unwrap();
    assert_eq!(blob.status(), 200);
    assert_eq!(blob.bytes().await.unwrap().as_ref(), &body[..]);

    // Another account sees none of it.
    let list = json(t.api(BOB, "/api/v1/recordings").send().await.unwrap()).await;
    assert_eq!(list["recordings"].as_array().unwrap().len(), 0);
    assert_eq!(t.api(BOB, &format!("/api/v1/recordings/{id}")).send().await.unwrap().status(), 404);
}

#[tokio::test]
async fn tampered_or_expired_urls_are_refused() {
    let t = vault().await;
    let resp = t.kerberos_upload(ALICE, FILE_NAME, mp4_bytes(1000, 2)).send().await.unwrap();
    let id = json(resp).await["chunk_id"].as_str().unwrap().to_string();
    let link = json(t.api(ALICE, &format!("/api/v1/recordings/{id}/url?ttl=60")).send().await.unwrap()).await;
    let url = link["url"].as_str().unwrap().to_string();
    assert_eq!(t.http.get(&url).send().await.unwrap().status(), 200);

    let last = url.chars().last().unwrap();
    let flipped = format!("{}{}", &url[..url.len() - 1], if last == '0' { '1' } else { '0' });
    let other_expiry = url.replace(
        &format!("expires={}", link["expires"]),
        &format!("expires={}", link["expires"].as_i64().unwrap() + 3600),
    );
    let unsigned = url.split('?').next().unwrap().to_string();
    for (what, bad, status) in [("signature", flipped, 403), ("expiry", other_expiry, 403), ("missing", unsigned, 401)]
    {
        let resp = t.http.get(&bad).send().await.unwrap();
        assert_eq!(resp.status(), status, "{what}");
        assert!(json(resp).await["error"].is_string());
    }

    t.clock.advance(Duration::from_secs(61));
    let resp = t.http.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    assert!(json(resp).await["error"].as_str().unwrap().contains("expired"));

    for ttl in ["0", "999999999", "abc"] {
        let resp = t.api(ALICE, &format!("/api/v1/recordings/{id}/url?ttl={ttl}")).send().await.unwrap();
        assert_eq!(resp.status(), 400, "ttl={ttl}");
    }
}

#[tokio::test]
async fn bad_credentials_are_refused_and_leave_nothing() {
    let t = vault().await;
    let body = mp4_bytes(1000, 3);
    let no_creds = t
        .http
        .post(format!("{}/storage", t.base))
        .header("X-Kerberos-Storage-Provider", "local")
        .header("X-Kerberos-Storage-FileName", FILE_NAME)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(no_creds.status(), 401);
    let err = json(no_creds).await;
    assert_eq!(err["kind"], "unauthenticated");
    assert!(err["error"].as_str().unwrap().contains("missing credentials"));

    let wrong_secret = t.kerberos_upload((ALICE.0, "nope-nope-nope"), FILE_NAME, body.clone()).send().await.unwrap();
    assert_eq!(wrong_secret.status(), 403);
    let wrong_key = t.kerberos_upload(("nobody", ALICE.1), FILE_NAME, body.clone()).send().await.unwrap();
    assert_eq!(wrong_key.status(), 403);
    // Bob's secret with Alice's access key.
    let crossed = t.kerberos_upload((ALICE.0, BOB.1), FILE_NAME, body.clone()).send().await.unwrap();
    assert_eq!(crossed.status(), 403);

    let unknown_provider = t
        .kerberos_upload_with(ALICE, FILE_NAME, body.clone(), &[("X-Kerberos-Storage-Provider", "s3-nowhere")])
        .send()
        .await
        .unwrap();
    assert_eq!(unknown_provider.status(), 400);
    assert!(json(unknown_provider).await["error"].as_str().unwrap().contains("unknown provider"));

    let not_allowed = t
        .kerberos_upload_with(BOB, FILE_NAME, body.clone(), &[("X-Kerberos-Storage-Provider", "archive")])
        .send()
        .await
        .unwrap();
    assert_eq!(not_allowed.status(), 403);

    assert_eq!(t.api(("x", "y"), "/api/v1/recordings").send().await.unwrap().status(), 403);
    assert_eq!(t.http.get(format!("{}/api/v1/recordings", t.base)).send().await.unwrap().status(), 401);
    assert_nothing_stored(&t).await;
}

#[tokio::test]
async fn bad_names_are_refused_and_leave_nothing() {
    let t = vault().await;
    let body = mp4_bytes(1000, 4);
    for (directory, file) in [
        ("alice", "../escape.mp4"),
        ("alice", "..%2Fescape.mp4"),
        ("..", "a.mp4"),
        ("/etc", "passwd"),
        ("alice/../..", "a.mp4"),
        ("alice", "a\tb.mp4"),
        ("alice", "sub/dir.mp4"),
        ("_staging", "a.mp4"),
    ] {
        let resp = t
            .kerberos_upload_with(ALICE, file, body.clone(), &[("X-Kerberos-Storage-Directory", directory)])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{directory:?}/{file:?}");
        assert_eq!(json(resp).await["kind"], "invalid_input");
    }
    let missing = t.kerberos_upload(ALICE, "", body.clone()).send().await.unwrap();
    assert_eq!(missing.status(), 400);
    assert!(json(missing).await["error"].as_str().unwrap().contains("missing header X-Kerberos-Storage-filename"));
    let repeated = t
        .kerberos_upload(ALICE, FILE_NAME, body)
        .header("X-Kerberos-Storage-Directory", "mallory")
        .send()
        .await
        .unwrap();
    assert_eq!(repeated.status(), 400, "a repeated header is ambiguous");
    assert_nothing_stored(&t).await;
}

#[tokio::test]
async fn oversize_and_non_mp4_uploads_are_refused_and_leave_nothing() {
    let t = vault().await;
    // Declared too large.
    let big = mp4_bytes(MAX_UPLOAD as usize, 5);
    let resp = t.kerberos_upload(ALICE, FILE_NAME, big.clone()).send().await.unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(json(resp).await["kind"], "too_large");
    // Streamed without a length, found too large on the way.
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> = big.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let streamed = t
        .kerberos_upload(ALICE, FILE_NAME, vec![])
        .body(reqwest::Body::wrap_stream(futures::stream::iter(pieces)))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), 413);

    let text = t.kerberos_upload(ALICE, FILE_NAME, b"this is not a video at all".to_vec()).send().await.unwrap();
    assert_eq!(text.status(), 415);
    let empty = t.kerberos_upload(ALICE, FILE_NAME, vec![]).send().await.unwrap();
    assert_eq!(empty.status(), 415);
    let wrong_type = t
        .kerberos_upload_with(ALICE, FILE_NAME, mp4_bytes(10, 1), &[("Content-Type", "text/html")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_type.status(), 415);
    let bad_fps = t
        .kerberos_upload_with(ALICE, FILE_NAME, mp4_bytes(10, 1), &[("X-Kerberos-Storage-Fps", "fast")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad_fps.status(), 400);
    assert_nothing_stored(&t).await;
}

#[tokio::test]
async fn truncated_upload_leaves_nothing() {
    let t = vault().await;
    let addr = t.base.trim_start_matches("http://").to_string();
    let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /storage HTTP/1.1\r\nHost: {addr}\r\nContent-Type: video/mp4\r\nContent-Length: 1000000\r\n\
         X-Kerberos-Storage-AccessKey: {}\r\nX-Kerberos-Storage-SecretAccessKey: {}\r\n\
         X-Kerberos-Storage-Provider: local\r\nX-Kerberos-Storage-FileName: {FILE_NAME}\r\n\
         X-Kerberos-Storage-Device: cam\r\nX-Kerberos-Storage-Directory: alice\r\n\r\n",
        ALICE.0, ALICE.1
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&mp4_bytes(400_000, 6)).await.unwrap();
    socket.shutdown().await.unwrap();
    // The server answers (or closes) once it has seen the body end early.
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer)).await.unwrap().ok();
    let answer = String::from_utf8_lossy(&answer);
    assert!(!answer.contains(" 200 "), "a truncated upload was accepted: {answer}");
    eventually("the staged upload to be removed", Duration::from_secs(5), || async { t.stored_files().is_empty() })
        .await;
    assert_nothing_stored(&t).await;

    // The same name uploads fine afterwards.
    let ok = t.kerberos_upload(ALICE, FILE_NAME, mp4_bytes(1000, 6)).send().await.unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn retried_upload_is_idempotent_and_conflicting_one_refused() {
    let t = vault().await;
    let body = mp4_bytes(5000, 7);
    let first = json(t.kerberos_upload(ALICE, FILE_NAME, body.clone()).send().await.unwrap()).await;
    let again = t.kerberos_upload(ALICE, FILE_NAME, body.clone()).send().await.unwrap();
    assert_eq!(again.status(), 200);
    let again = json(again).await;
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["chunk_id"], first["chunk_id"]);
    let different = t.kerberos_upload(ALICE, FILE_NAME, mp4_bytes(5000, 8)).send().await.unwrap();
    assert_eq!(different.status(), 409);
    // The stored bytes are still the first upload's, and staging is empty.
    let files = t.stored_files();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(std::fs::read(&files[0]).unwrap(), body);
}

#[tokio::test]
async fn listing_filters_and_paginates() {
    let t = vault().await;
    for i in 0..7 {
        let device = if i % 2 == 0 { "even" } else { "odd" };
        let resp = t
            .kerberos_upload_with(
                ALICE,
                &file_name(i),
                mp4_bytes(100, i as u8),
                &[("X-Kerberos-Storage-Device", device)],
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/recordings?limit=3&cursor={c}"),
            None => "/api/v1/recordings?limit=3".to_string(),
        };
        let page = json(t.api(ALICE, &path).send().await.unwrap()).await;
        for r in page["recordings"].as_array().unwrap() {
            seen.push(r["recorded_at"].as_i64().unwrap());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let expected: Vec<i64> = (0..7).rev().map(|i| 1_700_000_000 + i).collect();
    assert_eq!(seen, expected, "newest first, every recording once");

    let odd = json(t.api(ALICE, "/api/v1/recordings?device=odd").send().await.unwrap()).await;
    assert_eq!(odd["recordings"].as_array().unwrap().len(), 3);
    let window = json(t.api(ALICE, "/api/v1/recordings?from=1700000002&to=1700000004").send().await.unwrap()).await;
    assert_eq!(window["recordings"].as_array().unwrap().len(), 3);
    for bad in ["?limit=0", "?limit=5000", "?cursor=zzz", "?from=yesterday", "?colour=red"] {
        let resp = t.api(ALICE, &format!("/api/v1/recordings{bad}")).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
    }
}

#[tokio::test]
async fn health_and_metrics() {
    let t = vault().await;
    t.kerberos_upload(ALICE, FILE_NAME, mp4_bytes(100, 9)).send().await.unwrap();
    let health = json(t.http.get(format!("{}/healthz", t.base)).send().await.unwrap()).await;
    assert_eq!(health["status"], "ok");
    let metrics = t.http.get(format!("{}/metrics", t.base)).send().await.unwrap().text().await.unwrap();
    for name in ["osprey_vault_uploads_total", "osprey_vault_upload_bytes_total", "osprey_vault_outbox_pending"] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
    let unknown = t.http.get(format!("{}/nope", t.base)).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
}

async fn assert_nothing_stored(t: &TestVault) {
    let files = t.stored_files();
    assert!(files.is_empty(), "files left behind: {files:?}");
    for creds in [ALICE, BOB] {
        let list = json(t.api(creds, "/api/v1/recordings").send().await.unwrap()).await;
        assert_eq!(list["recordings"].as_array().unwrap().len(), 0);
    }
    let health = json(t.http.get(format!("{}/healthz", t.base)).send().await.unwrap()).await;
    assert_eq!(health["outbox_pending"], 0);
}

/// Every time in `/api/v1` is unix milliseconds in a `*_ms` field or parameter; the names used
/// before (seconds in `from`, `to`, `recorded_at`, `events_since`, `expires`) still work.
#[tokio::test]
async fn times_are_milliseconds_in_ms_fields_and_the_old_names_still_work() {
    let t = vault().await;
    let name = "1700000000_3-250_frontdoor_0-0-0-0_-1_10000.mp4";
    let stored = json(t.kerberos_upload(ALICE, name, mp4_bytes(500, 4)).send().await.unwrap()).await;
    let id = stored["chunk_id"].as_str().unwrap();
    let rec = json(t.api(ALICE, &format!("/api/v1/recordings/{id}")).send().await.unwrap()).await;
    assert_eq!(rec["recorded_ms"], 1_700_000_000_250i64);
    assert_eq!(rec["recorded_at"], 1_700_000_000, "the old name, in seconds");
    assert_eq!(rec["uploaded_ms"], rec["uploaded_at"]);
    let count = |query: &'static str| {
        let r = t.api(ALICE, &format!("/api/v1/recordings?{query}")).send();
        async move { json(r.await.unwrap()).await["recordings"].as_array().map(Vec::len) }
    };
    assert_eq!(count("from_ms=1700000000250&to_ms=1700000000250").await, Some(1));
    assert_eq!(count("from_ms=1700000000251").await, Some(0));
    assert_eq!(count("from=1700000000&to=1700000000").await, Some(1), "seconds, the old way");
    let both = t.api(ALICE, "/api/v1/recordings?from=1&from_ms=1000").send().await.unwrap();
    assert_eq!(both.status(), 400);
    assert!(json(both).await["error"].as_str().unwrap().contains("from_ms or from"));
    let devices = json(t.api(ALICE, "/api/v1/devices?events_since_ms=1699999200000").send().await.unwrap()).await;
    let device = &devices["devices"][0];
    assert_eq!(device["last_recorded_ms"], 1_700_000_000_250i64, "{device}");
    assert_eq!(device["last_recorded_at"], 1_700_000_000, "{device}");
    assert_eq!(device["last_upload_ms"], device["last_upload_at"]);
    let link = json(t.api(ALICE, &format!("/api/v1/recordings/{id}/url?ttl=60")).send().await.unwrap()).await;
    assert_eq!(link["expires_ms"].as_i64().unwrap(), link["expires"].as_i64().unwrap() * 1000);
}
