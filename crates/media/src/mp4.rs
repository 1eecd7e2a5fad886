//! MP4 (progressive or fragmented) demux from memory, with bounds it cannot exceed: the file
//! first passes `osprey_core::mp4::check` (every box fits its parent, every table its box, no
//! more samples than the `mdat` bytes hold), then the first video track is read from borrowed
//! payloads with checked arithmetic, at most [`MAX_SAMPLES`] samples, each inside the buffer.
//! A corrupt, truncated or hostile file gives an error naming what and where, never a panic, a
//! loop or an allocation larger than a small multiple of the file.
//!
//! It replaced `re_mp4` 0.5.1, which loops on a nested box of size 0, allocates whatever size a
//! box declares and expands sample counts without a bound (see docs/vault.md, threat model).

use osprey_core::mp4::{BoxRef, Boxes, Fields};
use osprey_core::{Error, Result};

/// Most samples read from one track: over nine hours at 30 fps, far beyond a chunk.
pub const MAX_SAMPLES: usize = 1 << 20;

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
        osprey_core::mp4::check(bytes)
            .map_err(|e| Error::invalid(format!("mp4: malformed box structure: {}", why(&e))))?;
        let (mut moov, mut moofs) = (None, Vec::new());
        for b in Boxes::file(bytes) {
            let b = b.map_err(mp4_error)?;
            match &b.kind {
                b"moov" if moov.is_none() => moov = Some(b),
                b"moof" => moofs.push(b),
                _ => {}
            }
        }
        let moov = moov.ok_or_else(|| Error::invalid("mp4: no moov box"))?;
        let track = video_track(&moov)?;
        let mut samples = progressive_samples(&track, bytes.len())?;
        let defaults = fragment_defaults(&moov, track.id)?;
        for moof in &moofs {
            fragment_samples(moof, &track, defaults, bytes.len(), &mut samples)?;
        }
        if samples.is_empty() {
            return Err(Error::invalid("mp4: video track has no samples (stsz/trun empty)"));
        }
        Ok(Demuxed {
            codec: track.codec,
            width: track.width,
            height: track.height,
            timescale: track.timescale,
            config: track.config,
            samples,
            fragmented: !moofs.is_empty(),
        })
    }

    /// Presentation time of a sample in milliseconds from the first frame shown.
    pub fn pts_ms(&self, pts: i64) -> i64 {
        let first = self.samples.iter().map(|s| s.presentation_ts).min().unwrap_or(0);
        ((pts as i128 - first as i128) * 1000 / self.timescale as i128) as i64
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

/// What the core's box reader found wrong, without the upload check's opening words.
fn why(e: &Error) -> &str {
    e.message().trim_start_matches(osprey_core::mp4::NOT_AN_MP4)
}

fn mp4_error(e: Error) -> Error {
    Error::invalid(format!("mp4: {}", why(&e)))
}

/// The error for a box whose fields are cut short or impossible.
fn bad(b: &BoxRef<'_>, why: &str) -> Error {
    Error::invalid(format!("mp4: box '{}' at offset {} {why}", b.name(), b.offset))
}

/// The first child of `parent` of this type.
fn child<'a>(parent: &BoxRef<'a>, kind: &[u8; 4]) -> Result<Option<BoxRef<'a>>> {
    for b in Boxes::nested(parent.payload, parent.payload_offset()) {
        let b = b.map_err(mp4_error)?;
        if &b.kind == kind {
            return Ok(Some(b));
        }
    }
    Ok(None)
}

/// The children of `parent` (its own fields take `skip` bytes) of this type.
fn children<'a>(parent: &BoxRef<'a>, skip: usize, kind: &[u8; 4]) -> Result<Vec<BoxRef<'a>>> {
    let mut found = Vec::new();
    let payload = parent.payload.get(skip..).ok_or_else(|| bad(parent, "is cut short"))?;
    for b in Boxes::nested(payload, parent.payload_offset() + skip as u64) {
        let b = b.map_err(mp4_error)?;
        if &b.kind == kind {
            found.push(b);
        }
    }
    Ok(found)
}

fn need<'a>(parent: &BoxRef<'a>, path: &[&[u8; 4]]) -> Result<BoxRef<'a>> {
    let mut b = *parent;
    for kind in path {
        b = child(&b, kind)?.ok_or_else(|| {
            let name = String::from_utf8_lossy(&kind[..]).into_owned();
            Error::invalid(format!("mp4: box '{}' at offset {} has no '{name}'", b.name(), b.offset))
        })?;
    }
    Ok(b)
}

