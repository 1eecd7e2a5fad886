//! Metric names of this crate: `osprey_agent_*`.

/// Chunks written to the spool.
pub const CHUNKS_RECORDED_TOTAL: &str = "osprey_agent_chunks_recorded_total";
/// Chunks a vault took.
pub const CHUNKS_UPLOADED_TOTAL: &str = "osprey_agent_chunks_uploaded_total";
/// Frames read from the source.
pub const FRAMES_TOTAL: &str = "osprey_agent_frames_total";
/// Times the source was reconnected to.
pub const RECONNECTS_TOTAL: &str = "osprey_agent_reconnects_total";
/// RTP packets the camera stream lost.
pub const RTP_PACKETS_LOST_TOTAL: &str = "osprey_agent_rtp_packets_lost_total";
/// Chunks dropped because the spool was full.
pub const SPOOL_DROPPED_TOTAL: &str = "osprey_agent_spool_dropped_total";
