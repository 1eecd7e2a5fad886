//! Re-analysis of history: an account's stored recordings of a time range (one camera or all)
//! sent again to one model group, at a rate, while live analysis goes on. The recordings go to
//! `osprey.reanalyse.<group>`, which only that group's workers read, so no other model sees them
//! twice; the worker indexes each result under its model, replacing an earlier one of the same
//! chunk and model. A job ends `done` when its last recording is queued, or `cancelled`.
//!
//! Invariant: a job's cursor (the last recording queued, by recorded_at then chunk id) and the
//! outbox rows of the recordings up to it are written in one transaction. A vault stopped at any
//! point resumes after the last recording it queued, never skipping one and never queueing one
//! twice; the relay's at-least-once publishing may still deliver one twice, which the index
//! absorbs.

use crate::db::{db_error, Recording, Sql};
use crate::error::ApiResult;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use osprey_core::error::ResultExt;
use osprey_core::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

/// Recordings queued per second unless the job says otherwise, and the most it may ask for.
const DEFAULT_RATE: f64 = 2.0;
const MAX_RATE: f64 = 200.0;
/// The range when the job names none: the last week.
const DEFAULT_SPAN_MS: i64 = 7 * 24 * 3_600_000;
const TICK: Duration = Duration::from_millis(500);

/// `POST /api/v1/reanalyse`: what to send again, and to which model group.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewJob {
    /// A model group (`[[models]]` name; `default` without groups).
    group: String,
    /// One camera; all of the account's by default.
    device: Option<String>,
    /// Unix milliseconds; by default the week before `to_ms`.
    from_ms: Option<i64>,
    /// Unix milliseconds; by default now.
    to_ms: Option<i64>,
    /// Unix seconds: the old names of `from_ms` and `to_ms`, kept one release.
    from: Option<i64>,
    to: Option<i64>,
    /// Recordings queued per second (default 2, at most 200).
    rate: Option<f64>,
}

/// A job: what it sends again, and how far it is.
#[derive(Debug, Serialize, ToSchema)]
pub struct Job {
    id: i64,
    group: String,
    device: Option<String>,
    /// Unix milliseconds.
    from_ms: i64,
    to_ms: i64,
    rate: f64,
    /// Recordings in the range when the job began.
    total: i64,
    /// Recordings sent to the group so far.
    queued: i64,
    /// `running`, `done` (every recording queued) or `cancelled`.
    state: String,
    created_ms: i64,
}

/// A job with what its group's model found so far.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    #[serde(flatten)]
    job: Job,
    /// Recordings this job has had re-analysed, per model (one: its group's, unless the group
    /// changed model mid-job). Results of other groups or of live analysis do not count.
    analysed: BTreeMap<String, i64>,
    /// Events in the range per model and label: the models side by side.
    events: BTreeMap<String, BTreeMap<String, i64>>,
}

/// The account's jobs, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobList {
    jobs: Vec<Job>,
}

/// Jobs a list answers at most.
const LIST_LIMIT: i64 = 100;

type JobRow = (i64, String, String, Option<String>, i64, i64, f64, i64, i64, String, i64);
const JOB_COLUMNS: &str = "id, account, model_group, device, from_ms, to_ms, rate, total, queued, state, created_at";

/// Starts a job: checks it, counts its recordings, and leaves the queueing to [`run`].
#[utoipa::path(post, path = "/api/v1/reanalyse", tag = "reanalyse", request_body = NewJob,
    responses((status = 202, description = "The job, started", body = JobView),
        (status = 400, description = "An unknown group, a bad range or rate")))]
