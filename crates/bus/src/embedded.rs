//! The embedded bus: an append-only log per topic in a SQLite file, for `osprey up`.
//!
//! Each topic is one partition. Groups keep their commit position in the same file, so a restart
//! resumes where the last commit left off; messages handed out but not committed are handed out
//! again.

use crate::tracker::OffsetTracker;
use crate::{Bus, Consumer, Message, Start};
use async_trait::async_trait;
use bytes::Bytes;
use osprey_core::error::ResultExt;
use osprey_core::{Error, ErrorKind, Result};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Row, SqliteConnection, SqlitePool};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS bus_messages (
    topic TEXT NOT NULL, seq INTEGER NOT NULL, msg_key TEXT, payload BLOB NOT NULL,
    PRIMARY KEY (topic, seq));
CREATE TABLE IF NOT EXISTS bus_group_offsets (
    topic TEXT NOT NULL, grp TEXT NOT NULL, committed INTEGER NOT NULL,
    PRIMARY KEY (topic, grp));
";

#[derive(Clone)]
pub struct EmbeddedBus {
    inner: Arc<Inner>,
}

struct Inner {
    pool: SqlitePool,
    /// Keeps an in-memory database alive while the pool's connections come and go.
    _anchor: Option<Mutex<SqliteConnection>>,
    state: Mutex<State>,
    /// Serialises appends so offsets are handed out in commit order.
    append: tokio::sync::Mutex<()>,
    /// Woken on every append and whenever a member hands messages back.
    wake: Notify,
}

#[derive(Default)]
struct State {
    /// Next offset to write, per topic.
    ends: HashMap<String, i64>,
    groups: HashMap<(String, String), Group>,
}

struct Group {
    next: i64,
    returned: BTreeSet<i64>,
    tracker: OffsetTracker,
}

impl EmbeddedBus {
    /// Opens (or creates) the bus log at `path`.
    pub async fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .kind_ctx(ErrorKind::Unavailable, || format!("cannot create {}", dir.display()))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .kind_ctx(ErrorKind::Unavailable, || format!("cannot open bus log {}", path.display()))?;
        Self::with_pool(pool, None).await
    }

    /// A bus that lives only as long as the process, for tests.
    pub async fn in_memory() -> Result<Self> {
        // A private in-memory database lives and dies with one connection, and the pool replaces
        // connections (after a cancelled query, say): name a shared one and hold it open.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!("file:osprey-bus-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let options = SqliteConnectOptions::new().filename(&name).in_memory(true).shared_cache(true);
        let unavailable = || "cannot open in-memory bus".to_string();
        let anchor = options.connect().await.kind_ctx(ErrorKind::Unavailable, unavailable)?;
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .kind_ctx(ErrorKind::Unavailable, unavailable)?;
        Self::with_pool(pool, Some(anchor)).await
    }

    async fn with_pool(pool: SqlitePool, anchor: Option<SqliteConnection>) -> Result<Self> {
        sqlx::raw_sql(SCHEMA)
            .execute(&pool)
            .await
            .kind_ctx(ErrorKind::Unavailable, || "cannot create bus schema".into())?;
        let inner = Inner {
            pool,
            _anchor: anchor.map(Mutex::new),
            state: Mutex::default(),
            append: Default::default(),
            wake: Notify::new(),
        };
        Ok(EmbeddedBus { inner: Arc::new(inner) })
    }

    async fn topic_end(&self, topic: &str) -> Result<i64> {
        if let Some(end) = self.inner.state.lock().unwrap().ends.get(topic) {
            return Ok(*end);
        }
        let end: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq) + 1, 0) FROM bus_messages WHERE topic = $1")
            .bind(topic)
            .fetch_one(&self.inner.pool)
            .await
            .kind_ctx(ErrorKind::Unavailable, || "cannot read bus log".into())?;
        Ok(*self.inner.state.lock().unwrap().ends.entry(topic.to_string()).or_insert(end))
    }
}

#[async_trait]
impl Bus for EmbeddedBus {
    async fn create_topic(&self, topic: &str, _partitions: i32) -> Result<()> {
        self.topic_end(topic).await.map(|_| ())
    }

    async fn publish(&self, topic: &str, key: &str, payload: &[u8]) -> Result<()> {
        let _append = self.inner.append.lock().await;
        let seq = self.topic_end(topic).await?;
        sqlx::query("INSERT INTO bus_messages (topic, seq, msg_key, payload) VALUES ($1, $2, $3, $4)")
            .bind(topic)
            .bind(seq)
            .bind(key)
            .bind(payload)
            .execute(&self.inner.pool)
            .await
            .kind_ctx(ErrorKind::Unavailable, || "cannot append to bus log".into())?;
        self.inner.state.lock().unwrap().ends.insert(topic.to_string(), seq + 1);
        self.inner.wake.notify_waiters();
        Ok(())
    }

