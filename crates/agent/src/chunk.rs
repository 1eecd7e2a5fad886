//! Cutting an H.264 MP4 into shorter MP4s at keyframes. Samples are copied, never re-encoded:
//! each chunk starts at a keyframe, carries the stream's SPS/PPS, and is written fast-start.

use muxide::api::{MuxerBuilder, VideoCodec};
use osprey_core::{Error, Result};
use osprey_media::{Demuxed, SampleRef};

/// One chunk: a complete MP4 file and where it lies in the source.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub index: usize,
    pub bytes: Vec<u8>,
    pub start_secs: f64,
    pub duration_secs: f64,
    pub frames: usize,
}

/// Cuts `source` into chunks of at most `max_secs` (longer only when keyframes are further
/// apart), each starting at a keyframe.
pub fn cut(source: &[u8], max_secs: f64) -> Result<Vec<Chunk>> {
    let video = Demuxed::parse(source)?;
    if video.codec != osprey_media::VideoCodec::H264 {
        return Err(Error::invalid("agent: only H.264 files can be chunked so far"));
    }
    let parameter_sets = parameter_sets(&video.config)?;
    let timescale = video.timescale as f64;
    let fps = video.samples.len() as f64 / duration(&video.samples, timescale).max(1e-3);
    let mut chunks = Vec::new();
    let mut start = 0;
    for i in 1..=video.samples.len() {
        let at_end = i == video.samples.len();
        let cut_here = !at_end
            && video.samples[i].is_sync
            && (video.samples[i].decode_ts - video.samples[start].decode_ts) as f64 / timescale >= max_secs - 1e-6;
        if at_end || cut_here {
            let samples = &video.samples[start..i];
            let bytes = mux(source, samples, &parameter_sets, video.width, video.height, fps, timescale)?;
            chunks.push(Chunk {
                index: chunks.len(),
                bytes,
                start_secs: (samples[0].decode_ts - video.samples[0].decode_ts) as f64 / timescale,
                duration_secs: duration(samples, timescale),
                frames: samples.len(),
            });
            start = i;
        }
    }
    Ok(chunks)
}

fn duration(samples: &[SampleRef], timescale: f64) -> f64 {
    let first = samples.iter().map(|s| s.presentation_ts).min().unwrap_or(0);
    let last = samples.iter().map(|s| s.presentation_ts).max().unwrap_or(0);
    let frame = if samples.len() > 1 { (last - first) as f64 / (samples.len() - 1) as f64 } else { 0.0 };
    ((last - first) as f64 + frame) / timescale
}

fn mux(
    source: &[u8],
    samples: &[SampleRef],
    parameter_sets: &[u8],
    width: u32,
    height: u32,
    fps: f64,
    timescale: f64,
) -> Result<Vec<u8>> {
    let mux_error = |e: muxide::api::MuxerError| Error::internal(format!("agent: cannot write chunk: {e}"));
    let mut out = Vec::new();
    let mut muxer = MuxerBuilder::new(&mut out)
        .video(VideoCodec::H264, width, height, fps)
        .with_fast_start(true)
        .build()
        .map_err(mux_error)?;
    let origin = samples[0].decode_ts;
    for s in samples {
        let mut annex_b = Vec::with_capacity(s.size + parameter_sets.len() + 16);
        if s.is_sync {
            annex_b.extend_from_slice(parameter_sets);
        }
        avcc_to_annex_b(&source[s.offset..s.offset + s.size], s.index, &mut annex_b)?;
        let pts = (s.presentation_ts - origin) as f64 / timescale;
        let dts = (s.decode_ts - origin) as f64 / timescale;
        muxer.write_video_with_dts(pts, dts, &annex_b, s.is_sync).map_err(mux_error)?;
    }
    muxer.finish().map_err(mux_error)?;
    Ok(out)
}

/// SPS and PPS from an avcC record, as Annex B NAL units.
fn parameter_sets(avcc: &[u8]) -> Result<Vec<u8>> {
    let bad = || Error::invalid("mp4: avcC record is malformed");
    let mut out = Vec::new();
    let mut at = 5;
    for _ in 0..2 {
        // First the SPS count (low 5 bits), then the PPS count.
        let count = *avcc.get(at).ok_or_else(bad)? as usize & if out.is_empty() { 0x1f } else { 0xff };
        at += 1;
        for _ in 0..count {
            let len = u16::from_be_bytes([*avcc.get(at).ok_or_else(bad)?, *avcc.get(at + 1).ok_or_else(bad)?]) as usize;
            let nal = avcc.get(at + 2..at + 2 + len).ok_or_else(bad)?;
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(nal);
            at += 2 + len;
        }
    }
    Ok(out)
}

/// Rewrites 4-byte length-prefixed NAL units as start-code-prefixed ones.
fn avcc_to_annex_b(sample: &[u8], index: usize, out: &mut Vec<u8>) -> Result<()> {
    let mut at = 0;
    while at < sample.len() {
        let len = sample
            .get(at..at + 4)
            .map(|b| u32::from_be_bytes(b.try_into().unwrap()) as usize)
            .filter(|len| at + 4 + len <= sample.len())
            .ok_or_else(|| Error::invalid(format!("mp4: sample {index} has a NAL unit that overruns it at byte {at}")))?;
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(&sample[at + 4..at + 4 + len]);
        at += 4 + len;
    }
    Ok(())
}