pub async fn start(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<JobView>)> {
    let account = s.accounts.authenticate(&headers)?.name.clone();
    let job: NewJob = serde_json::from_slice(&body).map_err(|e| {
        Error::invalid(format!("a re-analysis is {{\"group\", \"device\", \"from_ms\", \"to_ms\", \"rate\"}}: {e}"))
    })?;
    let groups = &s.config.model_groups;
    if !groups.contains(&job.group) {
        return Err(Error::invalid(format!("no model group {:?}; the groups are {groups:?}", job.group)).into());
    }
    if job.device.as_ref().is_some_and(|d| d.is_empty() || d.len() > 128) {
        return Err(Error::invalid("device must be 1 to 128 characters").into());
    }
    let now = s.clock.timestamp().millis();
    let to_ms = crate::params::either("to", job.to_ms, job.to, false)?.unwrap_or(now);
    let from_ms = crate::params::either("from", job.from_ms, job.from, false)?.unwrap_or(to_ms - DEFAULT_SPAN_MS);
    if from_ms > to_ms {
        return Err(Error::invalid("from is after to").into());
    }
    let rate = job.rate.unwrap_or(DEFAULT_RATE);
    if !(rate > 0.0 && rate <= MAX_RATE) {
        return Err(Error::invalid(format!("rate must be above 0 and at most {MAX_RATE} recordings a second")).into());
    }
    let mut count =
        in_range("SELECT COUNT(*) FROM recordings r WHERE ", &account, job.device.as_deref(), from_ms, to_ms);
    let total: i64 = sqlx::query_scalar_with(&count.text, std::mem::take(&mut count.args))
        .fetch_one(s.db.pool())
        .await
        .kind_ctx(ErrorKind::Unavailable, db_error("count recordings"))?;
    // The group's workers create the topic too; a relay publishing before any worker ran must
    // find it.
    s.bus.create_topic(&osprey_core::reanalyse_topic(&job.group), s.bus.partitions()).await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO reanalyse_jobs (account, model_group, device, from_ms, to_ms, rate, total, queued, state, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 0, 'running', $8, $8) RETURNING id",
    )
    .bind(&account)
    .bind(&job.group)
    .bind(job.device.clone())
    .bind(from_ms)
    .bind(to_ms)
    .bind(rate)
    .bind(total)
    .bind(now)
    .fetch_one(s.db.pool())
    .await
    .kind_ctx(ErrorKind::Unavailable, db_error("store a re-analysis job"))?;
    tracing::info!(id, %account, group = %job.group, total, rate, "re-analysis started");
    Ok((StatusCode::ACCEPTED, Json(view(&s, &account, id).await?)))
}

/// A job of this account, with its progress and the models' events side by side.
#[utoipa::path(get, path = "/api/v1/reanalyse/{id}", tag = "reanalyse",
    responses((status = 200, body = JobView), (status = 404, description = "No such job in this account")))]
pub async fn get(State(s): State<Arc<AppState>>, headers: HeaderMap, Path(id): Path<i64>) -> ApiResult<Json<JobView>> {
    let account = s.accounts.authenticate(&headers)?.name.clone();
    Ok(Json(view(&s, &account, id).await?))
}

/// The account's jobs, newest first (at most 100).
#[utoipa::path(get, path = "/api/v1/reanalyse", tag = "reanalyse", responses((status = 200, body = JobList)))]
pub async fn list(State(s): State<Arc<AppState>>, headers: HeaderMap) -> ApiResult<Json<JobList>> {
    let account = s.accounts.authenticate(&headers)?.name.clone();
    let rows: Vec<JobRow> = sqlx::query_as(&format!(
        "SELECT {JOB_COLUMNS} FROM reanalyse_jobs WHERE account = $1 ORDER BY id DESC LIMIT {LIST_LIMIT}"
    ))
    .bind(&account)
    .fetch_all(s.db.pool())
    .await
    .kind_ctx(ErrorKind::Unavailable, db_error("list re-analysis jobs"))?;
    Ok(Json(JobList { jobs: rows.into_iter().map(Job::from).collect() }))
}

/// Stops a running job: no more of its recordings are queued. Those already queued are still
/// analysed (they are on the bus). Cancelling a cancelled job answers it again; a finished one
/// is a conflict.
#[utoipa::path(delete, path = "/api/v1/reanalyse/{id}", tag = "reanalyse",
    responses((status = 200, description = "The job, cancelled", body = JobView),
        (status = 404, description = "No such job in this account"),
        (status = 409, description = "The job is done: every recording was queued")))]
