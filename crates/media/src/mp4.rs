//! MP4 (progressive or fragmented) demux from memory with re_mp4, validated so that a corrupt or
//! truncated file gives an error naming what and where, never a panic.

use osprey_core::{Error, Result};
use re_mp4::{Mp4, TrackKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    H264,
    H265,
}

/// Where one sample's bytes are, and when it is shown.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleRef {
    /// Position in decode order.
    pub index: usize,
    pub offset: usize,
    pub size: usize,
    pub decode_ts: i64,
    pub presentation_ts: i64,
    pub is_sync: bool,
}

/// The first video track of an MP4: codec, its configuration record (avcC/hvcC) and samples.
#[derive(Debug, Clone)]
pub struct Demuxed {
    pub codec: VideoCodec,
    pub width: u32,
    pub height: u32,
    pub timescale: u64,
    pub config: Vec<u8>,
    pub samples: Vec<SampleRef>,
    pub fragmented: bool,
}

impl Demuxed {
    pub fn parse(bytes: &[u8]) -> Result<Demuxed> {
        if bytes.len() < 8 {
            return Err(Error::invalid(format!("mp4: {} bytes is too short to be an MP4", bytes.len())));
        }
        check_top_level_boxes(bytes)?;
        // re_mp4 indexes with unchecked arithmetic in places; a panic on hostile input becomes
        // an error here rather than taking the worker down.
        let mp4 = std::panic::catch_unwind(|| Mp4::read_bytes(bytes))
            .map_err(|_| Error::invalid("mp4: malformed box structure (parser panicked)"))?
            .map_err(|e| Error::invalid(format!("mp4: cannot parse: {e}")))?;
        let track = mp4
            .tracks()
            .values()
            .find(|t| matches!(t.kind, Some(TrackKind::Video)))
            .ok_or_else(|| Error::invalid("mp4: no video track (moov/trak with a vide handler)"))?;
        let codec_name = track.codec_string(&mp4).unwrap_or_default();
        let codec = match codec_name.get(..4) {
            Some("avc1") | Some("avc3") => VideoCodec::H264,
            Some("hvc1") | Some("hev1") => VideoCodec::H265,
            _ => return Err(Error::invalid(format!("mp4: unsupported video codec {codec_name:?}"))),
        };
        let config = track
            .raw_codec_config(&mp4)
            .ok_or_else(|| Error::invalid("mp4: stsd has no codec configuration (avcC/hvcC)"))?;
        if track.timescale == 0 {
            return Err(Error::invalid("mp4: video track timescale (mdhd) is 0"));
        }
        if track.width == 0 || track.height == 0 {
            return Err(Error::invalid(format!("mp4: video track has size {}x{}", track.width, track.height)));
        }
        let samples = track
            .samples
            .iter()
            .enumerate()
            .map(|(index, s)| check_sample(index, s, bytes.len()))
            .collect::<Result<Vec<_>>>()?;
        if samples.is_empty() {
            return Err(Error::invalid("mp4: video track has no samples (stsz/trun empty)"));
        }
        Ok(Demuxed {
            codec,
            width: track.width as u32,
            height: track.height as u32,
            timescale: track.timescale,
            config,
            samples,
            fragmented: !mp4.moofs.is_empty(),
        })
    }

    /// Presentation time of a sample in milliseconds from the first frame shown.
    pub fn pts_ms(&self, pts: i64) -> i64 {
        let first = self.samples.iter().map(|s| s.presentation_ts).min().unwrap_or(0);
        ((pts - first) as i128 * 1000 / self.timescale as i128) as i64
    }
}

/// Walks the top-level boxes so that a truncated or garbled file is reported with the box and
/// offset where it goes wrong.
fn check_top_level_boxes(bytes: &[u8]) -> Result<()> {
    let mut offset = 0usize;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        if rest.len() < 8 {
            return Err(Error::invalid(format!(
                "mp4: {} stray bytes after the last box at offset {offset}",
                rest.len()
            )));
        }
        let name: String = rest[4..8].iter().map(|&b| if b.is_ascii_graphic() { b as char } else { '?' }).collect();
        let declared = u32::from_be_bytes(rest[..4].try_into().unwrap()) as u64;
        let (size, header) = match declared {
            0 => (rest.len() as u64, 8), // extends to the end of the file
            1 if rest.len() >= 16 => (u64::from_be_bytes(rest[8..16].try_into().unwrap()), 16),
            1 => return Err(Error::invalid(format!("mp4: box '{name}' at offset {offset} has a cut 64-bit size"))),
            n => (n, 8),
        };
        if size < header {
            return Err(Error::invalid(format!(
                "mp4: box '{name}' at offset {offset} declares an impossible size {size}"
            )));
        }
        if size > rest.len() as u64 {
            return Err(Error::invalid(format!(
                "mp4: box '{name}' at offset {offset} declares {size} bytes but only {} remain: the file is truncated",
                rest.len()
            )));
        }
        offset += size as usize;
    }
    Ok(())
}

fn check_sample(index: usize, s: &re_mp4::Sample, len: usize) -> Result<SampleRef> {
    let (offset, size) = (s.offset as usize, s.size as usize);
    if s.size == 0 || offset.checked_add(size).is_none_or(|end| end > len) || s.offset > len as u64 {
        return Err(Error::invalid(format!(
            "mp4: sample {index} (offset {}, size {}) lies outside the {len}-byte buffer: truncated mdat?",
            s.offset, s.size
        )));
    }
    Ok(SampleRef {
        index,
        offset,
        size,
        decode_ts: s.decode_timestamp,
        presentation_ts: s.composition_timestamp,
        is_sync: s.is_sync,
    })
}