/// A full box's version and flags, and a reader of the fields after them.
fn full<'a>(b: &BoxRef<'a>) -> Result<(u8, u32, Fields<'a>)> {
    let mut f = Fields::new(b.payload);
    let word = f.u32().ok_or_else(|| bad(b, "has no version and flags"))?;
    Ok(((word >> 24) as u8, word & 0x00ff_ffff, f))
}

/// What the demuxer needs of the video track.
struct VideoTrack<'a> {
    id: u32,
    codec: VideoCodec,
    width: u32,
    height: u32,
    timescale: u64,
    config: Vec<u8>,
    stbl: BoxRef<'a>,
}

/// The video track with the lowest track id (as players and re_mp4 chose it).
fn video_track<'a>(moov: &BoxRef<'a>) -> Result<VideoTrack<'a>> {
    let mut best: Option<VideoTrack<'a>> = None;
    for trak in children(moov, 0, b"trak")? {
        let mdia = need(&trak, &[b"mdia"])?;
        let hdlr = need(&mdia, &[b"hdlr"])?;
        if hdlr.payload.get(8..12) != Some(b"vide") {
            continue;
        }
        let track = read_video_track(&trak, &mdia)?;
        if best.as_ref().is_none_or(|b| track.id < b.id) {
            best = Some(track);
        }
    }
    best.ok_or_else(|| Error::invalid("mp4: no video track (moov/trak with a vide handler)"))
}

fn read_video_track<'a>(trak: &BoxRef<'a>, mdia: &BoxRef<'a>) -> Result<VideoTrack<'a>> {
    let tkhd = need(trak, &[b"tkhd"])?;
    let (version, _, mut f) = full(&tkhd)?;
    let cut = || bad(&tkhd, "is cut short");
    // creation and modification times, then the track id.
    f.take(if version == 1 { 16 } else { 8 }).ok_or_else(cut)?;
    let id = f.u32().ok_or_else(cut)?;
    // reserved, duration, reserved, layer, group, volume, reserved, matrix: then width, height
    // as 16.16 fixed point.
    f.take(4 + if version == 1 { 8 } else { 4 } + 8 + 8 + 36).ok_or_else(cut)?;
    let (width, height) = (f.u32().ok_or_else(cut)? >> 16, f.u32().ok_or_else(cut)? >> 16);
    let mdhd = need(mdia, &[b"mdhd"])?;
    let (version, _, mut f) = full(&mdhd)?;
    f.take(if version == 1 { 16 } else { 8 }).ok_or_else(|| bad(&mdhd, "is cut short"))?;
    let timescale = f.u32().ok_or_else(|| bad(&mdhd, "is cut short"))? as u64;
    if timescale == 0 {
        return Err(Error::invalid("mp4: video track timescale (mdhd) is 0"));
    }
    if width == 0 || height == 0 {
        return Err(Error::invalid(format!("mp4: video track has size {width}x{height}")));
    }
    let stbl = need(mdia, &[b"minf", b"stbl"])?;
    let (codec, config) = sample_entry(&need(&stbl, &[b"stsd"])?)?;
    Ok(VideoTrack { id, codec, width, height, timescale, config, stbl })
}

/// The codec of the first sample entry and its configuration record (the avcC/hvcC payload).
fn sample_entry(stsd: &BoxRef<'_>) -> Result<(VideoCodec, Vec<u8>)> {
    let payload = stsd.payload.get(8..).ok_or_else(|| bad(stsd, "is cut short"))?;
    let entry = Boxes::nested(payload, stsd.payload_offset() + 8)
        .next()
        .ok_or_else(|| Error::invalid("mp4: stsd has no sample entry"))?
        .map_err(mp4_error)?;
    let (codec, record) = match &entry.kind {
        b"avc1" | b"avc3" => (VideoCodec::H264, b"avcC"),
        b"hvc1" | b"hev1" => (VideoCodec::H265, b"hvcC"),
        _ => return Err(Error::invalid(format!("mp4: unsupported video codec {:?}", entry.name()))),
    };
    let config = children(&entry, 78, record)?
        .first()
        .map(|b| b.payload.to_vec())
        .ok_or_else(|| Error::invalid("mp4: stsd has no codec configuration (avcC/hvcC)"))?;
    Ok((codec, config))
}

