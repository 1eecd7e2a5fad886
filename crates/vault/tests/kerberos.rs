//! A replay of what an unmodified Kerberos Agent sends to its vault, request by request, as its
//! own code writes them (kerberos-io/agent `machinery/src/cloud/kerberos_vault.go`,
//! `tus_client.go`, `cloud.go` VerifyPersistence and HandleHeartBeat), and what it needs back.
//! The agent is configured, as Kerberos documents, with a vault URI ending in `/api`.

mod common;

use common::*;
use osprey_bus::{Bus, EmbeddedBus};
use osprey_core::TOPIC_CHUNKS;
use osprey_testkit::{kerberos_fragmented, kerberos_verify_file, mp4_like_bytes, repo_root};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

/// The agent's `config.Key`: what it sends as the device.
const DEVICE_KEY: &str = "a1b2c3d4e5f6";
/// Its tus piece size (`tusDefaultChunkSize`).
const TUS_PIECE: usize = 8 << 20;

async fn vault() -> TestVault {
    vault_on(Arc::new(EmbeddedBus::in_memory().await.unwrap())).await
}

async fn vault_on(bus: Arc<EmbeddedBus>) -> TestVault {
    TestVault::start_with(bus, |c| c.vault.max_upload_bytes = 64 << 20).await
}

/// `setVaultHeaders` / `setVaultTusHeaders`: every header the agent puts on an upload request.
fn agent_headers(creds: (&str, &str), provider: &str, file_name: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    let mut set = |name: &str, value: &str| {
        h.insert(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
    };
    set("X-Kerberos-Storage-CloudKey", "hub-public-key");
    set("X-Kerberos-Storage-AccessKey", creds.0);
    set("X-Kerberos-Storage-SecretAccessKey", creds.1);
    set("X-Kerberos-Storage-Provider", provider);
    set("X-Kerberos-Storage-Device", DEVICE_KEY);
    set("X-Kerberos-Storage-Directory", "alice");
    set("X-Kerberos-Storage-Capture", "IPCamera");
    if let Some(name) = file_name {
        set("X-Kerberos-Storage-FileName", name);
    }
    h
}

fn api(t: &TestVault) -> String {
    format!("{}/api", t.base)
}

async fn recording(t: &TestVault, chunk_id: &str) -> serde_json::Value {
    json(t.api(ALICE, &format!("/api/v1/recordings/{chunk_id}")).send().await.unwrap()).await
}

/// The event the vault published for `chunk_id`.
async fn event_of(consumer: &mut dyn osprey_bus::Consumer, chunk_id: &str) -> serde_json::Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), consumer.recv()).await.expect("an event").unwrap();
        let event: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        if event["chunk_id"] == chunk_id {
            return event;
        }
    }
}

fn sample() -> std::path::PathBuf {
    repo_root().join("samples/vtest.mp4")
}

