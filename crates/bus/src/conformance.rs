//! The behaviour every bus must show. Each implementation's tests call [`run`].

use crate::{Bus, Consumer, EmbeddedBus, Message, Start};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

const RECV_TIMEOUT: Duration = Duration::from_secs(60);

pub async fn run(bus: Arc<dyn Bus>) {
    delivers_everything_to_every_group(&*bus).await;
    resumes_after_the_last_commit(&*bus).await;
    out_of_order_commits_never_skip(&*bus).await;
    cancelled_recv_loses_nothing(&*bus).await;
    lag_counts_what_the_group_has_not_received(&*bus).await;
    a_group_can_start_at_the_end_and_then_resumes_at_its_commit(&*bus).await;
}

async fn a_group_can_start_at_the_end_and_then_resumes_at_its_commit(bus: &dyn Bus) {
    let topic = unique("latest");
    // One partition: Kafka starts each partition without a commit at its end, whenever assigned.
    bus.create_topic(&topic, 1).await.unwrap();
    let old: BTreeSet<_> = publish_n(bus, &topic, 0..5).await.into_iter().collect();
    let mut consumer = bus.subscribe_from(&topic, "late", Start::Latest).await.unwrap();
    // A broker places the group at the end when it assigns the partition, which may come after
    // a first publish: publish until one arrives.
    let deadline = std::time::Instant::now() + RECV_TIMEOUT;
    let first = loop {
        assert!(std::time::Instant::now() < deadline, "nothing published after the subscribe arrived");
        bus.publish(&topic, "k", b"new").await.unwrap();
        if let Ok(m) = tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await {
            break m.unwrap();
        }
    };
    assert_eq!(text(&first).1, "new", "a group starting at the end got an earlier message");
    consumer.commit(&first).await.unwrap();
    drop(consumer);

    // Once it has committed, the group resumes there, not at the end.
    bus.publish(&topic, "k", b"while-away").await.unwrap();
    let mut again = bus.subscribe_from(&topic, "late", Start::Latest).await.unwrap();
    loop {
        let m = recv(&mut *again).await;
        assert!(!old.contains(&text(&m)) && m.offset > first.offset, "{m:?} was before the commit");
        again.commit(&m).await.unwrap();
        if text(&m).1 == "while-away" {
            break;
        }
    }
}

