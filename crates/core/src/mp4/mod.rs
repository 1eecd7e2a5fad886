//! Structural check of an uploaded MP4 (ISO BMFF) file, fed piece by piece as it streams in.
//!
//! Invariant: `finish` succeeds only if the top-level boxes, read from their headers alone, cover
//! the bytes exactly (no gap, no box running past the end), the first box is `ftyp` or `styp`, a
//! `moov` is among them (progressive files, and fragmented ones as the Kerberos Agent writes
//! them: `ftyp moov sidx free moof mdat ...`), and every `moov` and `moof` passes the recursive
//! check of [`tree`]: each box inside fits its parent, each table fits its box, and no more
//! samples are declared than the `mdat` bytes hold. Media payloads are skipped, never copied;
//! only `moov` and `moof` are held (at most [`MAX_METADATA_BYTES`] in all), so the cost is a few
//! comparisons per piece plus one walk of the metadata.

pub mod boxes;
pub mod tree;

pub use boxes::{BoxRef, Boxes, Fields, NOT_AN_MP4};
pub use tree::{check_box, Tally};

use crate::{Error, ErrorKind, Result};
use boxes::{header_len, malformed, read_header};

/// Top-level boxes a file may start with.
const FIRST_BOXES: [&[u8; 4]; 2] = [b"ftyp", b"styp"];
/// Top-level boxes whose payload is read and checked box by box.
const METADATA: [&[u8; 4]; 2] = [b"moov", b"moof"];
/// Most bytes of `moov` and `moof` held for the check: an hour of 30 fps video has about 1 MB.
pub const MAX_METADATA_BYTES: u64 = 32 << 20;

#[derive(Debug, Default)]
pub struct Mp4Check {
    /// Bytes seen so far.
    pos: u64,
    /// Where the next top-level box header starts; `None` after a box that runs to the end.
    next_box: Option<u64>,
    header: Vec<u8>,
    /// The metadata box being gathered: its header's offset, header and payload so far.
    held: Option<(u64, Vec<u8>)>,
    top: TopLevel,
}

/// What the top-level boxes say, whether they come whole or streamed: the rules on which box
/// comes first and which may run to the end, and the sums the checks need.
#[derive(Debug, Default)]
struct TopLevel {
    boxes: usize,
    has_moov: bool,
    has_moof: bool,
    metadata_bytes: u64,
    tally: Tally,
}

impl TopLevel {
    /// Takes a top-level box of `kind` at `start`: `size` in all (`None`: to the end of the
    /// file), `payload` bytes after its header so far. Declared sizes are anything up to 2^64
    /// until the bytes arrive, so the sums saturate.
    fn open(&mut self, kind: &[u8; 4], start: u64, size: Option<u64>, payload: u64) -> Result<()> {
        let name = boxes::kind_name(kind);
        if self.boxes == 0 && !FIRST_BOXES.contains(&kind) {
            return Err(malformed(format!("it must start with an ftyp or styp box, not {name:?}")));
        }
        if size.is_none() && kind != b"mdat" {
            return Err(malformed(format!("box {name:?} at byte {start} runs to the end of the file: only mdat may")));
        }
        self.boxes += 1;
        self.has_moov |= kind == b"moov";
        self.has_moof |= kind == b"moof";
        if kind == b"mdat" {
            self.tally.mdat_bytes = self.tally.mdat_bytes.saturating_add(payload);
        }
        if METADATA.contains(&kind) {
            // `size` is there: only mdat may run to the end.
            self.metadata_bytes = self.metadata_bytes.saturating_add(size.unwrap_or(0));
            if self.metadata_bytes > MAX_METADATA_BYTES {
                return Err(Error::new(
                    ErrorKind::TooLarge,
                    format!("its moov and moof boxes hold more than {MAX_METADATA_BYTES} bytes"),
                ));
            }
        }
        Ok(())
    }

    /// What a file needs once all its boxes were taken.
    fn finish(&self) -> Result<()> {
        if self.boxes == 0 {
            return Err(malformed("it is empty or shorter than one box header".into()));
        }
        if !self.has_moov {
            return Err(malformed("it has no moov box".into()));
        }
        self.tally.check()
    }
}

impl Mp4Check {
    pub fn new() -> Self {
        Mp4Check { next_box: Some(0), ..Default::default() }
    }

