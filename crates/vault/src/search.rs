//! The index's API under `/api/v1`: events (search, one, its thumbnail), a recording's detections
//! for drawing on the video, and counts of events per hour or day. Every query is scoped to the
//! caller's account; lists are newest first with keyset pagination.

use crate::api::query;
use crate::db::{db_error, Sql};
use crate::error::ApiResult;
use crate::AppState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use osprey_core::error::ResultExt;
use osprey_core::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1000;
pub(crate) const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// Where an event's picture is served.
pub(crate) fn thumbnail_url(event: i64) -> String {
    format!("/api/v1/events/{event}/thumbnail.jpg")
}
/// Most buckets one summary answers with.
const MAX_BUCKETS: i64 = 5000;

/// Filters of `GET /api/v1/events`. Times are unix seconds, inclusive, on the event's start.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    device: Option<String>,
    /// Only the events of this model (its manifest's name).
    model: Option<String>,
    label: Option<String>,
    zone: Option<String>,
    /// Unix milliseconds, on the event's start, inclusive.
    from_ms: Option<i64>,
    to_ms: Option<i64>,
    /// Unix seconds (`to`: its whole second): the old names, kept one release.
    from: Option<i64>,
    to: Option<i64>,
    min_score: Option<f64>,
    /// Milliseconds.
    min_duration_ms: Option<i64>,
    /// The old name of `min_duration_ms`, kept one release.
    min_duration: Option<i64>,
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// An event: one object followed across the recordings of a camera.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    id: i64,
    device: String,
    model: String,
    label: String,
    /// Unix milliseconds.
    start_ms: i64,
    end_ms: i64,
    duration_ms: i64,
    best_score: f64,
    zones: Vec<ZoneView>,
    thumbnail_url: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ZoneView {
    zone: String,
    entered_ms: i64,
    left_ms: i64,
    dwell_ms: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    events: Vec<EventView>,
    next_cursor: Option<String>,
}

fn page_limit(limit: Option<i64>) -> Result<i64> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    match (1..=MAX_PAGE).contains(&limit) {
        true => Ok(limit),
        false => Err(Error::invalid(format!("limit must be between 1 and {MAX_PAGE}"))),
    }
}

/// A cursor is `<start in ms>.<event id>` of the last event of the previous page.
fn parse_cursor(cursor: &str) -> Result<(i64, i64)> {
    let bad = || Error::invalid(format!("invalid cursor {cursor:?}"));
    let (at, id) = cursor.split_once('.').ok_or_else(bad)?;
    Ok((at.parse().map_err(|_| bad())?, id.parse().map_err(|_| bad())?))
}

type EventRow = (i64, String, String, String, i64, i64, i64, f64);
const EVENT_COLUMNS: &str = "e.id, e.device, e.model, e.label, e.start_at, e.end_at, e.duration_ms, e.best_score";

#[utoipa::path(get, path = "/api/v1/events", params(EventParams), tag = "events",
    responses((status = 200, description = "Events, newest first", body = EventPage)))]
pub async fn list(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    params: std::result::Result<Query<EventParams>, QueryRejection>,
) -> ApiResult<Json<EventPage>> {
    let account = s.accounts.authenticate(&headers)?.name.clone();
    let p = query(params)?;
    let limit = page_limit(p.limit)?;
    let mut sql = Sql::new(&format!("SELECT {EVENT_COLUMNS} FROM events e WHERE "));
    sql.push("e.account = ?", [account]);
    if let Some(device) = p.device {
        sql.push(" AND e.device = ?", [device]);
    }
    if let Some(model) = p.model {
        sql.push(" AND e.model = ?", [model]);
    }
    if let Some(label) = p.label {
        sql.push(" AND e.label = ?", [label]);
    }
    if let Some(zone) = p.zone {
        sql.push(" AND EXISTS (SELECT 1 FROM event_zones z WHERE z.event_id = e.id AND z.zone = ?)", [zone]);
    }
    let (from, to) = crate::params::range(p.from_ms, p.to_ms, p.from, p.to)?;
    if let Some(from) = from {
        sql.push(" AND e.start_at >= ?", [from]);
    }
    if let Some(to) = to {
        sql.push(" AND e.start_at <= ?", [to]);
    }
    if let Some(score) = p.min_score {
        sql.push(" AND e.best_score >= ?", [score]);
    }
    if p.min_duration_ms.is_some() && p.min_duration.is_some() {
        return Err(Error::invalid("invalid query: give min_duration_ms or min_duration, not both").into());
    }
    if let Some(duration) = p.min_duration_ms.or(p.min_duration) {
        sql.push(" AND e.duration_ms >= ?", [duration]);
    }
    if let Some((at, id)) = p.cursor.as_deref().map(parse_cursor).transpose()? {
        // The first term bounds the index's range; an OR alone would make it scan from the newest.
        sql.push(" AND e.start_at <= ? AND (e.start_at < ? OR e.id < ?)", [at, at, id]);
    }
    sql.push(" ORDER BY e.start_at DESC, e.id DESC LIMIT ?", [limit]);
    let rows: Vec<EventRow> = sqlx::query_as_with(&sql.text, sql.args)
        .fetch_all(s.db.pool())
        .await
        .kind_ctx(ErrorKind::Unavailable, db_error("search events"))?;
    let next_cursor = (rows.len() as i64 == limit).then(|| rows.last().map(|r| format!("{}.{}", r.4, r.0))).flatten();
    let events = views(&s, rows).await?;
    Ok(Json(EventPage { events, next_cursor }))
}

