//! The agent: cuts a video into MP4 chunks at keyframes, without re-encoding, and uploads each
//! to a vault the way a Kerberos Agent does. This version reads files; RTSP cameras, motion
//! recording and the disk spool are still to come.

mod chunk;
mod upload;

pub use chunk::{cut, Chunk};
pub use upload::{Uploader, VaultTarget};