    /// Checks the next piece of the file.
    pub fn feed(&mut self, mut piece: &[u8]) -> Result<()> {
        while !piece.is_empty() {
            let Some(next) = self.next_box else {
                // Inside an mdat that runs to the end of the file: nothing more to check.
                self.pos += piece.len() as u64;
                self.top.tally.mdat_bytes = self.top.tally.mdat_bytes.saturating_add(piece.len() as u64);
                return Ok(());
            };
            if self.pos < next {
                let skip = (next - self.pos).min(piece.len() as u64) as usize;
                if let Some((_, held)) = &mut self.held {
                    held.extend_from_slice(&piece[..skip]);
                }
                self.pos += skip as u64;
                piece = &piece[skip..];
                if self.pos == next {
                    self.check_held()?;
                }
                continue;
            }
            let want = header_len(&self.header);
            let take = (want - self.header.len()).min(piece.len());
            self.header.extend_from_slice(&piece[..take]);
            self.pos += take as u64;
            piece = &piece[take..];
            if self.header.len() == header_len(&self.header) {
                self.open_box(next)?;
            }
        }
        Ok(())
    }

    /// Reads the box header gathered in `self.header`, which started at `start`.
    fn open_box(&mut self, start: u64) -> Result<()> {
        let header = read_header(&self.header, start, true)?;
        // A box to the end has no payload yet: `feed` counts its bytes as they come.
        let payload = header.size.map_or(0, |size| size - header.len as u64);
        self.top.open(&header.kind, start, header.size, payload)?;
        let Some(size) = header.size else {
            self.header.clear();
            self.next_box = None;
            return Ok(());
        };
        if METADATA.contains(&&header.kind) {
            self.held = Some((start, std::mem::take(&mut self.header)));
        }
        self.header.clear();
        self.next_box = Some(start.checked_add(size).ok_or_else(|| {
            malformed(format!("box {:?} at byte {start} is too large", boxes::kind_name(&header.kind)))
        })?);
        if payload == 0 {
            self.check_held()?;
        }
        Ok(())
    }

    /// Checks the metadata box gathered whole.
    fn check_held(&mut self) -> Result<()> {
        let Some((start, bytes)) = self.held.take() else { return Ok(()) };
        let mut top = Boxes::nested(&bytes, start);
        let b = top.next().expect("a held box is whole")?;
        check_box(&b, 1, &mut self.top.tally)
    }

    /// Whether a fragment (`moof`) was seen: the file is fragmented.
    pub fn is_fragmented(&self) -> bool {
        self.top.has_moof
    }

    /// Checks that the file ended where its last box ends and that it had what an MP4 needs.
    pub fn finish(&self) -> Result<()> {
        if self.top.boxes > 0 && !self.header.is_empty() {
            return Err(malformed(format!(
                "it ends inside a box header at byte {}",
                self.pos - self.header.len() as u64
            )));
        }
        if let Some(next) = self.next_box.filter(|n| self.top.boxes > 0 && *n != self.pos) {
            return Err(malformed(format!("it is cut short: its boxes need {next} bytes, {} arrived", self.pos)));
        }
        self.top.finish()
    }
}

