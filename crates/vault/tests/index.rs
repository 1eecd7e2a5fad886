//! The results index on a running vault: results published on `osprey.detections` (as workers
//! publish them) become events that join tracks across chunks in whatever order the results
//! come, replace rather than duplicate, stay in their account, and go with their recording.

mod common;

use common::{eventually, json, TestVault, ALICE, BOB};
use osprey_bus::{Bus, EmbeddedBus};
use osprey_core::{ChunkId, Track, TrackBox, ZoneVisit, TOPIC_DETECTIONS};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const CHUNK_MS: i64 = 10_000;
/// A real JPEG's first bytes: the index checks thumbnails are JPEG.
const JPEG: &[u8] = &[0xFF, 0xD8, 0xFF, 0xE0, 0, 16, b'J', b'F', b'I', b'F', 0, 0xFF, 0xD9];

async fn bus(dir: &std::path::Path) -> Arc<dyn Bus> {
    let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::open(&dir.join("bus.db")).await.unwrap());
    for topic in [osprey_core::TOPIC_CHUNKS, TOPIC_DETECTIONS] {
        bus.create_topic(topic, 1).await.unwrap();
    }
    bus
}

/// Uploads chunk `i` of a camera (10 s each, back to back); returns its id.
async fn upload(v: &TestVault, creds: (&str, &str), device: &str, i: i64) -> String {
    let start = 1_700_000_000 + i * CHUNK_MS / 1000;
    let name = format!("{start}_6-967003_{device}_0-0-0-0_-1_{CHUNK_MS}.mp4");
    let directory = if creds == ALICE { "alice" } else { "bob" };
    let overrides = [("X-Kerberos-Storage-Device", device), ("X-Kerberos-Storage-Directory", directory)];
    let body = osprey_testkit::mp4_like_bytes(2000, i as u8);
    let resp = v.kerberos_upload_with(creds, &name, body, &overrides).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    json(resp).await["chunk_id"].as_str().unwrap().to_string()
}

/// A person walking right at 80 px/s, seen every 500 ms from `from_ms` to `to_ms` of a chunk,
/// starting at x = `x0` at `from_ms`.
fn walker(id: u32, label: &str, from_ms: i64, to_ms: i64, x0: f32, score: f32) -> Track {
    let boxes: Vec<TrackBox> = (from_ms..=to_ms)
        .step_by(500)
        .map(|t| {
            let x = x0 + 80.0 * (t - from_ms) as f32 / 1000.0;
            TrackBox { pts_ms: t, bbox: [x, 200.0, x + 60.0, 360.0], score }
        })
        .collect();
    use base64::Engine;
    Track {
        id,
        label: label.into(),
        first_ms: from_ms,
        last_ms: to_ms,
        best_ms: from_ms,
        best_score: score,
        boxes,
        zones: vec![],
        thumbnail: Some(base64::engine::general_purpose::STANDARD.encode(JPEG)),
    }
}

fn result(chunk_id: &str, model: &str, tracks: Vec<Track>) -> Vec<u8> {
    serde_json::to_vec(&osprey_testkit::detection_result(chunk_id, model, tracks)).unwrap()
}

async fn publish(bus: &Arc<dyn Bus>, payload: &[u8]) {
    bus.publish(TOPIC_DETECTIONS, "cam", payload).await.unwrap();
}

