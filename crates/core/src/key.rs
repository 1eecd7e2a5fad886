//! Object keys built from names that come from outside (upload headers, file names).
//!
//! A name is never used as a path as given: every segment is checked against a small alphabet,
//! and `..`, absolute paths, empty segments and control characters are refused.

use crate::{Error, Result};
use std::fmt;

const MAX_SEGMENT_LEN: usize = 255;
const MAX_DIRECTORY_DEPTH: usize = 8;
/// Segments starting with this are reserved for the vault's own objects (staging uploads).
pub const RESERVED_PREFIX: char = '_';

/// A validated `<directory>/<file name>` key of a stored chunk.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectKey(String);

/// For keys read back from storage (`#[sqlx(try_from = "String")]` on row fields).
impl TryFrom<String> for ObjectKey {
    type Error = Error;

    fn try_from(s: String) -> Result<Self> {
        ObjectKey::parse(&s)
    }
}

impl serde::Serialize for ObjectKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl ObjectKey {
    /// Builds a key from an upload's directory (one or more `/`-separated segments) and file name.
    pub fn new(directory: &str, file_name: &str) -> Result<Self> {
        if directory.starts_with('/') {
            return Err(Error::invalid(format!("directory {directory:?} must be relative")));
        }
        let segments: Vec<&str> = directory.split('/').collect();
        if segments.len() > MAX_DIRECTORY_DEPTH {
            return Err(Error::invalid(format!("directory {directory:?} is deeper than {MAX_DIRECTORY_DEPTH} levels")));
        }
        for segment in &segments {
            check_segment("directory", segment)?;
        }
        check_segment("file name", file_name)?;
        if file_name.contains('/') {
            return Err(Error::invalid(format!("file name {file_name:?} must not contain '/'")));
        }
        Ok(ObjectKey(format!("{directory}/{file_name}")))
    }

    /// Re-validates a key read back from a trusted store (the metadata database).
    pub fn parse(key: &str) -> Result<Self> {
        match key.rsplit_once('/') {
            Some((dir, file)) => ObjectKey::new(dir, file),
            None => Err(Error::invalid(format!("key {key:?} has no directory"))),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn file_name(&self) -> &str {
        self.0.rsplit_once('/').map(|(_, f)| f).unwrap_or(&self.0)
    }

    /// Everything before the file name (one or more segments).
    pub fn directory(&self) -> &str {
        self.0.rsplit_once('/').map(|(d, _)| d).unwrap_or("")
    }
}

/// An uploaded file name made safe as a key's last segment. Names that need no change (every
/// Kerberos agent name of a camera without spaces) are kept as they are; any other character
/// (a space, `é`, `#`) and `=` itself become `=XX` per UTF-8 byte. Separators (also
/// percent-encoded), control characters, and a leading `.` (hidden, `..`) or `_` (the vault's
/// own objects) are refused, not encoded.
pub fn encode_file_name(name: &str) -> Result<String> {
    if name.is_empty() || name.starts_with('.') || name.starts_with(RESERVED_PREFIX) {
        return Err(Error::invalid(format!(
            "file name {name:?} must not be empty or start with '.' or '{RESERVED_PREFIX}'"
        )));
    }
    if let Some(c) = name.chars().find(|c| c.is_control() || matches!(c, '/' | '\\')) {
        return Err(Error::invalid(format!("file name {name:?} contains {c:?}")));
    }
    // A separator sent percent-encoded is a traversal attempt on whoever decodes it next.
    let lower = name.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") {
        return Err(Error::invalid(format!("file name {name:?} contains an encoded path separator")));
    }
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if is_allowed(c) && c != '=' {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("={b:02X}"));
            }
        }
    }
    if out.len() > MAX_SEGMENT_LEN {
        return Err(Error::invalid(format!("file name is longer than {MAX_SEGMENT_LEN} bytes once encoded")));
    }
    Ok(out)
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_segment(what: &str, segment: &str) -> Result<()> {
    if segment.is_empty() {
        return Err(Error::invalid(format!("{what} has an empty path segment")));
    }
    if segment == "." || segment == ".." {
        return Err(Error::invalid(format!("{what} must not contain {segment:?}")));
    }
    if segment.len() > MAX_SEGMENT_LEN {
        return Err(Error::invalid(format!("{what} segment is longer than {MAX_SEGMENT_LEN} bytes")));
    }
    if segment.starts_with(RESERVED_PREFIX) || segment.starts_with('.') {
        return Err(Error::invalid(format!("{what} {segment:?} must not start with '{RESERVED_PREFIX}' or '.'")));
    }
    if let Some(c) = segment.chars().find(|c| c.is_control()) {
        return Err(Error::invalid(format!("{what} contains control character {c:?}")));
    }
    if let Some(c) = segment.chars().find(|c| !is_allowed(*c)) {
        return Err(Error::invalid(format!(
            "{what} {segment:?} contains {c:?}; allowed are letters, digits and . _ - + = @ ,"
        )));
    }
    Ok(())
}