/// Checks a whole file in memory, as [`Mp4Check`] does a stream, without copying it.
pub fn check(bytes: &[u8]) -> Result<()> {
    let mut top = TopLevel::default();
    for b in Boxes::file(bytes) {
        let b = b?;
        let size = (b.header + b.payload.len()) as u64;
        top.open(&b.kind, b.offset, (!b.to_end).then_some(size), b.payload.len() as u64)?;
        if METADATA.contains(&&b.kind) {
            check_box(&b, 1, &mut top.tally)?;
        }
    }
    top.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A box of `payload` bytes: filler, or for `moov` and `moof` a `free` child holding them.
    fn mp4_box(kind: &[u8; 4], payload: usize) -> Vec<u8> {
        let mut b = ((payload + 8) as u32).to_be_bytes().to_vec();
        b.extend_from_slice(kind);
        if METADATA.contains(&kind) && payload >= 8 {
            b.extend_from_slice(&mp4_box(b"free", payload - 8));
        } else {
            b.extend(std::iter::repeat_n(7u8, payload));
        }
        b
    }

    fn full_box(kind: &[u8; 4], fields: &[u32]) -> Vec<u8> {
        let payload: Vec<u8> = fields.iter().flat_map(|f| f.to_be_bytes()).collect();
        [((payload.len() + 8) as u32).to_be_bytes().to_vec(), kind.to_vec(), payload].concat()
    }

    fn container(kind: &[u8; 4], children: &[Vec<u8>]) -> Vec<u8> {
        let payload = children.concat();
        [((payload.len() + 8) as u32).to_be_bytes().to_vec(), kind.to_vec(), payload].concat()
    }

    /// ftyp, a moov holding `inside` under trak/mdia/minf/stbl, and an mdat of `mdat` bytes.
    fn with_stbl(inside: &[Vec<u8>], mdat: usize) -> Vec<u8> {
        let stbl = container(b"stbl", inside);
        let moov = container(b"moov", &[container(b"trak", &[container(b"mdia", &[container(b"minf", &[stbl])])])]);
        [mp4_box(b"ftyp", 16), moov, mp4_box(b"mdat", mdat)].concat()
    }

    /// Every result of feeding in pieces, and of the whole-file check, is the same kind of error.
    fn refused(what: &str, bytes: &[u8]) {
        for result in check_in_pieces(bytes).into_iter().chain([check(bytes)]) {
            let err = result.expect_err(what);
            assert!(err.to_string().starts_with("body is not a complete MP4 file"), "{what}: {err}");
        }
    }

    #[test]
    fn refuses_boxes_inside_that_do_not_fit_or_loop() {
        let ftyp = mp4_box(b"ftyp", 16);
        let size0 = [ftyp.clone(), vec![0, 0, 0, 16], b"moov".to_vec(), vec![0, 0, 0, 0], b"abcd".to_vec()].concat();
        refused("a child of size 0 (the re_mp4 loop)", &size0);
        let large0 =
            [ftyp.clone(), vec![0, 0, 0, 24], b"moov".to_vec(), vec![0, 0, 0, 1], b"udta".to_vec(), vec![0; 8]]
                .concat();
        refused("a child with a 64-bit size of 0", &large0);
        let huge = [ftyp.clone(), vec![0, 0, 0, 24], b"moov".to_vec(), vec![0, 0, 0, 1], b"meta".to_vec()].concat();
        let huge = [huge, (1u64 << 40).to_be_bytes().to_vec()].concat();
        refused("a child declaring 1 TB", &huge);
        let mut deep = mp4_box(b"free", 0);
        for _ in 0..40 {
            deep = container(b"udta", &[deep]);
        }
        refused("nesting 40 deep", &[ftyp.clone(), container(b"moov", &[deep])].concat());
        let top_large0 = [ftyp.clone(), mp4_box(b"moov", 8), vec![0, 0, 0, 1], b"free".to_vec(), vec![0; 8]].concat();
        refused("a top-level box with a 64-bit size of 0", &top_large0);
        let open_moov = [ftyp, vec![0, 0, 0, 0], b"moov".to_vec(), vec![0; 40]].concat();
        refused("a moov that runs to the end", &open_moov);
    }

    #[test]
    fn refuses_tables_that_declare_more_than_the_file_holds() {
        let stsz_bomb = full_box(b"stsz", &[0, 10, u32::MAX]);
        refused("a constant-size stsz with 2^32-1 samples", &with_stbl(&[stsz_bomb], 1000));
        let stsz_cut = full_box(b"stsz", &[0, 0, 1000, 1, 2, 3]);
        refused("an stsz listing fewer sizes than its count", &with_stbl(&[stsz_cut], 5000));
        let stts = full_box(b"stts", &[0, 1, 1 << 30, 512]);
        refused("an stts run of 2^30 samples", &with_stbl(&[stts], 1000));
        let stco = full_box(b"stco", &[0, 1 << 20, 8]);
        refused("an stco with too few entries", &with_stbl(&[stco], 1000));
        let trun = full_box(b"trun", &[0, u32::MAX]);
        let moof = container(b"moof", &[container(b"traf", &[trun])]);
        let file = [mp4_box(b"ftyp", 16), mp4_box(b"moov", 8), moof, mp4_box(b"mdat", 4000)].concat();
        refused("a trun with flags 0 and 2^32-1 samples", &file);
        let fine = with_stbl(&[full_box(b"stsz", &[0, 10, 100]), full_box(b"stts", &[0, 1, 100, 512])], 1000);
        assert!(check_in_pieces(&fine).iter().chain([&check(&fine)]).all(Result::is_ok));
    }

    fn file(kinds: &[(&[u8; 4], usize)]) -> Vec<u8> {
        kinds.iter().flat_map(|(k, n)| mp4_box(k, *n)).collect()
    }

    /// Feeds `bytes` in pieces of every size from 1 to 40, so each header is split every way.
    fn check_in_pieces(bytes: &[u8]) -> Vec<Result<()>> {
        (1..=40)
            .map(|n| {
                let mut c = Mp4Check::new();
                bytes.chunks(n).try_for_each(|p| c.feed(p)).and_then(|_| c.finish())
            })
            .collect()
    }

    #[test]
    fn accepts_progressive_and_fragmented_files() {
        let progressive = file(&[(b"ftyp", 16), (b"moov", 300), (b"mdat", 5000)]);
        let fragmented = file(&[
            (b"ftyp", 16),
            (b"moov", 300),
            (b"sidx", 40),
            (b"free", 0),
            (b"moof", 90),
            (b"mdat", 800),
            (b"moof", 90),
            (b"mdat", 700),
        ]);
        let moov_last = file(&[(b"ftyp", 16), (b"mdat", 5000), (b"moov", 300)]);
        for bytes in [progressive, fragmented, moov_last] {
            assert!(check_in_pieces(&bytes).iter().all(Result::is_ok), "{:?}", check_in_pieces(&bytes)[0]);
        }
        let mut c = Mp4Check::new();
        c.feed(&file(&[(b"ftyp", 16), (b"moov", 30), (b"moof", 9), (b"mdat", 9)])).unwrap();
        assert!(c.is_fragmented());
    }

    #[test]
    fn accepts_large_and_open_ended_boxes() {
        let mut bytes = mp4_box(b"ftyp", 16);
        bytes.extend_from_slice(&mp4_box(b"moov", 20));
        bytes.extend_from_slice(&[0, 0, 0, 1]);
        bytes.extend_from_slice(b"mdat");
        bytes.extend_from_slice(&(16u64 + 100).to_be_bytes());
        bytes.extend(std::iter::repeat_n(1u8, 100));
        assert!(check_in_pieces(&bytes).iter().all(Result::is_ok));
        let mut open = file(&[(b"ftyp", 16), (b"moov", 20)]);
        open.extend_from_slice(&[0, 0, 0, 0]);
        open.extend_from_slice(b"mdat");
        open.extend(std::iter::repeat_n(1u8, 1000));
        assert!(check_in_pieces(&open).iter().all(Result::is_ok));
    }

    #[test]
    fn refuses_what_is_not_a_complete_mp4() {
        let whole = file(&[(b"ftyp", 16), (b"moov", 300), (b"mdat", 5000)]);
        let mut ff = mp4_box(b"ftyp", 16);
        ff.extend(std::iter::repeat_n(0xffu8, 4000));
        let mut trailing = whole.clone();
        trailing.extend_from_slice(b"junk");
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", vec![]),
            ("text", b"this is not a video at all".to_vec()),
            ("first half", whole[..whole.len() / 2].to_vec()),
            ("cut by one byte", whole[..whole.len() - 1].to_vec()),
            ("cut inside a header", whole[..24 + 308 + 5].to_vec()),
            ("ftyp then 0xff", ff),
            ("trailing bytes", trailing),
            ("no moov", file(&[(b"ftyp", 16), (b"mdat", 5000)])),
            ("moov first", file(&[(b"moov", 16), (b"mdat", 5000)])),
            ("size below header", [mp4_box(b"ftyp", 16), vec![0, 0, 0, 4], b"moov".to_vec()].concat()),
            ("binary type", [mp4_box(b"ftyp", 16), vec![0, 0, 0, 8, 0, 1, 2, 3], mp4_box(b"moov", 1)].concat()),
        ];
        for (what, bytes) in cases {
            for result in check_in_pieces(&bytes) {
                let err = result.expect_err(what);
                assert_eq!(err.kind(), ErrorKind::UnsupportedMedia, "{what}");
                assert!(err.to_string().starts_with("body is not a complete MP4 file"), "{what}: {err}");
            }
        }
    }
}
