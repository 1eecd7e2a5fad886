//! Types every Osprey crate shares: the error type, ids, the chunk event, config and clocks.

pub mod clock;
pub mod config;
pub mod error;
pub mod event;
pub mod key;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, ErrorKind, Result};
pub use event::{
    ChunkEvent, ChunkId, DeadLetter, Detection, DetectionData, DetectionResult, EventMetadata, EventPayload,
    FrameDetections,
};
pub use key::ObjectKey;

/// Topic of chunk events, published by the vault.
pub const TOPIC_CHUNKS: &str = "osprey.chunks";
/// Topic of detection results, published by workers.
pub const TOPIC_DETECTIONS: &str = "osprey.detections";
/// Dead-letter topic for chunks that could not be processed.
pub const TOPIC_CHUNKS_DLQ: &str = "osprey.chunks.dlq";