/// A full box's table: its entry count (already checked to fit) and a reader at the entries.
fn table<'a>(b: &BoxRef<'a>, entry: usize) -> Result<(usize, Fields<'a>)> {
    let (_, _, mut f) = full(b)?;
    let count = f.u32().ok_or_else(|| bad(b, "is cut short"))? as usize;
    if count.checked_mul(entry).is_none_or(|n| n > f.remaining()) {
        return Err(bad(b, &format!("declares {count} entries that do not fit")));
    }
    Ok((count, f))
}

/// Runs of (count, value) from `stts` or `ctts`, read lazily.
struct Runs<'a> {
    fields: Fields<'a>,
    left: usize,
    count: u32,
    value: u32,
}

impl<'a> Runs<'a> {
    fn new(b: Option<BoxRef<'a>>) -> Result<Runs<'a>> {
        let (left, fields) = match b {
            Some(b) => table(&b, 8)?,
            None => (0, Fields::new(&[])),
        };
        Ok(Runs { fields, left, count: 0, value: 0 })
    }

    /// The value for the next sample, if the runs cover it.
    fn next(&mut self) -> Option<u32> {
        while self.count == 0 {
            if self.left == 0 {
                return None;
            }
            self.left -= 1;
            self.count = self.fields.u32()?;
            self.value = self.fields.u32()?;
        }
        self.count -= 1;
        Some(self.value)
    }
}

/// The samples of the track's `stbl` (empty for a fragmented file's moov), in decode order,
/// timed as players show them: the first shown at 0.
fn progressive_samples(track: &VideoTrack<'_>, len: usize) -> Result<Vec<SampleRef>> {
    let stbl = &track.stbl;
    let stsz = need(stbl, &[b"stsz"])?;
    let (_, _, mut f) = full(&stsz)?;
    let constant = f.u32().ok_or_else(|| bad(&stsz, "is cut short"))?;
    let count = f.u32().ok_or_else(|| bad(&stsz, "is cut short"))? as usize;
    if count > MAX_SAMPLES {
        return Err(bad(&stsz, &format!("declares {count} samples, more than the {MAX_SAMPLES} read from a track")));
    }
    if count == 0 {
        return Ok(Vec::new());
    }
    let offsets = chunk_offsets(stbl)?;
    let (stsc_count, mut stsc) = table(&need(stbl, &[b"stsc"])?, 12)?;
    // (first chunk, samples per chunk); the sample description index is not needed.
    let mut runs = Vec::with_capacity(stsc_count);
    for _ in 0..stsc_count {
        runs.push((stsc.u32().unwrap_or(0), stsc.u32().unwrap_or(0)));
        stsc.u32();
    }
    let stsc = runs;
    let mut sizes = f;
    let mut stts = Runs::new(child(stbl, b"stts")?)?;
    let mut ctts = Runs::new(child(stbl, b"ctts")?)?;
    let sync = match child(stbl, b"stss")? {
        Some(b) => Some(table(&b, 4)?),
        None => None,
    };
    let mut sync_next = sync.map(|(n, mut f)| (n, f.u32(), f));
    let mut samples = Vec::with_capacity(count);
    let (mut dts, mut run) = (0i64, 0usize);
    'chunks: for (chunk, &chunk_offset) in offsets.iter().enumerate() {
        let chunk_no = chunk as u32 + 1;
        while run + 1 < stsc.len() && stsc[run + 1].0 <= chunk_no {
            run += 1;
        }
        let per_chunk = stsc.get(run).map_or(0, |r| r.1);
        let mut offset = chunk_offset;
        for _ in 0..per_chunk {
            if samples.len() == count {
                break 'chunks;
            }
            let index = samples.len();
            let size = match constant {
                0 => sizes.u32().ok_or_else(|| bad(&stsz, "lists fewer sizes than its count"))?,
                n => n,
            } as u64;
            let delta = stts.next().ok_or_else(|| bad(stbl, &format!("stts covers no sample {index}")))?;
            let cts_offset = ctts.next().map_or(0, |v| v as i32 as i64);
            let is_sync = match &mut sync_next {
                None => true,
                Some((_, next, f)) => {
                    let hit = *next == Some(index as u32 + 1);
                    if hit {
                        *next = f.u32();
                    }
                    hit
                }
            };
            let sample = Raw { offset, size, dts, cts: dts + cts_offset, is_sync };
            samples.push(sample.checked(index, len)?);
            offset = offset.checked_add(size).ok_or_else(|| bad(&stsz, "sizes overflow"))?;
            dts += delta as i64;
        }
    }
    if samples.len() < count {
        return Err(bad(stbl, &format!("stsc and stco place {} of its {count} samples", samples.len())));
    }
    // Shown from 0: the first presentation time becomes 0 and decode times move with it, as
    // FFmpeg and re_mp4 do.
    let first = samples.iter().map(|s| s.presentation_ts).min().unwrap_or(0);
    for s in &mut samples {
        s.presentation_ts -= first;
        s.decode_ts -= first;
    }
    Ok(samples)
}

