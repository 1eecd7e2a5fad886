//! The metadata database: SQLite by default, PostgreSQL at scale, chosen by URL. The SQL is
//! portable (`$n` placeholders, standard types), so both run the same queries through sqlx's
//! `Any` driver; only the migrations differ.

use osprey_core::config::without_password;
use osprey_core::error::ResultExt;
use osprey_core::{ChunkId, Error, ErrorKind, ObjectKey, Result, Timestamp};
use serde::Serialize;
use sqlx::any::{AnyArguments, AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Arguments, Executor, FromRow};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Most recordings committed in one transaction by the writer.
const MAX_GROUP: usize = 64;

#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    /// Recording inserts go through one writer task that commits whatever is waiting in one
    /// transaction (group commit): SQLite has one writer at a time, and each commit costs a
    /// WAL fsync, so concurrent uploads share it instead of queueing on the write lock.
    writer: mpsc::Sender<Insert>,
}

struct Insert {
    recording: Recording,
    event: OutboxRow,
    /// The upload claim the insert is made under: the rows commit only while it is still held.
    owner: Option<String>,
    done: oneshot::Sender<Result<()>>,
}

/// What claiming a chunk found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claimed {
    /// Nobody held it.
    Fresh,
    /// A claim whose lease had run out (a dead vault's: its upload may have left temporaries),
    /// or this owner's own that was never released, now held.
    TakenOver,
    /// Another owner's lease runs.
    Busy,
}

/// An upload claim as reconciliation sees it.
#[derive(Debug, Clone, FromRow)]
pub struct Claim {
    pub chunk_id: String,
    pub owner: String,
    pub provider: String,
    /// As the claim recorded it; checked where it is used (reconciliation reports a bad one).
    pub object_key: String,
}

/// A camera as the API lists it: what its uploads and heartbeats say.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Device {
    pub device: String,
    pub camera: String,
    pub recordings: i64,
    /// Unix milliseconds.
    pub last_upload_at: Option<i64>,
    /// Unix seconds: the start of its newest recording (the old name of `last_recorded_ms`).
    pub last_recorded_at: Option<i64>,
    /// Unix milliseconds: the start of its newest recording.
    pub last_recorded_ms: Option<i64>,
    /// Unix milliseconds.
    pub last_heartbeat_at: Option<i64>,
    pub heartbeat: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AccountSystem {
    pub storage: Vec<ProviderUse>,
    pub models: Vec<ModelUse>,
    /// Recordings stored that no worker has answered for yet: the account's share of the lag.
    pub not_analysed: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProviderUse {
    pub provider: String,
    pub recordings: i64,
    pub bytes: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelUse {
    pub model: String,
    pub results: i64,
    /// Results indexed in the span asked about (the last hour on the system page).
    pub recent: i64,
    /// Unix ms.
    pub last_indexed_ms: i64,
    /// The old name of `last_indexed_ms`, kept one release.
    pub last_indexed_at: i64,
}

/// A camera's recent events: counts per label over a span, and its newest event's id.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeviceEvents {
    pub counts: BTreeMap<String, i64>,
    pub newest_event: Option<i64>,
}

impl Device {
    fn new(device: &str) -> Device {
        Device {
            device: device.to_string(),
            camera: String::new(),
            recordings: 0,
            last_upload_at: None,
            last_recorded_at: None,
            last_recorded_ms: None,
            last_heartbeat_at: None,
            heartbeat: None,
        }
    }
}

/// A row of `recordings`. The API shows it through its own view (`api::RecordingView`).
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct Recording {
    #[sqlx(try_from = "String")]
    pub chunk_id: ChunkId,
    pub account: String,
    pub provider: String,
    #[sqlx(try_from = "String")]
    pub object_key: ObjectKey,
    pub device: String,
    pub camera: String,
    pub capture: String,
    pub size: i64,
    pub sha256: String,
    /// When the recording began, from the agent.
    #[sqlx(try_from = "i64")]
    pub recorded_at: Timestamp,
    /// When the vault stored it, on the vault's clock.
    #[sqlx(try_from = "i64")]
    pub uploaded_at: Timestamp,
    pub duration_ms: Option<i64>,
    pub fps: Option<f64>,
    pub region: String,
    pub changes: Option<i64>,
    /// Set when retention has begun deleting it; such a recording is gone to the API.
    #[sqlx(try_from = "NullableMillis")]
    pub deleting_at: Option<Timestamp>,
    /// Set when reconciliation found its object missing from the provider.
    #[sqlx(try_from = "NullableMillis")]
    pub lost_at: Option<Timestamp>,
}

/// A recording as retention sees it.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct Expiring {
    #[sqlx(try_from = "String")]
    pub chunk_id: ChunkId,
    pub account: String,
    pub provider: String,
    #[sqlx(try_from = "String")]
    pub object_key: ObjectKey,
    pub size: i64,
    #[sqlx(try_from = "i64")]
    pub recorded_at: Timestamp,
}

#[derive(Debug, Clone, FromRow)]
pub struct OutboxRow {
    pub id: i64,
    pub topic: String,
    pub msg_key: String,
    #[sqlx(try_from = "String")]
    pub chunk_id: ChunkId,
    pub payload: String,
    #[sqlx(try_from = "i64")]
    pub created_at: Timestamp,
}

/// A stored time that may be NULL, as sqlx reads it (`Option<Timestamp>` is not ours to give a
/// sqlx type).
#[derive(sqlx::Type)]
#[sqlx(transparent)]
struct NullableMillis(Option<i64>);

