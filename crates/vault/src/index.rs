//! The results index: the vault consumes `osprey.detections` in its own consumer group and keeps,
//! per chunk and model, the result's summary and boxes, its tracks, and events: tracks joined
//! across chunk boundaries.
//!
//! Invariants:
//! - A result is indexed only for a stored recording, under the recording's account and device
//!   (never what the message says), so a result cannot put rows into another account.
//! - Indexing a (chunk, model) replaces what an earlier result for it left: re-delivery and
//!   re-analysis never duplicate. A batch of results is one transaction; the bus offsets are
//!   committed after it, so a crash re-delivers and the replay lands on the same rows.
//! - An event is the set of tracks sharing its id. A track is joined to a track of another chunk
//!   of the same camera, model and label when one ends at most `join_gap` before the other starts,
//!   both are near their chunk's edge, and their boxes moved on by their velocities overlap. Both
//!   directions are looked up and the pairs across an edge are one to one, best first, so results
//!   may arrive in any order, from any worker, and give the same events; a track that joins two
//!   events merges them. An event always agrees with its tracks: what joined tracks add
//!   (times, best view, zones) is written once per event per batch, and an event that lost tracks
//!   or took in a merged one is recomputed from all of them.

use crate::config::IndexConfig;
use crate::db::{db_error, Db};
use osprey_bus::{Bus, Consumer, Message};
use osprey_core::error::ResultExt;
use osprey_core::track::Ends;
use osprey_core::{
    Backoff, Clock, DetectionResult, Error, ErrorKind, Result, Timestamp, Track, ZoneVisit, TOPIC_DETECTIONS,
};
use serde::Serialize;
use sqlx::AnyConnection;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Waiting for more results to fill a batch once one has arrived.
const BATCH_WAIT: Duration = Duration::from_millis(20);
/// Retrying a batch the database refused.
const RETRY: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));

/// Limits on what a result may carry, checked before anything is written.
const MAX_TRACKS: usize = 10_000;
const MAX_NAME: usize = 128;
const MAX_THUMBNAIL: usize = 512 * 1024;

