//! Media: MP4 demux from a byte buffer, H.264 decode, frame sampling and letterboxing into a
//! model's input tensor. The hot path of the product: each frame is decoded once, scaled once by
//! swscale straight into planar RGB, and normalised into a reusable tensor buffer.

mod decode;
mod letterbox;
mod motion;
mod mp4;
mod sample;

pub use decode::{decode_frames, DecodedFrame};
pub use letterbox::{Crop, Letterbox, ModelInput, Normalize};
pub use motion::{MotionDetector, MotionOptions};
pub use mp4::{Demuxed, SampleRef, VideoCodec, MAX_SAMPLES};
pub use sample::Sampling;

/// Initialises FFmpeg once per process (idempotent) and quiets its logging.
pub fn init() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        ffmpeg_next::init().expect("ffmpeg initialises");
        ffmpeg_next::util::log::set_level(ffmpeg_next::util::log::Level::Fatal);
    });
}