impl From<NullableMillis> for Option<Timestamp> {
    fn from(stored: NullableMillis) -> Option<Timestamp> {
        stored.0.map(Timestamp::from_millis)
    }
}

/// Which recordings to list, newest first, after an optional keyset cursor.
#[derive(Debug, Default)]
pub struct ListFilter {
    pub account: String,
    pub device: Option<String>,
    /// Recorded at or after.
    pub from: Option<Timestamp>,
    /// Recorded at or before.
    pub to: Option<Timestamp>,
    /// `(recorded_at, chunk_id)` of the last row of the previous page.
    pub after: Option<(Timestamp, String)>,
    pub limit: i64,
}

/// The context of a failed statement: what it was doing, never its SQL.
pub(crate) fn db_error(what: &str) -> impl FnOnce() -> String + '_ {
    move || format!("database: cannot {what}")
}

/// A SQL text and its arguments, built together so placeholders stay numbered right: queries
/// whose filters are optional name only the filters given, so the planner can use the indexes
/// that fit them (`$1 IS NULL OR device = $1` would hide them from SQLite).
pub(crate) struct Sql {
    pub(crate) text: String,
    pub(crate) args: AnyArguments<'static>,
    n: usize,
}

impl Sql {
    pub(crate) fn new(text: &str) -> Sql {
        Sql { text: text.to_string(), args: AnyArguments::default(), n: 0 }
    }

    /// Appends `clause`, whose `?` placeholders take `values` in order.
    pub(crate) fn push<T>(&mut self, clause: &str, values: impl IntoIterator<Item = T>) -> &mut Sql
    where
        T: 'static + Send + sqlx::Encode<'static, sqlx::Any> + sqlx::Type<sqlx::Any>,
    {
        let mut values = values.into_iter();
        for (i, part) in clause.split('?').enumerate() {
            if i > 0 {
                self.n += 1;
                self.text.push_str(&format!("${}", self.n));
                self.args.add(values.next().expect("a value per placeholder")).expect("encodes");
            }
            self.text.push_str(part);
        }
        self
    }
}