/// Consumes `osprey.detections` until `shutdown`.
pub(crate) async fn run(
    db: Db,
    bus: Arc<dyn Bus>,
    config: IndexConfig,
    clock: Arc<dyn Clock>,
    live: tokio::sync::broadcast::Sender<crate::live::Note>,
    shutdown: CancellationToken,
) {
    let mut consumer = loop {
        match bus.subscribe(TOPIC_DETECTIONS, &config.group).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(error = %e, "index: cannot subscribe to {TOPIC_DETECTIONS}; retrying");
                tokio::select! {
                    _ = clock.sleep(Duration::from_secs(2)) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    };
    tracing::info!(group = %config.group, "index consuming {TOPIC_DETECTIONS}");
    loop {
        let batch = tokio::select! {
            batch = next_batch(&mut *consumer, config.batch) => batch,
            _ = shutdown.cancelled() => return,
        };
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "index: cannot receive results; retrying");
                clock.sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let results: Vec<DetectionResult> = batch.iter().filter_map(parse).collect();
        let mut retry = RETRY.start(clock.as_ref());
        loop {
            match index(&db, &results, &config, clock.timestamp()).await {
                Ok(outcome) => {
                    outcome.record();
                    for account in outcome.accounts {
                        live.send(crate::live::Note::new(account, "event")).ok();
                    }
                    break;
                }
                Err(e) => {
                    let wait = retry.failed(clock.as_ref()).expect("retried forever");
                    tracing::warn!(error = %e, retry_in = ?wait, "index: cannot index {} results; retrying", results.len());
                    tokio::select! {
                        _ = clock.sleep(wait) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
            }
        }
        for message in &batch {
            if let Err(e) = consumer.commit(message).await {
                tracing::warn!(error = %e, "index: cannot commit; the results will be indexed again");
            }
        }
    }
}

/// The next message, and whatever follows it within `BATCH_WAIT`, up to `max`.
async fn next_batch(consumer: &mut dyn Consumer, max: usize) -> Result<Vec<Message>> {
    let mut batch = vec![consumer.recv().await?];
    while batch.len() < max {
        match tokio::time::timeout(BATCH_WAIT, consumer.recv()).await {
            Ok(message) => batch.push(message?),
            Err(_) => break,
        }
    }
    Ok(batch)
}

fn parse(message: &Message) -> Option<DetectionResult> {
    let parsed = serde_json::from_slice::<DetectionResult>(&message.payload)
        .map_err(|e| Error::invalid(format!("not a detection result: {e}")))
        .and_then(|r| check(&r).map(|()| r));
    match parsed {
        Ok(r) => Some(r),
        Err(e) => {
            ::metrics::counter!(crate::metrics::INDEX_RESULTS, "result" => "invalid").increment(1);
            tracing::warn!(partition = message.partition, offset = message.offset, error = %e, "index: result skipped");
            None
        }
    }
}

/// What a result must be before it is written: names of sane length, finite boxes, small
/// thumbnails, tracks within the chunk's frames.
fn check(r: &DetectionResult) -> Result<()> {
    let d = &r.data;
    let bad = |what: &str| Err(Error::invalid(format!("result for chunk {}: {what}", r.event.chunk_id)));
    if d.model.is_empty() || d.model.len() > MAX_NAME || d.model_version.len() > MAX_NAME {
        return bad("model name missing or too long, or model version too long");
    }
    let hex = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !d.model_sha256.is_empty() && !hex(&d.model_sha256) {
        return bad("model_sha256 is not 64 hex digits");
    }
    if d.tracks.len() > MAX_TRACKS {
        return bad("too many tracks");
    }
    for t in &d.tracks {
        if t.label.is_empty() || t.label.len() > MAX_NAME || t.boxes.is_empty() || t.first_ms > t.last_ms {
            return bad("a track without label or boxes, or ending before it starts");
        }
        if t.boxes.iter().any(|b| b.bbox.iter().any(|v| !v.is_finite()) || !b.score.is_finite()) {
            return bad("a track box is not finite");
        }
        if t.thumbnail.as_deref().is_some_and(|j| !is_jpeg(j)) || t.zones.iter().any(|z| z.zone.len() > MAX_NAME) {
            return bad("a thumbnail is not a base64 JPEG of at most 512 KiB, or a zone name is too long");
        }
    }
    let mut ids = BTreeSet::new();
    if !d.tracks.iter().all(|t| ids.insert(t.id)) {
        return bad("two tracks share an id");
    }
    Ok(())
}

fn is_jpeg(base64_text: &str) -> bool {
    use base64::Engine;
    base64_text.len() <= MAX_THUMBNAIL * 4 / 3 + 4
        && base64::engine::general_purpose::STANDARD
            .decode(base64_text)
            .is_ok_and(|bytes| bytes.starts_with(&[0xFF, 0xD8, 0xFF]))
}

/// What one batch did, for the metrics and the log.
#[derive(Debug, Default)]
pub struct Outcome {
    pub indexed: u64,
    /// Results for chunks the vault does not hold (deleted, or never stored).
    pub unknown: u64,
    pub joins: u64,
    /// The accounts whose results were indexed.
    pub accounts: BTreeSet<String>,
}

impl Outcome {
    fn record(&self) {
        let m = crate::metrics::INDEX_RESULTS;
        ::metrics::counter!(m, "result" => "indexed").increment(self.indexed);
        ::metrics::counter!(m, "result" => "unknown_chunk").increment(self.unknown);
        ::metrics::counter!(crate::metrics::INDEX_JOINS).increment(self.joins);
    }
}

/// Indexes results in one transaction.
pub async fn index(db: &Db, results: &[DetectionResult], config: &IndexConfig, now: Timestamp) -> Result<Outcome> {
    let mut outcome = Outcome::default();
    let mut tx = db.pool().begin().await.kind_ctx(ErrorKind::Unavailable, || "index: cannot begin".into())?;
    let mut batch = Batch::default();
    for result in results {
        match index_one(&mut tx, result, config, now, &mut batch).await? {
            Some((account, joins)) => {
                outcome.indexed += 1;
                outcome.joins += joins;
                outcome.accounts.insert(account);
            }
            None => {
                outcome.unknown += 1;
                tracing::debug!(chunk_id = %result.event.chunk_id, "index: result for a chunk not stored; skipped");
            }
        }
    }
    batch.write(&mut tx).await?;
    tx.commit().await.kind_ctx(ErrorKind::Unavailable, || "index: cannot commit".into())?;
    Ok(outcome)
}

/// The recording a result is about, as the vault stored it.
struct Chunk {
    chunk_id: String,
    account: String,
    device: String,
    start: i64,
    /// Where its last analysed frame may be: the recording's duration, else the last frame.
    end_ms: i64,
}

/// Indexes one result; `None` when its chunk is not stored. Returns its account and the joins
/// made.
async fn index_one(
    tx: &mut AnyConnection,
    result: &DetectionResult,
    config: &IndexConfig,
    now: Timestamp,
    batch: &mut Batch,
) -> Result<Option<(String, u64)>> {
    let d = &result.data;
    let row: Option<(String, String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT account, device, recorded_at, duration_ms FROM recordings WHERE chunk_id = $1 AND deleting_at IS NULL",
    )
    .bind(result.event.chunk_id.as_str())
    .fetch_optional(&mut *tx)
    .await
    .kind_ctx(ErrorKind::Unavailable, db_error("read the result's recording"))?;
    let Some((account, device, start, duration)) = row else { return Ok(None) };
    let last_frame = d.frames.iter().map(|f| f.pts_ms).max().unwrap_or(0);
    let chunk = Chunk {
        chunk_id: result.event.chunk_id.to_string(),
        account,
        device,
        start,
        end_ms: duration.filter(|d| *d > 0).unwrap_or(last_frame),
    };
    let replaced_job = forget_result(tx, &chunk.chunk_id, Some(&d.model), &mut batch.touched).await?;
    // A live result after a re-analysis one of the same chunk and model keeps the job's tag.
    let reanalyse_job = result.event.reanalyse_job.or(replaced_job);

    sqlx::query(
        "INSERT INTO chunk_results (chunk_id, model, account, device, recorded_at, width, height, frames_analyzed,
             object_count, max_in_frame, frames, indexed_at, model_version, model_sha256, reanalyse_job)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
    )
    .bind(&chunk.chunk_id)
    .bind(&d.model)
    .bind(&chunk.account)
    .bind(&chunk.device)
    .bind(chunk.start)
    .bind(i64::from(d.width))
    .bind(i64::from(d.height))
    .bind(d.frames_analyzed as i64)
    .bind(json(&d.object_count))
    .bind(json(&d.max_in_frame))
    .bind(json(&d.frames))
    .bind(now.millis())
    .bind(&d.model_version)
    .bind(d.model_sha256.to_ascii_lowercase())
    .bind(reanalyse_job)
    .execute(&mut *tx)
    .await
    .kind_ctx(ErrorKind::Unavailable, db_error("insert a chunk result"))?;

    // The other chunks' tracks near this one's edges, read once for all its tracks.
    let gap = config.join_gap.as_millis() as i64;
    let last_ms = d.tracks.iter().map(|t| t.last_ms).max().unwrap_or(0);
    let mut near = Near::default();
    if d.tracks.iter().any(|t| t.first_ms <= gap) {
        near.before = nearby(tx, &chunk, &d.model, "last_at", chunk.start - gap, chunk.start + gap).await?;
    }
    if d.tracks.iter().any(|t| t.last_ms >= chunk.end_ms - gap) {
        let (from, to) = (chunk.start + chunk.end_ms - gap, chunk.start + last_ms + gap);
        near.after = nearby(tx, &chunk, &d.model, "first_at", from, to).await?;
    }
    let ends: Vec<Ends> = d.tracks.iter().map(|t| Ends::of(t).expect("checked: every track has boxes")).collect();
    let (before, after) = pair_edges(&chunk, &d.tracks, &ends, &near, config);
    let mut joins = 0;
    let mut placed = Vec::with_capacity(d.tracks.len());
    for (i, (track, ends)) in d.tracks.iter().zip(ends).enumerate() {
        let zones = absolute_zones(&chunk, track);
        joins += u64::from(before[i].is_some()) + u64::from(after[i].is_some());
        let (event, how) = join(tx, &chunk, &d.model, track, (before[i], after[i]), &mut near).await?;
        match how {
            // Merged events are recomputed from their tracks once the batch is in.
            Joined::Merged(gone) => {
                batch.touched.insert(event);
                batch.gone.insert(gone);
            }
            Joined::Existing => batch.grow(&chunk, track, &zones, event, true),
            Joined::New => batch.grow(&chunk, track, &zones, event, false),
        }
        placed.push(Placed { track, ends, zones, event });
    }
    for p in &mut placed {
        p.event = near.resolve(p.event);
    }
    insert_tracks(tx, &chunk, &d.model, &placed).await?;
    Ok(Some((chunk.account, joins)))
}

/// A track of this result on its way into the table: its ends, its zones' visits in absolute
/// time, and its event.
struct Placed<'a> {
    track: &'a Track,
    ends: Ends,
    zones: Vec<ZoneVisit>,
    event: i64,
}

