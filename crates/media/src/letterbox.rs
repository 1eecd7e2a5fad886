//! Letterboxing a decoded frame into a model's square input: scaled to fit with swscale straight
//! into planar RGB, then normalised into an NCHW float tensor that is reused frame after frame.

use ffmpeg_next::format::Pixel;
use ffmpeg_next::frame;
use ffmpeg_next::software::scaling::{self, Flags};
use osprey_core::{Error, Result};

/// Per-channel normalisation `(x - mean) / std`, and the channel order the model expects.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalize {
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// True for BGR channel order, false for RGB.
    pub bgr: bool,
}

/// A model input: `3 x size x size` floats, and how to map boxes back to the source frame.
#[derive(Debug, Clone)]
pub struct ModelInput {
    pub size: u32,
    pub data: Vec<f32>,
    /// Source pixels per input pixel is `1 / scale`. The image sits at the top-left corner.
    pub scale: f32,
    pub source_width: u32,
    pub source_height: u32,
    pub pts_ms: i64,
}

impl ModelInput {
    pub fn new(size: u32) -> Self {
        ModelInput {
            size,
            data: vec![0.0; 3 * (size * size) as usize],
            scale: 1.0,
            source_width: 0,
            source_height: 0,
            pts_ms: 0,
        }
    }
}

/// A region of a model input turned back into 8-bit RGB: a small picture of one object.
#[derive(Debug, Clone, PartialEq)]
pub struct Crop {
    pub width: u32,
    pub height: u32,
    /// Packed RGB, row by row.
    pub rgb: Vec<u8>,
}

impl ModelInput {
    /// The part of the picture under `bbox` (source-frame pixels), widened by `margin` of its size
    /// on each side; `None` when it covers fewer than 4 input pixels a side.
    pub fn crop(&self, bbox: [f32; 4], margin: f32, norm: Normalize) -> Option<Crop> {
        let (bw, bh) = (bbox[2] - bbox[0], bbox[3] - bbox[1]);
        let image_w = (self.source_width as f32 * self.scale).round().min(self.size as f32);
        let image_h = (self.source_height as f32 * self.scale).round().min(self.size as f32);
        let to_input = |v: f32, pad: f32, max: f32| ((v + pad) * self.scale).clamp(0.0, max) as usize;
        let (x0, x1) = (to_input(bbox[0], -bw * margin, image_w), to_input(bbox[2], bw * margin, image_w));
        let (y0, y1) = (to_input(bbox[1], -bh * margin, image_h), to_input(bbox[3], bh * margin, image_h));
        if x1 < x0 + 4 || y1 < y0 + 4 {
            return None;
        }
        let size = self.size as usize;
        let plane = size * size;
        // The planes are in the model's order; RGB comes out whatever it was.
        let order = if norm.bgr { [2, 1, 0] } else { [0, 1, 2] };
        let mut rgb = Vec::with_capacity((x1 - x0) * (y1 - y0) * 3);
        for y in y0..y1 {
            for x in x0..x1 {
                for c in order {
                    let v = self.data[c * plane + y * size + x] * norm.std[c] + norm.mean[c];
                    rgb.push(v.round().clamp(0.0, 255.0) as u8);
                }
            }
        }
        Some(Crop { width: (x1 - x0) as u32, height: (y1 - y0) as u32, rgb })
    }
}

pub struct Letterbox {
    size: u32,
    norm: Normalize,
    scaler: Option<(Pixel, u32, u32, scaling::Context)>,
    planar: frame::Video,
    /// Lookup from 8-bit value to normalised float, per channel (B/R order resolved).
    lut: [[f32; 256]; 3],
}

// The scaler holds raw FFmpeg pointers; it is used by one thread at a time.
unsafe impl Send for Letterbox {}

impl Letterbox {
    pub fn new(size: u32, norm: Normalize) -> Self {
        crate::init();
        let mut lut = [[0f32; 256]; 3];
        for (c, table) in lut.iter_mut().enumerate() {
            for (v, out) in table.iter_mut().enumerate() {
                *out = (v as f32 - norm.mean[c]) / norm.std[c];
            }
        }
        Letterbox { size, norm, scaler: None, planar: frame::Video::empty(), lut }
    }

    /// Scales `source` into `input`; the padding (right or bottom) is set to 0, the mean colour.
    pub fn fill(&mut self, source: &frame::Video, pts_ms: i64, input: &mut ModelInput) -> Result<()> {
        let (w, h, format) = (source.width(), source.height(), source.format());
        if w == 0 || h == 0 {
            return Err(Error::invalid("decoded frame has no pixels"));
        }
        let scale = (self.size as f32 / w as f32).min(self.size as f32 / h as f32);
        let (nw, nh) = (((w as f32 * scale).round() as u32).max(1), ((h as f32 * scale).round() as u32).max(1));
        let stale = !matches!(&self.scaler, Some((f, sw, sh, _)) if *f == format && *sw == w && *sh == h);
        if stale {
            let ctx = scaling::Context::get(format, w, h, Pixel::GBRP, nw, nh, Flags::FAST_BILINEAR)
                .map_err(|e| Error::invalid(format!("cannot scale {format:?} {w}x{h}: {e}")))?;
            self.scaler = Some((format, w, h, ctx));
        }
        let (_, _, _, scaler) = self.scaler.as_mut().expect("scaler was just set");
        scaler.run(source, &mut self.planar).map_err(|e| Error::invalid(format!("cannot scale frame: {e}")))?;
        // GBRP planes: 0 = G, 1 = B, 2 = R.
        let (first, last) = if self.norm.bgr { (1, 2) } else { (2, 1) };
        let plane_size = (self.size * self.size) as usize;
        for (channel, plane) in [first, 0, last].into_iter().enumerate() {
            let stride = self.planar.stride(plane);
            let src = self.planar.data(plane);
            let lut = &self.lut[channel];
            let dst = &mut input.data[channel * plane_size..(channel + 1) * plane_size];
            let size = self.size as usize;
            for (y, out_row) in dst.chunks_exact_mut(size).enumerate() {
                if y >= nh as usize {
                    out_row.fill(0.0);
                    continue;
                }
                let (image, pad) = out_row.split_at_mut(nw as usize);
                for (o, v) in image.iter_mut().zip(&src[y * stride..y * stride + nw as usize]) {
                    *o = lut[*v as usize];
                }
                pad.fill(0.0);
            }
        }
        input.scale = scale;
        input.source_width = w;
        input.source_height = h;
        input.pts_ms = pts_ms;
        Ok(())
    }
}
