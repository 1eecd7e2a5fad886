//! Metric names of this crate: `osprey_detect_*`.

/// Frames per inference batch.
pub const BATCH_FRAMES: &str = "osprey_detect_batch_frames";
