//! Every stored chunk yields exactly one event, through broker outages and vault restarts.

mod common;

use common::*;
use osprey_bus::KafkaConfig;
use osprey_bus::{Bus, Consumer, EmbeddedBus, KafkaBus};
use osprey_core::TOPIC_CHUNKS;
use osprey_testkit::Broker;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

async fn next_event(consumer: &mut dyn Consumer, within: Duration) -> Option<(String, Value)> {
    let m = tokio::time::timeout(within, consumer.recv()).await.ok()?.unwrap();
    consumer.commit(&m).await.unwrap();
    Some((m.key.clone().unwrap(), serde_json::from_slice(&m.payload).unwrap()))
}

/// Reads events until `n` distinct chunks were seen, then checks nothing more arrives.
async fn collect_events(consumer: &mut dyn Consumer, n: usize) -> BTreeMap<String, Vec<Value>> {
    let mut by_chunk: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    while by_chunk.len() < n {
        let (_, event) = next_event(consumer, Duration::from_secs(60)).await.expect("an event is missing");
        by_chunk.entry(event["chunk_id"].as_str().unwrap().to_string()).or_default().push(event);
    }
    while let Some((_, event)) = next_event(consumer, Duration::from_secs(2)).await {
        by_chunk.entry(event["chunk_id"].as_str().unwrap().to_string()).or_default().push(event);
    }
    by_chunk
}

#[tokio::test]
async fn every_stored_chunk_yields_one_event_with_the_design_fields() {
    let bus = Arc::new(EmbeddedBus::in_memory().await.unwrap());
    let t = TestVault::start(bus.clone()).await;
    let mut consumer = bus.subscribe(TOPIC_CHUNKS, "test").await.unwrap();
    let mut stored = BTreeMap::new();
    for i in 0..5 {
        let body = mp4_bytes(1000 + i, i as u8);
        let resp = json(
            t.kerberos_upload_with(
                ALICE,
                &file_name(i),
                body.clone(),
                &[("X-Kerberos-Storage-Fps", "25"), ("X-Kerberos-Storage-Duration", "6500")],
            )
            .send()
            .await
            .unwrap(),
        )
        .await;
        stored.insert(resp["chunk_id"].as_str().unwrap().to_string(), (i, body));
    }
    // A retried upload stores nothing new and announces nothing new.
    let (_, body0) = stored.values().find(|(i, _)| *i == 0).unwrap().clone();
    t.kerberos_upload(ALICE, &file_name(0), body0).send().await.unwrap();

    let events = collect_events(&mut *consumer, 5).await;
    assert_eq!(events.len(), 5);
    for (chunk_id, list) in &events {
        assert_eq!(list.len(), 1, "chunk {chunk_id} announced {} times", list.len());
        let e = &list[0];
        let (i, body) = &stored[chunk_id];
        assert!(e["date"].as_i64().unwrap() > 0);
        assert_eq!(e["events"], serde_json::json!(["analysis"]));
        assert_eq!(e["provider"], "kstorage");
        assert_eq!(e["source"], "local");
        assert_eq!(e["request"], "persist");
        assert!(!e["traceId"].as_str().unwrap().is_empty());
        let p = &e["payload"];
        assert_eq!(p["key"], format!("alice/{}", file_name(*i)));
        assert_eq!(p["fileSize"], body.len());
        assert_eq!(p["is_fragmented"], false);
        assert_eq!(p["bytes_ranges"], "");
        assert!(p["bytes_range_on_time"].is_null());
        let md = &p["metadata"];
        assert_eq!(md["event-timestamp"], (1_700_000_000 + i).to_string());
        assert_eq!(md["event-instancename"], "frontdoor");
        assert_eq!(md["productid"], "camera-device-1");
        assert_eq!(md["event-regioncoordinates"], "200-200-400-400");
        assert_eq!(md["event-numberofchanges"], "24");
        assert_eq!(md["fps"], "25");
        // Kerberos consumers parse an integer number of milliseconds.
        assert_eq!(md["duration"], "6500");
        assert_eq!(md["event-microseconds"], "6-967003");
        assert_eq!(md["event-token"], i.to_string());
        assert!(md["publickey"].is_string());
        assert_eq!(md["capture"], "IPCamera");
        assert!(md["uploadtime"].as_str().unwrap().parse::<i64>().unwrap() > 0);
        // The signed URL in the event downloads the chunk without credentials.
        let url = p["signedUrl"].as_str().unwrap();
        let got = t.http.get(url).send().await.unwrap().bytes().await.unwrap();
        assert_eq!(got.as_ref(), &body[..]);
    }
}

