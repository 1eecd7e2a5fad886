//! Cheap motion detection for recording: decode a live H.264 stream, shrink frames to a small
//! grey image, and count the pixels that changed since the last compared frame. Frames no other
//! frame refers to are never decoded, and at most `fps` frames a second are compared, so a 1080p
//! camera costs a fraction of a core.

use ffmpeg_next::codec::{self, threading, Context};
use ffmpeg_next::format::Pixel;
use ffmpeg_next::software::scaling::{self, Flags};
use ffmpeg_next::{decoder, frame, Discard, Packet};
use osprey_core::{Error, Result};

/// Width of the grey image frames are compared at; the height keeps the aspect ratio.
const COMPARE_WIDTH: u32 = 160;

/// Motion recording, the `[agent.motion]` section: a frame difference on a small grey copy of the
/// picture, and how much is kept around the motion.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MotionOptions {
    /// Seconds kept from before the motion (rounded out to keyframes).
    pub pre_secs: f64,
    /// Seconds recorded after the last motion (rounded out to keyframes).
    pub post_secs: f64,
    /// The sensitivity: motion when at least this share (percent) of the region's pixels changed.
    pub min_area_percent: f64,
    /// A pixel changed when its brightness moved by more than this (0-255).
    pub pixel_threshold: u8,
    /// Part of the picture to watch, as fractions of width and height: `[left, top, right, bottom]`.
    pub region: Option<[f64; 4]>,
    /// Most frames compared per second.
    pub fps: f64,
}

impl Default for MotionOptions {
    fn default() -> Self {
        MotionOptions {
            pre_secs: 5.0,
            post_secs: 5.0,
            min_area_percent: 1.0,
            pixel_threshold: 25,
            region: None,
            fps: 5.0,
        }
    }
}

impl MotionOptions {
    pub fn validate(&self) -> Result<()> {
        if !(self.pre_secs >= 0.0 && self.post_secs >= 0.0) {
            return Err(Error::invalid("motion: pre_secs and post_secs must be 0 or more"));
        }
        if !(self.min_area_percent > 0.0 && self.min_area_percent <= 100.0) {
            return Err(Error::invalid("motion: min_area_percent must be above 0 and at most 100"));
        }
        if self.fps.is_nan() || self.fps <= 0.0 {
            return Err(Error::invalid("motion: fps must be above 0"));
        }
        if let Some([l, t, r, b]) = self.region {
            let inside = [l, t, r, b].iter().all(|v| (0.0..=1.0).contains(v));
            if !inside || l >= r || t >= b {
                return Err(Error::invalid(
                    "motion: region must be [left, top, right, bottom] fractions with left < right and top < bottom",
                ));
            }
        }
        Ok(())
    }
}

pub struct MotionDetector {
    options: MotionOptions,
    decoder: decoder::Video,
    decoded: frame::Video,
    grey: frame::Video,
    scaler: Option<(u32, u32, Pixel, scaling::Context)>,
    previous: Option<Vec<u8>>,
    last_compared: Option<i64>,
}

impl MotionDetector {
    /// A detector for an Annex B H.264 stream with in-band SPS/PPS.
    pub fn h264(options: MotionOptions) -> Result<MotionDetector> {
        options.validate()?;
        crate::init();
        let codec = decoder::find(codec::Id::H264).ok_or_else(|| Error::internal("ffmpeg has no H.264 decoder"))?;
        let mut context = Context::new_with_codec(codec);
        context.set_threading(threading::Config { kind: threading::Type::Frame, count: 1, ..Default::default() });
        let mut decoder =
            context.decoder().video().map_err(|e| Error::internal(format!("cannot open the H.264 decoder: {e}")))?;
        decoder.skip_frame(Discard::NonReference);
        Ok(MotionDetector {
            options,
            decoder,
            decoded: frame::Video::empty(),
            grey: frame::Video::empty(),
            scaler: None,
            previous: None,
            last_compared: None,
        })
    }

