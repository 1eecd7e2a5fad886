//! ISO BMFF box headers read from memory: each box's declared size is checked against the bytes
//! that hold it (its parent, or the file) before anything looks inside, so no reader built on
//! [`Boxes`] can loop on a box of size 0, seek outside its parent or size a buffer from a lie.

use crate::{Error, ErrorKind, Result};

/// One box: its type, where it starts in the file, and its payload (the bytes after its header).
#[derive(Debug, Clone, Copy)]
pub struct BoxRef<'a> {
    pub kind: [u8; 4],
    /// Byte offset of the box header in the file.
    pub offset: u64,
    /// 8, or 16 with a 64-bit size.
    pub header: usize,
    pub payload: &'a [u8],
    /// Its size was 0: it runs to the end of the file (top level only).
    pub to_end: bool,
}

impl BoxRef<'_> {
    /// The type as text, for messages.
    pub fn name(&self) -> String {
        kind_name(&self.kind)
    }

    /// Byte offset of the payload in the file.
    pub fn payload_offset(&self) -> u64 {
        self.offset + self.header as u64
    }

    /// The error for a payload that does not hold what the box's type needs.
    pub fn malformed(&self, why: impl std::fmt::Display) -> Error {
        malformed(format!("box {:?} at byte {} {why}", self.name(), self.offset))
    }

    /// The children of a container box whose own fields take the first `skip` payload bytes.
    pub fn children(&self, skip: usize) -> Result<Boxes<'_>> {
        let rest = self.payload.get(skip..).ok_or_else(|| self.malformed(format!("is shorter than {skip} bytes")))?;
        Ok(Boxes::nested(rest, self.payload_offset() + skip as u64))
    }
}

pub fn kind_name(kind: &[u8; 4]) -> String {
    kind.iter().map(|&b| if b.is_ascii_graphic() || b == b' ' { b as char } else { '?' }).collect()
}

/// The boxes in a run of bytes, in order. After the first error it yields nothing more.
#[derive(Debug, Clone)]
pub struct Boxes<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// File offset of `bytes[0]`.
    base: u64,
    /// At the top level a box of size 0 runs to the end of the file; inside a box it is refused.
    top: bool,
}

impl<'a> Boxes<'a> {
    /// The top-level boxes of a whole file.
    pub fn file(bytes: &'a [u8]) -> Self {
        Boxes { bytes, pos: 0, base: 0, top: true }
    }

    /// The children held in `bytes`, which start at file offset `base`.
    pub fn nested(bytes: &'a [u8], base: u64) -> Self {
        Boxes { bytes, pos: 0, base, top: false }
    }

    fn next_box(&mut self) -> Result<BoxRef<'a>> {
        let rest = &self.bytes[self.pos..];
        let offset = self.base + self.pos as u64;
        let header = read_header(rest, offset, self.top)?;
        let size = match header.size {
            Some(size) => size,
            None => rest.len() as u64,
        };
        if size > rest.len() as u64 {
            return Err(malformed(format!(
                "box {:?} at byte {offset} declares {size} bytes but only {} remain",
                kind_name(&header.kind),
                rest.len()
            )));
        }
        let size = size as usize;
        self.pos += size;
        let to_end = header.size.is_none();
        Ok(BoxRef { kind: header.kind, offset, header: header.len, payload: &rest[header.len..size], to_end })
    }
}

impl<'a> Iterator for Boxes<'a> {
    type Item = Result<BoxRef<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.bytes.len() {
            return None;
        }
        let next = self.next_box();
        if next.is_err() {
            self.pos = self.bytes.len();
        }
        Some(next)
    }
}

/// A box header: its type, its length, and its declared size (`None`: to the end of the file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: [u8; 4],
    pub len: usize,
    pub size: Option<u64>,
}

/// How many bytes the header starting with these bytes takes (8, or 16 with a 64-bit size).
pub fn header_len(first: &[u8]) -> usize {
    if first.len() >= 4 && first[..4] == [0, 0, 0, 1] {
        16
    } else {
        8
    }
}

/// Reads the header at the start of `bytes` (at file offset `offset`). A size of 0 is accepted
/// only at the top level (`top`); a size smaller than the header, never.
pub fn read_header(bytes: &[u8], offset: u64, top: bool) -> Result<Header> {
    if bytes.len() < 8 {
        return Err(malformed(format!("{} stray bytes at byte {offset}, too few for a box header", bytes.len())));
    }
    let kind: [u8; 4] = bytes[4..8].try_into().expect("8 bytes");
    // Inside a box any four bytes may name a child (iTunes metadata uses 0xa9); at the top level
    // anything else is how garbage shows.
    if top && !kind.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        return Err(malformed(format!("byte {offset} holds no box header")));
    }
    let name = kind_name(&kind);
    let short = u32::from_be_bytes(bytes[..4].try_into().expect("4 bytes")) as u64;
    let (len, size) = match short {
        1 => {
            let large = bytes
                .get(8..16)
                .ok_or_else(|| malformed(format!("box {name:?} at byte {offset} has a cut 64-bit size")))?;
            (16, Some(u64::from_be_bytes(large.try_into().expect("8 bytes"))))
        }
        0 if top => (8, None),
        0 => return Err(malformed(format!("box {name:?} at byte {offset} has size 0 inside another box"))),
        n => (8, Some(n)),
    };
    if size.is_some_and(|s| s < len as u64) {
        return Err(malformed(format!("box {name:?} at byte {offset} has an impossible size {}", size.unwrap_or(0))));
    }
    Ok(Header { kind, len, size })
}

/// How every error of the check begins (the vault answers it as it is; the worker says `mp4:`).
pub const NOT_AN_MP4: &str = "body is not a complete MP4 file: ";

pub(crate) fn malformed(why: String) -> Error {
    Error::new(ErrorKind::UnsupportedMedia, format!("{NOT_AN_MP4}{why}"))
}

/// Big-endian fields of a box payload, read with bounds checks.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Fields<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Fields { bytes, pos: 0 }
    }

    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let piece = self.bytes.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(piece)
    }

    pub fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    pub fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes(b.try_into().expect("2 bytes")))
    }

    pub fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")))
    }

    pub fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
    }

    /// A 32-bit value in version 0 of a full box, 64-bit in version 1.
    pub fn sized(&mut self, version: u8) -> Option<u64> {
        match version {
            0 => self.u32().map(u64::from),
            _ => self.u64(),
        }
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub fn rest(&self) -> &'a [u8] {
        &self.bytes[self.pos..]
    }
}