async fn events(v: &TestVault, creds: (&str, &str), query: &str) -> Vec<Value> {
    let resp = v.api(creds, &format!("/api/v1/events{query}")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    json(resp).await["events"].as_array().unwrap().clone()
}

/// The summary's counts (kept by triggers on the events) agree with the events themselves, per
/// label, whatever joins, merges, replacements and deletions came before.
async fn summary_agrees_with_events(v: &TestVault, creds: (&str, &str)) {
    let mut listed: BTreeMap<String, i64> = BTreeMap::new();
    for e in events(v, creds, "?limit=1000").await {
        *listed.entry(e["label"].as_str().unwrap().to_string()).or_default() += 1;
    }
    let path = "/api/v1/summary?bucket=day&from=1690000000&to=1710000000";
    let summary = json(v.api(creds, path).send().await.unwrap()).await;
    let mut counted: BTreeMap<String, i64> = BTreeMap::new();
    for bucket in summary["buckets"].as_array().unwrap() {
        for (label, n) in bucket["counts"].as_object().unwrap() {
            *counted.entry(label.clone()).or_default() += n.as_i64().unwrap();
        }
    }
    assert_eq!(counted, listed, "summary against events: {summary}");
}

/// Waits until the index has taken every result published so far: a marker result on a chunk
/// of its own is indexed after them (one partition, in order).
async fn settle(v: &TestVault, bus: &Arc<dyn Bus>, marker_chunk: &str, n: u32) {
    let marker = walker(1, "marker", 5000, 5000, 0.0, 0.5 + n as f32 / 100.0);
    publish(bus, &result(marker_chunk, "marker", vec![marker])).await;
    eventually("the index to catch up", Duration::from_secs(20), || async {
        let found = events(v, ALICE, "?label=marker").await;
        found.first().is_some_and(|e| (e["best_score"].as_f64().unwrap() - (0.5 + n as f64 / 100.0)).abs() < 1e-6)
    })
    .await;
}

async fn a_walk_across_a_chunk_boundary_is_one_event_whatever_order_results_come_in(database_url: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let bus = bus(dir.path()).await;
    let v = TestVault::start_on(bus.clone(), |_| {}, database_url).await;
    let ids: Vec<String> = futures_join(&v, "frontdoor", 3).await;
    let marker = upload(&v, ALICE, "marker-cam", 0).await;

    // Chunk 1 and 2 come before chunk 0: the middle joins both sides when it arrives.
    let mut late = walker(1, "person", 6000, 9500, 100.0, 0.9);
    let mut middle = walker(1, "person", 0, 9500, 100.0 + 80.0 * 4.0, 0.8);
    late.zones = vec![ZoneVisit { zone: "porch".into(), entered_ms: 8000, left_ms: 9500, dwell_ms: 1500 }];
    middle.zones = vec![ZoneVisit { zone: "porch".into(), entered_ms: 0, left_ms: 2000, dwell_ms: 2000 }];
    let early = walker(1, "person", 0, 3000, 100.0 + 80.0 * 14.0, 0.7);
    // Someone else, far from the walker, at the start of chunk 1.
    let other = Track {
        boxes: vec![TrackBox { pts_ms: 0, bbox: [1000.0, 10.0, 1040.0, 90.0], score: 0.6 }],
        ..walker(2, "person", 0, 0, 0.0, 0.6)
    };
    // A car that leaves at chunk 1's end is not joined to the person.
    let car = walker(3, "car", 8000, 9500, 100.0 + 80.0 * 12.0, 0.9);
    publish(&bus, &result(&ids[2], "m1", vec![early])).await;
    publish(&bus, &result(&ids[1], "m1", vec![middle, other, car])).await;
    publish(&bus, &result(&ids[0], "m1", vec![late])).await;
    settle(&v, &bus, &marker, 0).await;

    let people = events(&v, ALICE, "?label=person&device=frontdoor").await;
    assert_eq!(people.len(), 2, "{people:#?}");
    let walk = people.iter().find(|e| e["duration_ms"].as_i64().unwrap() > 5000).expect("the joined walk");
    let detail = json(v.api(ALICE, &format!("/api/v1/events/{}", walk["id"])).send().await.unwrap()).await;
    let spans = detail["recordings"].as_array().unwrap();
    let span_ids: Vec<&str> = spans.iter().map(|r| r["chunk_id"].as_str().unwrap()).collect();
    assert_eq!(span_ids, ids.iter().map(String::as_str).collect::<Vec<_>>());
    let starts: Vec<i64> = spans.iter().map(|r| r["recorded_ms"].as_i64().unwrap()).collect();
    assert_eq!(walk["start_ms"].as_i64().unwrap(), starts[0] + 6000);
    assert_eq!(walk["end_ms"].as_i64().unwrap(), starts[2] + 3000);
    assert_eq!(walk["best_score"].as_f64().unwrap(), 0.9f32 as f64);
    // Its time on the porch adds up over the chunks.
    assert_eq!(walk["zones"][0]["dwell_ms"], 3500, "{walk}");
    assert_eq!(walk["zones"][0]["entered_ms"].as_i64().unwrap(), starts[0] + 8000);
    assert_eq!(walk["zones"][0]["left_ms"].as_i64().unwrap(), starts[1] + 2000);
    assert_eq!(events(&v, ALICE, "?label=car").await.len(), 1);

    // The thumbnail is served as a JPEG.
    let resp = v.api(ALICE, walk["thumbnail_url"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "image/jpeg");
    assert_eq!(resp.bytes().await.unwrap().as_ref(), JPEG);

    // The recording's detections carry the tracks with their events, in the video's own time.
    let d = json(v.api(ALICE, &format!("/api/v1/recordings/{}/detections", ids[1])).send().await.unwrap()).await;
    let tracks = d["results"][0]["tracks"].as_array().unwrap();
    assert_eq!(
        (d["results"][0]["model_version"].as_str(), d["results"][0]["model_sha256"].as_str()),
        (Some("1"), Some("ab".repeat(32).as_str()))
    );
    assert_eq!(tracks.len(), 3);
    assert_eq!(tracks[0]["event_id"], walk["id"]);
    assert_eq!((tracks[0]["first_ms"].as_i64(), tracks[0]["last_ms"].as_i64()), (Some(0), Some(9500)));
    summary_agrees_with_events(&v, ALICE).await;
}

/// Uploads `n` back-to-back chunks of one camera for alice.
async fn futures_join(v: &TestVault, device: &str, n: i64) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(upload(v, ALICE, device, i).await);
    }
    ids
}