/// Events as the API shows them, with their zones (one query for the page).
async fn views(s: &AppState, rows: Vec<EventRow>) -> Result<Vec<EventView>> {
    let mut zones: BTreeMap<i64, Vec<ZoneView>> = BTreeMap::new();
    if !rows.is_empty() {
        let marks = vec!["?"; rows.len()].join(", ");
        let mut sql = Sql::new("SELECT event_id, zone, entered_at, left_at, dwell_ms FROM event_zones WHERE ");
        sql.push(&format!("event_id IN ({marks}) ORDER BY event_id, entered_at"), rows.iter().map(|r| r.0));
        let found: Vec<(i64, String, i64, i64, i64)> = sqlx::query_as_with(&sql.text, sql.args)
            .fetch_all(s.db.pool())
            .await
            .kind_ctx(ErrorKind::Unavailable, db_error("read events' zones"))?;
        for (id, zone, entered_ms, left_ms, dwell_ms) in found {
            zones.entry(id).or_default().push(ZoneView { zone, entered_ms, left_ms, dwell_ms });
        }
    }
    Ok(rows
        .into_iter()
        .map(|(id, device, model, label, start_ms, end_ms, duration_ms, best_score)| EventView {
            zones: zones.remove(&id).unwrap_or_default(),
            thumbnail_url: thumbnail_url(id),
            id,
            device,
            model,
            label,
            start_ms,
            end_ms,
            duration_ms,
            best_score,
        })
        .collect())
}

/// An event with the recordings it spans.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventDetail {
    #[serde(flatten)]
    event: EventView,
    recordings: Vec<EventRecording>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventRecording {
    chunk_id: String,
    /// Unix milliseconds of the recording's start.
    recorded_ms: i64,
    /// The event's tracks in this recording (ids of `GET /api/v1/recordings/{id}/detections`).
    tracks: Vec<i64>,
}

/// The event `id` when it belongs to the caller.
async fn owned(s: &AppState, headers: &HeaderMap, id: &str) -> Result<EventRow> {
    let account = s.accounts.authenticate(headers)?.name.clone();
    let not_found = || Error::not_found(format!("no event {id:?}"));
    let id: i64 = id.parse().map_err(|_| not_found())?;
    let mut sql = Sql::new(&format!("SELECT {EVENT_COLUMNS} FROM events e WHERE "));
    sql.push("e.id = ?", [id]).push(" AND e.account = ?", [account]);
    sqlx::query_as_with(&sql.text, sql.args)
        .fetch_optional(s.db.pool())
        .await
        .kind_ctx(ErrorKind::Unavailable, db_error("read an event"))?
        .ok_or_else(not_found)
}

#[utoipa::path(get, path = "/api/v1/events/{id}", tag = "events",
    params(("id" = i64, Path, description = "Event id")),
    responses((status = 200, description = "The event and the recordings it spans", body = EventDetail),
        (status = 404, description = "No such event in this account")))]
pub async fn get(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<EventDetail>> {
    let row = owned(&s, &headers, &id).await?;
    let tracks: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT t.chunk_id, r.recorded_at, t.track_id FROM tracks t JOIN recordings r ON r.chunk_id = t.chunk_id
         WHERE t.event_id = $1 AND r.deleting_at IS NULL ORDER BY r.recorded_at, t.chunk_id, t.track_id",
    )
    .bind(row.0)
    .fetch_all(s.db.pool())
    .await
    .kind_ctx(ErrorKind::Unavailable, db_error("read an event's recordings"))?;
    let mut recordings: Vec<EventRecording> = Vec::new();
    for (chunk_id, recorded_ms, track) in tracks {
        match recordings.last_mut() {
            Some(r) if r.chunk_id == chunk_id => r.tracks.push(track),
            _ => recordings.push(EventRecording { chunk_id, recorded_ms, tracks: vec![track] }),
        }
    }
    let event = views(&s, vec![row]).await?.remove(0);
    Ok(Json(EventDetail { event, recordings }))
}