/// Chunk offsets from `stco` or `co64`.
fn chunk_offsets(stbl: &BoxRef<'_>) -> Result<Vec<u64>> {
    if let Some(b) = child(stbl, b"stco")? {
        let (n, mut f) = table(&b, 4)?;
        return Ok((0..n).map(|_| f.u32().unwrap_or(0) as u64).collect());
    }
    if let Some(b) = child(stbl, b"co64")? {
        let (n, mut f) = table(&b, 8)?;
        return Ok((0..n).map(|_| f.u64().unwrap_or(0)).collect());
    }
    Err(bad(stbl, "has neither stco nor co64"))
}

/// A sample as read, before it is checked against the buffer.
struct Raw {
    offset: u64,
    size: u64,
    dts: i64,
    cts: i64,
    is_sync: bool,
}

impl Raw {
    fn checked(self, index: usize, len: usize) -> Result<SampleRef> {
        let end = self.offset.checked_add(self.size);
        if self.size == 0 || end.is_none_or(|end| end > len as u64) {
            return Err(Error::invalid(format!(
                "mp4: sample {index} (offset {}, size {}) lies outside the {len}-byte buffer: truncated mdat?",
                self.offset, self.size
            )));
        }
        Ok(SampleRef {
            index,
            offset: self.offset as usize,
            size: self.size as usize,
            decode_ts: self.dts,
            presentation_ts: self.cts,
            is_sync: self.is_sync,
        })
    }
}

/// A track's defaults for fragments (`trex`): duration, size, flags.
#[derive(Debug, Clone, Copy, Default)]
struct Defaults {
    duration: u32,
    size: u32,
    flags: u32,
}

fn fragment_defaults(moov: &BoxRef<'_>, track: u32) -> Result<Defaults> {
    let Some(mvex) = child(moov, b"mvex")? else { return Ok(Defaults::default()) };
    for trex in children(&mvex, 0, b"trex")? {
        let (_, _, mut f) = full(&trex)?;
        let cut = || bad(&trex, "is cut short");
        if f.u32().ok_or_else(cut)? != track {
            continue;
        }
        f.u32().ok_or_else(cut)?; // default sample description index
        let (duration, size, flags) = (f.u32().ok_or_else(cut)?, f.u32().ok_or_else(cut)?, f.u32().ok_or_else(cut)?);
        return Ok(Defaults { duration, size, flags });
    }
    Ok(Defaults::default())
}

const TFHD_BASE_OFFSET: u32 = 0x1;
const TFHD_DEFAULT_BASE_IS_MOOF: u32 = 0x2_0000;
const TRUN_DATA_OFFSET: u32 = 0x1;
const TRUN_FIRST_FLAGS: u32 = 0x4;
const TRUN_DURATION: u32 = 0x100;
const TRUN_SIZE: u32 = 0x200;
const TRUN_FLAGS: u32 = 0x400;
const TRUN_CTS: u32 = 0x800;

