//! Rules against results on a real bus, alerts to a webhook receiver on 127.0.0.1.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use hmac::{Hmac, Mac};
use osprey_bus::{Bus, EmbeddedBus};
use osprey_core::{Clock, DetectionResult, ManualClock, TOPIC_DETECTIONS};
use osprey_notify::{Config, RuleConfig, Trigger};
use serde_json::{json, Value};
use sha2::Sha256;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

type Received = Arc<Mutex<Vec<(Option<String>, Vec<u8>)>>>;

async fn receiver() -> (String, Received) {
    let received: Received = Arc::default();
    let app = axum::Router::new()
        .route(
            "/hook",
            post(|State(r): State<Received>, headers: HeaderMap, body: axum::body::Bytes| async move {
                let signature = headers.get("x-osprey-signature").map(|v| v.to_str().unwrap().to_string());
                r.lock().unwrap().push((signature, body.to_vec()));
                "ok"
            }),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

fn rule(name: &str, label: &str, webhook: &str) -> RuleConfig {
    RuleConfig {
        name: name.into(),
        cameras: vec![],
        label: label.into(),
        trigger: Trigger::Frame,
        min_count: 1,
        zone: None,
        min_dwell: Duration::ZERO,
        window: Duration::from_secs(300),
        min_score: 0.5,
        active_from: None,
        active_to: None,
        cooldown: Duration::from_secs(60),
        webhook: webhook.into(),
        secret: None,
    }
}

/// A detection result for `camera` with one frame holding these (label, score) detections.
fn result(camera: &str, chunk: u8, detections: &[(&str, f32)]) -> Vec<u8> {
    let dets: Vec<Value> = detections
        .iter()
        .map(|(label, score)| json!({"label": label, "class_id": 0, "score": score, "box": [1.0, 2.0, 30.0, 60.0]}))
        .collect();
    let value = json!({
        "date": 1700000000, "events": ["analysis"], "provider": "kstorage", "source": "local", "request": "persist",
        "chunk_id": format!("{:032x}", chunk), "traceId": "t",
        "payload": {"key": format!("a/{camera}-{chunk}.mp4"), "fileSize": 10, "is_fragmented": false, "bytes_ranges": "",
            "bytes_range_on_time": null, "signedUrl": format!("http://vault/api/v1/download/{chunk}?expires=1&signature=ab"),
            "metadata": {"event-timestamp": "1700000000", "event-instancename": camera, "productid": format!("dev-{camera}"),
                "event-regioncoordinates": "", "event-numberofchanges": "", "uploadtime": "1700000001", "duration": "",
                "fps": "", "capture": "IPCamera"}},
        "operation": "detection",
        "data": {"model": "nanodet-416", "width": 768, "height": 576, "frames_analyzed": 1,
            "objectCount": {}, "frames": [{"pts_ms": 0, "detections": dets}], "tracks": []}
    });
    let checked: DetectionResult = serde_json::from_value(value).unwrap();
    serde_json::to_vec(&checked).unwrap()
}

async fn wait_for(received: &Received, n: usize) -> Vec<(Option<String>, Value)> {
    for _ in 0..200 {
        if received.lock().unwrap().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Give anything unexpected a moment to arrive too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    received.lock().unwrap().iter().map(|(s, b)| (s.clone(), serde_json::from_slice(b).unwrap())).collect()
}

type Notifier = tokio::task::JoinHandle<osprey_core::Result<()>>;

/// A notifier on `config`, reading an in-memory bus, on `clock`.
async fn start_notifier(config: &Config, clock: Arc<ManualClock>) -> (Arc<dyn Bus>, CancellationToken, Notifier) {
    let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::in_memory().await.unwrap());
    let shutdown = CancellationToken::new();
    let clock: Arc<dyn Clock> = clock;
    let notifier = tokio::spawn({
        let (config, bus, shutdown) = (config.clone(), bus.clone(), shutdown.clone());
        async move { osprey_notify::run(&config, bus, clock, shutdown).await }
    });
    (bus, shutdown, notifier)
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_fire_alerts_and_only_when_they_match() {
    let (url, received) = receiver().await;
    let mut config = Config::default();
    let mut people = rule("people in the hall", "person", &url);
    people.min_count = 2;
    people.min_score = 0.6;
    people.secret = Some("s3cret".into());
    let mut door = rule("someone at the door", "person", &url);
    door.cameras = vec!["frontdoor".into()];
    let mut night = rule("night watch", "person", &url);
    (night.active_from, night.active_to) = (Some("22:00".parse().unwrap()), Some("06:00".parse().unwrap()));
    config.rules = vec![people, rule("elephants", "elephant", &url), door, night];
    config.validate().unwrap();

    let noon = UNIX_EPOCH + Duration::from_secs(1_700_000_000 - 1_700_000_000 % 86_400 + 12 * 3600);
    let clock = Arc::new(ManualClock::new(noon));
    let (bus, shutdown, notifier) = start_notifier(&config, clock.clone()).await;

    // Three people (two of them confident) in the hall: only the hall rule fires.
    bus.publish(
        TOPIC_DETECTIONS,
        "dev-hall",
        &result("hall", 1, &[("person", 0.9), ("person", 0.7), ("person", 0.55), ("car", 0.8)]),
    )
    .await
    .unwrap();
    let got = wait_for(&received, 1).await;
    assert_eq!(got.len(), 1, "{got:?}");
    let (signature, alert) = &got[0];
    assert_eq!(alert["rule"], "people in the hall");
    assert_eq!(alert["camera"], "hall");
    assert_eq!(alert["count"], 2);
    assert_eq!(alert["chunk_id"], format!("{:032x}", 1));
    assert!(alert["link"].as_str().unwrap().contains("/api/v1/download/"));
    let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
    mac.update(&serde_json::to_vec(alert).unwrap());
    assert_eq!(signature.as_deref(), Some(format!("sha256={}", hex::encode(mac.finalize().into_bytes()))).as_deref());

    // Within the cool-down: nothing. After it: again.
    bus.publish(TOPIC_DETECTIONS, "dev-hall", &result("hall", 2, &[("person", 0.9), ("person", 0.8)])).await.unwrap();
    assert_eq!(wait_for(&received, 2).await.len(), 1, "cool-down ignored");
    clock.advance(Duration::from_secs(61));
    bus.publish(TOPIC_DETECTIONS, "dev-hall", &result("hall", 3, &[("person", 0.9), ("person", 0.8)])).await.unwrap();
    let got = wait_for(&received, 2).await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].1["chunk_id"], format!("{:032x}", 3));

    // One person at the front door: the door rule only (the hall rule wants two, night is off).
    bus.publish(TOPIC_DETECTIONS, "dev-frontdoor", &result("frontdoor", 4, &[("person", 0.95)])).await.unwrap();
    let got = wait_for(&received, 3).await;
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[2].1["rule"], "someone at the door");
    assert!(got[2].0.is_none(), "no secret, no signature");

    // At night the night rule joins in.
    clock.advance(Duration::from_secs(11 * 3600));
    bus.publish(TOPIC_DETECTIONS, "dev-frontdoor", &result("frontdoor", 5, &[("person", 0.95)])).await.unwrap();
    let got = wait_for(&received, 5).await;
    let rules: Vec<&str> = got[3..].iter().map(|(_, a)| a["rule"].as_str().unwrap()).collect();
    assert_eq!(rules.len(), 2, "{rules:?}");
    assert!(rules.contains(&"night watch") && rules.contains(&"someone at the door"), "{rules:?}");
    assert!(got.iter().all(|(_, a)| a["rule"] != "elephants"), "an absent label never alerts");

    shutdown.cancel();
    notifier.await.unwrap().unwrap();
}

