//! The event bus. One [`Bus`] trait; an embedded implementation for one-process setups and a
//! Kafka one for scale; one conformance suite both pass.
//!
//! Delivery is at-least-once: a message counts as handled only when its consumer commits it, and
//! a consumer that goes away hands its uncommitted messages to the rest of its group.
//! Commits may arrive out of order; the group's position advances only past a contiguous run of
//! committed messages, so a slow message is never skipped by a faster one behind it.

pub mod config;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod embedded;
mod kafka;
mod tracker;

pub use config::{BusKind, Config, KafkaConfig};
pub use embedded::EmbeddedBus;
pub use kafka::KafkaBus;

use async_trait::async_trait;
use bytes::Bytes;
use osprey_core::Result;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub payload: Bytes,
}

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Creates a topic if it does not exist.
    async fn create_topic(&self, topic: &str, partitions: i32) -> Result<()>;

    /// Partitions of the topics Osprey creates: `bus.kafka.partitions`, one on a bus without
    /// partitions. As many replicas of a consumer group as this share a topic's messages.
    fn partitions(&self) -> i32 {
        1
    }

    /// Publishes a message and returns once the bus has durably accepted it.
    async fn publish(&self, topic: &str, key: &str, payload: &[u8]) -> Result<()>;

    /// Joins consumer group `group` on `topic`. Members of a group share the topic's messages;
    /// a group resumes after its last commit, and one without a commit starts where `start` says.
    async fn subscribe_from(&self, topic: &str, group: &str, start: Start) -> Result<Box<dyn Consumer>>;

    /// [`Bus::subscribe_from`] the earliest message: nothing published before is missed.
    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Consumer>> {
        self.subscribe_from(topic, group, Start::Earliest).await
    }
}

/// Where a consumer group without a commit starts reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Start {
    /// The earliest message the topic still holds.
    #[default]
    Earliest,
    /// Only messages published from now on. On Kafka this holds per partition: a partition the
    /// group has never committed on starts at its end whenever a member is assigned it.
    Latest,
}

#[async_trait]
pub trait Consumer: Send {
    /// Waits for the next message. Cancel-safe: a `recv` dropped before it returns (in a
    /// `select!`) loses no message.
    async fn recv(&mut self) -> Result<Message>;

    /// Marks a received message as handled.
    async fn commit(&mut self, message: &Message) -> Result<()>;

    /// Messages of this consumer's partitions that no member of its group has received yet:
    /// what autoscaling watches.
    async fn lag(&mut self) -> Result<u64>;
}

/// Opens the bus the config names (an embedded one keeps its log in `data_dir`) and creates
/// Osprey's topics on it.
pub async fn open(config: &Config, data_dir: &std::path::Path) -> Result<Arc<dyn Bus>> {
    let bus: Arc<dyn Bus> = match config.kind {
        BusKind::Embedded => Arc::new(EmbeddedBus::open(&data_dir.join("bus.db")).await?),
        BusKind::Kafka => Arc::new(KafkaBus::new(&config.kafka)?),
    };
    let partitions = bus.partitions();
    for topic in [osprey_core::TOPIC_CHUNKS, osprey_core::TOPIC_DETECTIONS, osprey_core::TOPIC_CHUNKS_DLQ] {
        bus.create_topic(topic, partitions).await?;
    }
    Ok(bus)
}