/// Appends the samples of `track` in one `moof` (ISO/IEC 14496-12 8.8): each `traf`'s base is
/// its `tfhd` base, else the `moof` (default-base-is-moof, or the first `traf`), else where the
/// previous `traf`'s data ended; each `trun` starts at base + its data offset, else where the
/// previous one ended.
fn fragment_samples(
    moof: &BoxRef<'_>,
    track: &VideoTrack<'_>,
    trex: Defaults,
    len: usize,
    samples: &mut Vec<SampleRef>,
) -> Result<()> {
    let mut data_end = moof.offset;
    for (i, traf) in children(moof, 0, b"traf")?.iter().enumerate() {
        let tfhd = need(traf, &[b"tfhd"])?;
        let (_, flags, mut f) = full(&tfhd)?;
        let cut = || bad(&tfhd, "is cut short");
        let id = f.u32().ok_or_else(cut)?;
        let base_offset = if flags & TFHD_BASE_OFFSET != 0 { Some(f.u64().ok_or_else(cut)?) } else { None };
        let mut d = trex;
        let optional = |bit: u32, f: &mut Fields<'_>| -> Result<Option<u32>> {
            Ok(if flags & bit != 0 { Some(f.u32().ok_or_else(cut)?) } else { None })
        };
        optional(0x2, &mut f)?; // sample description index
        d.duration = optional(0x8, &mut f)?.unwrap_or(d.duration);
        d.size = optional(0x10, &mut f)?.unwrap_or(d.size);
        d.flags = optional(0x20, &mut f)?.unwrap_or(d.flags);
        let base = match base_offset {
            Some(b) => b,
            None if flags & TFHD_DEFAULT_BASE_IS_MOOF != 0 || i == 0 => moof.offset,
            None => data_end,
        };
        if id != track.id {
            continue;
        }
        let mut dts = match child(traf, b"tfdt")? {
            Some(tfdt) => {
                let (version, _, mut f) = full(&tfdt)?;
                f.sized(version).ok_or_else(|| bad(&tfdt, "is cut short"))? as i64
            }
            None => samples.last().map_or(0, |s| s.decode_ts.saturating_add(last_duration(samples))),
        };
        let mut next = base;
        for trun in children(traf, 0, b"trun")? {
            (next, dts) = read_trun(&trun, base, next, dts, d, len, samples)?;
        }
        data_end = next;
    }
    Ok(())
}

/// The last sample's duration as the gap before it (fragments carry their own times).
fn last_duration(samples: &[SampleRef]) -> i64 {
    match samples {
        [.., a, b] => b.decode_ts.saturating_sub(a.decode_ts),
        _ => 0,
    }
}

/// Appends one `trun`'s samples; returns where its data ended and the next decode time.
fn read_trun(
    trun: &BoxRef<'_>,
    base: u64,
    mut offset: u64,
    mut dts: i64,
    d: Defaults,
    len: usize,
    samples: &mut Vec<SampleRef>,
) -> Result<(u64, i64)> {
    let (version, flags, mut f) = full(trun)?;
    let cut = || bad(trun, "is cut short");
    let count = f.u32().ok_or_else(cut)? as usize;
    if samples.len().saturating_add(count) > MAX_SAMPLES {
        return Err(bad(trun, &format!("brings the track past the {MAX_SAMPLES} samples read from a track")));
    }
    if flags & TRUN_DATA_OFFSET != 0 {
        let rel = f.u32().ok_or_else(cut)? as i32 as i64;
        offset = base.checked_add_signed(rel).ok_or_else(|| bad(trun, "has a data offset before the file"))?;
    }
    let first_flags = if flags & TRUN_FIRST_FLAGS != 0 { Some(f.u32().ok_or_else(cut)?) } else { None };
    samples.reserve(count);
    for n in 0..count {
        let mut field = |bit: u32, default: u32| -> Result<u32> {
            if flags & bit != 0 {
                f.u32().ok_or_else(cut)
            } else {
                Ok(default)
            }
        };
        let duration = field(TRUN_DURATION, d.duration)?;
        let size = field(TRUN_SIZE, d.size)? as u64;
        let default_flags = if n == 0 { first_flags.unwrap_or(d.flags) } else { d.flags };
        let sample_flags = field(TRUN_FLAGS, default_flags)?;
        let cts_offset = field(TRUN_CTS, 0)?;
        let cts_offset = if version == 0 { cts_offset as i64 } else { cts_offset as i32 as i64 };
        // Bit 16 of the sample flags is sample_is_non_sync_sample.
        let is_sync = (sample_flags >> 16) & 1 == 0;
        let cts = dts.checked_add(cts_offset).ok_or_else(|| bad(trun, "has times past the end of time"))?;
        let raw = Raw { offset, size, dts, cts, is_sync };
        samples.push(raw.checked(samples.len(), len)?);
        offset += size;
        dts = dts.checked_add(duration as i64).ok_or_else(|| bad(trun, "has times past the end of time"))?;
    }
    Ok((offset, dts))
}