pub async fn cancel(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> ApiResult<Json<JobView>> {
    let account = s.accounts.authenticate(&headers)?.name.clone();
    let now = s.clock.timestamp().millis();
    let cancelled = sqlx::query(
        "UPDATE reanalyse_jobs SET state = 'cancelled', updated_at = $1 WHERE id = $2 AND account = $3 AND state = 'running'",
    )
    .bind(now)
    .bind(id)
    .bind(&account)
    .execute(s.db.pool())
    .await
    .kind_ctx(ErrorKind::Unavailable, db_error("cancel a re-analysis job"))?;
    let view = view(&s, &account, id).await?;
    if cancelled.rows_affected() == 1 {
        tracing::info!(id, %account, queued = view.job.queued, total = view.job.total, "re-analysis cancelled");
    } else if view.job.state == "done" {
        return Err(Error::new(ErrorKind::Conflict, "the job is done: every recording was queued").into());
    }
    Ok(Json(view))
}

/// The recordings of `account` (and `device`) recorded within `from..=to`, not being deleted.
fn in_range(select: &str, account: &str, device: Option<&str>, from: i64, to: i64) -> Sql {
    let mut sql = Sql::new(select);
    sql.push("r.account = ? AND r.deleting_at IS NULL", [account.to_string()]);
    sql.push(" AND r.recorded_at >= ? AND r.recorded_at <= ?", [from, to]);
    if let Some(device) = device {
        sql.push(" AND r.device = ?", [device.to_string()]);
    }
    sql
}

async fn job(s: &AppState, account: &str, id: i64) -> Result<JobRow> {
    let row: Option<JobRow> =
        sqlx::query_as(&format!("SELECT {JOB_COLUMNS} FROM reanalyse_jobs WHERE id = $1 AND account = $2"))
            .bind(id)
            .bind(account)
            .fetch_optional(s.db.pool())
            .await
            .kind_ctx(ErrorKind::Unavailable, db_error("read a re-analysis job"))?;
    row.ok_or_else(|| Error::not_found("no re-analysis job of that id"))
}

async fn view(s: &AppState, account: &str, id: i64) -> Result<JobView> {
    let job = Job::from(job(s, account, id).await?);
    let (device, from_ms, to_ms) = (job.device.clone(), job.from_ms, job.to_ms);
    let analysed: Vec<(String, i64)> = sqlx::query_as(
        "SELECT model, COUNT(*) FROM chunk_results WHERE reanalyse_job = $1 AND account = $2 GROUP BY model",
    )
    .bind(id)
    .bind(account)
    .fetch_all(s.db.pool())
    .await
    .kind_ctx(ErrorKind::Unavailable, db_error("count re-analysed recordings"))?;
    let mut events_sql = Sql::new("SELECT model, label, COUNT(*) FROM events WHERE ");
    events_sql.push("account = ?", [account.to_string()]);
    events_sql.push(" AND start_at >= ? AND start_at <= ?", [from_ms, to_ms]);
    if let Some(d) = &device {
        events_sql.push(" AND device = ?", [d.clone()]);
    }
    events_sql.push(" GROUP BY model, label", Vec::<i64>::new());
    let rows: Vec<(String, String, i64)> = sqlx::query_as_with(&events_sql.text, events_sql.args)
        .fetch_all(s.db.pool())
        .await
        .kind_ctx(ErrorKind::Unavailable, db_error("count events per model"))?;
    let mut events: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for (model, label, n) in rows {
        events.entry(model).or_default().insert(label, n);
    }
    Ok(JobView { job, analysed: analysed.into_iter().collect(), events })
}

impl From<JobRow> for Job {
    fn from(row: JobRow) -> Job {
        let (id, _account, group, device, from_ms, to_ms, rate, total, queued, state, created_ms) = row;
        Job { id, group, device, from_ms, to_ms, rate, total, queued, state, created_ms }
    }
}

/// Queues the running jobs' recordings at each job's rate until `stop`.
pub async fn run(s: Arc<AppState>, stop: CancellationToken) {
    // Recordings each job may queue now: its rate times the time since its last turn.
    let mut credit: HashMap<i64, f64> = HashMap::new();
    // The rate is in wall-clock seconds, like the retention task's interval.
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        if let Err(e) = turn(&s, &mut credit).await {
            tracing::warn!(error = %e, "re-analysis: cannot queue recordings; trying again");
        }
    }
}

async fn turn(s: &AppState, credit: &mut HashMap<i64, f64>) -> Result<()> {
    let running: Vec<(i64, f64)> = sqlx::query_as("SELECT id, rate FROM reanalyse_jobs WHERE state = 'running'")
        .fetch_all(s.db.pool())
        .await
        .kind_ctx(ErrorKind::Unavailable, db_error("read re-analysis jobs"))?;
    credit.retain(|id, _| running.iter().any(|(r, _)| r == id));
    for (id, rate) in running {
        let c = credit.entry(id).or_insert(0.0);
        *c = (*c + rate * TICK.as_secs_f64()).min(rate.max(1.0) * 2.0);
        let n = c.floor() as i64;
        if n > 0 {
            *c -= queue(s, id, n).await? as f64;
        }
    }
    if let Ok(n) = pending_jobs(s).await {
        metrics::gauge!(crate::metrics::REANALYSE_RUNNING).set(n as f64);
    }
    Ok(())
}

