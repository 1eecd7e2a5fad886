//! Types every Osprey crate shares: the error type, ids, the chunk event, config, clocks and the retry policy.

pub mod clock;
pub mod config;
pub mod error;
pub mod event;
pub mod key;
pub mod mp4;
pub mod retry;
pub mod time;
pub mod track;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, ErrorKind, Result};
pub use event::{
    ChunkEvent, ChunkId, DeadLetter, Detection, DetectionData, DetectionResult, EventMetadata, EventPayload,
    FrameDetections, Track, TrackBox, ZoneVisit,
};
pub use key::ObjectKey;
pub use retry::{Backoff, Retry};
pub use time::Timestamp;

/// Topic of chunk events, published by the vault.
pub const TOPIC_CHUNKS: &str = "osprey.chunks";
/// Topic of detection results, published by workers.
pub const TOPIC_DETECTIONS: &str = "osprey.detections";
/// Dead-letter topic for chunks that could not be processed.
pub const TOPIC_CHUNKS_DLQ: &str = "osprey.chunks.dlq";

/// The name of the single model group that `[detect]` describes when no `[[models]]` are given.
pub const DEFAULT_MODEL_GROUP: &str = "default";

/// Where recordings sent for re-analysis to one model group go: `osprey.reanalyse.<group>`
/// (`default` for the single group of `[detect]`).
pub fn reanalyse_topic(group: &str) -> String {
    format!("osprey.reanalyse.{group}")
}

/// A file shipped with Osprey (`models/…`, `samples/…`, `third_party/…`), looked up relative to
/// the working directory, then to the executable's ancestors (so `target/release/osprey` finds
/// the checkout's files).
pub fn find_bundled(relative: &str) -> Option<std::path::PathBuf> {
    let mut roots = vec![std::path::PathBuf::from(".")];
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(exe.ancestors().skip(1).take(4).map(std::path::Path::to_path_buf));
    }
    roots.into_iter().map(|r| r.join(relative)).find(|p| p.is_file())
}
