//! The recursive structural check of a file's metadata boxes (`moov`, `moof`): every box inside
//! them fits its parent, no container nests deeper than [`MAX_DEPTH`], every table's entries fit
//! the bytes its box holds, and, over the whole file, no more samples are declared than the
//! `mdat` bytes could hold (a sample takes at least one byte). What passes can be demuxed with
//! memory and time proportional to the file's size.

use super::boxes::{BoxRef, Fields};
use crate::Result;

/// Deepest nesting of boxes accepted (a camera's file nests about 8 deep: moov/trak/mdia/minf/
/// stbl/stsd/avc1/avcC).
pub const MAX_DEPTH: usize = 16;

/// Boxes whose payload is only child boxes.
const CONTAINERS: [&[u8; 4]; 14] = [
    b"moov", b"trak", b"mdia", b"minf", b"stbl", b"dinf", b"edts", b"mvex", b"moof", b"traf", b"udta", b"mfra",
    b"ilst", b"sinf",
];

/// Sample entries of visual codecs: 78 bytes of fields, then child boxes (avcC, hvcC, pasp...).
const VISUAL_ENTRIES: [&[u8; 4]; 6] = [b"avc1", b"avc3", b"hvc1", b"hev1", b"encv", b"mp4v"];
/// Sample entries of audio codecs: fields (see `audio_fields`), then child boxes (esds...).
const AUDIO_ENTRIES: [&[u8; 4]; 3] = [b"mp4a", b"enca", b"Opus"];

/// What the checked boxes declare, summed over the file.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    /// Samples declared by `stsz`/`stz2` and `trun` boxes.
    pub samples: u64,
    /// Bytes those samples need where a box says (constant `stsz` sizes).
    pub sample_bytes: u64,
    /// The largest sum of sample counts in one `stts` or `ctts`.
    pub run_samples: u64,
    /// Payload bytes of the top-level `mdat` boxes.
    pub mdat_bytes: u64,
}

impl Tally {
    /// Whether the `mdat` bytes could hold every sample declared.
    pub fn check(&self) -> Result<()> {
        let most = self.samples.max(self.run_samples);
        if most > self.mdat_bytes || self.sample_bytes > self.mdat_bytes {
            return Err(super::boxes::malformed(format!(
                "its tables declare {most} samples of {} bytes, more than its {} bytes of mdat hold",
                self.sample_bytes, self.mdat_bytes
            )));
        }
        Ok(())
    }

    fn add(&mut self, what: &BoxRef<'_>, samples: u64, bytes: u64) -> Result<()> {
        let too_many = || what.malformed("declares more samples than any file holds");
        self.samples = self.samples.checked_add(samples).ok_or_else(too_many)?;
        self.sample_bytes = self.sample_bytes.checked_add(bytes).ok_or_else(too_many)?;
        Ok(())
    }
}

/// Checks a box and everything inside it, at nesting `depth` (a top-level box is 1).
pub fn check_box(b: &BoxRef<'_>, depth: usize, tally: &mut Tally) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(b.malformed(format!("nests deeper than {MAX_DEPTH} boxes")));
    }
    let kind = &b.kind;
    if CONTAINERS.contains(&kind) {
        return check_children(b, 0, depth, tally);
    }
    match kind {
        b"meta" => check_children(b, meta_skip(b.payload), depth, tally),
        b"stsd" | b"dref" => check_children(b, 8, depth, tally),
        k if VISUAL_ENTRIES.contains(&k) => check_children(b, 78, depth, tally),
        k if AUDIO_ENTRIES.contains(&k) => match audio_fields(b) {
            Some(skip) => check_children(b, skip, depth, tally),
            None => Ok(()),
        },
        b"stts" | b"ctts" => check_runs(b, tally),
        b"stss" | b"stco" => check_table(b, 0, 4).map(drop),
        b"co64" => check_table(b, 0, 8).map(drop),
        b"stsc" => check_table(b, 0, 12).map(drop),
        b"elst" => check_table(b, 0, if version(b) == 1 { 20 } else { 12 }).map(drop),
        b"stsz" => check_stsz(b, tally),
        b"stz2" => check_stz2(b, tally),
        b"trun" => check_trun(b, tally),
        b"tfhd" => need(b, 8 + flag_bytes(b, &[(0x1, 8), (0x2, 4), (0x8, 4), (0x10, 4), (0x20, 4)])),
        b"hdlr" => need(b, 24),
        b"mdhd" => need(b, if version(b) == 1 { 32 } else { 20 }),
        b"tkhd" => need(b, if version(b) == 1 { 92 } else { 80 }),
        b"mvhd" => need(b, if version(b) == 1 { 108 } else { 96 }),
        b"tfdt" => need(b, if version(b) == 1 { 12 } else { 8 }),
        b"trex" => need(b, 24),
        _ => Ok(()),
    }
}

fn check_children(b: &BoxRef<'_>, skip: usize, depth: usize, tally: &mut Tally) -> Result<()> {
    for child in b.children(skip)? {
        check_box(&child?, depth + 1, tally)?;
    }
    Ok(())
}