impl Db {
    /// Opens `sqlite://PATH` (created if missing) or `postgres://…`, and applies migrations.
    pub async fn open(url: &str) -> Result<Db> {
        sqlx::any::install_default_drivers();
        let (url, migrator, connections) = if let Some(path) = url.strip_prefix("sqlite://") {
            if let Some(dir) = std::path::Path::new(path).parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .kind_ctx(ErrorKind::Unavailable, || format!("cannot create {}", dir.display()))?;
            }
            let sep = if url.contains('?') { '&' } else { '?' };
            (format!("{url}{sep}mode=rwc"), &SQLITE, 8)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (url.to_string(), &POSTGRES, 16)
        } else {
            return Err(Error::invalid(format!(
                "unsupported database url {:?}: use sqlite:// or postgres://",
                without_password(url)
            )));
        };
        let options = AnyConnectOptions::from_str(&url)
            .kind_ctx(ErrorKind::InvalidInput, || format!("invalid database url {:?}", without_password(&url)))?;
        let pool = AnyPoolOptions::new()
            .max_connections(connections)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(|conn, _| {
                Box::pin(async move {
                    if conn.backend_name() == "SQLite" {
                        // WAL with full sync: a committed upload survives a power cut.
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .kind_ctx(ErrorKind::Unavailable, || format!("cannot open database {}", without_password(&url)))?;
        migrator.run(&pool).await.kind_ctx(ErrorKind::Unavailable, db_error("apply migrations"))?;
        let (writer, inserts) = mpsc::channel(MAX_GROUP * 4);
        tokio::spawn(write_groups(pool.clone(), inserts));
        Ok(Db { pool, writer })
    }

    /// For the modules that keep their own tables (the results index).
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await.kind_ctx(ErrorKind::Unavailable, db_error("ping"))?;
        Ok(())
    }

    /// Stores a recording and its event in one transaction: both or neither.
    pub async fn insert_recording(&self, recording: &Recording, event: &OutboxRow) -> Result<()> {
        self.insert(recording, event, None).await
    }

    /// The same, committed only while `owner` still holds the chunk's upload claim; otherwise
    /// `Unavailable` and nothing is written.
    pub async fn insert_claimed(&self, recording: &Recording, event: &OutboxRow, owner: &str) -> Result<()> {
        self.insert(recording, event, Some(owner.to_string())).await
    }

    async fn insert(&self, recording: &Recording, event: &OutboxRow, owner: Option<String>) -> Result<()> {
        let (done, result) = oneshot::channel();
        let insert = Insert { recording: recording.clone(), event: event.clone(), owner, done };
        let stopped = || Error::unavailable("database: writer has stopped");
        self.writer.send(insert).await.map_err(|_| stopped())?;
        result.await.map_err(|_| stopped())?
    }

    /// Claims the right to write `chunk_id` (the object `provider`/`key`) for `owner` (a vault
    /// process) until `lease_until`. Busy while another owner's lease runs; an expired one (a
    /// crashed vault's) is taken over, and so is one of the same owner's, whose own in-process
    /// guard already excludes a second writer. A free chunk costs one statement.
    pub async fn claim_upload(
        &self,
        chunk_id: &str,
        provider: &str,
        key: &str,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Claimed> {
        // Both statements take the same six values, in the same order.
        let run = |sql: &'static str| async move {
            let done = sqlx::query(sql)
                .bind(chunk_id)
                .bind(owner)
                .bind(now.millis())
                .bind(lease_until.millis())
                .bind(provider)
                .bind(key)
                .execute(&self.pool)
                .await
                .kind_ctx(ErrorKind::Unavailable, db_error("claim upload"))?;
            Ok::<bool, Error>(done.rows_affected() == 1)
        };
        if run("INSERT INTO upload_claims (chunk_id, owner, claimed_at, lease_until, provider, object_key)
                VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (chunk_id) DO NOTHING")
        .await?
        {
            return Ok(Claimed::Fresh);
        }
        let taken = run(
            "UPDATE upload_claims SET owner = $2, claimed_at = $3, lease_until = $4, provider = $5, object_key = $6
                         WHERE chunk_id = $1 AND (lease_until < $3 OR owner = $2)",
        )
        .await?;
        Ok(if taken { Claimed::TakenOver } else { Claimed::Busy })
    }

    /// Extends the leases of `owner`'s claims on `chunk_ids`; returns how many it still held.
    pub async fn renew_claims(&self, owner: &str, chunk_ids: &[String], lease_until: Timestamp) -> Result<u64> {
        let mut renewed = 0;
        for ids in chunk_ids.chunks(200) {
            let list = (0..ids.len()).map(|i| format!("${}", i + 3)).collect::<Vec<_>>().join(", ");
            let sql = format!("UPDATE upload_claims SET lease_until = $1 WHERE owner = $2 AND chunk_id IN ({list})");
            let mut q = sqlx::query(&sql).bind(lease_until.millis()).bind(owner);
            for id in ids {
                q = q.bind(id);
            }
            renewed += q
                .execute(&self.pool)
                .await
                .kind_ctx(ErrorKind::Unavailable, db_error("renew upload claims"))?
                .rows_affected();
        }
        Ok(renewed)
    }

    /// Whether `owner` holds the claim on `chunk_id` now.
    pub async fn holds_claim(&self, chunk_id: &str, owner: &str) -> Result<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM upload_claims WHERE chunk_id = $1 AND owner = $2")
            .bind(chunk_id)
            .bind(owner)
            .fetch_one(&self.pool)
            .await
            .kind_ctx(ErrorKind::Unavailable, db_error("read upload claim"))?;
        Ok(n == 1)
    }

    /// Claims whose lease ran out before `now`: their vaults are gone.
    pub async fn stale_claims(&self, now: Timestamp) -> Result<Vec<Claim>> {
        sqlx::query_as(
            "SELECT chunk_id, owner, provider, object_key FROM upload_claims WHERE lease_until < $1 ORDER BY chunk_id",
        )
        .bind(now.millis())
        .fetch_all(&self.pool)
        .await
        .kind_ctx(ErrorKind::Unavailable, db_error("read stale upload claims"))
    }

    pub async fn release_upload(&self, chunk_id: &str, owner: &str) -> Result<()> {
        sqlx::query("DELETE FROM upload_claims WHERE chunk_id = $1 AND owner = $2")
            .bind(chunk_id)
            .bind(owner)
            .execute(&self.pool)
            .await
            .kind_ctx(ErrorKind::Unavailable, db_error("release upload claim"))?;
        Ok(())
    }

    /// `(chunk_id, object_key, deleting or lost)` of every recording stored in `provider`.
    pub async fn provider_keys(&self, provider: &str) -> Result<Vec<(String, String, bool)>> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT chunk_id, object_key, CASE WHEN deleting_at IS NULL AND lost_at IS NULL THEN 0 ELSE 1 END
             FROM recordings WHERE provider = $1",
        )
        .bind(provider)
        .fetch_all(&self.pool)
        .await
        .kind_ctx(ErrorKind::Unavailable, db_error("read recording keys"))?;
        Ok(rows.into_iter().map(|(id, key, gone)| (id, key, gone != 0)).collect())
    }

    /// Marks a recording whose object is missing: it stays listed, flagged, and is reported.
    pub async fn mark_lost(&self, chunk_id: &str, now: Timestamp) -> Result<()> {
        sqlx::query("UPDATE recordings SET lost_at = $1 WHERE chunk_id = $2 AND lost_at IS NULL")
            .bind(now.millis())
            .bind(chunk_id)
            .execute(&self.pool)
            .await
            .kind_ctx(ErrorKind::Unavailable, db_error("mark recording lost"))?;
        Ok(())
    }

    /// Ids of unpublished events whose recording does not exist.
    pub async fn events_without_recording(&self) -> Result<Vec<i64>> {
        sqlx::query_scalar(
            "SELECT id FROM outbox o WHERE sent_at IS NULL
             AND NOT EXISTS (SELECT 1 FROM recordings r WHERE r.chunk_id = o.chunk_id) ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await
        .kind_ctx(ErrorKind::Unavailable, db_error("read outbox"))
    }

    pub async fn delete_events(&self, ids: &[i64]) -> Result<()> {
        for id in ids {
            sqlx::query("DELETE FROM outbox WHERE id = $1 AND sent_at IS NULL")
                .bind(id)
                .execute(&self.pool)
                .await
                .kind_ctx(ErrorKind::Unavailable, db_error("delete event"))?;
        }
        Ok(())
    }

    pub async fn recording(&self, chunk_id: &str) -> Result<Option<Recording>> {
        sqlx::query_as("SELECT * FROM recordings WHERE chunk_id = $1")
            .bind(chunk_id)
            .fetch_optional(&self.pool)
            .await
            .kind_ctx(ErrorKind::Unavailable, db_error("read recording"))
    }

    pub async fn recording_by_key(&self, provider: &str, key: &str) -> Result<Option<Recording>> {
        sqlx::query_as("SELECT * FROM recordings WHERE provider = $1 AND object_key = $2")
            .bind(provider)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .kind_ctx(ErrorKind::Unavailable, db_error("read recording"))
    }

    pub async fn list(&self, f: &ListFilter) -> Result<Vec<Recording>> {
        let mut sql = Sql::new("SELECT * FROM recordings WHERE deleting_at IS NULL");
        sql.push(" AND account = ?", [f.account.clone()]);
        if let Some(device) = &f.device {
            sql.push(" AND device = ?", [device.clone()]);
        }
        if let Some(from) = f.from {
            sql.push(" AND recorded_at >= ?", [from.millis()]);
        }
        if let Some(to) = f.to {
            sql.push(" AND recorded_at <= ?", [to.millis()]);
        }
        if let Some((at, id)) = &f.after {
            // The first term bounds the index's range; an OR alone would scan from the newest.
            sql.push(" AND recorded_at <= ?", [at.millis()]);
            sql.push(" AND (recorded_at < ?", [at.millis()]).push(" OR chunk_id < ?)", [id.clone()]);
        }
        sql.push(" ORDER BY recorded_at DESC, chunk_id DESC LIMIT ?", [f.limit]);
        sqlx::query_as_with(&sql.text, sql.args)
            .fetch_all(&self.pool)
            .await
            .kind_ctx(ErrorKind::Unavailable, db_error("list recordings"))
    }

    /// Events not yet published, oldest first.
    pub async fn pending_events(&self, limit: i64) -> Result<Vec<OutboxRow>> {
        sqlx::query_as(
            "SELECT id, topic, msg_key, chunk_id, payload, created_at FROM outbox
             WHERE sent_at IS NULL ORDER BY id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .kind_ctx(ErrorKind::Unavailable, db_error("read outbox"))
    }

    pub async fn mark_sent(&self, ids: &[i64], now: Timestamp) -> Result<()> {
        let mut tx = self.pool.begin().await.kind_ctx(ErrorKind::Unavailable, db_error("begin"))?;
        for id in ids {
            sqlx::query("UPDATE outbox SET sent_at = $1 WHERE id = $2")
                .bind(now.millis())
                .bind(id)
                .execute(&mut *tx)
                .await
                .kind_ctx(ErrorKind::Unavailable, db_error("mark event sent"))?;
        }
        tx.commit().await.kind_ctx(ErrorKind::Unavailable, db_error("commit"))
    }

    /// Live recordings of an account and/or provider (all when `None`), oldest first.
    pub async fn retention_scope(&self, account: Option<&str>, provider: Option<&str>) -> Result<Vec<Expiring>> {
        sqlx::query_as(
            "SELECT chunk_id, account, provider, object_key, size, recorded_at FROM recordings
             WHERE deleting_at IS NULL AND ($1 IS NULL OR account = $1) AND ($2 IS NULL OR provider = $2)
             ORDER BY recorded_at, chunk_id",
        )
        .bind(account)
        .bind(provider)
        .fetch_all(&self.pool)
        .await
        .kind_ctx(ErrorKind::Unavailable, db_error("read recordings for retention"))
    }

    /// Marks recordings for deletion: the API stops showing them at once.
    pub async fn mark_deleting(&self, chunk_ids: &[&str], now: Timestamp) -> Result<()> {
        let mut tx = self.pool.begin().await.kind_ctx(ErrorKind::Unavailable, db_error("begin"))?;
        for id in chunk_ids {
            sqlx::query("UPDATE recordings SET deleting_at = $1 WHERE chunk_id = $2 AND deleting_at IS NULL")
                .bind(now.millis())
                .bind(*id)
                .execute(&mut *tx)
                .await
                .kind_ctx(ErrorKind::Unavailable, db_error("mark recording for deletion"))?;
        }
        tx.commit().await.kind_ctx(ErrorKind::Unavailable, db_error("commit"))
    }

    /// Recordings marked for deletion whose rows are still there.
    pub async fn deleting(&self) -> Result<Vec<Expiring>> {
        sqlx::query_as(
            "SELECT chunk_id, account, provider, object_key, size, recorded_at FROM recordings
             WHERE deleting_at IS NOT NULL ORDER BY recorded_at, chunk_id",
        )
        .fetch_all(&self.pool)
        .await
        .kind_ctx(ErrorKind::Unavailable, db_error("read recordings being deleted"))
    }

    /// Removes a marked recording's row, once its object is gone.
    pub async fn delete_recording(&self, chunk_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM recordings WHERE chunk_id = $1 AND deleting_at IS NOT NULL")
            .bind(chunk_id)
            .execute(&self.pool)
            .await
            .kind_ctx(ErrorKind::Unavailable, db_error("delete recording"))?;
        Ok(())
    }

    /// Recordings not yet forwarded to the central vault, oldest upload first.
    pub async fn to_forward(&self, limit: i64) -> Result<Vec<Recording>> {
        sqlx::query_as(
            "SELECT * FROM recordings WHERE forwarded_at IS NULL AND deleting_at IS NULL
             ORDER BY uploaded_at, chunk_id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .kind_ctx(ErrorKind::Unavailable, db_error("read recordings to forward"))
    }

    pub async fn mark_forwarded(&self, chunk_id: &str, now: Timestamp) -> Result<()> {
        sqlx::query("UPDATE recordings SET forwarded_at = $1 WHERE chunk_id = $2")
            .bind(now.millis())
            .bind(chunk_id)
            .execute(&self.pool)
            .await
            .kind_ctx(ErrorKind::Unavailable, db_error("mark recording forwarded"))?;
        Ok(())
    }

    /// Events (published or not) recorded for `chunk_id`.
    pub async fn event_count(&self, chunk_id: &str) -> Result<i64> {
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE chunk_id = $1")
            .bind(chunk_id)
            .fetch_one(&self.pool)
            .await
            .kind_ctx(ErrorKind::Unavailable, db_error("count events"))
    }

    /// Whether `device` has uploaded to `account` (a recording still kept).
    pub async fn has_device(&self, account: &str, device: &str) -> Result<bool> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM recordings WHERE account = $1 AND device = $2 LIMIT 1")
                .bind(account)
                .bind(device)
                .fetch_optional(&self.pool)
                .await
                .kind_ctx(ErrorKind::Unavailable, db_error("look up device"))?;
        Ok(found.is_some())
    }

    pub async fn record_heartbeat(&self, account: &str, device: &str, at: Timestamp, facts: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO device_heartbeats (account, device, at, facts) VALUES ($1, $2, $3, $4)
             ON CONFLICT (account, device) DO UPDATE SET at = excluded.at, facts = excluded.facts",
        )
        .bind(account)
        .bind(device)
        .bind(at.millis())
        .bind(facts)
        .execute(&self.pool)
        .await
        .kind_ctx(ErrorKind::Unavailable, db_error("record heartbeat"))?;
        Ok(())
    }

    /// Every device of `account`, from its recordings and its heartbeats.
    pub async fn devices(&self, account: &str) -> Result<Vec<Device>> {
        let uploads: Vec<(String, String, i64, i64, i64)> = sqlx::query_as(
            "SELECT device, MAX(camera), COUNT(*), MAX(uploaded_at), MAX(recorded_at) FROM recordings
             WHERE account = $1 AND deleting_at IS NULL GROUP BY device",
        )
        .bind(account)
        .fetch_all(&self.pool)
        .await
        .kind_ctx(ErrorKind::Unavailable, db_error("list devices"))?;
        let beats: Vec<(String, i64, String)> =
            sqlx::query_as("SELECT device, at, facts FROM device_heartbeats WHERE account = $1")
                .bind(account)
                .fetch_all(&self.pool)
                .await
                .kind_ctx(ErrorKind::Unavailable, db_error("list heartbeats"))?;
        let mut devices: std::collections::BTreeMap<String, Device> = std::collections::BTreeMap::new();
        for (device, camera, recordings, uploaded_at, recorded_at) in uploads {
            let d = Device {
                camera,
                recordings,
                last_upload_at: Some(uploaded_at),
                last_recorded_at: Some(Timestamp::from_millis(recorded_at).secs()),
                last_recorded_ms: Some(recorded_at),
                ..Device::new(&device)
            };
            devices.insert(device, d);
        }
        for (device, at, facts) in beats {
            let d = devices.entry(device.clone()).or_insert_with(|| Device::new(&device));
            d.last_heartbeat_at = Some(at);
            d.heartbeat = serde_json::from_str(&facts).ok();
        }
        Ok(devices.into_values().collect())
    }

    /// Per camera of the account: its events per label from the UTC hour holding `since` (unix
    /// ms) on, and its newest event. Two queries however many cameras: the counts table, and one
    /// index probe per camera for the newest event.
    pub async fn device_events(&self, account: &str, since: i64) -> Result<BTreeMap<String, DeviceEvents>> {
        let counts: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT device, label, CAST(SUM(events) AS BIGINT) FROM event_counts
             WHERE account = $1 AND device <> '' AND hour >= $2 AND events > 0 GROUP BY device, label",
        )
        .bind(account)
        .bind(since.div_euclid(crate::search::HOUR_MS) * crate::search::HOUR_MS)
        .fetch_all(&self.pool)
        .await
        .kind_ctx(ErrorKind::Unavailable, db_error("count events per camera"))?;
        let newest: Vec<(String, Option<i64>)> = sqlx::query_as(
            "SELECT d.device, (SELECT e.id FROM events e WHERE e.account = $1 AND e.device = d.device
                               ORDER BY e.start_at DESC, e.id DESC LIMIT 1)
             FROM (SELECT DISTINCT device FROM event_counts WHERE account = $1 AND device <> '') d",
        )
        .bind(account)
        .fetch_all(&self.pool)
        .await
        .kind_ctx(ErrorKind::Unavailable, db_error("find each camera's newest event"))?;
        let mut out: BTreeMap<String, DeviceEvents> = BTreeMap::new();
        for (device, label, n) in counts {
            out.entry(device).or_default().counts.insert(label, n);
        }
        for (device, id) in newest {
            if let Some(id) = id {
                out.entry(device).or_default().newest_event = Some(id);
            }
        }
        Ok(out)
    }