async fn the_same_result_three_times_and_a_reanalysis_replace_and_never_duplicate(database_url: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let bus = bus(dir.path()).await;
    let v = TestVault::start_on(bus.clone(), |_| {}, database_url).await;
    let ids = futures_join(&v, "yard", 2).await;
    let marker = upload(&v, ALICE, "marker-cam", 0).await;
    let first = result(&ids[0], "m1", vec![walker(1, "person", 6000, 9500, 100.0, 0.9)]);
    let second = result(&ids[1], "m1", vec![walker(1, "person", 0, 3000, 420.0, 0.8)]);
    for payload in [&first, &second, &first, &second, &first] {
        publish(&bus, payload).await;
    }
    settle(&v, &bus, &marker, 1).await;
    let found = events(&v, ALICE, "?device=yard").await;
    assert_eq!(found.len(), 1, "{found:#?}");

    // A re-analysis of chunk 1 by the same model that sees two people replaces what it said.
    let redone = vec![walker(1, "person", 0, 3000, 420.0, 0.8), walker(2, "dog", 0, 2000, 900.0, 0.7)];
    publish(&bus, &result(&ids[1], "m1", redone)).await;
    // Another model's result for the same chunks is kept beside it, as its own events.
    publish(&bus, &result(&ids[0], "m2", vec![walker(1, "person", 6000, 9500, 100.0, 0.95)])).await;
    settle(&v, &bus, &marker, 2).await;
    let found = events(&v, ALICE, "?device=yard").await;
    let mut seen: Vec<(String, String)> =
        found.iter().map(|e| (e["model"].as_str().unwrap().into(), e["label"].as_str().unwrap().into())).collect();
    seen.sort();
    let want = [("m1", "dog"), ("m1", "person"), ("m2", "person")];
    assert_eq!(seen, want.map(|(a, b)| (a.to_string(), b.to_string())));
    let d = json(v.api(ALICE, &format!("/api/v1/recordings/{}/detections", ids[0])).send().await.unwrap()).await;
    assert_eq!(d["results"].as_array().unwrap().len(), 2);
    let only =
        json(v.api(ALICE, &format!("/api/v1/recordings/{}/detections?model=m2", ids[0])).send().await.unwrap()).await;
    assert_eq!(only["results"][0]["model"], "m2");

    // What a bad or foreign result tries is refused, and the index goes on.
    publish(&bus, b"not json").await;
    publish(
        &bus,
        &result(
            &ChunkId::derive("local", "alice/never.mp4").to_string(),
            "m1",
            vec![walker(1, "person", 0, 0, 0.0, 0.9)],
        ),
    )
    .await;
    let mut bad_thumbnail = walker(1, "person", 0, 0, 0.0, 0.9);
    bad_thumbnail.thumbnail = Some("PHNjcmlwdD4=".into());
    publish(&bus, &result(&ids[0], "m3", vec![bad_thumbnail])).await;
    settle(&v, &bus, &marker, 3).await;
    assert_eq!(events(&v, ALICE, "?device=yard").await.len(), 3);
    summary_agrees_with_events(&v, ALICE).await;
}

