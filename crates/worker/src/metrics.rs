//! Metric names of this crate: `osprey_worker_*`.

/// Chunks, by `result` (published, duplicate, dead_letter).
pub const CHUNKS_TOTAL: &str = "osprey_worker_chunks_total";
/// Time from event to published result.
pub const CHUNK_SECONDS: &str = "osprey_worker_chunk_seconds";
/// Frames analysed.
pub const FRAMES_TOTAL: &str = "osprey_worker_frames_total";
/// Messages of this worker's partitions not yet received by its group.
pub const LAG_MESSAGES: &str = "osprey_worker_lag_messages";
/// Time per `stage` (fetch, detect, publish).
pub const STAGE_SECONDS: &str = "osprey_worker_stage_seconds";
