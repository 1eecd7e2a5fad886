//! The bus's typed config, the `[bus]` section of the file.

use std::collections::BTreeMap;

use osprey_core::{Error, Result};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BusKind {
    /// In-process, persisted in the data directory: for one-machine setups.
    Embedded,
    Kafka,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub kind: BusKind,
    pub kafka: KafkaConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config { kind: BusKind::Embedded, kafka: KafkaConfig::default() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list.
    pub brokers: String,
    /// Partitions of the topics Osprey creates.
    pub partitions: i32,
    pub replication_factor: i32,
    /// How long a publish may wait for the broker before it fails and is retried.
    #[serde(rename = "message_timeout_ms", with = "osprey_core::config::millis")]
    pub message_timeout: Duration,
    #[serde(rename = "session_timeout_ms", with = "osprey_core::config::millis")]
    pub session_timeout: Duration,
    /// How often a consumer that holds no partitions looks at its group. It leaves and joins
    /// again when the group has not answered its join by then, or when messages wait and no
    /// member has committed any since the last look (a broker that still counts a killed member
    /// as the owner of every partition); a surplus replica of a busy group stays as it is.
    #[serde(rename = "rejoin_after_ms", with = "osprey_core::config::millis")]
    pub rejoin_after: Duration,
    /// Extra librdkafka properties, passed as given.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".to_string(),
            partitions: 4,
            replication_factor: 1,
            message_timeout: Duration::from_secs(10),
            session_timeout: Duration::from_secs(10),
            rejoin_after: Duration::from_secs(60),
            properties: BTreeMap::new(),
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<()> {
        if self.kind == BusKind::Kafka && self.kafka.brokers.trim().is_empty() {
            return Err(Error::invalid("invalid config: bus.kafka.brokers is empty"));
        }
        if self.kafka.rejoin_after < self.kafka.session_timeout {
            return Err(Error::invalid(
                "invalid config: bus.kafka.rejoin_after_ms must be at least session_timeout_ms",
            ));
        }
        if self.kafka.partitions < 1 || self.kafka.replication_factor < 1 {
            return Err(Error::invalid("invalid config: bus.kafka.partitions and replication_factor must be above 0"));
        }
        Ok(())
    }
}