/// A webhook that answers 503 to the first `failures` calls, then 200; counts every call.
async fn flaky_receiver(failures: usize) -> (String, Arc<Mutex<usize>>) {
    let calls: Arc<Mutex<usize>> = Arc::default();
    let app = axum::Router::new()
        .route(
            "/hook",
            post(move |State(calls): State<Arc<Mutex<usize>>>| async move {
                let mut n = calls.lock().unwrap();
                *n += 1;
                if *n <= failures {
                    axum::http::StatusCode::SERVICE_UNAVAILABLE
                } else {
                    axum::http::StatusCode::OK
                }
            }),
        )
        .with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, calls)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_that_refuses_is_retried_with_backoff_on_the_clock() {
    let (url, calls) = flaky_receiver(2).await;
    let config = Config { rules: vec![rule("anyone", "person", &url)], ..Config::default() };
    let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000)));
    let (bus, shutdown, notifier) = start_notifier(&config, clock.clone()).await;
    bus.publish(TOPIC_DETECTIONS, "dev-hall", &result("hall", 1, &[("person", 0.9)])).await.unwrap();
    for _ in 0..200 {
        if *calls.lock().unwrap() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(*calls.lock().unwrap(), 3, "two refusals, then delivered; no fourth call");
    // The waits ran on the manual clock (no wall time passed): about 200 ms, then about 400 ms.
    let slept = clock.slept();
    assert_eq!(slept.len(), 2, "{slept:?}");
    assert!(slept[0] >= Duration::from_millis(160) && slept[0] <= Duration::from_millis(240), "{slept:?}");
    assert!(slept[1] >= Duration::from_millis(320) && slept[1] <= Duration::from_millis(480), "{slept:?}");
    shutdown.cancel();
    notifier.await.unwrap().unwrap();
}

