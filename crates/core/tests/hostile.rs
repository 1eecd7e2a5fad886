//! The upload check against the hostile corpus (`samples/hostile/`): each file is refused,
//! whole and streamed in pieces, and the real sample is accepted both ways.

use osprey_core::mp4::{check, Mp4Check};
use osprey_core::ErrorKind;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn streamed(bytes: &[u8], piece: usize) -> osprey_core::Result<()> {
    let mut c = Mp4Check::new();
    bytes.chunks(piece).try_for_each(|p| c.feed(p))?;
    c.finish()
}

#[test]
fn every_hostile_file_is_refused_whole_and_streamed() {
    let mut files: Vec<_> = std::fs::read_dir(root().join("samples/hostile"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "mp4"))
        .collect();
    files.sort();
    assert!(files.len() >= 9);
    for path in files {
        let bytes = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy();
        for result in [check(&bytes), streamed(&bytes, 1), streamed(&bytes, 7), streamed(&bytes, 4096)] {
            let err = result.expect_err(&name);
            assert_eq!(err.kind(), ErrorKind::UnsupportedMedia, "{name}: {err}");
        }
    }
}

#[test]
fn the_sample_passes_whole_and_streamed() {
    let bytes = std::fs::read(root().join("samples/vtest.mp4")).unwrap();
    check(&bytes).unwrap();
    streamed(&bytes, 1000).unwrap();
    streamed(&bytes, 65536).unwrap();
}
