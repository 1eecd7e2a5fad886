//! The chunk event published on `osprey.chunks`: a superset of Kerberos Vault's `PipelineEvent`.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// Stable id of a stored chunk: derived from where it is stored, so a retried upload of the same
/// object gets the same id and consumers can be idempotent on it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChunkId(String);

impl ChunkId {
    pub fn derive(provider: &str, key: &str) -> Self {
        let mut hash = Sha256::new();
        hash.update(provider.as_bytes());
        hash.update([0u8]);
        hash.update(key.as_bytes());
        ChunkId(hex::encode(&hash.finalize()[..16]))
    }

    /// Accepts an id from outside only if it has the shape `derive` produces.
    pub fn parse(s: &str) -> Option<Self> {
        let ok = s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        ok.then(|| ChunkId(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// For ids read back from storage (`#[sqlx(try_from = "String")]` on row fields).
impl TryFrom<String> for ChunkId {
    type Error = crate::Error;

    fn try_from(s: String) -> crate::Result<Self> {
        ChunkId::parse(&s).ok_or_else(|| crate::Error::internal("a stored chunk id is malformed"))
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkEvent {
    /// Unix seconds when the event was created.
    pub date: i64,
    pub events: Vec<String>,
    /// Always "kstorage", as Kerberos Vault writes it.
    pub provider: String,
    /// Name of the storage provider holding the chunk.
    pub source: String,
    pub request: String,
    pub chunk_id: ChunkId,
    #[serde(rename = "traceId")]
    pub trace_id: String,
    pub payload: EventPayload,
    /// The re-analysis job that sent this chunk again (`osprey.reanalyse.<group>`); the worker's
    /// result carries it back, so the job counts its own results and no one else's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reanalyse_job: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventPayload {
    pub key: String,
    #[serde(rename = "fileSize")]
    pub file_size: u64,
    pub is_fragmented: bool,
    pub bytes_ranges: String,
    pub bytes_range_on_time: Option<serde_json::Value>,
    /// A time-limited download URL, filled in when the event is published.
    #[serde(rename = "signedUrl")]
    pub signed_url: String,
    pub metadata: EventMetadata,
}

/// Kerberos metadata: every value is a string, as Kerberos Vault sends it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventMetadata {
    #[serde(rename = "event-timestamp")]
    pub timestamp: String,
    #[serde(rename = "event-instancename")]
    pub instance_name: String,
    #[serde(rename = "productid")]
    pub product_id: String,
    #[serde(rename = "event-regioncoordinates")]
    pub region_coordinates: String,
    #[serde(rename = "event-numberofchanges")]
    pub number_of_changes: String,
    #[serde(rename = "uploadtime")]
    pub upload_time: String,
    /// Milliseconds, an integer, as Kerberos consumers parse it.
    pub duration: String,
    pub fps: String,
    pub capture: String,
    /// The last field of a Kerberos file name (the duration in ms on current agents).
    #[serde(rename = "event-token", default)]
    pub token: String,
    /// The second field of a Kerberos file name: the sub-second part of the start (`3-737`).
    #[serde(rename = "event-microseconds", default)]
    pub microseconds: String,
    /// The Kerberos Hub public key the agent sent (`X-Kerberos-Storage-CloudKey`).
    #[serde(rename = "publickey", default)]
    pub public_key: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_id_is_stable_and_parseable() {
        let a = ChunkId::derive("local", "alice/a.mp4");
        assert_eq!(a, ChunkId::derive("local", "alice/a.mp4"));
        assert_ne!(a, ChunkId::derive("s3", "alice/a.mp4"));
        assert_eq!(ChunkId::parse(a.as_str()), Some(a));
        assert_eq!(ChunkId::parse("../etc/passwd"), None);
    }
}

/// The `data` object of a detection result (docs/design.md): what one chunk contains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectionData {
    /// The model's name, and its manifest's version and file's sha256 (empty in results made
    /// before models carried them).
    pub model: String,
    #[serde(default)]
    pub model_version: String,
    #[serde(default)]
    pub model_sha256: String,
    pub width: u32,
    pub height: u32,
    pub frames_analyzed: usize,
    /// Per label, the distinct objects (tracks) seen in the chunk.
    #[serde(rename = "objectCount")]
    pub object_count: std::collections::BTreeMap<String, u32>,
    /// Per label, the most objects seen in any one analysed frame.
    #[serde(rename = "maxInFrame", default)]
    pub max_in_frame: std::collections::BTreeMap<String, u32>,
    pub frames: Vec<FrameDetections>,
    #[serde(default)]
    pub tracks: Vec<Track>,
}

/// One object followed through a chunk's analysed frames. `id` is unique within the chunk; the
/// index joins tracks across chunks into events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Track {
    pub id: u32,
    pub label: String,
    pub first_ms: i64,
    pub last_ms: i64,
    /// The object's box in each analysed frame it was matched in, in time order.
    pub boxes: Vec<TrackBox>,
    pub best_score: f32,
    /// The frame the object was seen best in.
    pub best_ms: i64,
    /// Zones of the camera the object's footpoint (bottom centre of its box) was in.
    #[serde(default)]
    pub zones: Vec<ZoneVisit>,
    /// A small JPEG of the object at its best frame, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackBox {
    pub pts_ms: i64,
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    pub score: f32,
}

/// A track's time in one zone: first and last analysed frame in it, and the time between
/// consecutive analysed frames both in it (so leaving and coming back does not count the gap).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZoneVisit {
    pub zone: String,
    pub entered_ms: i64,
    pub left_ms: i64,
    pub dwell_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameDetections {
    pub pts_ms: i64,
    pub detections: Vec<Detection>,
}

/// One detected object; `box` is `[x1, y1, x2, y2]` in source-frame pixels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub label: String,
    pub class_id: usize,
    pub score: f32,
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
}

/// A detection result on `osprey.detections`: the chunk event, plus what was found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectionResult {
    #[serde(flatten)]
    pub event: ChunkEvent,
    /// Always "detection".
    pub operation: String,
    pub data: DetectionData,
}

/// A message on `osprey.chunks.dlq`: a chunk event that could not be processed, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub chunk_id: Option<ChunkId>,
    pub error: String,
    pub attempts: u32,
    /// The original message: its JSON, or its bytes as text when it was not JSON.
    pub original: serde_json::Value,
}