/// ISO `meta` is a full box (4 bytes of version and flags before its children); QuickTime's is a
/// plain container. Which one it is shows in whether a child's type follows at once.
pub fn meta_skip(payload: &[u8]) -> usize {
    match payload.get(4..8) {
        Some(b"hdlr") => 0,
        _ => 4,
    }
}

/// Bytes of an audio sample entry's fields: 28, and in QuickTime's sound versions 1 and 2, 16 or
/// 36 more. `None` for a version it does not know (its children are then left unread).
fn audio_fields(b: &BoxRef<'_>) -> Option<usize> {
    match b.payload.get(8..10)? {
        [0, 0] => Some(28),
        [0, 1] => Some(44),
        [0, 2] => Some(64),
        _ => None,
    }
}

fn version(b: &BoxRef<'_>) -> u8 {
    b.payload.first().copied().unwrap_or(0)
}

fn flags(b: &BoxRef<'_>) -> u32 {
    b.payload.get(..4).map_or(0, |v| u32::from_be_bytes(v.try_into().expect("4 bytes")) & 0x00ff_ffff)
}

/// Bytes of the optional fields that `(flag, bytes)` pairs add when their flag is set.
fn flag_bytes(b: &BoxRef<'_>, fields: &[(u32, usize)]) -> usize {
    let flags = flags(b);
    fields.iter().filter(|(f, _)| flags & f != 0).map(|(_, n)| n).sum()
}

fn need(b: &BoxRef<'_>, bytes: usize) -> Result<()> {
    match b.payload.len() >= bytes {
        true => Ok(()),
        false => Err(b.malformed(format!("holds {} bytes, fewer than the {bytes} its fields take", b.payload.len()))),
    }
}

/// A full box of `fixed` bytes after version/flags, then a 32-bit count of `entry`-byte entries
/// that must fit the payload. Returns the count.
fn check_table(b: &BoxRef<'_>, fixed: usize, entry: usize) -> Result<u64> {
    let count_at = 4 + fixed;
    need(b, count_at + 4)?;
    let count = u32::from_be_bytes(b.payload[count_at..count_at + 4].try_into().expect("4 bytes")) as u64;
    let room = (b.payload.len() - count_at - 4) as u64;
    if count.saturating_mul(entry as u64) > room {
        return Err(b.malformed(format!("declares {count} entries of {entry} bytes in {room} bytes")));
    }
    Ok(count)
}

/// `stts`/`ctts`: runs of (count, value); their counts must not sum past what a file holds.
fn check_runs(b: &BoxRef<'_>, tally: &mut Tally) -> Result<()> {
    let entries = check_table(b, 0, 8)? as usize;
    let mut fields = Fields::new(&b.payload[8..]);
    let mut sum = 0u64;
    for _ in 0..entries {
        sum += fields.u32().unwrap_or(0) as u64;
        fields.u32();
    }
    tally.run_samples = tally.run_samples.max(sum);
    Ok(())
}

fn check_stsz(b: &BoxRef<'_>, tally: &mut Tally) -> Result<()> {
    need(b, 12)?;
    let size = u32::from_be_bytes(b.payload[4..8].try_into().expect("4 bytes")) as u64;
    let count = u32::from_be_bytes(b.payload[8..12].try_into().expect("4 bytes")) as u64;
    if size == 0 {
        let room = (b.payload.len() - 12) as u64;
        if count * 4 > room {
            return Err(b.malformed(format!("declares {count} sample sizes in {room} bytes")));
        }
    }
    tally.add(b, count, count.checked_mul(size).ok_or_else(|| b.malformed("declares more bytes than any file holds"))?)
}

fn check_stz2(b: &BoxRef<'_>, tally: &mut Tally) -> Result<()> {
    need(b, 12)?;
    let bits = b.payload[7] as u64;
    let count = u32::from_be_bytes(b.payload[8..12].try_into().expect("4 bytes")) as u64;
    if ![4, 8, 16].contains(&bits) {
        return Err(b.malformed(format!("has field size {bits}, not 4, 8 or 16")));
    }
    let room = (b.payload.len() - 12) as u64;
    if (count * bits).div_ceil(8) > room {
        return Err(b.malformed(format!("declares {count} sample sizes in {room} bytes")));
    }
    tally.add(b, count, 0)
}

/// `trun`: a count of samples whose optional per-sample fields (by its flags) must fit.
fn check_trun(b: &BoxRef<'_>, tally: &mut Tally) -> Result<()> {
    let fixed = flag_bytes(b, &[(0x1, 4), (0x4, 4)]);
    let per_sample = flag_bytes(b, &[(0x100, 4), (0x200, 4), (0x400, 4), (0x800, 4)]);
    need(b, 8 + fixed)?;
    let count = u32::from_be_bytes(b.payload[4..8].try_into().expect("4 bytes")) as u64;
    let room = (b.payload.len() - 8 - fixed) as u64;
    if count * per_sample as u64 > room {
        return Err(b.malformed(format!("declares {count} samples of {per_sample} bytes in {room} bytes")));
    }
    tally.add(b, count, 0)
}
