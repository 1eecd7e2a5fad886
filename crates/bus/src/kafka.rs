//! The Kafka bus, through librdkafka: an idempotent producer with `acks=all`, and consumer groups
//! that commit by hand, only what was handled.

use crate::config::KafkaConfig;
use crate::tracker::OffsetTracker;
use crate::{Bus, Consumer, Message, Start};
use async_trait::async_trait;
use bytes::Bytes;
use osprey_core::error::ResultExt;
use osprey_core::{Error, ErrorKind, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, ClientContext, Message as _, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct KafkaBus {
    config: KafkaConfig,
    /// The producer and its generation. After a failed publish the producer is replaced: its
    /// idempotence state (producer id, sequence numbers) may no longer match the broker's, and
    /// retrying it against a restarted broker has crashed tansu 0.6.0. The outbox re-sends what
    /// failed, so a new producer loses nothing.
    producer: Mutex<(u64, Arc<FutureProducer>)>,
}

impl KafkaBus {
    pub fn new(config: &KafkaConfig) -> Result<Self> {
        let producer = new_producer(config)?;
        Ok(KafkaBus { config: config.clone(), producer: Mutex::new((0, Arc::new(producer))) })
    }

    fn producer(&self) -> (u64, Arc<FutureProducer>) {
        let guard = self.producer.lock().unwrap();
        (guard.0, guard.1.clone())
    }

    /// Replaces the producer of generation `failed`, unless another caller already did.
    fn replace_producer(&self, failed: u64) {
        let mut guard = self.producer.lock().unwrap();
        if guard.0 != failed {
            return;
        }
        match new_producer(&self.config) {
            Ok(p) => {
                tracing::warn!(generation = failed + 1, "replacing the kafka producer after a broker error");
                *guard = (failed + 1, Arc::new(p));
            }
            Err(e) => tracing::warn!(error = %e, "cannot replace the kafka producer"),
        }
    }
}

fn new_producer(config: &KafkaConfig) -> Result<FutureProducer> {
    client_config(config)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", config.message_timeout.as_millis().to_string())
        .create()
        .kind_ctx(ErrorKind::InvalidInput, || "cannot create kafka producer".into())
}

fn client_config(config: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.brokers);
    for (k, v) in &config.properties {
        c.set(k, v);
    }
    c
}

#[async_trait]
impl Bus for KafkaBus {
    fn partitions(&self) -> i32 {
        self.config.partitions
    }

    async fn create_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        let admin: AdminClient<DefaultClientContext> = client_config(&self.config)
            .create()
            .kind_ctx(ErrorKind::InvalidInput, || "cannot create kafka admin client".into())?;
        let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(self.config.replication_factor));
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = admin
            .create_topics([&new], &options)
            .await
            .kind_ctx(ErrorKind::Unavailable, || format!("cannot create topic {topic}"))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(Error::unavailable(format!("cannot create topic {name}: {code}")));
                }
            }
        }
        Ok(())
    }

    async fn publish(&self, topic: &str, key: &str, payload: &[u8]) -> Result<()> {
        let record = FutureRecord::to(topic).key(key).payload(payload);
        let timeout = self.config.message_timeout;
        let (generation, producer) = self.producer();
        match producer.send(record, timeout).await {
            Ok(_) => Ok(()),
            Err((e, _)) => {
                self.replace_producer(generation);
                Err(Error::unavailable(format!("cannot publish to {topic}")).with_source(e))
            }
        }
    }

    async fn subscribe_from(&self, topic: &str, group: &str, start: Start) -> Result<Box<dyn Consumer>> {
        let context = TrackingContext::default();
        let (trackers, watch) = (context.trackers.clone(), context.watch.clone());
        let consumer: StreamConsumer<TrackingContext> = client_config(&self.config)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set(
                "auto.offset.reset",
                match start {
                    Start::Earliest => "earliest",
                    Start::Latest => "latest",
                },
            )
            .set("session.timeout.ms", self.config.session_timeout.as_millis().to_string())
            .create_with_context(context)
            .kind_ctx(ErrorKind::InvalidInput, || "cannot create kafka consumer".into())?;
        consumer.subscribe(&[topic]).kind_ctx(ErrorKind::Unavailable, || format!("cannot subscribe to {topic}"))?;
        let (topic, rejoin_after) = (topic.to_string(), self.config.rejoin_after);
        Ok(Box::new(KafkaConsumer { consumer: Arc::new(consumer), trackers, watch, topic, rejoin_after }))
    }
}

type Trackers = Arc<Mutex<HashMap<(String, i32), OffsetTracker>>>;