/// A track's zone visits, in unix ms rather than ms from its chunk's start.
fn absolute_zones(chunk: &Chunk, track: &Track) -> Vec<ZoneVisit> {
    let at = |ms: i64| chunk.start + ms;
    track
        .zones
        .iter()
        .map(|z| ZoneVisit { entered_ms: at(z.entered_ms), left_ms: at(z.left_ms), ..z.clone() })
        .collect()
}

/// Per zone: first entered, last left, dwell summed.
type ZoneTimes = BTreeMap<String, (i64, i64, i64)>;

fn add_visit(zones: &mut ZoneTimes, v: &ZoneVisit) {
    let z = zones.entry(v.zone.clone()).or_insert((v.entered_ms, v.left_ms, 0));
    (z.0, z.1, z.2) = (z.0.min(v.entered_ms), z.1.max(v.left_ms), z.2 + v.dwell_ms);
}

fn json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("index values serialise")
}

/// A pair of tracks across a chunk edge: (the join's quality, this result's track, the stored one).
type Candidate = (f32, usize, usize);

/// How a track found its event.
enum Joined {
    New,
    Existing,
    /// Into this event, and the other one merged away.
    Merged(i64),
}

/// What a batch does to events besides inserting tracks: events to recompute from their tracks
/// (their tracks were replaced, or events were merged into them), events merged away, and what
/// joined tracks add to the others, gathered so each event is written once a batch.
#[derive(Default)]
struct Batch {
    touched: BTreeSet<i64>,
    gone: BTreeSet<i64>,
    growth: BTreeMap<i64, Growth>,
}

