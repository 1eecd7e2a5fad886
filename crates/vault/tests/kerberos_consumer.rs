//! A Kerberos ML consumer, written the way uug-ai/hub-pipeline-classifier is
//! (`utils/message_brokers.py` Kafka, `utils/kerberos_vault.py` `retrieve_media`), against a vault
//! publishing to a real Kafka-protocol broker: it reads `osprey.chunks` in its own consumer group
//! from the earliest offset, asks `GET {STORAGE_URI}/storage` with the event's `payload.key` and
//! `source`, and downloads the signed URL in `data`. Every chunk arrives byte for byte.

mod common;

use common::*;
use osprey_bus::KafkaConfig;
use osprey_core::TOPIC_CHUNKS;
use osprey_testkit::Broker;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// `retrieve_media`: the recording an event names, through the vault's signed link.
async fn retrieve_media(
    http: &reqwest::Client,
    storage_uri: &str,
    keys: (&str, &str),
    message: &serde_json::Value,
) -> Vec<u8> {
    let resp = http
        .get(format!("{storage_uri}/storage"))
        .header("Content-Type", "application/json")
        .header("X-Kerberos-Storage-FileName", message["payload"]["key"].as_str().unwrap())
        .header("X-Kerberos-Storage-Provider", message["source"].as_str().unwrap())
        .header("X-Kerberos-Storage-AccessKey", keys.0)
        .header("X-Kerberos-Storage-SecretAccessKey", keys.1)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    let payload: serde_json::Value = resp.json().await.unwrap();
    let media_url = payload["data"].as_str().expect("a data field with the media url").to_string();
    let resp = http.get(media_url).timeout(Duration::from_secs(10)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap().to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_classifier_style_consumer_gets_every_chunk_through_get_storage() {
    let Some(broker) = Broker::start() else { return };
    let kafka = KafkaConfig {
        brokers: broker.address(),
        message_timeout: std::time::Duration::from_secs(5),
        ..KafkaConfig::default()
    };
    let bus = osprey_bus::KafkaBus::new(&kafka).unwrap();
    // As `osprey up` and `osprey vault` do at start.
    osprey_bus::Bus::create_topic(&bus, TOPIC_CHUNKS, 4).await.unwrap();
    let t = TestVault::start(Arc::new(bus)).await;
    let mut sent = BTreeMap::new();
    for i in 0..6 {
        let body = mp4_bytes(20_000 + i * 100, i as u8);
        let answer = json(t.kerberos_upload(ALICE, &file_name(i), body.clone()).send().await.unwrap()).await;
        sent.insert(answer["key"].as_str().unwrap().to_string(), Sha256::digest(&body).to_vec());
    }

    // The classifier's consumer settings, as in message_brokers.py.
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .set("group.id", "kerberos-classifier")
        .set("session.timeout.ms", "60000")
        .set("max.poll.interval.ms", "60000")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[TOPIC_CHUNKS]).unwrap();
    let storage_uri = format!("{}/api", t.base);
    let mut received = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while received.len() < sent.len() {
        let m = tokio::time::timeout_at(deadline, consumer.recv()).await.unwrap_or_else(|_| {
            panic!("only {} of {} chunks arrived; broker log:\n{}", received.len(), sent.len(), broker.log())
        });
        let m = match m {
            Ok(m) => m,
            // Before the first event the topic may not exist yet: poll again, as the classifier does.
            Err(e) => {
                eprintln!("poll: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let message: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        assert_eq!(message["provider"], "kstorage");
        assert!(
            message["payload"]["metadata"]["duration"].as_str().unwrap().parse::<i64>().is_ok()
                || message["payload"]["metadata"]["duration"] == ""
        );
        let bytes = retrieve_media(&t.http, &storage_uri, ALICE, &message).await;
        received.insert(message["payload"]["key"].as_str().unwrap().to_string(), Sha256::digest(&bytes).to_vec());
    }
    assert_eq!(received, sent, "every chunk, byte for byte");
}