    /// Feeds the next access unit (decode order); true when a frame it let out differs enough from
    /// the last compared one. Undecodable data is an error the caller may skip past.
    pub fn feed(&mut self, data: &[u8], pts_secs: f64) -> Result<bool> {
        let mut packet = Packet::copy(data);
        packet.set_pts(Some((pts_secs * 1e6) as i64));
        self.decoder
            .send_packet(&packet)
            .map_err(|e| Error::invalid(format!("motion: decoder rejected a frame at {pts_secs:.3}s: {e}")))?;
        let mut motion = false;
        loop {
            match self.decoder.receive_frame(&mut self.decoded) {
                Ok(()) => motion |= self.compare()?,
                Err(ffmpeg_next::Error::Other { errno }) if errno == ffmpeg_next::util::error::EAGAIN => {
                    return Ok(motion)
                }
                Err(ffmpeg_next::Error::Eof) => return Ok(motion),
                Err(e) => return Err(Error::invalid(format!("motion: cannot decode: {e}"))),
            }
        }
    }

    fn compare(&mut self) -> Result<bool> {
        let pts = self.decoded.pts().unwrap_or(0);
        let interval = (1e6 / self.options.fps) as i64;
        if self.last_compared.is_some_and(|last| pts >= last && pts - last < interval) {
            return Ok(false);
        }
        self.last_compared = Some(pts);
        let current = self.shrink()?;
        let motion = match &self.previous {
            Some(previous) if previous.len() == current.len() => {
                self.changed_percent(previous, &current) >= self.options.min_area_percent
            }
            _ => false,
        };
        self.previous = Some(current);
        Ok(motion)
    }

    fn shrink(&mut self) -> Result<Vec<u8>> {
        let (w, h, format) = (self.decoded.width(), self.decoded.height(), self.decoded.format());
        let out_w = COMPARE_WIDTH.min(w).max(2);
        let out_h = ((h as u64 * out_w as u64 / w.max(1) as u64) as u32).max(2);
        if !matches!(&self.scaler, Some((sw, sh, sf, _)) if (*sw, *sh, *sf) == (w, h, format)) {
            let ctx = scaling::Context::get(format, w, h, Pixel::GRAY8, out_w, out_h, Flags::AREA)
                .map_err(|e| Error::invalid(format!("motion: cannot scale {w}x{h} {format:?}: {e}")))?;
            self.scaler = Some((w, h, format, ctx));
            self.grey = frame::Video::empty();
            self.previous = None;
        }
        let (_, _, _, scaler) = self.scaler.as_mut().unwrap();
        scaler
            .run(&self.decoded, &mut self.grey)
            .map_err(|e| Error::invalid(format!("motion: cannot scale frame: {e}")))?;
        let stride = self.grey.stride(0);
        let data = self.grey.data(0);
        let mut out = Vec::with_capacity((out_w * out_h) as usize);
        for y in 0..out_h as usize {
            out.extend_from_slice(&data[y * stride..y * stride + out_w as usize]);
        }
        Ok(out)
    }

    fn changed_percent(&self, previous: &[u8], current: &[u8]) -> f64 {
        let (w, h) = (self.grey.width() as usize, self.grey.height() as usize);
        let [l, t, r, b] = self.options.region.unwrap_or([0.0, 0.0, 1.0, 1.0]);
        let (x0, x1) = ((l * w as f64) as usize, ((r * w as f64).ceil() as usize).min(w));
        let (y0, y1) = ((t * h as f64) as usize, ((b * h as f64).ceil() as usize).min(h));
        let threshold = self.options.pixel_threshold;
        let mut changed = 0usize;
        for y in y0..y1 {
            let row = y * w;
            changed += previous[row + x0..row + x1]
                .iter()
                .zip(&current[row + x0..row + x1])
                .filter(|(a, b)| a.abs_diff(**b) > threshold)
                .count();
        }
        let area = ((x1 - x0) * (y1 - y0)).max(1);
        changed as f64 * 100.0 / area as f64
    }
}
