//! H.264/H.265 decoding with FFmpeg (libavcodec), fed sample by sample from a [`Demuxed`] buffer.
//! Only frames the sampling asks for are handed on; frames nothing depends on are skipped by the
//! decoder when they are not wanted, and decoding stops at the last wanted frame.

use crate::mp4::{Demuxed, VideoCodec};
use crate::sample::Sampling;
use ffmpeg_next::codec::{self, threading, Context};
use ffmpeg_next::{decoder, frame, Discard, Packet};
use osprey_core::{Error, Result};

/// A decoded frame the sampling selected.
pub struct DecodedFrame<'a> {
    pub pts: i64,
    pub pts_ms: i64,
    pub frame: &'a frame::Video,
}

/// Decodes the frames `sampling` selects and passes each to `on_frame` in presentation order.
/// `threads` is FFmpeg's frame-thread count (1 = decode on the calling thread).
/// Returns the number of frames handed on.
pub fn decode_frames(
    video: &Demuxed,
    bytes: &[u8],
    sampling: Sampling,
    threads: usize,
    mut on_frame: impl FnMut(DecodedFrame<'_>) -> Result<()>,
) -> Result<usize> {
    crate::init();
    let targets = sampling.targets(video);
    let Some(&last) = targets.last() else { return Ok(0) };
    let mut decoder = open(video, threads.max(1))?;
    let needed = needed(video, &targets);
    let mut frame = frame::Video::empty();
    let mut handed = 0usize;
    let codec_name = format!("{:?}", video.codec).to_lowercase();

    for (i, sample) in video.samples.iter().enumerate() {
        if !needed[i] {
            continue;
        }
        // Frames that are not wanted need decoding only if others refer to them.
        let wanted = targets.contains(&sample.presentation_ts);
        decoder.skip_frame(if wanted { Discard::Default } else { Discard::NonReference });
        let mut packet = Packet::copy(&bytes[sample.offset..sample.offset + sample.size]);
        packet.set_pts(Some(sample.presentation_ts));
        packet.set_dts(Some(sample.decode_ts));
        if sample.is_sync {
            packet.set_flags(ffmpeg_next::packet::Flags::KEY);
        }
        decoder.send_packet(&packet).map_err(|e| {
            Error::invalid(format!(
                "{codec_name}: decoder rejected sample {} (offset {}): {e}",
                sample.index, sample.offset
            ))
        })?;
        handed += drain(&mut decoder, &mut frame, video, &targets, &mut on_frame, &codec_name)?;
        if handed == targets.len() {
            return Ok(handed);
        }
    }
    decoder.send_eof().map_err(|e| Error::invalid(format!("{codec_name}: cannot flush decoder: {e}")))?;
    handed += drain(&mut decoder, &mut frame, video, &targets, &mut on_frame, &codec_name)?;
    if handed == 0 {
        return Err(Error::invalid(format!(
            "{codec_name}: no frame could be decoded from {} samples (last wanted pts {last})",
            video.samples.len()
        )));
    }
    Ok(handed)
}

/// Which samples (in decode order) the targets need: each group of pictures (a keyframe and the
/// samples up to the next) that holds a target, up to its last target. A group holding none is
/// skipped whole, unless the next group has a target shown before its own keyframe (an open
/// group's leading frames, which may refer back), in which case it is decoded whole.
fn needed(video: &Demuxed, targets: &std::collections::BTreeSet<i64>) -> Vec<bool> {
    let samples = &video.samples;
    let mut starts: Vec<usize> = (0..samples.len()).filter(|&i| i == 0 || samples[i].is_sync).collect();
    starts.push(samples.len());
    let groups: Vec<std::ops::Range<usize>> = starts.windows(2).map(|w| w[0]..w[1]).collect();
    let leads = |g: &std::ops::Range<usize>| {
        let key = samples[g.start].presentation_ts;
        samples[g.clone()].iter().any(|s| s.presentation_ts < key && targets.contains(&s.presentation_ts))
    };
    let mut needed = vec![false; samples.len()];
    for (n, g) in groups.iter().enumerate() {
        let last_target = g.clone().rev().find(|&i| targets.contains(&samples[i].presentation_ts));
        let end = match groups.get(n + 1).is_some_and(leads) {
            true => Some(g.end - 1),
            false => last_target,
        };
        if let Some(end) = end {
            needed[g.start..=end].iter_mut().for_each(|x| *x = true);
        }
    }
    needed
}

fn open(video: &Demuxed, threads: usize) -> Result<decoder::Video> {
    let id = match video.codec {
        VideoCodec::H264 => codec::Id::H264,
        VideoCodec::H265 => codec::Id::HEVC,
    };
    let codec = decoder::find(id).ok_or_else(|| Error::internal(format!("ffmpeg has no {id:?} decoder")))?;
    let mut context = Context::new_with_codec(codec);
    set_extradata(&mut context, &video.config);
    context.set_threading(threading::Config { kind: threading::Type::Frame, count: threads, ..Default::default() });
    context.decoder().video().map_err(|e| {
        Error::invalid(format!("cannot open the {id:?} decoder with this file's codec configuration: {e}"))
    })
}

/// Hands the decoder the avcC/hvcC record, with the zeroed padding FFmpeg requires after it.
fn set_extradata(context: &mut Context, config: &[u8]) {
    use ffmpeg_next::ffi::{av_mallocz, AV_INPUT_BUFFER_PADDING_SIZE};
    unsafe {
        let raw = context.as_mut_ptr();
        let buffer = av_mallocz(config.len() + AV_INPUT_BUFFER_PADDING_SIZE as usize) as *mut u8;
        assert!(!buffer.is_null(), "av_mallocz failed");
        std::ptr::copy_nonoverlapping(config.as_ptr(), buffer, config.len());
        (*raw).extradata = buffer;
        (*raw).extradata_size = config.len() as i32;
    }
}

fn drain(
    decoder: &mut decoder::Video,
    frame: &mut frame::Video,
    video: &Demuxed,
    targets: &std::collections::BTreeSet<i64>,
    on_frame: &mut impl FnMut(DecodedFrame<'_>) -> Result<()>,
    codec_name: &str,
) -> Result<usize> {
    let mut handed = 0;
    loop {
        match decoder.receive_frame(frame) {
            Ok(()) => {
                let pts = frame.pts().or(frame.timestamp()).unwrap_or(i64::MIN);
                if targets.contains(&pts) {
                    on_frame(DecodedFrame { pts, pts_ms: video.pts_ms(pts), frame })?;
                    handed += 1;
                }
            }
            Err(ffmpeg_next::Error::Eof) => return Ok(handed),
            Err(ffmpeg_next::Error::Other { errno }) if errno == ffmpeg_next::util::error::EAGAIN => return Ok(handed),
            Err(e) => return Err(Error::invalid(format!("{codec_name}: cannot decode: {e}"))),
        }
    }
}