    /// What the system page shows of one account: storage per provider, results per model (all,
    /// and those indexed since `since`, unix ms), and recordings stored with no result yet.
    pub async fn account_system(&self, account: &str, since: i64) -> Result<AccountSystem> {
        let storage: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT provider, COUNT(*), CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM recordings
             WHERE account = $1 AND deleting_at IS NULL GROUP BY provider ORDER BY provider",
        )
        .bind(account)
        .fetch_all(&self.pool)
        .await
        .kind_ctx(ErrorKind::Unavailable, db_error("sum storage per provider"))?;
        let models: Vec<(String, i64, i64, i64)> = sqlx::query_as(
            "SELECT model, COUNT(*), CAST(SUM(CASE WHEN indexed_at >= $2 THEN 1 ELSE 0 END) AS BIGINT),
                    MAX(indexed_at)
             FROM chunk_results WHERE account = $1 GROUP BY model ORDER BY model",
        )
        .bind(account)
        .bind(since)
        .fetch_all(&self.pool)
        .await
        .kind_ctx(ErrorKind::Unavailable, db_error("count results per model"))?;
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM recordings r WHERE r.account = $1 AND r.deleting_at IS NULL
             AND NOT EXISTS (SELECT 1 FROM chunk_results c WHERE c.chunk_id = r.chunk_id)",
        )
        .bind(account)
        .fetch_one(&self.pool)
        .await
        .kind_ctx(ErrorKind::Unavailable, db_error("count recordings not analysed"))?;
        Ok(AccountSystem {
            storage: storage
                .into_iter()
                .map(|(provider, recordings, bytes)| ProviderUse { provider, recordings, bytes })
                .collect(),
            models: models
                .into_iter()
                .map(|(model, results, recent, last)| ModelUse {
                    model,
                    results,
                    recent,
                    last_indexed_ms: last,
                    last_indexed_at: last,
                })
                .collect(),
            not_analysed: waiting,
        })
    }

    /// Every recording, of every account (for checks and tests).
    pub async fn all_recordings(&self) -> Result<Vec<Recording>> {
        sqlx::query_as("SELECT * FROM recordings ORDER BY chunk_id")
            .fetch_all(&self.pool)
            .await
            .kind_ctx(ErrorKind::Unavailable, db_error("list recordings"))
    }

    pub async fn pending_count(&self) -> Result<i64> {
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL")
            .fetch_one(&self.pool)
            .await
            .kind_ctx(ErrorKind::Unavailable, db_error("count outbox"))
    }
}