async fn lag_counts_what_the_group_has_not_received(bus: &dyn Bus) {
    let topic = unique("lag");
    bus.create_topic(&topic, 2).await.unwrap();
    publish_n(bus, &topic, 0..10).await;
    let mut consumer = bus.subscribe(&topic, "lag-group").await.unwrap();
    for _ in 0..4 {
        let m = recv(&mut *consumer).await;
        consumer.commit(&m).await.unwrap();
    }
    assert_eq!(consumer.lag().await.unwrap(), 6);
    while consumer.lag().await.unwrap() > 0 {
        let m = recv(&mut *consumer).await;
        consumer.commit(&m).await.unwrap();
    }
    publish_n(bus, &topic, 10..13).await;
    let deadline = std::time::Instant::now() + RECV_TIMEOUT;
    // A broker's watermarks may trail the acknowledged publish by a moment.
    while consumer.lag().await.unwrap() != 3 {
        assert!(std::time::Instant::now() < deadline, "lag did not reach 3");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn cancelled_recv_loses_nothing(bus: &dyn Bus) {
    let topic = unique("cancel");
    bus.create_topic(&topic, 1).await.unwrap();
    let mut consumer = bus.subscribe(&topic, "g").await.unwrap();
    let sent: BTreeSet<_> = publish_n(bus, &topic, 0..5).await.into_iter().collect();
    let mut got = BTreeSet::new();
    // recv futures dropped at every point they can be: each message still arrives.
    for _ in 0..200 {
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_micros(50), consumer.recv()).await {
            consumer.commit(&m).await.unwrap();
            got.insert(text(&m));
        }
        tokio::task::yield_now().await;
    }
    while got.len() < sent.len() {
        let m = recv(&mut *consumer).await;
        consumer.commit(&m).await.unwrap();
        got.insert(text(&m));
    }
    assert_eq!(got, sent);
}

fn unique(name: &str) -> String {
    format!("conformance-{name}-{}", uuid::Uuid::new_v4().simple())
}

pub async fn recv(consumer: &mut dyn Consumer) -> Message {
    tokio::time::timeout(RECV_TIMEOUT, consumer.recv())
        .await
        .expect("no message within the timeout")
        .expect("recv failed")
}

fn text(m: &Message) -> (String, String) {
    (m.key.clone().unwrap_or_default(), String::from_utf8(m.payload.to_vec()).unwrap())
}

async fn publish_n(bus: &dyn Bus, topic: &str, range: std::ops::Range<usize>) -> Vec<(String, String)> {
    let mut sent = Vec::new();
    for i in range {
        let (key, payload) = (format!("device-{}", i % 3), format!("message-{i}"));
        bus.publish(topic, &key, payload.as_bytes()).await.unwrap();
        sent.push((key, payload));
    }
    sent
}

async fn delivers_everything_to_every_group(bus: &dyn Bus) {
    let topic = unique("all");
    bus.create_topic(&topic, 2).await.unwrap();
    bus.create_topic(&topic, 2).await.unwrap(); // creating twice is fine
    let sent: BTreeSet<_> = publish_n(bus, &topic, 0..20).await.into_iter().collect();
    for group in ["group-a", "group-b"] {
        let mut consumer = bus.subscribe(&topic, group).await.unwrap();
        let mut got = BTreeSet::new();
        while got.len() < sent.len() {
            let m = recv(&mut *consumer).await;
            assert_eq!(m.topic, topic);
            got.insert(text(&m));
            consumer.commit(&m).await.unwrap();
        }
        assert_eq!(got, sent, "group {group} did not get every message exactly");
    }
}

async fn resumes_after_the_last_commit(bus: &dyn Bus) {
    let topic = unique("resume");
    bus.create_topic(&topic, 2).await.unwrap();
    let sent = publish_n(bus, &topic, 0..10).await;
    let mut committed = BTreeSet::new();
    let mut uncommitted = BTreeSet::new();
    {
        let mut first = bus.subscribe(&topic, "g").await.unwrap();
        for i in 0..10 {
            let m = recv(&mut *first).await;
            if i < 6 {
                first.commit(&m).await.unwrap();
                committed.insert(text(&m));
            } else {
                uncommitted.insert(text(&m));
            }
        }
    }
    let later: BTreeSet<_> = publish_n(bus, &topic, 10..12).await.into_iter().collect();
    let mut second = bus.subscribe(&topic, "g").await.unwrap();
    let expected: BTreeSet<_> = uncommitted.union(&later).cloned().collect();
    let mut got = BTreeSet::new();
    while got.len() < expected.len() {
        let m = recv(&mut *second).await;
        let t = text(&m);
        assert!(!committed.contains(&t), "committed message {t:?} delivered again");
        got.insert(t);
        second.commit(&m).await.unwrap();
    }
    assert_eq!(got, expected);
    assert_eq!(sent.len() + later.len(), committed.len() + got.len());
}

async fn out_of_order_commits_never_skip(bus: &dyn Bus) {
    let topic = unique("order");
    bus.create_topic(&topic, 1).await.unwrap();
    for i in 0..3 {
        bus.publish(&topic, "k", format!("m{i}").as_bytes()).await.unwrap();
    }
    {
        let mut consumer = bus.subscribe(&topic, "g").await.unwrap();
        let received = [recv(&mut *consumer).await, recv(&mut *consumer).await, recv(&mut *consumer).await];
        consumer.commit(&received[2]).await.unwrap();
        consumer.commit(&received[1]).await.unwrap();
    }
    let mut consumer = bus.subscribe(&topic, "g").await.unwrap();
    let m = recv(&mut *consumer).await;
    assert_eq!(text(&m).1, "m0", "an unhandled message was skipped");
}

/// Publishes five messages and commits the first three, for a restart test.
pub async fn survives_restart_part1(bus: &EmbeddedBus) {
    bus.create_topic("restart", 1).await.unwrap();
    publish_n(bus, "restart", 0..5).await;
    let mut consumer = bus.subscribe("restart", "g").await.unwrap();
    for _ in 0..3 {
        let m = recv(&mut *consumer).await;
        consumer.commit(&m).await.unwrap();
    }
}

/// After a restart, the group resumes at the fourth message.
pub async fn survives_restart_part2(bus: &EmbeddedBus) {
    let mut consumer = bus.subscribe("restart", "g").await.unwrap();
    assert_eq!(text(&recv(&mut *consumer).await).1, "message-3");
    assert_eq!(text(&recv(&mut *consumer).await).1, "message-4");
}
