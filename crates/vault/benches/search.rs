//! Search at scale: the index's API (events with each filter, a deep page, one event, its
//! thumbnail, a recording's detections, the hourly and daily summary) answered by a real vault
//! over HTTP on 127.0.0.1, on SQLite and on PostgreSQL (Debian's server, started here), with the
//! index seeded to 1,000,000 events and 50,000,000 per-frame boxes over 500 cameras.
//!
//! `cargo bench -p osprey-vault --bench search [-- EVENTS]` (default 1,000,000; the cameras stay
//! 500 and each recording holds 4 events, so EVENTS / 2,000 recordings per camera).
//!
//! `cargo bench -p osprey-vault --bench search -- --web [EVENTS]` (default 100,000) measures the
//! web app's pages in Debian's Chromium instead, on SQLite (see `paint.rs`).
//!
//! The rows are written straight into the index's tables in the format the index writes (its
//! migrations, core's serialised types), because seeding 250,000 results through the consumer
//! would take longer than the measurement. Each recording has 20 analysed frames of 10 boxes (the
//! 50,000,000 boxes drawn on the video) and 4 tracks of 20 boxes each, spread over the last 30
//! days; each track has a 3 KB thumbnail. One query at a time: the latencies are a user's, not
//! a load test's.

use osprey_core::track::Ends;
use osprey_core::{ChunkId, Detection, FrameDetections, Track, TrackBox, ZoneVisit};
use osprey_vault::db::Db;
use osprey_vault::{AccountConfig, Setup};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const ACCESS: &str = "search-access";
const SECRET: &str = "search-secret-key";
const CAMERAS: usize = 500;
const EVENTS_PER_CHUNK: usize = 4;
const FRAMES: i64 = 20;
const BOXES: usize = 10;
const CHUNK_MS: i64 = 10_000;
const SPAN_MS: i64 = 30 * 24 * 3_600_000;
const MODEL: &str = "nanodet-plus-m-416";
/// Chunks written per transaction.
const BATCH: usize = 100;
const SAMPLES: usize = 100;
const LABELS: [(&str, f64); 4] = [("person", 0.6), ("car", 0.3), ("dog", 0.05), ("bicycle", 0.05)];
const ZONES: [&str; 2] = ["porch", "driveway"];

#[path = "search/paint.rs"]
mod paint;

fn main() {
    let web = std::env::args().any(|a| a == "--web");
    let default = if web { 100_000 } else { 1_000_000 };
    let events: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(default);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(run(events, web));
}