/// Forgets what was in flight on partitions taken away in a rebalance: their new owner starts
/// from the last commit, so those messages are delivered again there.
struct TrackingContext {
    trackers: Trackers,
    watch: Arc<Mutex<Watch>>,
}

/// Whether this member holds partitions, and since when it has not, for [`KafkaConsumer::next`]
/// to notice a group that left it out.
#[derive(Debug, Clone, Copy)]
struct Watch {
    /// Holds at least one partition.
    assigned: bool,
    /// The group has answered the last join with an assignment (an empty one counts).
    answered: bool,
    /// Since when it has held none (joined, had them revoked, or was given none), or since the
    /// last look at the group.
    since: Instant,
    /// The group's committed offsets on the topic, summed, at `since`, once read.
    committed: Option<i64>,
}

impl Watch {
    fn joining() -> Watch {
        Watch { assigned: false, answered: false, since: Instant::now(), committed: None }
    }
}

impl Default for TrackingContext {
    fn default() -> Self {
        TrackingContext { trackers: Trackers::default(), watch: Arc::new(Mutex::new(Watch::joining())) }
    }
}

impl ClientContext for TrackingContext {}

impl ConsumerContext for TrackingContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            let assigned = list.count() > 0;
            *self.watch.lock().unwrap() = Watch { assigned, answered: true, ..Watch::joining() };
            if !assigned {
                tracing::info!("kafka partitions assigned: none");
            }
            let mut topics: std::collections::BTreeMap<String, Vec<i32>> = Default::default();
            for element in list.elements() {
                topics.entry(element.topic().to_string()).or_default().push(element.partition());
            }
            for (topic, partitions) in topics {
                tracing::info!(topic, ?partitions, "kafka partitions assigned");
            }
        }
    }

    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            *self.watch.lock().unwrap() = Watch { answered: true, ..Watch::joining() };
            let mut trackers = self.trackers.lock().unwrap();
            for element in list.elements() {
                trackers.remove(&(element.topic().to_string(), element.partition()));
            }
        }
    }
}

struct KafkaConsumer {
    consumer: Arc<StreamConsumer<TrackingContext>>,
    trackers: Trackers,
    watch: Arc<Mutex<Watch>>,
    topic: String,
    rejoin_after: Duration,
}

impl KafkaConsumer {
    /// Waits for the next message. A member without partitions looks at its group every
    /// `rejoin_after`, and leaves and joins again when the group never answered its join, or
    /// when messages wait and no member has committed any since the last look: a broker that
    /// still counts a killed member as the owner of every partition would otherwise leave it idle.
    async fn next(&self) -> Result<rdkafka::message::BorrowedMessage<'_>> {
        loop {
            let watch = *self.watch.lock().unwrap();
            if watch.assigned {
                return self
                    .consumer
                    .recv()
                    .await
                    .kind_ctx(ErrorKind::Unavailable, || "cannot receive from kafka".into());
            }
            let left = self.rejoin_after.saturating_sub(watch.since.elapsed());
            if left.is_zero() {
                self.look_at_group(watch).await?;
                continue;
            }
            // Messages only come with an assignment; the wait ends early if one arrives.
            let wait = left.min(Duration::from_secs(1));
            if let Ok(message) = tokio::time::timeout(wait, self.consumer.recv()).await {
                return message.kind_ctx(ErrorKind::Unavailable, || "cannot receive from kafka".into());
            }
        }
    }

    async fn look_at_group(&self, watch: Watch) -> Result<()> {
        if !watch.answered {
            return self.rejoin("the group has not answered its join");
        }
        let consumer = self.consumer.clone();
        let topic = self.topic.clone();
        let progress = tokio::task::spawn_blocking(move || group_progress(&consumer, &topic))
            .await
            .kind_ctx(ErrorKind::Internal, || "group progress task failed".into())?;
        match (progress, watch.committed) {
            (Ok((waiting, committed)), Some(before)) if waiting > 0 && committed == before => {
                self.rejoin("messages wait and no member of the group has committed any")
            }
            (progress, _) => {
                let mut w = self.watch.lock().unwrap();
                (w.since, w.committed) = (Instant::now(), progress.ok().map(|(_, c)| c));
                Ok(())
            }
        }
    }

    fn rejoin(&self, why: &str) -> Result<()> {
        tracing::warn!(topic = self.topic, "kafka: {why}; leaving the group and joining it again");
        self.consumer.unsubscribe();
        *self.watch.lock().unwrap() = Watch::joining();
        self.consumer
            .subscribe(&[&self.topic])
            .kind_ctx(ErrorKind::Unavailable, || format!("cannot subscribe to {} again", self.topic))
    }
}