/// Two tracks end close together at a chunk's edge and one continues in the next chunk: whichever
/// result comes first, and after a re-delivery, the continuation joins the better of the two
/// and only it. (Each track used to take its best match on its own side, so the first chunk's
/// two tracks both joined the one continuation when that chunk came last, and not otherwise.)
async fn a_continuation_joins_one_track_whatever_order_results_come_in(database_url: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let bus = bus(dir.path()).await;
    let v = TestVault::start_on(bus.clone(), |_| {}, database_url).await;
    let marker = upload(&v, ALICE, "marker-cam", 0).await;
    // One frame at the edge, and a walker about to reach the same place.
    let ending = || vec![walker(1, "person", 9500, 9500, 140.0, 0.7), walker(2, "person", 5000, 9500, -250.0, 0.8)];
    let going_on = || vec![walker(1, "person", 0, 4000, 150.0, 0.9)];
    let in_order = futures_join(&v, "in-order", 2).await;
    let reversed = futures_join(&v, "reversed", 2).await;
    publish(&bus, &result(&in_order[0], "m1", ending())).await;
    publish(&bus, &result(&in_order[1], "m1", going_on())).await;
    publish(&bus, &result(&reversed[1], "m1", going_on())).await;
    publish(&bus, &result(&reversed[0], "m1", ending())).await;
    settle(&v, &bus, &marker, 0).await;

    let shape = async |device: &str| {
        let mut found: Vec<(i64, f64)> = events(&v, ALICE, &format!("?device={device}"))
            .await
            .iter()
            .map(|e| (e["duration_ms"].as_i64().unwrap(), e["best_score"].as_f64().unwrap()))
            .collect();
        found.sort_by(|a, b| a.partial_cmp(b).unwrap());
        found
    };
    let walk = (4500 + 500 + 4000, 0.9f32 as f64);
    assert_eq!(shape("in-order").await, [(0, 0.7f32 as f64), walk], "the lone frame is an event of its own");
    assert_eq!(shape("reversed").await, shape("in-order").await);
    // A re-delivered result of either chunk changes nothing.
    publish(&bus, &result(&reversed[0], "m1", ending())).await;
    publish(&bus, &result(&in_order[1], "m1", going_on())).await;
    settle(&v, &bus, &marker, 1).await;
    assert_eq!(shape("reversed").await, shape("in-order").await);
    assert_eq!(shape("in-order").await, [(0, 0.7f32 as f64), walk]);
    summary_agrees_with_events(&v, ALICE).await;
}

