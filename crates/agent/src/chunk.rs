//! Frames in, MP4 chunks out. Samples are copied, never re-encoded: each chunk starts at a
//! keyframe, carries the stream's SPS/PPS, and is written fast-start.

use crate::recorder::{Recorder, Recording};
use muxide::api::{MuxerBuilder, VideoCodec};
use osprey_core::{Error, Result};
use osprey_media::Demuxed;

/// One encoded H.264 access unit as a source delivers it.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Presentation time in seconds on the source's clock.
    pub pts: f64,
    pub keyframe: bool,
    /// Annex B NAL units; keyframes are preceded by their SPS and PPS.
    pub data: Vec<u8>,
}

/// One chunk: a complete MP4 file and where it lies in the source.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub index: usize,
    pub bytes: Vec<u8>,
    pub start_secs: f64,
    pub duration_secs: f64,
    pub frames: usize,
}

/// Cuts an H.264 MP4 into chunks of at most `max_secs` (longer only when one keyframe interval
/// is), each starting at a keyframe.
pub fn cut(source: &[u8], max_secs: f64) -> Result<Vec<Chunk>> {
    let video = Demuxed::parse(source)?;
    let frames = mp4_frames(&video, source)?;
    let origin = frames.iter().map(|f| f.pts).fold(f64::INFINITY, f64::min);
    let mut recorder = Recorder::continuous(max_secs);
    let mut recordings = Vec::new();
    for frame in frames {
        recordings.extend(recorder.push(frame, false));
    }
    recordings.extend(recorder.finish());
    recordings
        .into_iter()
        .enumerate()
        .map(|(index, r)| {
            let mut chunk = mux(&r, video.width, video.height)?;
            chunk.index = index;
            chunk.start_secs -= origin;
            Ok(chunk)
        })
        .collect()
}

/// The samples of an MP4's H.264 track as Annex B frames, in decode order.
pub fn mp4_frames(video: &Demuxed, source: &[u8]) -> Result<Vec<Frame>> {
    if video.codec != osprey_media::VideoCodec::H264 {
        return Err(Error::invalid("agent: only H.264 video can be recorded so far"));
    }
    let parameter_sets = parameter_sets(&video.config)?;
    let timescale = video.timescale as f64;
    video
        .samples
        .iter()
        .map(|s| {
            let mut data = Vec::with_capacity(s.size + parameter_sets.len() + 16);
            if s.is_sync {
                data.extend_from_slice(&parameter_sets);
            }
            avcc_to_annex_b(&source[s.offset..s.offset + s.size], s.index, &mut data)?;
            Ok(Frame { pts: s.presentation_ts as f64 / timescale, keyframe: s.is_sync, data })
        })
        .collect()
}

/// Writes a recording as a fast-start MP4.
pub fn mux(recording: &Recording, width: u32, height: u32) -> Result<Chunk> {
    let frames = &recording.frames;
    let mux_error = |e: muxide::api::MuxerError| Error::internal(format!("agent: cannot write chunk: {e}"));
    let dts = decode_times(frames);
    let origin = dts[0];
    let fps = frames.len() as f64 / recording.duration_secs.max(1e-3);
    let mut out = Vec::new();
    let mut muxer = MuxerBuilder::new(&mut out)
        .video(VideoCodec::H264, width, height, fps)
        .with_fast_start(true)
        .build()
        .map_err(mux_error)?;
    for (frame, dts) in frames.iter().zip(&dts) {
        muxer.write_video_with_dts(frame.pts - origin, dts - origin, &frame.data, frame.keyframe).map_err(mux_error)?;
    }
    muxer.finish().map_err(mux_error)?;
    Ok(Chunk {
        index: 0,
        bytes: out,
        start_secs: recording.start_secs,
        duration_secs: recording.duration_secs,
        frames: frames.len(),
    })
}

/// Decode timestamps for frames in decode order. RTP carries presentation times only, so they
/// are rebuilt the way muxers do: the sorted presentation times, shifted back just enough that
/// no frame is presented before it is decoded.
fn decode_times(frames: &[Frame]) -> Vec<f64> {
    let mut sorted: Vec<f64> = frames.iter().map(|f| f.pts).collect();
    sorted.sort_by(f64::total_cmp);
    let shift = frames.iter().zip(&sorted).map(|(f, s)| s - f.pts).fold(0.0, f64::max);
    sorted.iter().map(|s| s - shift).collect()
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
            .ok_or_else(|| {
                Error::invalid(format!("mp4: sample {index} has a NAL unit that overruns it at byte {at}"))
            })?;
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(&sample[at + 4..at + 4 + len]);
        at += 4 + len;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(pts: f64) -> Frame {
        Frame { pts, keyframe: false, data: Vec::new() }
    }

    #[test]
    fn decode_times_precede_presentation() {
        // I P B B in decode order, presented I B B P.
        let frames = [frame(0.0), frame(0.3), frame(0.1), frame(0.2)];
        let dts = decode_times(&frames);
        assert!(dts.windows(2).all(|w| w[1] > w[0]), "{dts:?}");
        for (f, d) in frames.iter().zip(&dts) {
            assert!(*d <= f.pts + 1e-9, "{dts:?}");
        }
        assert_eq!(decode_times(&[frame(1.0), frame(1.1)]), vec![1.0, 1.1]);
    }
}