/// The Verify button: `POST {uri}/ping` with only the two keys must answer 200, then the test
/// recording goes up by plain POST with a Verify name (camera names may have spaces) and no
/// timestamp or duration headers.
#[tokio::test]
async fn verify_button_pings_then_uploads_the_test_file() {
    let t = vault().await;
    let ping = |creds: (&str, &str)| {
        t.http
            .post(format!("{}/ping", api(&t)))
            .header("X-Kerberos-Storage-AccessKey", creds.0)
            .header("X-Kerberos-Storage-SecretAccessKey", creds.1)
            .send()
    };
    assert_eq!(ping(ALICE).await.unwrap().status(), 200);
    let wrong = ping((ALICE.0, "not-the-secret")).await.unwrap();
    assert_eq!(wrong.status(), 403);
    assert_eq!(json(wrong).await["kind"], "permission_denied");
    assert_eq!(
        t.http.post(format!("{}/ping", t.base)).basic_auth(ALICE.0, Some(ALICE.1)).send().await.unwrap().status(),
        200,
        "also at the root"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("test-480p.mp4");
    kerberos_verify_file(&sample(), &file);
    let body = std::fs::read(&file).unwrap();
    let name = "1764633600_6-967003_Front door_200-200-400-400_24_769.mp4";
    let resp = t
        .http
        .post(format!("{}/storage", api(&t)))
        .headers(agent_headers(ALICE, "local", Some(name)))
        .header("Content-Type", "video/mp4")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answer = json(resp).await;
    assert_eq!(
        answer["key"], "alice/1764633600_6-967003_Front=20door_200-200-400-400_24_769.mp4",
        "the space is encoded in the key"
    );
    let r = recording(&t, answer["chunk_id"].as_str().unwrap()).await;
    assert_eq!(r["camera"], "Front door", "the name as the agent sent it");
    assert_eq!(r["device"], DEVICE_KEY);
    assert_eq!(r["recorded_at"], 1_764_633_600, "from the name, in seconds");
    assert!(r["duration_ms"].is_null(), "769 is the Verify name's token, not a duration");
    let files = t.stored_files();
    let path =
        files.iter().find(|p| p.ends_with(answer["key"].as_str().unwrap())).unwrap_or_else(|| panic!("{files:?}"));
    let stored = std::fs::read(path).unwrap();
    assert_eq!(Sha256::digest(&stored), Sha256::digest(&body));

    for (bad, why) in
        [("1_6-967003_a/../b_0-0-0-0_1_1.mp4", "traversal"), ("1_6-967003_a\tb_0-0-0-0_1_1.mp4", "control")]
    {
        let mut headers = agent_headers(ALICE, "local", None);
        headers.insert("X-Kerberos-Storage-FileName", HeaderValue::from_str(bad).unwrap());
        let resp =
            t.http.post(format!("{}/storage", api(&t))).headers(headers).body(body.clone()).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{why}");
    }
}

/// The legacy upload (`uploadVaultLegacy`): the file streamed as the body (Go sends an
/// `*os.File` body chunked), `Fps`, and `Duration` and `Timestamp` in milliseconds; the
/// recording as the agent writes it (fragmented). A retry of a stored chunk is a 200.
#[tokio::test]
async fn legacy_post_streams_a_fragmented_recording_with_millisecond_metadata() {
    let bus = Arc::new(EmbeddedBus::in_memory().await.unwrap());
    let t = vault_on(bus.clone()).await;
    let mut consumer = bus.subscribe(TOPIC_CHUNKS, "replay").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rec.mp4");
    kerberos_fragmented(&sample(), "10", "6", &file);
    let body = std::fs::read(&file).unwrap();
    let name = "1764633600_3-250_back_yard_0-0-0-0_-1_6000.mp4";
    let send = || {
        let pieces: Vec<Result<Vec<u8>, std::io::Error>> = body.chunks(64 << 10).map(|c| Ok(c.to_vec())).collect();
        t.http
            .post(format!("{}/storage", api(&t)))
            .headers(agent_headers(ALICE, "local", Some(name)))
            .header("Content-Type", "video/mp4")
            .header("X-Kerberos-Storage-Fps", "10")
            .header("X-Kerberos-Storage-Duration", "6000")
            .header("X-Kerberos-Storage-Timestamp", "1764633600250")
            .body(reqwest::Body::wrap_stream(futures::stream::iter(pieces)))
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status(), 200);
    let first = json(first).await;
    let again = json(send().await.unwrap()).await;
    assert_eq!(
        (again["chunk_id"].clone(), again["duplicate"].clone()),
        (first["chunk_id"].clone(), true.into()),
        "the retry's answer: {again}"
    );

    let chunk_id = first["chunk_id"].as_str().unwrap();
    let r = recording(&t, chunk_id).await;
    assert_eq!(r["recorded_at"], 1_764_633_600, "unix ms in, seconds kept");
    assert_eq!(r["duration_ms"], 6000);
    assert_eq!(r["fps"], 10.0);
    assert_eq!(r["device"], DEVICE_KEY, "the device header, never the name split on '_'");
    assert_eq!(r["camera"], "back_yard");

    assert_eq!(t.db().await.event_count(chunk_id).await.unwrap(), 1);
    let payload = event_of(&mut *consumer, chunk_id).await["payload"].clone();
    assert_eq!(payload["is_fragmented"], true);
    let md = &payload["metadata"];
    assert_eq!(md["event-timestamp"], "1764633600");
    assert_eq!(md["duration"], "6000", "integer milliseconds");
    assert_eq!(md["event-microseconds"], "3-250");
    assert_eq!(md["event-token"], "6000");
    assert_eq!(md["publickey"], "hub-public-key");
    assert_eq!(md["productid"], DEVICE_KEY);
    assert_eq!(md["event-instancename"], "back_yard");
}

/// What old senders did, and what an optional header left empty means.
#[tokio::test]
async fn seconds_from_old_senders_and_an_empty_provider() {
    let t = vault().await;
    let body = mp4_bytes(5000, 3);
    let resp = t
        .kerberos_upload_with(
            ALICE,
            &file_name(1),
            body.clone(),
            &[("X-Kerberos-Storage-Timestamp", "1700000123"), ("X-Kerberos-Storage-Duration", "9.5")],
        )
        .send()
        .await
        .unwrap();
    let r = recording(&t, json(resp).await["chunk_id"].as_str().unwrap()).await;
    assert_eq!(
        (r["recorded_at"].as_i64(), r["duration_ms"].as_i64()),
        (Some(1_700_000_123), Some(9500)),
        "seconds read as seconds"
    );

    // The agent's README marks the provider optional: an empty one is the account's main
    // provider (bob may use only "local"; alice, by default, the first provider by name).
    let mut headers = agent_headers(BOB, "", Some(&file_name(2)));
    headers.insert("X-Kerberos-Storage-Directory", HeaderValue::from_static("bob"));
    let resp = t.http.post(format!("{}/storage", api(&t))).headers(headers).body(body.clone()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(json(resp).await["provider"], "local");
    let resp = t
        .http
        .post(format!("{}/storage", api(&t)))
        .headers(agent_headers(ALICE, "", Some(&file_name(3))))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(json(resp).await["provider"], "archive");
}

/// `runTusUpload`, step by step: create at `{uri}/storage/tus/` with the metadata the agent
/// sends (`uploadVaultResumable`), take the id from the last segment of `Location`, HEAD (200 or
/// 204 with `Upload-Offset`), PATCH in 8 MiB pieces without the file name header, resume from
/// HEAD after a stop; a finished upload is gone (404), so a retry creates a new one and gets
/// the stored chunk back; DELETE abandons one.
#[tokio::test]
async fn tus_create_head_patch_resume_and_delete_as_the_agent_does() {
    let bus = Arc::new(EmbeddedBus::in_memory().await.unwrap());
    let t = vault_on(bus.clone()).await;
    let mut consumer = bus.subscribe(TOPIC_CHUNKS, "replay").await.unwrap();
    let body = mp4_like_bytes(20 << 20, 5);
    let name = "1764633600_3-737_porch_0-0-0-0_-1_25498.mp4";
    let base = format!("{}/storage/tus/", api(&t));
    let metadata = tus_metadata(&[
        ("filename", name),
        ("device", DEVICE_KEY),
        ("directory", "alice"),
        ("provider", "local"),
        ("capture", "IPCamera"),
        ("cloudkey", "hub-public-key"),
        ("fps", "12.5"),
        ("duration", "25498"),
        ("timestamp", "1764633600737"),
    ]);
    let create = || {
        t.http
            .post(&base)
            .headers(agent_headers(ALICE, "local", Some(name)))
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Length", body.len())
            .header("Upload-Metadata", &metadata)
            .send()
    };
    let created = create().await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let location = created.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with("/api/storage/tus/"), "under the prefix it was asked by: {location}");
    let url = format!("{base}{}", location.rsplit('/').next().unwrap());

    let head =
        || t.http.head(&url).headers(agent_headers(ALICE, "local", None)).header("Tus-Resumable", "1.0.0").send();
    let offset_of = |r: &reqwest::Response| r.headers()["upload-offset"].to_str().unwrap().parse::<usize>().unwrap();
    let patch_at = |url: String, offset: usize| {
        let end = (offset + TUS_PIECE).min(body.len());
        t.http
            .patch(url)
            .headers(agent_headers(ALICE, "local", None))
            .header("Tus-Resumable", "1.0.0")
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Offset", offset)
            .body(body[offset..end].to_vec())
            .send()
    };
    let patch = |offset: usize| patch_at(url.clone(), offset);
    let first = patch(0).await.unwrap();
    assert_eq!(first.status(), StatusCode::NO_CONTENT);
    assert_eq!(offset_of(&first), TUS_PIECE);
    // The agent stops here (restart, lost link) and resumes from what HEAD says.
    let h = head().await.unwrap();
    assert!(matches!(h.status().as_u16(), 200 | 204), "{}", h.status());
    let mut offset = offset_of(&h);
    assert_eq!(offset, TUS_PIECE);
    let stale = patch(0).await.unwrap();
    assert_eq!(stale.status(), StatusCode::CONFLICT, "a wrong offset is refused, and HEAD tells the truth");
    let mut last = None;
    while offset < body.len() {
        let r = patch(offset).await.unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        offset = offset_of(&r);
        last = Some(r);
    }
    let chunk_id = last.unwrap().headers()["x-osprey-chunk-id"].to_str().unwrap().to_string();
    let r = recording(&t, &chunk_id).await;
    assert_eq!(
        (r["recorded_at"].as_i64(), r["duration_ms"].as_i64(), r["fps"].as_f64()),
        (Some(1_764_633_600), Some(25_498), Some(12.5)),
        "from the tus metadata"
    );
    assert_eq!(r["device"], DEVICE_KEY);
    let event = event_of(&mut *consumer, &chunk_id).await;
    assert_eq!(event["payload"]["metadata"]["duration"], "25498");
    assert_eq!(event["payload"]["metadata"]["publickey"], "hub-public-key");

    // The agent's sidecar still names the finished upload: HEAD says 404, so it starts over.
    assert_eq!(head().await.unwrap().status(), StatusCode::NOT_FOUND);
    let again = create().await.unwrap();
    let url2 = format!("{base}{}", again.headers()["location"].to_str().unwrap().rsplit('/').next().unwrap());
    let mut offset = 0;
    let mut duplicate = String::new();
    while offset < body.len() {
        let r = patch_at(url2.clone(), offset).await.unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        offset = offset_of(&r);
        duplicate = r.headers().get("x-osprey-duplicate").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    }
    assert_eq!(duplicate, "true", "the same chunk, stored once");
    assert_eq!(t.db().await.event_count(&chunk_id).await.unwrap(), 1);

    // tusTerminate: DELETE abandons an upload.
    let third = create().await.unwrap();
    let url3 = format!("{base}{}", third.headers()["location"].to_str().unwrap().rsplit('/').next().unwrap());
    let deleted = t
        .http
        .delete(&url3)
        .headers(agent_headers(ALICE, "local", None))
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let gone = t
        .http
        .head(&url3)
        .headers(agent_headers(ALICE, "local", None))
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
}

fn tus_metadata(pairs: &[(&str, &str)]) -> String {
    use base64::Engine;
    let engine = base64::engine::general_purpose::STANDARD;
    let mut parts: Vec<String> = pairs.iter().map(|(k, v)| format!("{k} {}", engine.encode(v))).collect();
    parts.sort();
    parts.join(",")
}

/// `HandleHeartBeat`: every 10 s a JSON body to `{uri}/devices/heartbeat`, without keys. It gets
/// 200; it refreshes a device its account knows, which the account then sees with its facts.
#[tokio::test]
async fn heartbeats_answer_200_and_show_on_the_devices_list() {
    let t = vault().await;
    let beat = |key: &str| {
        serde_json::json!({
            "key": key, "version": "3.5.0", "release": "", "cpuid": "x", "clouduser": "alice", "cloudpublickey": "hub-public-key",
            "cameraname": "Front door", "enterprise": false, "hostname": "agent-1", "architecture": "amd64",
            "totalMemory": "1", "usedMemory": "1", "freeMemory": "1", "processMemory": "1", "mac_list": [], "ip_list": ["10.0.0.2"],
            "board": "", "disk1size": "0", "disk3size": "0", "diskvdasize": "0", "uptime": "3 hours", "boot_time": "x",
            "siteID": "", "onvif": "false", "onvif_zoom": "false", "onvif_pantilt": "false", "onvif_presets": "false",
            "onvif_presets_list": [], "cameraConnected": "true", "numberoffiles": "33", "timestamp": 1564747908,
            "cameratype": "IPCamera", "docker": true, "kios": false, "raspberrypi": false
        })
    };
    let send = |body: serde_json::Value| t.http.post(format!("{}/devices/heartbeat", api(&t))).json(&body).send();
    // Before any upload no account knows the device: 200, nothing recorded.
    assert_eq!(send(beat(DEVICE_KEY)).await.unwrap().status(), 200);
    let devices = json(t.api(ALICE, "/api/v1/devices").send().await.unwrap()).await;
    assert_eq!(devices["devices"], serde_json::json!([]));

    let upload =
        t.kerberos_upload_with(ALICE, &file_name(1), mp4_bytes(3000, 1), &[("X-Kerberos-Storage-Device", DEVICE_KEY)]);
    assert_eq!(upload.send().await.unwrap().status(), 200);
    assert_eq!(send(beat(DEVICE_KEY)).await.unwrap().status(), 200);
    assert_eq!(send(beat("someone-else")).await.unwrap().status(), 200);
    let devices = json(t.api(ALICE, "/api/v1/devices").send().await.unwrap()).await;
    let list = devices["devices"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{devices}");
    assert_eq!(list[0]["device"], DEVICE_KEY);
    assert_eq!(list[0]["recordings"], 1);
    assert!(list[0]["last_heartbeat_at"].as_i64().unwrap() > 0);
    assert_eq!(list[0]["heartbeat"]["version"], "3.5.0");
    assert_eq!(list[0]["heartbeat"]["cameraConnected"], "true");
    let bobs = json(t.api(BOB, "/api/v1/devices").send().await.unwrap()).await;
    assert_eq!(bobs["devices"], serde_json::json!([]), "bob does not see alice's camera");

    let junk = t.http.post(format!("{}/devices/heartbeat", t.base)).body("{not json").send().await.unwrap();
    assert_eq!(junk.status(), 400);
    assert_eq!(json(junk).await["kind"], "invalid_input");
    let huge = serde_json::json!({"key": "k", "hostname": "x".repeat(100 << 10)});
    assert_eq!(send(huge).await.unwrap().status(), 413);
}

/// hub-pipeline-classifier's `retrieve_media`: `GET {uri}/storage` with the event's key and
/// source answers `{"data": "<signed url>"}`, and that URL gives the bytes. Another account's
/// keys find nothing.
#[tokio::test]
async fn get_storage_answers_a_signed_link_the_classifier_downloads() {
    let t = vault().await;
    let body = mp4_bytes(40_000, 8);
    let answer = json(t.kerberos_upload(ALICE, FILE_NAME, body.clone()).send().await.unwrap()).await;
    let key = answer["key"].as_str().unwrap();
    let link = |base: String, creds: (&'static str, &'static str)| {
        t.http
            .get(format!("{base}/storage"))
            .header("Content-Type", "application/json")
            .header("X-Kerberos-Storage-FileName", key)
            .header("X-Kerberos-Storage-Provider", "local")
            .header("X-Kerberos-Storage-AccessKey", creds.0)
            .header("X-Kerberos-Storage-SecretAccessKey", creds.1)
            .send()
    };
    for base in [t.base.clone(), api(&t)] {
        let resp = link(base, ALICE).await.unwrap();
        assert_eq!(resp.status(), 200);
        let url = json(resp).await["data"].as_str().unwrap().to_string();
        let got = t.http.get(&url).send().await.unwrap();
        assert_eq!(got.status(), 200);
        assert_eq!(Sha256::digest(got.bytes().await.unwrap()), Sha256::digest(&body));
    }
    let stolen = link(api(&t), BOB).await.unwrap();
    assert_eq!(stolen.status(), 404);
}
