//! The agent: cuts a video into MP4 chunks at keyframes, without re-encoding, and uploads each
//! to a vault the way a Kerberos Agent does, through a disk spool that keeps chunks across vault
//! outages and agent restarts. This version reads files; RTSP cameras and motion recording are
//! still to come.

mod chunk;
mod run;
mod spool;
mod upload;

pub use chunk::{cut, Chunk};
pub use run::{run, AgentOptions};
pub use spool::{Spool, Spooled};
pub use upload::{Uploader, VaultTarget};