/// A person walking right at 80 px/s, seen every 500 ms from `from_ms` to `to_ms` of its chunk
/// from x = `x0`, in the zones given as (zone, dwell ms).
fn walker(id: u32, from_ms: i64, to_ms: i64, x0: f64, zones: &[(&str, i64)]) -> Value {
    let boxes: Vec<Value> = (from_ms..=to_ms)
        .step_by(500)
        .map(|t| {
            let x = x0 + 80.0 * (t - from_ms) as f64 / 1000.0;
            json!({"pts_ms": t, "box": [x, 200.0, x + 60.0, 360.0], "score": 0.9})
        })
        .collect();
    let zones: Vec<Value> = zones
        .iter()
        .map(
            |(zone, dwell)| json!({"zone": zone, "entered_ms": from_ms, "left_ms": from_ms + dwell, "dwell_ms": dwell}),
        )
        .collect();
    json!({"id": id, "label": "person", "first_ms": from_ms, "last_ms": to_ms, "boxes": boxes,
        "best_score": 0.9, "best_ms": from_ms, "zones": zones})
}

/// Chunk `n` (10 s, back to back) of camera "yard" holding these tracks.
fn tracked(n: u8, tracks: Vec<Value>) -> Vec<u8> {
    let mut value: Value = serde_json::from_slice(&result("yard", n, &[])).unwrap();
    let start = 1_700_000_000 + 10 * i64::from(n);
    value["payload"]["metadata"]["event-timestamp"] = json!(start.to_string());
    value["payload"]["metadata"]["duration"] = json!("10000");
    value["data"]["frames"] = json!((0..20).map(|i| json!({"pts_ms": i * 500, "detections": []})).collect::<Vec<_>>());
    value["data"]["tracks"] = json!(tracks);
    let checked: DetectionResult = serde_json::from_value(value).unwrap();
    serde_json::to_vec(&checked).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn track_rules_fire_once_per_object_across_chunks() {
    let (url, received) = receiver().await;
    let quiet = |mut r: RuleConfig, trigger: Trigger| {
        r.trigger = trigger;
        r.cooldown = Duration::ZERO;
        r
    };
    let mut porch = quiet(rule("on the porch", "person", &url), Trigger::Zone);
    porch.zone = Some("porch".into());
    let mut lingering = quiet(rule("lingering", "person", &url), Trigger::Dwell);
    (lingering.zone, lingering.min_dwell) = (Some("porch".into()), Duration::from_secs(4));
    let mut crowd = quiet(rule("busy", "person", &url), Trigger::Count);
    (crowd.min_count, crowd.window) = (3, Duration::from_secs(60));
    let config = Config {
        rules: vec![quiet(rule("someone new", "person", &url), Trigger::NewTrack), porch, lingering, crowd],
        ..Config::default()
    };
    config.validate().unwrap();
    let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000)));
    let (bus, shutdown, notifier) = start_notifier(&config, clock.clone()).await;

    // Chunk 1: A walks onto the porch and on to the chunk's end; B passes far off.
    let a = walker(1, 6000, 9500, 100.0, &[("porch", 2000)]);
    let b = walker(2, 1000, 3000, 900.0, &[]);
    bus.publish(TOPIC_DETECTIONS, "dev-yard", &tracked(1, vec![a, b])).await.unwrap();
    let got = wait_for(&received, 3).await;
    let mut fired: Vec<String> = got.iter().map(|(_, a)| a["rule"].as_str().unwrap().to_string()).collect();
    fired.sort();
    assert_eq!(fired, ["on the porch", "someone new", "someone new"], "{got:#?}");

    // Chunk 2: A goes on (the same object: no new alert, the porch rule does not fire again,
    // its porch time adds up to 5 s); C appears, the third new person within a minute.
    let a_on = walker(1, 0, 4000, 420.0, &[("porch", 3000)]);
    let c = walker(2, 5000, 6000, 1100.0, &[]);
    bus.publish(TOPIC_DETECTIONS, "dev-yard", &tracked(2, vec![a_on, c])).await.unwrap();
    let got = wait_for(&received, 6).await;
    let mut fired: Vec<String> = got[3..].iter().map(|(_, a)| a["rule"].as_str().unwrap().to_string()).collect();
    fired.sort();
    assert_eq!(fired, ["busy", "lingering", "someone new"], "{got:#?}");
    let dwell = got[3..].iter().find(|(_, a)| a["rule"] == "lingering").unwrap();
    assert_eq!(dwell.1["dwell_ms"], 5000);
    assert_eq!(dwell.1["zone"], "porch");
    let busy = got[3..].iter().find(|(_, a)| a["rule"] == "busy").unwrap();
    assert_eq!(busy.1["count"], 3);
    let new = got[3..].iter().find(|(_, a)| a["rule"] == "someone new").unwrap();
    assert_eq!(new.1["track_id"], 2, "C is new, A is not");
    shutdown.cancel();
    notifier.await.unwrap().unwrap();
}