    async fn subscribe_from(&self, topic: &str, group: &str, start: Start) -> Result<Box<dyn Consumer>> {
        let end = self.topic_end(topic).await?;
        let committed: Option<i64> =
            sqlx::query_scalar("SELECT committed FROM bus_group_offsets WHERE topic = $1 AND grp = $2")
                .bind(topic)
                .bind(group)
                .fetch_optional(&self.inner.pool)
                .await
                .kind_ctx(ErrorKind::Unavailable, || "cannot read group offsets".into())?;
        let id = (topic.to_string(), group.to_string());
        self.inner.state.lock().unwrap().groups.entry(id.clone()).or_insert_with(|| Group {
            next: committed.unwrap_or(match start {
                Start::Earliest => 0,
                Start::Latest => end,
            }),
            returned: BTreeSet::new(),
            tracker: OffsetTracker::default(),
        });
        Ok(Box::new(EmbeddedConsumer { bus: self.clone(), id, in_flight: BTreeSet::new() }))
    }
}

struct EmbeddedConsumer {
    bus: EmbeddedBus,
    id: (String, String),
    in_flight: BTreeSet<i64>,
}

impl EmbeddedConsumer {
    /// The offset this member would take next, without taking it.
    fn peek(&self) -> Option<i64> {
        let state = self.bus.inner.state.lock().unwrap();
        let end = state.ends.get(&self.id.0).copied().unwrap_or(0);
        let group = state.groups.get(&self.id).expect("group exists while a member does");
        group.returned.first().copied().or((group.next < end).then_some(group.next))
    }

    /// Takes `offset` if it is still free (another member may have taken it meanwhile).
    fn claim(&mut self, offset: i64) -> bool {
        let mut state = self.bus.inner.state.lock().unwrap();
        let group = state.groups.get_mut(&self.id).expect("group exists while a member does");
        let taken = if group.returned.remove(&offset) {
            true
        } else if group.next == offset {
            group.next += 1;
            group.tracker.delivered(offset);
            true
        } else {
            false
        };
        if taken {
            self.in_flight.insert(offset);
        }
        taken
    }

    async fn read(&self, offset: i64) -> Result<Message> {
        let row = sqlx::query("SELECT msg_key, payload FROM bus_messages WHERE topic = $1 AND seq = $2")
            .bind(&self.id.0)
            .bind(offset)
            .fetch_one(&self.bus.inner.pool)
            .await
            .kind_ctx(ErrorKind::Unavailable, || "cannot read bus log".into())?;
        let payload: Vec<u8> = row.get("payload");
        Ok(Message {
            topic: self.id.0.clone(),
            partition: 0,
            offset,
            key: row.get("msg_key"),
            payload: Bytes::from(payload),
        })
    }
}

#[async_trait]
impl Consumer for EmbeddedConsumer {
    /// Cancel-safe: the message is read before it is claimed, and claiming does not wait.
    async fn recv(&mut self) -> Result<Message> {
        let inner = self.bus.inner.clone();
        loop {
            let notified = inner.wake.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            let Some(offset) = self.peek() else {
                notified.await;
                continue;
            };
            let message = self.read(offset).await?;
            if self.claim(offset) {
                return Ok(message);
            }
        }
    }

    async fn commit(&mut self, message: &Message) -> Result<()> {
        if message.topic != self.id.0 {
            return Err(Error::invalid(format!("message of topic {} committed on {}", message.topic, self.id.0)));
        }
        if !self.in_flight.remove(&message.offset) {
            return Ok(());
        }
        let position = {
            let mut state = self.bus.inner.state.lock().unwrap();
            let group = state.groups.get_mut(&self.id).expect("group exists while a member does");
            group.tracker.handled(message.offset)
        };
        let Some(position) = position else { return Ok(()) };
        sqlx::query(
            "INSERT INTO bus_group_offsets (topic, grp, committed) VALUES ($1, $2, $3)
             ON CONFLICT (topic, grp) DO UPDATE SET committed = MAX(committed, excluded.committed)",
        )
        .bind(&self.id.0)
        .bind(&self.id.1)
        .bind(position)
        .execute(&self.bus.inner.pool)
        .await
        .kind_ctx(ErrorKind::Unavailable, || "cannot store group offset".into())?;
        Ok(())
    }

    async fn lag(&mut self) -> Result<u64> {
        self.lag_now().await
    }
}

impl EmbeddedConsumer {
    async fn lag_now(&self) -> Result<u64> {
        let end = self.bus.topic_end(&self.id.0).await?;
        let state = self.bus.inner.state.lock().unwrap();
        let group = state.groups.get(&self.id).expect("group exists while a member does");
        Ok((end - group.next).max(0) as u64 + group.returned.len() as u64)
    }
}

impl Drop for EmbeddedConsumer {
    fn drop(&mut self) {
        if self.in_flight.is_empty() {
            return;
        }
        let mut state = self.bus.inner.state.lock().unwrap();
        if let Some(group) = state.groups.get_mut(&self.id) {
            group.returned.append(&mut self.in_flight);
        }
        drop(state);
        self.bus.inner.wake.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conforms_in_memory() {
        let bus = EmbeddedBus::in_memory().await.unwrap();
        crate::conformance::run(Arc::new(bus)).await;
    }

    #[tokio::test]
    async fn conforms_on_disk_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bus.db");
        let bus = EmbeddedBus::open(&path).await.unwrap();
        crate::conformance::run(Arc::new(bus.clone())).await;
        crate::conformance::survives_restart_part1(&bus).await;
        drop(bus);
        let reopened = EmbeddedBus::open(&path).await.unwrap();
        crate::conformance::survives_restart_part2(&reopened).await;
    }
}