async fn run(events: usize, web: bool) {
    let chunks = (events / (CAMERAS * EVENTS_PER_CHUNK)).max(1);
    let now = osprey_core::Clock::timestamp(&osprey_core::SystemClock).millis();
    let world = World { chunks, start: now - SPAN_MS, every: SPAN_MS / chunks as i64 };
    println!(
        "search at scale: {} events, {} per-frame boxes, {CAMERAS} cameras x {chunks} recordings over 30 days, {} cores",
        CAMERAS * chunks * EVENTS_PER_CHUNK,
        CAMERAS * chunks * FRAMES as usize * BOXES,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let sqlite_dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let sqlite = format!("sqlite://{}", sqlite_dir.path().join("vault.db").display());
    let mut tables = vec![("SQLite", measure(&world, &sqlite, sqlite_dir.path(), web).await)];
    if web {
        paint::print_table(&tables[0].1.paint, CAMERAS * chunks * EVENTS_PER_CHUNK);
        return;
    }
    match osprey_testkit::Postgres::start() {
        Some(server) => {
            let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
            tables.push(("PostgreSQL", measure(&world, &server.database("search"), dir.path(), false).await));
        }
        None => println!("(PostgreSQL not installed: its column is missing)"),
    }
    print_table(&tables);
}

/// The seeded data's shape: recordings of every camera every `every` ms from `start`.
struct World {
    chunks: usize,
    start: i64,
    every: i64,
}

impl World {
    fn chunk_id(&self, camera: usize, chunk: usize) -> ChunkId {
        ChunkId::derive("local", &self.key(camera, chunk))
    }
    fn key(&self, camera: usize, chunk: usize) -> String {
        format!("search/cam-{camera:03}/{chunk:05}.mp4")
    }
    /// Cameras are spread over the interval so recordings do not all share a start.
    fn recorded_at(&self, camera: usize, chunk: usize) -> i64 {
        self.start + chunk as i64 * self.every + (camera as i64 * self.every / CAMERAS as i64)
    }
}

struct Measured {
    seed: Duration,
    size_gb: f64,
    rows: Vec<Row>,
    paint: Vec<paint::Paint>,
}

struct Row {
    query: &'static str,
    p50: f64,
    p99: f64,
    max: f64,
    hits: f64,
    /// Samples taken.
    n: usize,
}

async fn measure(world: &World, url: &str, dir: &Path, web: bool) -> Measured {
    let db = Db::open(url).await.unwrap();
    drop(db);
    let pool = AnyPoolOptions::new().max_connections(1).connect(&sqlite_rwc(url)).await.unwrap();
    let started = Instant::now();
    seed(world, &pool, url, dir).await;
    let seed = started.elapsed();
    let size_gb = size_gb(&pool, url, dir).await;
    pool.close().await;
    println!("  {}: seeded in {:.0} s, {size_gb:.1} GB", backend(url), seed.as_secs_f64());

    let mut setup = Setup::new(dir);
    setup.vault.listen = "127.0.0.1:0".parse().unwrap();
    setup.vault.database_url = Some(url.to_string());
    setup.vault.index.enabled = false;
    setup.vault.accounts = vec![AccountConfig {
        name: "a".into(),
        access_key: ACCESS.into(),
        secret_key: SECRET.into(),
        providers: vec![],
        main_provider: None,
    }];
    let bus = osprey_bus::open(&Default::default(), dir).await.unwrap();
    let providers = setup.providers().unwrap();
    let vault = osprey_vault::Vault::start(setup, bus, providers, Arc::new(osprey_core::SystemClock)).await.unwrap();
    let base = format!("http://{}", vault.addr);
    let (rows, paint) = match web {
        false => (queries(world, &base).await, Vec::new()),
        true => {
            let chunk = world.chunk_id(7, world.chunks - 1).to_string();
            (Vec::new(), paint::measure(&base, (ACCESS, SECRET), "cam-007", &chunk, dir).await)
        }
    };
    vault.stop().await.unwrap();
    Measured { seed, size_gb, rows, paint }
}

fn backend(url: &str) -> &'static str {
    if url.starts_with("sqlite") {
        "SQLite"
    } else {
        "PostgreSQL"
    }
}

fn sqlite_rwc(url: &str) -> String {
    match url.starts_with("sqlite://") {
        true => format!("{url}?mode=rwc"),
        false => url.to_string(),
    }
}

async fn size_gb(pool: &AnyPool, url: &str, dir: &Path) -> f64 {
    let bytes = match url.starts_with("sqlite") {
        true => ["vault.db", "vault.db-wal"]
            .iter()
            .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
            .map(|m| m.len())
            .sum(),
        false => {
            sqlx::query_as::<_, (i64,)>("SELECT pg_database_size(current_database())").fetch_one(pool).await.unwrap().0
                as u64
        }
    };
    bytes as f64 / 1e9
}

/// Writes every camera's recordings (rows and 1-byte objects, so the vault's reconciliation
/// finds nothing amiss), results, events, tracks and zones, oldest first.
async fn seed(world: &World, pool: &AnyPool, pool_url: &str, dir: &Path) {
    let mut rng = StdRng::seed_from_u64(7);
    let thumbnail = thumbnail(&mut rng);
    let storage = dir.join("storage").join("local");
    let mut next_event = 1i64;
    let all: Vec<(usize, usize)> = (0..world.chunks).flat_map(|k| (0..CAMERAS).map(move |c| (c, k))).collect();
    let report_every = (all.len() / BATCH / 10).max(1);
    for (n, batch) in all.chunks(BATCH).enumerate() {
        let mut rows = Rows::default();
        for &(camera, chunk) in batch {
            let file = storage.join(world.key(camera, chunk));
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, b"x").unwrap();
            rows.chunk(world, camera, chunk, &mut next_event, &thumbnail, &mut rng);
        }
        rows.write(pool).await;
        if n % report_every == report_every - 1 {
            println!("    {} of {} recordings", (n + 1) * BATCH, all.len());
        }
    }
    // PostgreSQL's autovacuum would analyse the new rows within a minute; do it now. SQLite gets
    // nothing: the vault never runs ANALYZE there, so neither does the bench.
    if backend(pool_url) == "PostgreSQL" {
        sqlx::query("ANALYZE").execute(pool).await.unwrap();
    }
}

