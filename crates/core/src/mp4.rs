//! Structural check of an uploaded MP4 (ISO BMFF) file, fed piece by piece as it streams in.
//!
//! Invariant: `finish` succeeds only if the top-level boxes, read from their headers alone, cover
//! the bytes exactly (no gap, no box running past the end), the first box is `ftyp` or `styp`,
//! and a `moov` is among them (progressive files, and fragmented ones as the Kerberos Agent
//! writes them: `ftyp moov sidx free moof mdat ...`). Box payloads are skipped, never copied, so
//! the cost is a few comparisons per piece whatever the file's size.

use crate::{Error, ErrorKind, Result};

/// Top-level boxes a file may start with.
const FIRST_BOXES: [&[u8; 4]; 2] = [b"ftyp", b"styp"];

#[derive(Debug, Default)]
pub struct Mp4Check {
    /// Bytes seen so far.
    pos: u64,
    /// Where the next top-level box header starts; `None` after a box that runs to the end.
    next_box: Option<u64>,
    header: Vec<u8>,
    boxes: usize,
    has_moov: bool,
    has_moof: bool,
}

impl Mp4Check {
    pub fn new() -> Self {
        Mp4Check { next_box: Some(0), ..Default::default() }
    }

    /// Checks the next piece of the file.
    pub fn feed(&mut self, mut piece: &[u8]) -> Result<()> {
        while !piece.is_empty() {
            let Some(next) = self.next_box else {
                // Inside a box that runs to the end of the file: nothing more to check.
                self.pos += piece.len() as u64;
                return Ok(());
            };
            if self.pos < next {
                let skip = (next - self.pos).min(piece.len() as u64) as usize;
                self.pos += skip as u64;
                piece = &piece[skip..];
                continue;
            }
            let want = if self.header.len() >= 8 && self.header[..4] == [0, 0, 0, 1] { 16 } else { 8 };
            let take = (want - self.header.len()).min(piece.len());
            self.header.extend_from_slice(&piece[..take]);
            self.pos += take as u64;
            piece = &piece[take..];
            if self.header.len() == 8 && self.header[..4] == [0, 0, 0, 1] {
                continue; // a 64-bit size follows
            }
            if self.header.len() == want {
                self.open_box(next)?;
            }
        }
        Ok(())
    }

    /// Reads the box header gathered in `self.header`, which started at `start`.
    fn open_box(&mut self, start: u64) -> Result<()> {
        let kind: [u8; 4] = self.header[4..8].try_into().expect("8 header bytes");
        let short = u32::from_be_bytes(self.header[..4].try_into().expect("4 bytes")) as u64;
        let header_len = self.header.len() as u64;
        let size = match short {
            1 => u64::from_be_bytes(self.header[8..16].try_into().expect("16 header bytes")),
            other => other,
        };
        self.header.clear();
        if !kind.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
            return Err(bad(format!("byte {start} holds no box header")));
        }
        let name = String::from_utf8_lossy(&kind).to_string();
        if self.boxes == 0 && !FIRST_BOXES.contains(&&kind) {
            return Err(bad(format!("it must start with an ftyp or styp box, not {name:?}")));
        }
        self.boxes += 1;
        self.has_moov |= &kind == b"moov";
        self.has_moof |= &kind == b"moof";
        self.next_box = match size {
            0 => None,
            s if s < header_len => return Err(bad(format!("box {name:?} at byte {start} has an impossible size {s}"))),
            s => Some(start.checked_add(s).ok_or_else(|| bad(format!("box {name:?} at byte {start} is too large")))?),
        };
        Ok(())
    }

    /// Whether a fragment (`moof`) was seen: the file is fragmented.
    pub fn is_fragmented(&self) -> bool {
        self.has_moof
    }

    /// Checks that the file ended where its last box ends and that it had what an MP4 needs.
    pub fn finish(&self) -> Result<()> {
        if self.boxes == 0 {
            return Err(bad("it is empty or shorter than one box header".into()));
        }
        if !self.header.is_empty() {
            return Err(bad(format!("it ends inside a box header at byte {}", self.pos - self.header.len() as u64)));
        }
        if let Some(next) = self.next_box.filter(|n| *n != self.pos) {
            return Err(bad(format!("it is cut short: its boxes need {next} bytes, {} arrived", self.pos)));
        }
        if !self.has_moov {
            return Err(bad("it has no moov box".into()));
        }
        Ok(())
    }
}

/// Checks a whole file in memory.
pub fn check(bytes: &[u8]) -> Result<()> {
    let mut check = Mp4Check::new();
    check.feed(bytes)?;
    check.finish()
}

fn bad(why: String) -> Error {
    Error::new(ErrorKind::UnsupportedMedia, format!("body is not a complete MP4 file: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mp4_box(kind: &[u8; 4], payload: usize) -> Vec<u8> {
        let mut b = ((payload + 8) as u32).to_be_bytes().to_vec();
        b.extend_from_slice(kind);
        b.extend(std::iter::repeat_n(7u8, payload));
        b
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