async fn write_groups(pool: AnyPool, mut inserts: mpsc::Receiver<Insert>) {
    while let Some(first) = inserts.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match inserts.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        if group.len() > 1 && insert_group(&pool, &group).await.is_ok() {
            for insert in group {
                insert.done.send(Ok(())).ok();
            }
            continue;
        }
        // One at a time, so one bad row (a duplicate key) fails only its own upload.
        for insert in group {
            let result = insert_group(&pool, std::slice::from_ref(&insert)).await;
            insert.done.send(result).ok();
        }
    }
}

async fn insert_group(pool: &AnyPool, group: &[Insert]) -> Result<()> {
    let mut tx = pool.begin().await.kind_ctx(ErrorKind::Unavailable, db_error("begin"))?;
    for insert in group {
        insert_rows(&mut tx, &insert.recording, &insert.event, insert.owner.as_deref()).await?;
    }
    tx.commit().await.kind_ctx(ErrorKind::Unavailable, db_error("commit"))
}

async fn insert_rows(
    tx: &mut sqlx::AnyConnection,
    r: &Recording,
    event: &OutboxRow,
    owner: Option<&str>,
) -> Result<()> {
    if let Some(owner) = owner {
        // Touching the claim row also locks it until commit, so it cannot be taken over between
        // this check and the commit.
        let held = sqlx::query("UPDATE upload_claims SET claimed_at = claimed_at WHERE chunk_id = $1 AND owner = $2")
            .bind(r.chunk_id.as_str())
            .bind(owner)
            .execute(&mut *tx)
            .await
            .kind_ctx(ErrorKind::Unavailable, db_error("check upload claim"))?;
        if held.rows_affected() != 1 {
            return Err(Error::unavailable(format!("the upload claim on {} was lost; retry later", r.object_key)));
        }
    }
    let inserted = sqlx::query(
        "INSERT INTO recordings (chunk_id, account, provider, object_key, device, camera, capture,
             size, sha256, recorded_at, uploaded_at, duration_ms, fps, region, changes)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, CAST($13 AS DOUBLE PRECISION), $14, $15)",
    )
    .bind(r.chunk_id.as_str())
    .bind(&r.account)
    .bind(&r.provider)
    .bind(r.object_key.as_str())
    .bind(&r.device)
    .bind(&r.camera)
    .bind(&r.capture)
    .bind(r.size)
    .bind(&r.sha256)
    .bind(r.recorded_at.millis())
    .bind(r.uploaded_at.millis())
    .bind(r.duration_ms)
    // As text: sqlx 0.8's Any driver binds a NULL double as a 4-byte float, and PostgreSQL then
    // refuses the 8-byte value of the next row through the same prepared statement.
    .bind(r.fps.map(|fps| fps.to_string()))
    .bind(&r.region)
    .bind(r.changes)
    .execute(&mut *tx)
    .await;
    if let Err(e) = inserted {
        let unique = e.as_database_error().is_some_and(|d| d.is_unique_violation());
        let kind = if unique { ErrorKind::Conflict } else { ErrorKind::Unavailable };
        return Err(Error::new(kind, "database: cannot store recording").with_source(e));
    }
    sqlx::query("INSERT INTO outbox (topic, msg_key, chunk_id, payload, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(&event.topic)
        .bind(&event.msg_key)
        .bind(event.chunk_id.as_str())
        .bind(&event.payload)
        .bind(event.created_at.millis())
        .execute(&mut *tx)
        .await
        .kind_ctx(ErrorKind::Unavailable, db_error("store event"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recording(i: usize) -> (Recording, OutboxRow) {
        let r = Recording {
            chunk_id: ChunkId::parse(&format!("{i:032x}")).unwrap(),
            account: "a".into(),
            provider: "local".into(),
            object_key: ObjectKey::parse(&format!("a/{i}.mp4")).unwrap(),
            device: "d".into(),
            camera: "c".into(),
            capture: String::new(),
            size: i as i64,
            sha256: String::new(),
            recorded_at: Timestamp::from_secs(i as i64),
            uploaded_at: Timestamp::default(),
            duration_ms: None,
            fps: None,
            region: String::new(),
            changes: None,
            deleting_at: None,
            lost_at: None,
        };
        let e = OutboxRow {
            id: 0,
            topic: "t".into(),
            msg_key: "d".into(),
            chunk_id: r.chunk_id.clone(),
            payload: "{}".into(),
            created_at: Timestamp::default(),
        };
        (r, e)
    }

    /// The metadata behaviour the vault relies on, run on each backend.
    async fn conformance(db: Db) {
        grouped_inserts_fail_only_the_bad_row(&db).await;
        rows_round_trip(&db).await;
        listing_filters_and_pages(&db).await;
        outbox_is_published_in_order(&db).await;
        one_writer_per_chunk_across_replicas(&db).await;
    }

    async fn one_writer_per_chunk_across_replicas(db: &Db) {
        let chunk = "c0ffee00c0ffee00c0ffee00c0ffee00";
        let at = Timestamp::from_secs;
        let claim = |owner: &'static str, now: i64, lease: i64| async move {
            db.claim_upload(chunk, "local", "a/c.mp4", owner, at(now), at(now + lease))
                .await
                .map(|c| c != Claimed::Busy)
        };
        assert!(claim("replica-a", 1000, 10).await.unwrap());
        assert!(!claim("replica-b", 1001, 10).await.unwrap(), "a live claim is exclusive");
        assert!(claim("replica-a", 1002, 10).await.unwrap(), "the owner may claim again");
        // Releasing someone else's claim does nothing; the owner's release frees the chunk.
        db.release_upload(chunk, "replica-b").await.unwrap();
        assert!(!claim("replica-b", 1003, 10).await.unwrap());
        db.release_upload(chunk, "replica-a").await.unwrap();
        assert!(claim("replica-b", 1004, 10).await.unwrap());
        // A renewed lease holds; one that ran out (a crashed vault) is taken over at once.
        assert_eq!(db.renew_claims("replica-b", &[chunk.to_string(), "other".into()], at(1020)).await.unwrap(), 1);
        assert!(!claim("replica-c", 1019, 10).await.unwrap(), "a renewed lease still runs");
        assert!(db.stale_claims(at(1020)).await.unwrap().is_empty());
        let stale = db.stale_claims(at(1021)).await.unwrap();
        assert_eq!((stale.len(), stale[0].owner.as_str(), stale[0].object_key.as_str()), (1, "replica-b", "a/c.mp4"));
        let expired = db.claim_upload(chunk, "local", "a/c.mp4", "replica-c", at(1021), at(1031)).await.unwrap();
        assert_eq!(expired, Claimed::TakenOver, "an expired lease is taken over, and says so");
        assert!(
            db.holds_claim(chunk, "replica-c").await.unwrap() && !db.holds_claim(chunk, "replica-b").await.unwrap()
        );
        // Rows commit only under a claim still held: the old owner's insert is refused.
        let (mut r, mut e) = recording(4242);
        r.chunk_id = ChunkId::parse(chunk).unwrap();
        e.chunk_id = ChunkId::parse(chunk).unwrap();
        let lost = db.insert_claimed(&r, &e, "replica-b").await.unwrap_err();
        assert_eq!(lost.kind(), ErrorKind::Unavailable);
        assert_eq!(db.recording(chunk).await.unwrap(), None, "nothing written without the claim");
        db.insert_claimed(&r, &e, "replica-c").await.unwrap();
        db.release_upload(chunk, "replica-c").await.unwrap();
        assert!(db.events_without_recording().await.unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn sqlite_conforms() {
        let dir = tempfile::tempdir().unwrap();
        conformance(Db::open(&format!("sqlite://{}", dir.path().join("m.db").display())).await.unwrap()).await;
        assert!(dir.path().join("m.db-wal").exists(), "SQLite runs in WAL mode");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn postgres_conforms() {
        let Some(server) = osprey_testkit::Postgres::start() else { return };
        let url = server.database("metadata");
        conformance(Db::open(&url).await.unwrap()).await;
        // Migrations are applied once: a second open finds them done.
        Db::open(&url).await.unwrap().ping().await.unwrap();
    }

    /// Rows written before migration 0008 held seconds in four of their time columns; after it,
    /// every time reads as milliseconds.
    async fn seconds_from_before_0008_read_as_milliseconds(url: &str, backend: &str) {
        sqlx::any::install_default_drivers();
        let before = tempfile::tempdir().unwrap();
        let all = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(backend);
        for entry in std::fs::read_dir(&all).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            if name.as_str() < "0008" {
                std::fs::copy(&path, before.path().join(&name)).unwrap();
            }
        }
        let pool = AnyPoolOptions::new().max_connections(1).connect(url).await.unwrap();
        sqlx::migrate::Migrator::new(before.path()).await.unwrap().run(&pool).await.unwrap();
        let id = "0dd0".repeat(8);
        sqlx::query(
            "INSERT INTO recordings (chunk_id, account, provider, object_key, device, camera, capture, size,
                 sha256, recorded_at, uploaded_at, region, forwarded_at)
             VALUES ($1, 'a', 'local', 'a/old.mp4', 'd', 'c', '', 1, '', 1700000000, 1700000000123, '', 1700000100)",
        )
        .bind(&id)
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO upload_claims (chunk_id, owner, claimed_at, lease_until, provider, object_key)
             VALUES ($1, 'gone', 1700000000, 1700000010, 'local', 'a/x.mp4')",
        )
        .bind("c1a1".repeat(8))
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;

        let db = Db::open(url).await.unwrap();
        let r = db.recording(&id).await.unwrap().unwrap();
        assert_eq!(r.recorded_at, Timestamp::from_secs(1_700_000_000));
        assert_eq!(r.uploaded_at, Timestamp::from_millis(1_700_000_000_123), "already milliseconds");
        let forwarded: i64 = sqlx::query_scalar("SELECT forwarded_at FROM recordings WHERE chunk_id = $1")
            .bind(&id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(forwarded, 1_700_000_100_000);
        assert!(db.stale_claims(Timestamp::from_secs(1_700_000_010)).await.unwrap().is_empty());
        assert_eq!(db.stale_claims(Timestamp::from_millis(1_700_000_010_001)).await.unwrap().len(), 1);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn sqlite_times_from_before_0008_are_converted() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display());
        seconds_from_before_0008_read_as_milliseconds(&url, "sqlite").await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn postgres_times_from_before_0008_are_converted() {
        let Some(server) = osprey_testkit::Postgres::start() else { return };
        seconds_from_before_0008_read_as_milliseconds(&server.database("before0008"), "postgres").await;
    }

    #[tokio::test]
    async fn unsupported_urls_are_refused_without_their_password() {
        let err = Db::open("mysql://u:hunter2@db/x").await.err().unwrap();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    async fn grouped_inserts_fail_only_the_bad_row(db: &Db) {
        let (first, first_event) = recording(7);
        db.insert_recording(&first, &first_event).await.unwrap();
        // 40 concurrent inserts, one of which repeats chunk 7.
        let results = futures::future::join_all((0..40).map(|i| {
            let db = db.clone();
            async move {
                let (r, e) = recording(if i == 20 { 7 } else { 100 + i });
                db.insert_recording(&r, &e).await
            }
        }))
        .await;
        for (i, result) in results.iter().enumerate() {
            match i {
                20 => assert_eq!(result.as_ref().unwrap_err().kind(), ErrorKind::Conflict),
                _ => assert!(result.is_ok(), "insert {i}: {result:?}"),
            }
        }
        assert_eq!(db.pending_count().await.unwrap(), 40, "one event per stored recording");
    }

    async fn rows_round_trip(db: &Db) {
        let (mut r, e) = recording(900);
        r.duration_ms = Some(10_000);
        r.fps = Some(12.5);
        r.changes = Some(24);
        r.capture = "IPCamera".into();
        db.insert_recording(&r, &e).await.unwrap();
        assert_eq!(db.recording(r.chunk_id.as_str()).await.unwrap().as_ref(), Some(&r));
        assert_eq!(db.recording_by_key("local", r.object_key.as_str()).await.unwrap().as_ref(), Some(&r));
        assert_eq!(db.recording("0".repeat(32).as_str()).await.unwrap(), None);
    }

    async fn listing_filters_and_pages(db: &Db) {
        for i in 0..25 {
            let (mut r, e) = recording(2000 + i);
            r.account = "lister".into();
            r.device = if i % 2 == 0 { "even".into() } else { "odd".into() };
            r.recorded_at = Timestamp::from_secs(1_700_000_000 + (i as i64 / 2)); // pairs share a time: ties break by id
            db.insert_recording(&r, &e).await.unwrap();
        }
        let filter = |after: Option<(Timestamp, String)>| ListFilter {
            account: "lister".into(),
            after,
            limit: 10,
            ..Default::default()
        };
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = db.list(&filter(after.clone())).await.unwrap();
            seen.extend(page.iter().map(|r| (r.recorded_at, r.chunk_id.clone())));
            match page.last() {
                Some(last) if page.len() == 10 => after = Some((last.recorded_at, last.chunk_id.to_string())),
                _ => break,
            }
        }
        let mut expected = seen.clone();
        expected.sort_by(|a, b| b.cmp(a));
        expected.dedup();
        assert_eq!(seen.len(), 25, "every row once across pages");
        assert_eq!(seen, expected, "newest first, ties by id");
        let odd = ListFilter {
            account: "lister".into(),
            device: Some("odd".into()),
            from: Some(Timestamp::from_secs(1_700_000_002)),
            to: Some(Timestamp::from_secs(1_700_000_005)),
            limit: 100,
            ..Default::default()
        };
        let rows = db.list(&odd).await.unwrap();
        assert_eq!(rows.len(), 4, "{rows:?}");
        assert!(rows
            .iter()
            .all(|r| r.device == "odd" && (1_700_000_002..=1_700_000_005).contains(&r.recorded_at.secs())));
        let other = ListFilter { account: "nobody".into(), limit: 100, ..Default::default() };
        assert!(db.list(&other).await.unwrap().is_empty(), "accounts see only their own");
    }

    async fn outbox_is_published_in_order(db: &Db) {
        let pending = db.pending_events(1000).await.unwrap();
        assert_eq!(pending.len() as i64, db.pending_count().await.unwrap());
        assert!(pending.windows(2).all(|w| w[0].id < w[1].id), "oldest first");
        let (first, rest) = pending.split_at(3);
        db.mark_sent(&first.iter().map(|r| r.id).collect::<Vec<_>>(), Timestamp::from_millis(1)).await.unwrap();
        let left = db.pending_events(1000).await.unwrap();
        assert_eq!(left.iter().map(|r| r.id).collect::<Vec<_>>(), rest.iter().map(|r| r.id).collect::<Vec<_>>());
    }
}
