//! The agent: records an RTSP camera (or a video file) into MP4 chunks at keyframes, without
//! re-encoding, continuously or when there is motion, and uploads each to a vault the way a
//! Kerberos Agent does, through a disk spool that keeps chunks across vault outages and agent
//! restarts.

mod chunk;
pub mod config;
pub mod metrics;
mod recorder;
mod run;
mod source;
mod spool;

pub use chunk::{cut, mp4_frames, mux, Chunk, Frame};
pub use config::{Config, RecordMode, RtspTransport};
pub use osprey_kerberos::{Client, Upload, UploadAnswer, VaultTarget, UPLOAD_RETRY};
pub use recorder::{MotionSettings, Recorder, Recording};
pub use retina::client::Transport;
pub use run::{run, AgentEvent, AgentOptions};
pub use source::SourceSpec;
pub use spool::{Spool, Spooled};