#[tokio::test]
async fn events_survive_an_embedded_bus_and_vault_restart() {
    let dir = tempfile::tempdir().unwrap();
    let bus_path = dir.path().join("bus.db");
    let bus = Arc::new(EmbeddedBus::open(&bus_path).await.unwrap());
    let mut t = TestVault::start(bus.clone()).await;
    for i in 0..3 {
        assert_eq!(
            t.kerberos_upload(ALICE, &file_name(i), mp4_bytes(100, i as u8)).send().await.unwrap().status(),
            200
        );
    }
    eventually("events to be relayed", Duration::from_secs(10), || async {
        json(t.http.get(format!("{}/healthz", t.base)).send().await.unwrap()).await["outbox_pending"] == 0
    })
    .await;
    t.stop().await;
    drop(bus);
    let bus = Arc::new(EmbeddedBus::open(&bus_path).await.unwrap());
    t.restart(bus.clone()).await;
    for i in 3..5 {
        assert_eq!(
            t.kerberos_upload(ALICE, &file_name(i), mp4_bytes(100, i as u8)).send().await.unwrap().status(),
            200
        );
    }
    let mut consumer = bus.subscribe(TOPIC_CHUNKS, "after-restart").await.unwrap();
    let events = collect_events(&mut *consumer, 5).await;
    assert!(events.values().all(|list| list.len() == 1), "{events:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_outage_delays_events_and_loses_none() {
    let Some(mut broker) = Broker::start() else { return };
    let config = KafkaConfig {
        brokers: broker.address(),
        message_timeout: Duration::from_secs(3),
        session_timeout: Duration::from_secs(6),
        ..KafkaConfig::default()
    };
    let bus: Arc<dyn Bus> = Arc::new(KafkaBus::new(&config).unwrap());
    bus.create_topic(TOPIC_CHUNKS, 2).await.unwrap();
    let mut t = TestVault::start(bus.clone()).await;
    let health = |t: &TestVault| {
        let (http, base) = (t.http.clone(), t.base.clone());
        async move {
            json(http.get(format!("{base}/healthz")).send().await.unwrap()).await["outbox_pending"].as_i64().unwrap()
        }
    };

    for i in 0..2 {
        assert_eq!(
            t.kerberos_upload(ALICE, &file_name(i), mp4_bytes(100, i as u8)).send().await.unwrap().status(),
            200
        );
    }
    eventually("events before the outage", Duration::from_secs(30), || async { health(&t).await == 0 }).await;

    broker.stop();
    for i in 2..7 {
        let resp = t.kerberos_upload(ALICE, &file_name(i), mp4_bytes(100, i as u8)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "uploads must succeed while the broker is down");
    }
    assert_eq!(health(&t).await, 5, "events wait in the outbox");
    tokio::time::sleep(Duration::from_secs(4)).await; // let some publishes time out
    assert_eq!(health(&t).await, 5);

    // The vault restarts during the outage; its successor publishes what is pending.
    t.stop().await;
    drop(bus);
    broker.restart();
    let bus: Arc<dyn Bus> = Arc::new(KafkaBus::new(&config).unwrap());
    t.restart(bus.clone()).await;
    eventually("the outbox to drain", Duration::from_secs(60), || async { health(&t).await == 0 }).await;

    // A second outage, this time with the same vault and producer running through it.
    broker.stop();
    for i in 7..10 {
        let resp = t.kerberos_upload(ALICE, &file_name(i), mp4_bytes(100, i as u8)).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(health(&t).await, 3);
    broker.restart();
    for _ in 0..600 {
        if health(&t).await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let errors: Vec<_> = broker
        .log()
        .lines()
        .filter(|l| l.contains("panic") || l.contains("ERROR"))
        .take(15)
        .map(String::from)
        .collect();
    assert_eq!(health(&t).await, 0, "outbox did not drain; broker errors:\n{}", errors.join("\n"));

    let mut consumer = bus.subscribe(TOPIC_CHUNKS, "outage-test").await.unwrap();
    let events = collect_events(&mut *consumer, 10).await;
    assert_eq!(events.len(), 10, "0 lost");
    let duplicated: Vec<_> = events.iter().filter(|(_, l)| l.len() > 1).map(|(k, _)| k).collect();
    assert!(duplicated.is_empty(), "duplicated events: {duplicated:?}");
}