/// What tracks add to an event: times and best view (`times` when the event existed before),
/// and zones as (entered, left, dwell).
#[derive(Default)]
struct Growth {
    times: Option<(i64, i64, f32, String, i64)>,
    zones: ZoneTimes,
}

impl Batch {
    fn grow(&mut self, chunk: &Chunk, track: &Track, zones: &[ZoneVisit], event: i64, times: bool) {
        let g = self.growth.entry(event).or_default();
        let (first_at, last_at) = (chunk.start + track.first_ms, chunk.start + track.last_ms);
        if times {
            let best = (track.best_score, chunk.chunk_id.clone(), i64::from(track.id));
            match &mut g.times {
                Some(t) => {
                    (t.0, t.1) = (t.0.min(first_at), t.1.max(last_at));
                    if best.0 > t.2 {
                        (t.2, t.3, t.4) = best;
                    }
                }
                None => g.times = Some((first_at, last_at, best.0, best.1, best.2)),
            }
        }
        for v in zones {
            add_visit(&mut g.zones, v);
        }
    }

    /// Writes the growth of every event not recomputed or gone, then recomputes the touched.
    async fn write(self, tx: &mut AnyConnection) -> Result<()> {
        for (event, g) in &self.growth {
            if !self.touched.contains(event) && !self.gone.contains(event) {
                g.write(tx, *event).await?;
            }
        }
        for event in self.touched {
            recompute(tx, event).await?;
        }
        Ok(())
    }
}