/// A JPEG-sized blob, base64 as the index stores thumbnails.
fn thumbnail(rng: &mut StdRng) -> String {
    use base64::Engine;
    let mut bytes = vec![0xFF, 0xD8, 0xFF, 0xE0];
    bytes.extend((0..3000).map(|_| rng.random::<u8>()));
    bytes.extend([0xFF, 0xD9]);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// One transaction's rows, as SQL values in order.
#[derive(Default)]
struct Rows {
    recordings: Vec<Vec<Value>>,
    results: Vec<Vec<Value>>,
    events: Vec<Vec<Value>>,
    tracks: Vec<Vec<Value>>,
    zones: Vec<Vec<Value>>,
}

enum Value {
    Text(String),
    Int(i64),
    Real(f64),
}

fn text(s: impl Into<String>) -> Value {
    Value::Text(s.into())
}

impl Rows {
    fn chunk(
        &mut self,
        world: &World,
        camera: usize,
        chunk: usize,
        next_event: &mut i64,
        thumbnail: &str,
        rng: &mut StdRng,
    ) {
        let chunk_id = world.chunk_id(camera, chunk).to_string();
        let device = format!("cam-{camera:03}");
        let at = world.recorded_at(camera, chunk);
        self.recordings.push(vec![
            text(&chunk_id),
            text("a"),
            text("local"),
            text(world.key(camera, chunk)),
            text(&device),
            text(&device),
            text(""),
            Value::Int(1),
            text(""),
            Value::Int(at),
            Value::Int(at + CHUNK_MS),
            Value::Int(CHUNK_MS),
            Value::Real(25.0),
            text(""),
        ]);
        let tracks: Vec<Track> = (0..EVENTS_PER_CHUNK).map(|i| track(i, rng)).collect();
        let frames: Vec<FrameDetections> = (0..FRAMES)
            .map(|f| FrameDetections {
                pts_ms: f * 500,
                detections: (0..BOXES)
                    .map(|i| {
                        let t = &tracks[i % EVENTS_PER_CHUNK];
                        let b = t.boxes[f as usize % t.boxes.len()].bbox;
                        Detection { label: t.label.clone(), class_id: 0, score: 0.6, bbox: b }
                    })
                    .collect(),
            })
            .collect();
        let mut counts = std::collections::BTreeMap::<&str, u32>::new();
        for t in &tracks {
            *counts.entry(&t.label).or_default() += 1;
        }
        let counts = serde_json::to_string(&counts).unwrap();
        self.results.push(vec![
            text(&chunk_id),
            text(MODEL),
            text("a"),
            text(&device),
            Value::Int(at),
            Value::Int(1280),
            Value::Int(720),
            Value::Int(FRAMES),
            text(&counts),
            text(&counts),
            text(serde_json::to_string(&frames).unwrap()),
            Value::Int(at + CHUNK_MS),
        ]);
        for t in tracks {
            let event = *next_event;
            *next_event += 1;
            let (first, last) = (at + t.first_ms, at + t.last_ms);
            self.events.push(vec![
                Value::Int(event),
                text("a"),
                text(&device),
                text(MODEL),
                text(&t.label),
                Value::Int(first),
                Value::Int(last),
                Value::Int(last - first),
                Value::Real(f64::from(t.best_score)),
                text(&chunk_id),
                Value::Int(i64::from(t.id)),
            ]);
            let zones: Vec<ZoneVisit> = t
                .zones
                .iter()
                .map(|z| ZoneVisit { entered_ms: at + z.entered_ms, left_ms: at + z.left_ms, ..z.clone() })
                .collect();
            for z in &zones {
                self.zones.push(vec![
                    Value::Int(event),
                    text(&z.zone),
                    Value::Int(z.entered_ms),
                    Value::Int(z.left_ms),
                    Value::Int(z.dwell_ms),
                ]);
            }
            self.tracks.push(vec![
                text(&chunk_id),
                text(MODEL),
                Value::Int(i64::from(t.id)),
                text("a"),
                text(&device),
                text(&t.label),
                Value::Int(first),
                Value::Int(last),
                Value::Real(f64::from(t.best_score)),
                Value::Int(at + t.best_ms),
                text(serde_json::to_string(&Ends::of(&t)).unwrap()),
                text(serde_json::to_string(&t.boxes).unwrap()),
                text(serde_json::to_string(&zones).unwrap()),
                text(thumbnail),
                Value::Int(event),
            ]);
        }
    }

    async fn write(self, pool: &AnyPool) {
        let mut tx = pool.begin().await.unwrap();
        let tables = [
            ("recordings (chunk_id, account, provider, object_key, device, camera, capture, size, sha256, recorded_at, uploaded_at, duration_ms, fps, region)", self.recordings),
            ("chunk_results (chunk_id, model, account, device, recorded_at, width, height, frames_analyzed, object_count, max_in_frame, frames, indexed_at)", self.results),
            ("events (id, account, device, model, label, start_at, end_at, duration_ms, best_score, best_chunk, best_track)", self.events),
            ("tracks (chunk_id, model, track_id, account, device, label, first_at, last_at, best_score, best_at, ends, boxes, zones, thumbnail, event_id)", self.tracks),
            ("event_zones (event_id, zone, entered_at, left_at, dwell_ms)", self.zones),
        ];
        for (table, rows) in tables {
            // A few hundred rows per statement keeps within both servers' parameter limits.
            for group in rows.chunks(500) {
                let width = group[0].len();
                let marks: Vec<String> = (0..group.len())
                    .map(|r| {
                        format!(
                            "({})",
                            (1..=width).map(|c| format!("${}", r * width + c)).collect::<Vec<_>>().join(", ")
                        )
                    })
                    .collect();
                let sql = format!("INSERT INTO {table} VALUES {}", marks.join(", "));
                let mut query = sqlx::query(&sql);
                for value in group.iter().flatten() {
                    query = match value {
                        Value::Text(s) => query.bind(s.clone()),
                        Value::Int(i) => query.bind(*i),
                        Value::Real(f) => query.bind(*f),
                    };
                }
                query.execute(&mut *tx).await.unwrap();
            }
        }
        tx.commit().await.unwrap();
    }
}

/// Track `i` of a recording: a label by the fleet's mix, 0.5-10 s inside the 10 s chunk, a box
/// per analysed frame, and (one in five) a zone visit.
fn track(i: usize, rng: &mut StdRng) -> Track {
    let mut pick = rng.random::<f64>();
    let label = LABELS.iter().find(|(_, share)| {
        pick -= share;
        pick < 0.0
    });
    let label = label.map_or("person", |l| l.0).to_string();
    let first_ms = rng.random_range(0..FRAMES / 2) * 500;
    let last_ms = (first_ms + rng.random_range(1..FRAMES) * 500).min((FRAMES - 1) * 500);
    let x = rng.random_range(0.0..1000.0f32);
    let boxes: Vec<TrackBox> = (first_ms / 500..=last_ms / 500)
        .map(|f| {
            let dx = f as f32 * 8.0;
            TrackBox {
                pts_ms: f * 500,
                bbox: [x + dx, 200.0, x + dx + 80.0, 420.0],
                score: rng.random_range(0.3..0.95),
            }
        })
        .collect();
    let best = boxes.iter().max_by(|a, b| a.score.total_cmp(&b.score)).unwrap();
    let zones = match rng.random_range(0..5) {
        0 => vec![ZoneVisit {
            zone: ZONES[rng.random_range(0..ZONES.len())].to_string(),
            entered_ms: first_ms,
            left_ms: last_ms,
            dwell_ms: last_ms - first_ms,
        }],
        _ => vec![],
    };
    Track {
        id: i as u32 + 1,
        label,
        first_ms,
        last_ms,
        best_score: best.score,
        best_ms: best.pts_ms,
        boxes,
        zones,
        thumbnail: None,
    }
}

/// Each query `SAMPLES` times with random cameras, labels, zones and times; latencies in ms
/// and the mean number of events (or buckets) each answered with.
async fn queries(world: &World, base: &str) -> Vec<Row> {
    let http = reqwest::Client::new();
    let mut rng = StdRng::seed_from_u64(11);
    let end_s = (world.start + world.chunks as i64 * world.every) / 1000;
    let start_s = world.start / 1000;
    type Make = fn(&mut StdRng, &World, i64, i64) -> String;
    let cases: [(&'static str, Make); 19] = [
        ("events (newest)", |_, _, _, _| "/api/v1/events".into()),
        ("events ?device", |r, _, _, _| format!("/api/v1/events?device={}", camera(r))),
        ("events ?label=person", |_, _, _, _| "/api/v1/events?label=person".into()),
        ("events ?label=dog (5%)", |_, _, _, _| "/api/v1/events?label=dog".into()),
        ("events ?zone", |r, _, _, _| format!("/api/v1/events?zone={}", ZONES[r.random_range(0..2)])),
        ("events ?device&label&zone", |r, _, _, _| {
            format!("/api/v1/events?device={}&label=person&zone=porch", camera(r))
        }),
        ("events ?from&to (1 h)", |r, _, s, e| {
            let from = r.random_range(s..e - 3600);
            format!("/api/v1/events?from={from}&to={}", from + 3600)
        }),
        ("events ?min_score=0.9", |_, _, _, _| "/api/v1/events?min_score=0.9".into()),
        ("events ?min_duration=9000", |_, _, _, _| "/api/v1/events?min_duration=9000".into()),
        ("events ?label=dog&min_score&min_duration", |_, _, _, _| {
            "/api/v1/events?label=dog&min_score=0.9&min_duration=5000".into()
        }),
        ("events ?device&from&to (1 day)", |r, _, s, e| {
            let from = r.random_range(s..e - 86_400);
            format!("/api/v1/events?device={}&from={from}&to={}", camera(r), from + 86_400)
        }),
        ("events, a page deep in history", |r, w, _, _| {
            let at = w.start + r.random_range(0..w.chunks as i64 * w.every);
            format!("/api/v1/events?cursor={at}.{}", i64::MAX)
        }),
        ("event by id", |r, w, _, _| format!("/api/v1/events/{}", event_id(r, w))),
        ("event thumbnail", |r, w, _, _| format!("/api/v1/events/{}/thumbnail.jpg", event_id(r, w))),
        ("recording detections", |r, w, _, _| {
            let id = w.chunk_id(r.random_range(0..CAMERAS), r.random_range(0..w.chunks));
            format!("/api/v1/recordings/{id}/detections")
        }),
        ("recordings ?device&from&to (1 day)", |r, _, s, e| {
            let from = r.random_range(s..e - 86_400);
            format!("/api/v1/recordings?device={}&from={from}&to={}", camera(r), from + 86_400)
        }),
        ("recordings, a page deep in history", |r, w, _, _| {
            let at = w.start + r.random_range(0..w.chunks as i64 * w.every);
            format!("/api/v1/recordings?cursor={at}.{}", w.chunk_id(0, 0))
        }),
        ("summary by hour (48 h)", |_, _, _, _| "/api/v1/summary?bucket=hour".into()),
        ("summary by day (30 d)", |_, _, _, _| "/api/v1/summary?bucket=day".into()),
    ];
    let mut rows = Vec::new();
    for (query, make) in cases {
        let mut latencies = Vec::new();
        let mut hits = 0usize;
        let began = Instant::now();
        for n in 0..SAMPLES + 5 {
            // A query slower than the goal by far need not be timed a hundred times.
            if n >= 15 && began.elapsed() > Duration::from_secs(20) {
                break;
            }
            let path = make(&mut rng, world, start_s, end_s);
            let started = Instant::now();
            let resp = http.get(format!("{base}{path}")).basic_auth(ACCESS, Some(SECRET)).send().await.unwrap();
            let status = resp.status();
            let body = resp.bytes().await.unwrap();
            let took = started.elapsed();
            assert!(status.is_success(), "{path}: {status} {}", String::from_utf8_lossy(&body));
            if n >= 5 {
                latencies.push(took.as_secs_f64() * 1000.0);
                hits += answered(&body);
            }
        }
        latencies.sort_by(f64::total_cmp);
        let at = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
        let n = latencies.len();
        rows.push(Row { query, p50: at(0.5), p99: at(0.99), max: at(1.0), hits: hits as f64 / n as f64, n });
    }
    rows
}

fn camera(rng: &mut StdRng) -> String {
    format!("cam-{:03}", rng.random_range(0..CAMERAS))
}

fn event_id(rng: &mut StdRng, world: &World) -> i64 {
    rng.random_range(1..=(CAMERAS * world.chunks * EVENTS_PER_CHUNK) as i64)
}

/// Events, buckets or tracks in an answer; 1 for anything else.
fn answered(body: &[u8]) -> usize {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else { return 1 };
    for list in ["events", "buckets", "recordings"] {
        if let Some(a) = v[list].as_array() {
            return a.len();
        }
    }
    1
}

fn print_table(tables: &[(&str, Measured)]) {
    print!("\n{:<42}", "query (p50 / p99 / max ms, answers, samples)");
    for (name, m) in tables {
        print!(" | {:>35}", format!("{name} ({:.1} GB, seeded {:.0} s)", m.size_gb, m.seed.as_secs_f64()));
    }
    println!();
    for (i, row) in tables[0].1.rows.iter().enumerate() {
        print!("{:<42}", row.query);
        for (_, m) in tables {
            let r = &m.rows[i];
            print!(" | {:>7.1} {:>7.1} {:>7.1} {:>5.0} {:>4}", r.p50, r.p99, r.max, r.hits, r.n);
        }
        println!();
    }
    let worst = |m: &Measured| m.rows.iter().map(|r| r.p99).fold(0.0, f64::max);
    for (name, m) in tables {
        println!("{name}: worst p99 {:.1} ms (goal: under 50 ms)", worst(m));
    }
}