/// Over every partition of `topic`: messages the group has not committed, and its committed
/// offsets summed (which move whenever any member commits).
fn group_progress(consumer: &StreamConsumer<TrackingContext>, topic: &str) -> Result<(i64, i64)> {
    let timeout = Duration::from_secs(5);
    let unavailable = || format!("cannot read the group's offsets on {topic}");
    let metadata = consumer.fetch_metadata(Some(topic), timeout).kind_ctx(ErrorKind::Unavailable, unavailable)?;
    let mut list = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            list.add_partition(topic, p.id());
        }
    }
    let committed = consumer.committed_offsets(list, timeout).kind_ctx(ErrorKind::Unavailable, unavailable)?;
    let (mut waiting, mut sum) = (0, 0);
    for p in committed.elements() {
        let (at, behind) = behind(consumer, topic, p.partition(), &[p.offset()])?;
        (waiting, sum) = (waiting + behind, sum + at);
    }
    Ok((waiting, sum))
}

/// The next offset to read on a partition (the first of `next` that is one, else the oldest
/// message kept) and how many messages from there to its end.
fn behind(
    consumer: &StreamConsumer<TrackingContext>,
    topic: &str,
    partition: i32,
    next: &[Offset],
) -> Result<(i64, i64)> {
    let (low, high) = consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(5))
        .kind_ctx(ErrorKind::Unavailable, || format!("cannot read watermarks of {topic}"))?;
    let at = next
        .iter()
        .find_map(|o| match *o {
            Offset::Offset(o) => Some(o),
            _ => None,
        })
        .unwrap_or(low);
    Ok((at, (high - at).max(0)))
}

#[async_trait]
impl Consumer for KafkaConsumer {
    async fn recv(&mut self) -> Result<Message> {
        let message = self.next().await?;
        let message = Message {
            topic: message.topic().to_string(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            payload: Bytes::copy_from_slice(message.payload().unwrap_or_default()),
        };
        let id = (message.topic.clone(), message.partition);
        self.trackers.lock().unwrap().entry(id).or_default().delivered(message.offset);
        Ok(message)
    }

    async fn commit(&mut self, message: &Message) -> Result<()> {
        let id = (message.topic.clone(), message.partition);
        let position = self.trackers.lock().unwrap().get_mut(&id).and_then(|t| t.handled(message.offset));
        let Some(position) = position else { return Ok(()) };
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&message.topic, message.partition, Offset::Offset(position))
            .kind_ctx(ErrorKind::Internal, || "cannot build commit".into())?;
        let consumer = self.consumer.clone();
        tokio::task::spawn_blocking(move || consumer.commit(&list, CommitMode::Sync))
            .await
            .kind_ctx(ErrorKind::Internal, || "commit task failed".into())?
            .kind_ctx(ErrorKind::Unavailable, || format!("cannot commit offset {position} of {}", message.topic))
    }

    async fn lag(&mut self) -> Result<u64> {
        let consumer = self.consumer.clone();
        tokio::task::spawn_blocking(move || lag(&consumer))
            .await
            .kind_ctx(ErrorKind::Internal, || "lag task failed".into())?
    }
}

/// High watermark minus the next offset this member will fetch (its group's commit when it has
/// fetched nothing yet), over the partitions assigned to it.
fn lag(consumer: &StreamConsumer<TrackingContext>) -> Result<u64> {
    let timeout = Duration::from_secs(5);
    let unavailable = || "cannot read consumer positions".to_string();
    let positions = consumer.position().kind_ctx(ErrorKind::Unavailable, unavailable)?;
    let committed = consumer.committed(timeout).kind_ctx(ErrorKind::Unavailable, unavailable)?;
    let mut total = 0u64;
    for p in positions.elements() {
        let committed = committed.find_partition(p.topic(), p.partition()).map_or(Offset::Invalid, |c| c.offset());
        total += behind(consumer, p.topic(), p.partition(), &[p.offset(), committed])?.1 as u64;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use osprey_testkit::Broker;

    fn config(broker: &Broker) -> KafkaConfig {
        KafkaConfig { brokers: broker.address(), session_timeout: Duration::from_secs(6), ..KafkaConfig::default() }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn conforms_on_a_real_broker() {
        let Some(broker) = Broker::start() else { return };
        let bus = KafkaBus::new(&config(&broker)).unwrap();
        crate::conformance::run(Arc::new(bus)).await;
    }
}