impl Growth {
    async fn write(&self, tx: &mut AnyConnection, event: i64) -> Result<()> {
        if let Some((first_at, last_at, best_score, best_chunk, best_track)) = &self.times {
            // Every right-hand side reads the row as it was before the update.
            sqlx::query(
                "UPDATE events SET
                     start_at = CASE WHEN start_at < $1 THEN start_at ELSE $1 END,
                     end_at = CASE WHEN end_at > $2 THEN end_at ELSE $2 END,
                     duration_ms = (CASE WHEN end_at > $2 THEN end_at ELSE $2 END) - (CASE WHEN start_at < $1 THEN start_at ELSE $1 END),
                     best_chunk = CASE WHEN best_score >= $3 THEN best_chunk ELSE $4 END,
                     best_track = CASE WHEN best_score >= $3 THEN best_track ELSE $5 END,
                     best_score = CASE WHEN best_score >= $3 THEN best_score ELSE $3 END
                 WHERE id = $6",
            )
            .bind(*first_at)
            .bind(*last_at)
            .bind(f64::from(*best_score))
            .bind(best_chunk)
            .bind(*best_track)
            .bind(event)
            .execute(&mut *tx)
            .await
            .kind_ctx(ErrorKind::Unavailable, db_error("extend an event"))?;
        }
        for (zone, (entered, left, dwell)) in &self.zones {
            sqlx::query(
                "INSERT INTO event_zones (event_id, zone, entered_at, left_at, dwell_ms) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (event_id, zone) DO UPDATE SET
                     entered_at = CASE WHEN event_zones.entered_at < excluded.entered_at THEN event_zones.entered_at ELSE excluded.entered_at END,
                     left_at = CASE WHEN event_zones.left_at > excluded.left_at THEN event_zones.left_at ELSE excluded.left_at END,
                     dwell_ms = event_zones.dwell_ms + excluded.dwell_ms",
            )
            .bind(event)
            .bind(zone)
            .bind(*entered)
            .bind(*left)
            .bind(*dwell)
            .execute(&mut *tx)
            .await
            .kind_ctx(ErrorKind::Unavailable, db_error("add an event's zone"))?;
        }
        Ok(())
    }
}

/// Tracks of other chunks of the camera near this chunk's start (`before`: by their end) and end
/// (`after`: by their start), as (label, event, time, ends); and events merged away meanwhile.
#[derive(Default)]
struct Near {
    before: Vec<(String, i64, i64, Ends)>,
    after: Vec<(String, i64, i64, Ends)>,
    renamed: HashMap<i64, i64>,
}

impl Near {
    /// The event an id stands for now, after the merges of this result.
    fn resolve(&self, mut event: i64) -> i64 {
        while let Some(&into) = self.renamed.get(&event) {
            event = into;
        }
        event
    }
}

/// The event `track` belongs to: the one of the track it continues (`edges.0`), or of the track
/// that continues it (`edges.1`), merging the two when both exist and differ, else a new one.
async fn join(
    tx: &mut AnyConnection,
    chunk: &Chunk,
    model: &str,
    track: &Track,
    edges: (Option<i64>, Option<i64>),
    near: &mut Near,
) -> Result<(i64, Joined)> {
    let (before, after) = (edges.0.map(|e| near.resolve(e)), edges.1.map(|e| near.resolve(e)));
    match (before, after) {
        (Some(a), Some(b)) if a != b => {
            merge(tx, b, a).await?;
            near.renamed.insert(b, a);
            Ok((a, Joined::Merged(b)))
        }
        (Some(a), _) | (None, Some(a)) => Ok((a, Joined::Existing)),
        (None, None) => Ok((new_event(tx, chunk, model, track).await?, Joined::New)),
    }
}