#[utoipa::path(get, path = "/api/v1/events/{id}/thumbnail.jpg", tag = "events",
    params(("id" = i64, Path, description = "Event id")),
    responses((status = 200, description = "The object at its best view", content_type = "image/jpeg", body = Vec<u8>),
        (status = 404, description = "No such event, or it has no thumbnail")))]
pub async fn thumbnail(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let row = owned(&s, &headers, &id).await?;
    let jpeg: Option<(Option<String>,)> = sqlx::query_as(
        "SELECT t.thumbnail FROM events e JOIN tracks t
           ON t.chunk_id = e.best_chunk AND t.model = e.model AND t.track_id = e.best_track WHERE e.id = $1",
    )
    .bind(row.0)
    .fetch_optional(s.db.pool())
    .await
    .kind_ctx(ErrorKind::Unavailable, db_error("read a thumbnail"))?;
    let Some((Some(jpeg),)) = jpeg else {
        return Err(Error::not_found(format!("event {id} has no thumbnail")).into());
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(jpeg)
        .map_err(|_| Error::internal("a stored thumbnail is not base64"))?;
    let headers = [(header::CONTENT_TYPE, "image/jpeg"), (header::CACHE_CONTROL, "private, max-age=3600")];
    Ok((headers, bytes).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DetectionParams {
    /// Only this model's result.
    model: Option<String>,
}

/// What the workers found in one recording: per model, the boxes of each analysed frame and the
/// tracks, with times in ms from the recording's start (the video's own clock).
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordingDetections {
    chunk_id: String,
    recorded_ms: i64,
    results: Vec<ModelResult>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelResult {
    model: String,
    /// The model manifest's version and the model file's sha256 (empty for older results).
    model_version: String,
    model_sha256: String,
    width: i64,
    height: i64,
    frames_analyzed: i64,
    #[schema(value_type = Object)]
    object_count: Value,
    #[schema(value_type = Object)]
    max_in_frame: Value,
    /// `[{"pts_ms", "detections": [{"label", "class_id", "score", "box"}]}]`
    #[schema(value_type = Vec<Object>)]
    frames: Value,
    tracks: Vec<TrackView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TrackView {
    id: i64,
    event_id: i64,
    label: String,
    first_ms: i64,
    last_ms: i64,
    best_score: f64,
    /// `[{"pts_ms", "box", "score"}]`
    #[schema(value_type = Vec<Object>)]
    boxes: Value,
}

/// model, track id, event id, label, first, last, best score, boxes
type TrackRow = (String, i64, i64, String, i64, i64, f64, String);

#[utoipa::path(get, path = "/api/v1/recordings/{id}/detections", tag = "recordings",
    params(("id" = String, Path, description = "Chunk id"), DetectionParams),
    responses((status = 200, description = "Frames and tracks for drawing on the video", body = RecordingDetections),
        (status = 404, description = "No such recording in this account")))]
pub async fn detections(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    params: std::result::Result<Query<DetectionParams>, QueryRejection>,
) -> ApiResult<Json<RecordingDetections>> {
    let recording = crate::api::owned(&s, &headers, &id).await?;
    let model = query(params)?.model;
    let chunk_id = recording.chunk_id.to_string();
    let start = recording.recorded_at.millis();
    let mut sql = Sql::new(
        "SELECT model, model_version, model_sha256, width, height, frames_analyzed, object_count, max_in_frame, frames
         FROM chunk_results WHERE ",
    );
    sql.push("chunk_id = ?", [chunk_id.clone()]);
    if let Some(m) = &model {
        sql.push(" AND model = ?", [m.clone()]);
    }
    sql.push(" ORDER BY model", Vec::<String>::new());
    let results: Vec<ResultRow> = sqlx::query_as_with(&sql.text, sql.args)
        .fetch_all(s.db.pool())
        .await
        .kind_ctx(ErrorKind::Unavailable, db_error("read a recording's results"))?;
    let tracks: Vec<TrackRow> = sqlx::query_as(
        "SELECT model, track_id, event_id, label, first_at, last_at, best_score, boxes FROM tracks
         WHERE chunk_id = $1 ORDER BY model, track_id",
    )
    .bind(&chunk_id)
    .fetch_all(s.db.pool())
    .await
    .kind_ctx(ErrorKind::Unavailable, db_error("read a recording's tracks"))?;
    let parse = |text: &str| serde_json::from_str::<Value>(text).unwrap_or(Value::Null);
    let results = results
        .into_iter()
        .map(|(model, model_version, model_sha256, width, height, frames_analyzed, counts, most, frames)| ModelResult {
            tracks: tracks
                .iter()
                .filter(|t| t.0 == model)
                .map(|t| TrackView {
                    id: t.1,
                    event_id: t.2,
                    label: t.3.clone(),
                    first_ms: t.4 - start,
                    last_ms: t.5 - start,
                    best_score: t.6,
                    boxes: parse(&t.7),
                })
                .collect(),
            model,
            model_version,
            model_sha256,
            width,
            height,
            frames_analyzed,
            object_count: parse(&counts),
            max_in_frame: parse(&most),
            frames: parse(&frames),
        })
        .collect();
    Ok(Json(RecordingDetections { chunk_id, recorded_ms: start, results }))
}

/// A `chunk_results` row as the detections answer reads it.
type ResultRow = (String, String, String, i64, i64, i64, String, String, String);

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Bucket {
    Hour,
    Day,
}

/// Filters of `GET /api/v1/summary`: unix seconds; by default the last 48 hours (by hour) or
/// 30 days (by day). Buckets are in UTC and whole: `from` counts from the start of its bucket,
/// `to` to the end of its own.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SummaryParams {
    bucket: Option<Bucket>,
    device: Option<String>,
    label: Option<String>,
    /// Unix milliseconds.
    from_ms: Option<i64>,
    to_ms: Option<i64>,
    /// Unix seconds (`to`: its whole second): the old names, kept one release.
    from: Option<i64>,
    to: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Summary {
    bucket: String,
    from_ms: i64,
    to_ms: i64,
    buckets: Vec<SummaryBucket>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SummaryBucket {
    start_ms: i64,
    /// Events per label that started in the bucket.
    counts: BTreeMap<String, i64>,
}

#[utoipa::path(get, path = "/api/v1/summary", params(SummaryParams), tag = "events",
    responses((status = 200, description = "Events per label per hour or day", body = Summary)))]
pub async fn summary(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    params: std::result::Result<Query<SummaryParams>, QueryRejection>,
) -> ApiResult<Json<Summary>> {
    let account = s.accounts.authenticate(&headers)?.name.clone();
    let p = query(params)?;
    let bucket = p.bucket.unwrap_or(Bucket::Hour);
    let (size, name, span) = match bucket {
        Bucket::Hour => (HOUR_MS, "hour", 48 * HOUR_MS),
        Bucket::Day => (DAY_MS, "day", 30 * DAY_MS),
    };
    let (from, to) = crate::params::range(p.from_ms, p.to_ms, p.from, p.to)?;
    let to = to.unwrap_or_else(|| s.clock.timestamp().millis());
    let from = from.unwrap_or_else(|| to.saturating_sub(span).max(0));
    crate::params::window(Some(from), Some(to))?;
    if (to - from) / size > MAX_BUCKETS {
        return Err(
            Error::invalid(format!("invalid query: from and to must be at most {MAX_BUCKETS} {name}s apart")).into()
        );
    }
    // Whole buckets: the counts are kept per hour (event_counts), and a day is 24 of them.
    let (from, to) = (from.div_euclid(size) * size, to.div_euclid(size) * size + size - 1);
    let mut sql = Sql::new("SELECT (hour / ");
    sql.push("?) * ", [size]).push("? AS bucket, label, CAST(SUM(events) AS BIGINT) FROM event_counts WHERE ", [size]);
    sql.push("account = ?", [account]).push(" AND device = ?", [p.device.unwrap_or_default()]);
    sql.push(" AND hour >= ? AND hour <= ?", [from, to]);
    if let Some(label) = p.label {
        sql.push(" AND label = ?", [label]);
    }
    sql.push(" GROUP BY bucket, label HAVING SUM(events) > 0 ORDER BY bucket, label", Vec::<String>::new());
    let rows: Vec<(i64, String, i64)> = sqlx::query_as_with(&sql.text, sql.args)
        .fetch_all(s.db.pool())
        .await
        .kind_ctx(ErrorKind::Unavailable, db_error("count events"))?;
    let mut buckets: Vec<SummaryBucket> = Vec::new();
    for (start_ms, label, count) in rows {
        match buckets.last_mut() {
            Some(b) if b.start_ms == start_ms => {
                b.counts.insert(label, count);
            }
            _ => buckets.push(SummaryBucket { start_ms, counts: BTreeMap::from([(label, count)]) }),
        }
    }
    Ok(Json(Summary { bucket: name.into(), from_ms: from, to_ms: to, buckets }))
}