async fn filters_summary_and_pages(database_url: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let bus = bus(dir.path()).await;
    let v = TestVault::start_on(bus.clone(), |_| {}, database_url).await;
    let ids = futures_join(&v, "gate", 5).await;
    let marker = upload(&v, ALICE, "marker-cam", 0).await;
    for (i, id) in ids.iter().enumerate() {
        let mut short = walker(1, "person", 1000, 2000, 100.0, 0.6);
        let mut long = walker(2, "person", 4000, 8000, 700.0, 0.9);
        long.zones = vec![ZoneVisit { zone: "porch".into(), entered_ms: 5000, left_ms: 8000, dwell_ms: 3000 }];
        short.best_score = 0.6 + i as f32 / 100.0;
        publish(&bus, &result(id, "m1", vec![short, long])).await;
    }
    settle(&v, &bus, &marker, 4).await;
    assert_eq!(events(&v, ALICE, "?device=gate").await.len(), 10);
    let porch = events(&v, ALICE, "?zone=porch").await;
    assert_eq!(porch.len(), 5);
    assert_eq!(porch[0]["zones"][0]["dwell_ms"], 3000);
    assert_eq!(events(&v, ALICE, "?device=gate&min_score=0.85").await.len(), 5);
    assert_eq!(events(&v, ALICE, "?device=gate&min_duration=3000").await.len(), 5);
    // The time filter is on the start, unix seconds, inclusive.
    assert_eq!(events(&v, ALICE, "?device=gate&from=1700000010&to=1700000021").await.len(), 3);

    // Newest first, page by page, nothing twice.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page =
            json(v.api(ALICE, &format!("/api/v1/events?device=gate&limit=3{cursor}")).send().await.unwrap()).await;
        seen.extend(
            page["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| (e["start_ms"].as_i64().unwrap(), e["id"].as_i64().unwrap())),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    sorted.dedup();
    assert_eq!(seen, sorted);
    assert_eq!(seen.len(), 10);

    let summary = json(
        v.api(ALICE, "/api/v1/summary?bucket=hour&device=gate&from=1699999200&to=1700003000").send().await.unwrap(),
    )
    .await;
    assert_eq!(summary["buckets"].as_array().unwrap().len(), 1, "{summary}");
    assert_eq!(summary["buckets"][0]["counts"]["person"], 10);
    assert_eq!(summary["buckets"][0]["start_ms"], 1_699_999_200_000i64);
    // Buckets are whole: a range inside the hour counts the hour.
    let inside = v.api(ALICE, "/api/v1/summary?bucket=hour&device=gate&label=person&from=1700000030&to=1700000031");
    let inside = json(inside.send().await.unwrap()).await;
    assert_eq!(inside["buckets"][0]["counts"]["person"], 10, "{inside}");
    let elsewhere = v.api(ALICE, "/api/v1/summary?bucket=day&device=marker-cam&label=person&from=1699999200");
    assert!(json(elsewhere.send().await.unwrap()).await["buckets"].as_array().unwrap().is_empty());
    summary_agrees_with_events(&v, ALICE).await;

    for bad in ["?limit=0", "?cursor=x", "?min_score=high", "?sort=up"] {
        let resp = v.api(ALICE, &format!("/api/v1/events{bad}")).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
        assert!(json(resp).await["error"].is_string());
    }
    let resp = v.api(ALICE, "/api/v1/summary?bucket=week").send().await.unwrap();
    assert_eq!(resp.status(), 400);
}

async fn another_account_sees_none_of_it_and_retention_takes_events_with_their_recording(database_url: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let bus = bus(dir.path()).await;
    // No rule while the vault runs: its retention task's first pass comes at start, and under load
    // it could come after the uploads and take them. The rule is given to the run below.
    let tweak = |c: &mut osprey_vault::Setup| c.vault.retention_interval = Duration::from_secs(3600);
    let mut v = TestVault::start_on(bus.clone(), tweak, database_url).await;
    let ids = futures_join(&v, "frontdoor", 1).await;
    let marker = upload(&v, ALICE, "marker-cam", 0).await;
    publish(&bus, &result(&ids[0], "m1", vec![walker(1, "person", 0, 3000, 100.0, 0.9)])).await;
    settle(&v, &bus, &marker, 5).await;
    let mine = events(&v, ALICE, "?label=person").await;
    assert_eq!(mine.len(), 1);
    let id = mine[0]["id"].as_i64().unwrap();

    assert!(events(&v, BOB, "").await.is_empty());
    for path in [
        format!("/api/v1/events/{id}"),
        format!("/api/v1/events/{id}/thumbnail.jpg"),
        format!("/api/v1/recordings/{}/detections", ids[0]),
    ] {
        let resp = v.api(BOB, &path).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{path}");
        let resp = v.http.get(format!("{}{path}", v.base)).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{path} without keys");
    }
    let summary =
        json(v.api(BOB, "/api/v1/summary?bucket=day&from=1699000000&to=1701000000").send().await.unwrap()).await;
    assert!(summary["buckets"].as_array().unwrap().is_empty());
    // Bob's own chunk with a result naming alice's account in its key stays bob's.
    let bobs = upload(&v, BOB, "frontdoor", 7).await;
    publish(&bus, &result(&bobs, "m1", vec![walker(1, "person", 0, 3000, 100.0, 0.9)])).await;
    settle(&v, &bus, &marker, 6).await;
    assert_eq!(events(&v, ALICE, "?label=person").await.len(), 1);
    assert_eq!(events(&v, BOB, "?label=person").await.len(), 1);

    // Retention (every recording is over its 1-byte budget) takes the events too.
    let mut config = v.config();
    config.vault.retention = vec![osprey_vault::RetentionRule { max_bytes: Some(1), ..Default::default() }];
    let report = osprey_vault::retention::run_from_config(&config, v.clock.as_ref(), false).await.unwrap();
    assert!(report.deleted >= 2, "{report:?}");
    assert!(events(&v, ALICE, "?label=person").await.is_empty());
    assert!(events(&v, BOB, "").await.is_empty());
    summary_agrees_with_events(&v, ALICE).await;
    summary_agrees_with_events(&v, BOB).await;
    let resp = v.api(ALICE, &format!("/api/v1/events/{id}")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    v.stop().await;
}

/// The triggers behind the summary follow an event through every change the index makes: born,
/// moved to another hour (joined to an earlier chunk), relabelled, deleted (merged or retained).
async fn event_counts_follow_every_change_of_an_event(database_url: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let url = database_url.unwrap_or_else(|| format!("sqlite://{}", dir.path().join("v.db").display()));
    drop(osprey_vault::db::Db::open(&url).await.unwrap());
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    let counts = || async {
        let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT device, label, hour, events FROM event_counts WHERE events <> 0 ORDER BY device, label, hour",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        rows.into_iter().map(|(d, l, h, n)| format!("{d}/{l}/{}:{n}", h / 3_600_000)).collect::<Vec<_>>()
    };
    let hour = 3_600_000i64;
    sqlx::query(
        "INSERT INTO events (account, device, model, label, start_at, end_at, duration_ms, best_score, best_chunk, best_track)
         VALUES ('a', 'cam', 'm', 'person', $1, $1, 0, 0.5, 'c', 1), ('a', 'cam', 'm', 'person', $2, $2, 0, 0.5, 'c', 2)",
    )
    .bind(10 * hour + 5)
    .bind(10 * hour + 9)
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(counts().await, ["/person/10:2", "cam/person/10:2"]);
    sqlx::query("UPDATE events SET start_at = $1 WHERE best_track = 1")
        .bind(9 * hour + 1)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(counts().await, ["/person/9:1", "/person/10:1", "cam/person/9:1", "cam/person/10:1"]);
    sqlx::query("UPDATE events SET end_at = end_at + 1, best_score = 0.9").execute(&pool).await.unwrap();
    sqlx::query("UPDATE events SET label = 'dog' WHERE best_track = 2").execute(&pool).await.unwrap();
    assert_eq!(counts().await, ["/dog/10:1", "/person/9:1", "cam/dog/10:1", "cam/person/9:1"]);
    sqlx::query("DELETE FROM events WHERE best_track = 1").execute(&pool).await.unwrap();
    assert_eq!(counts().await, ["/dog/10:1", "cam/dog/10:1"]);
}

/// Each scenario on SQLite and on PostgreSQL (one server, a database each).
mod on {
    use osprey_testkit::Postgres;

    macro_rules! both {
        ($($name:ident),*) => {
            mod sqlite {
                $(#[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    super::super::$name(None).await
                })*
            }
            mod postgres {
                $(#[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    let Some(server) = super::Postgres::start() else { return };
                    super::super::$name(Some(server.database(stringify!($name)))).await
                })*
            }
        };
    }
    both!(
        a_walk_across_a_chunk_boundary_is_one_event_whatever_order_results_come_in,
        a_continuation_joins_one_track_whatever_order_results_come_in,
        the_same_result_three_times_and_a_reanalysis_replace_and_never_duplicate,
        filters_summary_and_pages,
        event_counts_follow_every_change_of_an_event,
        another_account_sees_none_of_it_and_retention_takes_events_with_their_recording
    );
}