/// Across each edge of the chunk, which stored track each of `tracks` continues (before) and is
/// continued by (after), as that track's event. The pairs are one to one, taken best first among
/// those that pass `join_iou`: a pair's quality is the same whichever of its two results is
/// indexed first, so both orders pair the same tracks and give the same events.
fn pair_edges(
    chunk: &Chunk,
    tracks: &[Track],
    ends: &[Ends],
    near: &Near,
    config: &IndexConfig,
) -> (Vec<Option<i64>>, Vec<Option<i64>>) {
    let gap = config.join_gap.as_millis() as i64;
    let mut before = Vec::new();
    let mut after = Vec::new();
    for (i, (track, ends)) in tracks.iter().zip(ends).enumerate() {
        let (first_at, last_at) = (chunk.start + track.first_ms, chunk.start + track.last_ms);
        if track.first_ms <= gap {
            for (j, (label, _, at, other)) in near.before.iter().enumerate() {
                if *label == track.label && *at >= first_at - gap && *at < first_at {
                    before.push((other.continues(ends, first_at - at), i, j));
                }
            }
        }
        if track.last_ms >= chunk.end_ms - gap {
            for (j, (label, _, at, other)) in near.after.iter().enumerate() {
                if *label == track.label && *at > last_at && *at <= last_at + gap {
                    after.push((ends.continues(other, at - last_at), i, j));
                }
            }
        }
    }
    let pick = |pairs: Vec<Candidate>, stored: &[(String, i64, i64, Ends)]| {
        let mut pairs: Vec<Candidate> = pairs.into_iter().filter(|(q, _, _)| *q >= config.join_iou).collect();
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let (mut of_track, mut taken) = (vec![None; tracks.len()], vec![false; stored.len()]);
        for (_, i, j) in pairs {
            if of_track[i].is_none() && !taken[j] {
                (of_track[i], taken[j]) = (Some(stored[j].1), true);
            }
        }
        of_track
    };
    (pick(before, &near.before), pick(after, &near.after))
}

/// Tracks of other chunks of the camera and model whose `column` (first_at or last_at) is
/// within `from..=to`.
async fn nearby(
    tx: &mut AnyConnection,
    chunk: &Chunk,
    model: &str,
    column: &str,
    from: i64,
    to: i64,
) -> Result<Vec<(String, i64, i64, Ends)>> {
    let sql = format!(
        "SELECT label, event_id, {column}, ends FROM tracks WHERE account = $1 AND device = $2 AND model = $3
         AND {column} >= $4 AND {column} <= $5 AND chunk_id <> $6"
    );
    let rows: Vec<(String, i64, i64, String)> = sqlx::query_as(&sql)
        .bind(&chunk.account)
        .bind(&chunk.device)
        .bind(model)
        .bind(from)
        .bind(to)
        .bind(&chunk.chunk_id)
        .fetch_all(&mut *tx)
        .await
        .kind_ctx(ErrorKind::Unavailable, db_error("read neighbouring tracks"))?;
    Ok(rows
        .into_iter()
        .filter_map(|(label, event, at, ends)| serde_json::from_str(&ends).ok().map(|e| (label, event, at, e)))
        .collect())
}

/// Moves every track of event `from` into event `into`, and removes `from`.
async fn merge(tx: &mut AnyConnection, from: i64, into: i64) -> Result<()> {
    sqlx::query("UPDATE tracks SET event_id = $1 WHERE event_id = $2")
        .bind(into)
        .bind(from)
        .execute(&mut *tx)
        .await
        .kind_ctx(ErrorKind::Unavailable, db_error("merge events"))?;
    delete_event(tx, from).await
}

async fn delete_event(tx: &mut AnyConnection, id: i64) -> Result<()> {
    for sql in ["DELETE FROM event_zones WHERE event_id = $1", "DELETE FROM events WHERE id = $1"] {
        sqlx::query(sql)
            .bind(id)
            .execute(&mut *tx)
            .await
            .kind_ctx(ErrorKind::Unavailable, db_error("delete an event"))?;
    }
    Ok(())
}

async fn new_event(tx: &mut AnyConnection, chunk: &Chunk, model: &str, track: &Track) -> Result<i64> {
    let (first_at, last_at) = (chunk.start + track.first_ms, chunk.start + track.last_ms);
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO events (account, device, model, label, start_at, end_at, duration_ms, best_score, best_chunk, best_track)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
    )
    .bind(&chunk.account)
    .bind(&chunk.device)
    .bind(model)
    .bind(&track.label)
    .bind(first_at)
    .bind(last_at)
    .bind(last_at - first_at)
    .bind(f64::from(track.best_score))
    .bind(&chunk.chunk_id)
    .bind(i64::from(track.id))
    .fetch_one(&mut *tx)
    .await
    .kind_ctx(ErrorKind::Unavailable, db_error("insert an event"))?;
    Ok(id)
}

/// Tracks per statement: 15 values each, well under SQLite's and PostgreSQL's parameter limits.
const TRACKS_PER_INSERT: usize = 50;