fn is_allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+' | '=' | '@' | ',')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_kerberos_names() {
        let key = ObjectKey::new("alice", "1700000000_6-967003_frontdoor_200-200-400-400_24_769.mp4").unwrap();
        assert_eq!(key.as_str(), "alice/1700000000_6-967003_frontdoor_200-200-400-400_24_769.mp4");
        assert!(ObjectKey::new("alice/cam1", "a.mp4").is_ok());
    }

    #[test]
    fn refuses_traversal_and_odd_names() {
        for (dir, file) in [
            ("..", "a.mp4"),
            ("alice/..", "a.mp4"),
            ("/etc", "a.mp4"),
            ("alice", ".."),
            ("alice", "../a.mp4"),
            ("alice", "a\u{0}.mp4"),
            ("alice", "a\n.mp4"),
            ("alice", "a b.mp4"),
            ("alice", "a\\b.mp4"),
            ("alice//x", "a.mp4"),
            ("", "a.mp4"),
            ("alice", ""),
            ("_staging", "a.mp4"),
            ("alice", ".hidden"),
        ] {
            assert!(ObjectKey::new(dir, file).is_err(), "{dir:?}/{file:?} was accepted");
        }
    }

    #[test]
    fn encodes_names_with_spaces_and_keeps_plain_ones() {
        let plain = "1700000000_3-737_frontdoor_0-0-0-0_-1_10000.mp4";
        assert_eq!(encode_file_name(plain).unwrap(), plain);
        assert_eq!(
            encode_file_name("1_3-737_front door_0-0-0-0_-1_1.mp4").unwrap(),
            "1_3-737_front=20door_0-0-0-0_-1_1.mp4"
        );
        assert_eq!(encode_file_name("a=b é#.mp4").unwrap(), "a=3Db=20=C3=A9=23.mp4");
        for bad in
            ["", ".", "..", ".hidden", "_staging", "..%2Fx.mp4", "a%5cb", "a/b.mp4", "a\\b.mp4", "a\nb.mp4", "a\u{0}b"]
        {
            assert!(encode_file_name(bad).is_err(), "{bad:?}");
        }
        for name in ["a b.mp4", "=5Fx", "über.mp4", "x_é.mp4"] {
            let encoded = encode_file_name(name).unwrap();
            assert!(ObjectKey::new("alice", &encoded).is_ok(), "{encoded}");
        }
    }

    #[test]
    fn parse_round_trips() {
        let key = ObjectKey::new("a/b", "c.mp4").unwrap();
        assert_eq!(ObjectKey::parse(key.as_str()).unwrap(), key);
        assert_eq!((key.directory(), key.file_name()), ("a/b", "c.mp4"));
        assert!(ObjectKey::parse("../x").is_err());
    }
}