async fn pending_jobs(s: &AppState) -> Result<i64> {
    sqlx::query_scalar("SELECT COUNT(*) FROM reanalyse_jobs WHERE state = 'running'")
        .fetch_one(s.db.pool())
        .await
        .kind_ctx(ErrorKind::Unavailable, db_error("count re-analysis jobs"))
}

/// Queues up to `n` more recordings of job `id` and moves its cursor, in one transaction. Two
/// vault replicas may run the same job: the cursor only moves from the `queued` count this turn
/// read, so the replica that loses the race rolls back its rows and queues nothing.
async fn queue(s: &AppState, id: i64, n: i64) -> Result<i64> {
    let mut tx = s.db.pool().begin().await.kind_ctx(ErrorKind::Unavailable, db_error("begin"))?;
    type Cursor = (String, String, Option<String>, i64, i64, i64, Option<i64>, Option<String>);
    let job: Option<Cursor> = sqlx::query_as(
        "SELECT account, model_group, device, from_ms, to_ms, queued, cursor_at, cursor_chunk FROM reanalyse_jobs
         WHERE id = $1 AND state = 'running'",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await
    .kind_ctx(ErrorKind::Unavailable, db_error("read a re-analysis job"))?;
    // Finished by another replica since this turn began.
    let Some((account, group, device, from_ms, to_ms, queued, cursor_at, cursor_chunk)) = job else { return Ok(0) };
    let mut sql = in_range("SELECT r.* FROM recordings r WHERE ", &account, device.as_deref(), from_ms, to_ms);
    if let (Some(at), Some(chunk)) = (cursor_at, cursor_chunk) {
        sql.push(" AND (r.recorded_at > ? OR (r.recorded_at = ? AND ", [at, at]);
        sql.push("r.chunk_id > ?))", [chunk]);
    }
    // One row past the turn's share says whether this turn queues the last one.
    sql.push(" ORDER BY r.recorded_at, r.chunk_id LIMIT ?", [n + 1]);
    let mut recordings: Vec<Recording> = sqlx::query_as_with(&sql.text, sql.args)
        .fetch_all(&mut *tx)
        .await
        .kind_ctx(ErrorKind::Unavailable, db_error("read recordings to re-analyse"))?;
    let done = recordings.len() as i64 <= n;
    recordings.truncate(n as usize);
    let topic = osprey_core::reanalyse_topic(&group);
    let now = s.clock.timestamp();
    for r in &recordings {
        let mut event = crate::ingest::chunk_event(r, Default::default(), false);
        event.reanalyse_job = Some(id);
        sqlx::query("INSERT INTO outbox (topic, msg_key, chunk_id, payload, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&topic)
            .bind(&r.device)
            .bind(r.chunk_id.as_str())
            .bind(serde_json::to_string(&event).expect("events serialise"))
            .bind(now.millis())
            .execute(&mut *tx)
            .await
            .kind_ctx(ErrorKind::Unavailable, db_error("queue a recording"))?;
    }
    let last = recordings.last();
    let moved = sqlx::query(
        "UPDATE reanalyse_jobs SET queued = queued + $1, state = $2, updated_at = $3,
             cursor_at = COALESCE($4, cursor_at), cursor_chunk = COALESCE($5, cursor_chunk)
         WHERE id = $6 AND queued = $7 AND state = 'running'",
    )
    .bind(recordings.len() as i64)
    .bind(if done { "done" } else { "running" })
    .bind(now.millis())
    .bind(last.map(|r| r.recorded_at.millis()))
    .bind(last.map(|r| r.chunk_id.to_string()))
    .bind(id)
    .bind(queued)
    .execute(&mut *tx)
    .await
    .kind_ctx(ErrorKind::Unavailable, db_error("move a re-analysis cursor"))?;
    if moved.rows_affected() != 1 {
        tx.rollback().await.kind_ctx(ErrorKind::Unavailable, db_error("roll back"))?;
        return Ok(0);
    }
    tx.commit().await.kind_ctx(ErrorKind::Unavailable, db_error("commit"))?;
    if !recordings.is_empty() {
        s.relay_wake.notify_one();
    }
    if done {
        tracing::info!(id, "re-analysis: every recording queued");
    }
    Ok(recordings.len() as i64)
}
