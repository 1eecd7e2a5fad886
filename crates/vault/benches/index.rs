//! Index ingest on SQLite: results of 20 analysed frames x 10 boxes (10 tracks that go on from
//! chunk to chunk, so every track is joined to one of the previous chunk's), indexed in the
//! batches the vault's consumer makes, beside one result per transaction.
//!
//! `cargo bench -p osprey-vault --bench index [-- CAMERAS CHUNKS]` (default 50 cameras x 40 chunks).

use osprey_core::{ChunkId, Detection, DetectionResult, FrameDetections, ObjectKey, Timestamp, Track, TrackBox};
use osprey_vault::db::{Db, OutboxRow, Recording};
use osprey_vault::IndexConfig;
use std::time::Instant;

const FRAMES: i64 = 20;
const BOXES: usize = 10;
const CHUNK_MS: i64 = 10_000;

fn recording(camera: usize, chunk: usize) -> (Recording, OutboxRow) {
    let chunk_id = ChunkId::derive("local", &format!("a/{camera}/{chunk}.mp4"));
    let r = Recording {
        chunk_id: chunk_id.clone(),
        account: "a".into(),
        provider: "local".into(),
        object_key: ObjectKey::parse(&format!("a/{camera}-{chunk}.mp4")).unwrap(),
        device: format!("cam-{camera}"),
        camera: format!("cam-{camera}"),
        capture: String::new(),
        size: 1,
        sha256: String::new(),
        recorded_at: Timestamp::from_millis(1_700_000_000_000 + chunk as i64 * CHUNK_MS),
        uploaded_at: Timestamp::default(),
        duration_ms: Some(CHUNK_MS),
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
        chunk_id,
        payload: "{}".into(),
        created_at: Timestamp::default(),
    };
    (r, e)
}

fn result(recording: &Recording) -> DetectionResult {
    let boxes = |i: usize, t: i64| {
        [i as f32 * 120.0 + t as f32 * 0.002, 100.0, i as f32 * 120.0 + 40.0 + t as f32 * 0.002, 200.0]
    };
    let frames: Vec<FrameDetections> = (0..FRAMES)
        .map(|f| FrameDetections {
            pts_ms: f * 500,
            detections: (0..BOXES)
                .map(|i| Detection { label: "person".into(), class_id: 0, score: 0.8, bbox: boxes(i, f * 500) })
                .collect(),
        })
        .collect();
    let tracks = (0..BOXES)
        .map(|i| Track {
            id: i as u32 + 1,
            label: "person".into(),
            first_ms: 0,
            last_ms: (FRAMES - 1) * 500,
            boxes: (0..FRAMES).map(|f| TrackBox { pts_ms: f * 500, bbox: boxes(i, f * 500), score: 0.8 }).collect(),
            best_score: 0.8,
            best_ms: 0,
            zones: vec![],
            thumbnail: None,
        })
        .collect();
    let mut result = osprey_testkit::detection_result(recording.chunk_id.as_str(), "m", tracks);
    result.event.payload.key = recording.object_key.to_string();
    (result.data.frames_analyzed, result.data.frames, result.data.max_in_frame) =
        (FRAMES as usize, frames, Default::default());
    result
}

async fn seed(db: &Db, cameras: usize, chunks: usize) -> Vec<DetectionResult> {
    let mut rows: Vec<(Recording, OutboxRow)> = Vec::new();
    // Chunk by chunk over every camera, as results come from a fleet.
    for chunk in 0..chunks {
        for camera in 0..cameras {
            rows.push(recording(camera, chunk));
        }
    }
    for group in rows.chunks(256) {
        futures::future::try_join_all(group.iter().map(|(r, e)| db.insert_recording(r, e))).await.unwrap();
    }
    rows.iter().map(|(r, _)| result(r)).collect()
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let (cameras, chunks) = (args.first().copied().unwrap_or(50), args.get(1).copied().unwrap_or(40));
    println!("index ingest on SQLite (WAL, synchronous=FULL): {cameras} cameras x {chunks} chunks, results of {FRAMES} frames x {BOXES} boxes, {BOXES} tracks each");
    println!("{:>22}  {:>8}  {:>12}  {:>10}", "transaction", "results", "results/s", "joins");
    for batch in [1usize, 64, 256] {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&format!("sqlite://{}", dir.path().join("bench.db").display())).await.unwrap();
        let results = seed(&db, cameras, chunks).await;
        let results = if batch == 1 { results[..results.len().min(500)].to_vec() } else { results };
        let config = IndexConfig { batch, ..IndexConfig::default() };
        let started = Instant::now();
        let mut joins = 0;
        for group in results.chunks(batch) {
            joins += osprey_vault::index::index(&db, group, &config, Timestamp::default()).await.unwrap().joins;
        }
        let rate = results.len() as f64 / started.elapsed().as_secs_f64();
        println!("{:>22}  {:>8}  {rate:>12.0}  {joins:>10}", format!("{batch} result(s) each"), results.len());
    }
}