/// Inserts a result's tracks, many to a statement.
async fn insert_tracks(tx: &mut AnyConnection, chunk: &Chunk, model: &str, placed: &[Placed<'_>]) -> Result<()> {
    for group in placed.chunks(TRACKS_PER_INSERT) {
        let rows: Vec<String> = (0..group.len())
            .map(|r| format!("({})", (1..=15).map(|c| format!("${}", r * 15 + c)).collect::<Vec<_>>().join(", ")))
            .collect();
        let sql = format!(
            "INSERT INTO tracks (chunk_id, model, track_id, account, device, label, first_at, last_at, best_score, best_at,
                 ends, boxes, zones, thumbnail, event_id) VALUES {}",
            rows.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for Placed { track, ends, zones, event } in group {
            query = query
                .bind(chunk.chunk_id.clone())
                .bind(model.to_string())
                .bind(i64::from(track.id))
                .bind(chunk.account.clone())
                .bind(chunk.device.clone())
                .bind(track.label.clone())
                .bind(chunk.start + track.first_ms)
                .bind(chunk.start + track.last_ms)
                .bind(f64::from(track.best_score))
                .bind(chunk.start + track.best_ms)
                .bind(json(ends))
                .bind(json(&track.boxes))
                .bind(json(zones))
                .bind(track.thumbnail.clone())
                .bind(*event);
        }
        query.execute(&mut *tx).await.kind_ctx(ErrorKind::Unavailable, db_error("insert tracks"))?;
    }
    Ok(())
}

/// Removes what the index holds for a chunk (one model's result, or every model's), noting the
/// events it touched so they are recomputed. Returns the re-analysis job that made a removed
/// result, if one did.
async fn forget_result(
    tx: &mut AnyConnection,
    chunk_id: &str,
    model: Option<&str>,
    touched: &mut BTreeSet<i64>,
) -> Result<Option<i64>> {
    let (filter, model) = match model {
        Some(m) => ("chunk_id = $1 AND model = $2", m),
        None => ("chunk_id = $1 AND $2 = $2", ""),
    };
    // Tracks exist only with their result: a chunk not indexed yet (the usual case) costs one
    // statement.
    let removed: Vec<Option<i64>> =
        sqlx::query_scalar(&format!("DELETE FROM chunk_results WHERE {filter} RETURNING reanalyse_job"))
            .bind(chunk_id)
            .bind(model)
            .fetch_all(&mut *tx)
            .await
            .kind_ctx(ErrorKind::Unavailable, db_error("remove a chunk's result"))?;
    if removed.is_empty() {
        return Ok(None);
    }
    let events: Vec<i64> = sqlx::query_scalar(&format!("DELETE FROM tracks WHERE {filter} RETURNING event_id"))
        .bind(chunk_id)
        .bind(model)
        .fetch_all(&mut *tx)
        .await
        .kind_ctx(ErrorKind::Unavailable, db_error("remove a chunk's tracks"))?;
    touched.extend(events);
    Ok(removed.into_iter().flatten().next())
}

/// Removes a recording's results and the events left without tracks: retention calls it before
/// the recording's row goes.
pub async fn forget_recording(db: &Db, chunk_id: &str) -> Result<()> {
    let mut tx = db.pool().begin().await.kind_ctx(ErrorKind::Unavailable, || "index: cannot begin".into())?;
    let mut touched = BTreeSet::new();
    forget_result(&mut tx, chunk_id, None, &mut touched).await?;
    for event in touched {
        recompute(&mut tx, event).await?;
    }
    tx.commit().await.kind_ctx(ErrorKind::Unavailable, || "index: cannot commit".into())
}

/// `$1, $2, … $n`.
fn marks(n: usize) -> String {
    (1..=n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// How many of these chunks have a result indexed.
pub async fn indexed(db: &Db, chunk_ids: &[String]) -> Result<usize> {
    let mut n = 0;
    for ids in chunk_ids.chunks(500) {
        let sql =
            format!("SELECT COUNT(DISTINCT chunk_id) FROM chunk_results WHERE chunk_id IN ({})", marks(ids.len()));
        let query = ids.iter().fold(sqlx::query_as::<_, (i64,)>(&sql), |q, id| q.bind(id));
        let (found,) = query.fetch_one(db.pool()).await.kind_ctx(ErrorKind::Unavailable, db_error("count results"))?;
        n += found as usize;
    }
    Ok(n)
}

/// Distinct objects (events) per label with a track in any of these chunks.
pub async fn objects_in(db: &Db, chunk_ids: &[String]) -> Result<BTreeMap<String, i64>> {
    let mut events: BTreeMap<i64, String> = BTreeMap::new();
    for ids in chunk_ids.chunks(500) {
        let sql = format!("SELECT DISTINCT event_id, label FROM tracks WHERE chunk_id IN ({})", marks(ids.len()));
        let query = ids.iter().fold(sqlx::query_as::<_, (i64, String)>(&sql), |q, id| q.bind(id));
        let rows = query.fetch_all(db.pool()).await.kind_ctx(ErrorKind::Unavailable, db_error("count objects"))?;
        events.extend(rows);
    }
    let mut counts = BTreeMap::new();
    for label in events.into_values() {
        *counts.entry(label).or_insert(0) += 1;
    }
    Ok(counts)
}

/// Sets an event's times, best view and zones from its tracks; removes it when it has none.
async fn recompute(tx: &mut AnyConnection, event: i64) -> Result<()> {
    let tracks: Vec<(String, i64, i64, i64, f64, String)> = sqlx::query_as(
        "SELECT chunk_id, track_id, first_at, last_at, best_score, zones FROM tracks WHERE event_id = $1",
    )
    .bind(event)
    .fetch_all(&mut *tx)
    .await
    .kind_ctx(ErrorKind::Unavailable, db_error("read an event's tracks"))?;
    let Some(best) = tracks.iter().max_by(|a, b| a.4.total_cmp(&b.4)) else {
        return delete_event(tx, event).await;
    };
    let start = tracks.iter().map(|t| t.2).min().unwrap_or(0);
    let end = tracks.iter().map(|t| t.3).max().unwrap_or(0);
    sqlx::query(
        "UPDATE events SET start_at = $1, end_at = $2, duration_ms = $3, best_score = $4, best_chunk = $5,
             best_track = $6 WHERE id = $7",
    )
    .bind(start)
    .bind(end)
    .bind(end - start)
    .bind(best.4)
    .bind(&best.0)
    .bind(best.1)
    .bind(event)
    .execute(&mut *tx)
    .await
    .kind_ctx(ErrorKind::Unavailable, db_error("update an event"))?;
    sqlx::query("DELETE FROM event_zones WHERE event_id = $1")
        .bind(event)
        .execute(&mut *tx)
        .await
        .kind_ctx(ErrorKind::Unavailable, db_error("update an event's zones"))?;
    for (zone, (entered, left, dwell)) in merged_zones(tracks.iter().map(|t| t.5.as_str())) {
        sqlx::query(
            "INSERT INTO event_zones (event_id, zone, entered_at, left_at, dwell_ms) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(event)
        .bind(zone)
        .bind(entered)
        .bind(left)
        .bind(dwell)
        .execute(&mut *tx)
        .await
        .kind_ctx(ErrorKind::Unavailable, db_error("update an event's zones"))?;
    }
    Ok(())
}

/// Per zone over an event's tracks (their stored visits): first entered, last left, dwell summed.
fn merged_zones<'a>(zones: impl Iterator<Item = &'a str>) -> ZoneTimes {
    let mut merged = ZoneTimes::new();
    for visits in zones {
        for v in serde_json::from_str::<Vec<ZoneVisit>>(visits).unwrap_or_default() {
            add_visit(&mut merged, &v);
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_merge_over_tracks() {
        let one = r#"[{"zone":"door","entered_ms":1000,"left_ms":3000,"dwell_ms":2000}]"#;
        let two = r#"[{"zone":"door","entered_ms":3500,"left_ms":5000,"dwell_ms":1500},{"zone":"yard","entered_ms":4000,"left_ms":4500,"dwell_ms":500}]"#;
        let merged = merged_zones([one, two].into_iter());
        assert_eq!(merged["door"], (1000, 5000, 3500));
        assert_eq!(merged["yard"], (4000, 4500, 500));
    }
}
