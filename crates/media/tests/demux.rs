//! The demuxer against the world: it reads good files (progressive, fragmented as the Kerberos
//! agent writes them, B-frames) exactly as re_mp4, the parser it replaced, does, and each file of
//! the hostile corpus (`samples/hostile/`) gives an error at once, with no allocation above a
//! cap, where re_mp4 hung, aborted or asked for gigabytes.

use osprey_media::Demuxed;
use osprey_testkit::{within, CappedAlloc};
use std::time::Duration;

/// Larger than any buffer the good files need (the sample's 5.8 MB, its sample table), far below
/// what the hostile files ask for.
#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc::new(64 << 20);

fn good_files() -> Vec<(&'static str, Vec<u8>)> {
    let sample = osprey_testkit::repo_root().join("samples/vtest.mp4");
    let dir = tempfile::tempdir().unwrap();
    let kerberos = dir.path().join("kerberos.mp4");
    osprey_testkit::kerberos_fragmented(&sample, "3", "8", &kerberos);
    let bframes = dir.path().join("bframes.mp4");
    let input = sample.to_str().unwrap();
    osprey_testkit::ffmpeg(&["-t", "4", "-i", input, "-c:v", "libx264", "-bf", "3", "-g", "12"], &bframes);
    let frag_b = dir.path().join("frag-b.mp4");
    osprey_testkit::ffmpeg(
        &["-i", bframes.to_str().unwrap(), "-c", "copy", "-movflags", "frag_keyframe+empty_moov+default_base_moof"],
        &frag_b,
    );
    let verify = dir.path().join("verify.mov");
    osprey_testkit::kerberos_verify_file(&sample, &verify);
    vec![
        ("samples/vtest.mp4", std::fs::read(&sample).unwrap()),
        ("kerberos fragmented", std::fs::read(&kerberos).unwrap()),
        ("B-frames", std::fs::read(&bframes).unwrap()),
        ("fragmented B-frames", std::fs::read(&frag_b).unwrap()),
        ("Kerberos verify file", std::fs::read(&verify).unwrap()),
    ]
}

/// A sample as both demuxers give it: offset, size, presentation time, keyframe.
type Sample = (usize, usize, i64, bool);

/// Width, height, timescale and the samples of the first video track as re_mp4 reads it.
fn re_mp4_samples(bytes: &[u8]) -> (u32, u32, u64, Vec<Sample>) {
    let mp4 = re_mp4::Mp4::read_bytes(bytes).unwrap();
    let track = mp4.tracks().values().find(|t| matches!(t.kind, Some(re_mp4::TrackKind::Video))).unwrap();
    let samples = track
        .samples
        .iter()
        .map(|s| (s.offset as usize, s.size as usize, s.composition_timestamp, s.is_sync))
        .collect();
    (track.width as u32, track.height as u32, track.timescale, samples)
}

#[test]
fn good_files_are_read_as_re_mp4_reads_them() {
    for (what, bytes) in good_files() {
        let ours = Demuxed::parse(&bytes).unwrap_or_else(|e| panic!("{what}: {e}"));
        let (width, height, timescale, theirs) = re_mp4_samples(&bytes);
        assert_eq!((ours.width, ours.height, ours.timescale), (width, height, timescale), "{what}");
        let ours_samples: Vec<_> =
            ours.samples.iter().map(|s| (s.offset, s.size, s.presentation_ts, s.is_sync)).collect();
        assert_eq!(ours_samples.len(), theirs.len(), "{what}: sample count");
        // Fragmented files' times are the fragments' own in both; progressive ones are shown
        // from 0 in both. Compare shown times relative to the first.
        let rel = |v: &[Sample]| -> Vec<Sample> {
            let first = v.iter().map(|s| s.2).min().unwrap();
            v.iter().map(|&(o, n, t, k)| (o, n, t - first, k)).collect()
        };
        assert_eq!(rel(&ours_samples), rel(&theirs), "{what}: samples");
        assert!(ours.samples.iter().any(|s| s.is_sync), "{what}");
    }
}

#[test]
fn hostile_files_give_an_error_at_once_with_bounded_memory() {
    for (name, bytes) in osprey_testkit::hostile_mp4s() {
        let len = bytes.len();
        let result = within(&name, Duration::from_secs(10), move || Demuxed::parse(&bytes).map(|v| v.samples.len()));
        let err = result.expect_err(&name);
        assert!(err.to_string().starts_with("mp4:"), "{name}: {err}");
        assert_eq!(err.kind(), osprey_core::ErrorKind::InvalidInput, "{name}");
        println!("{name} ({len} bytes): {err}");
    }
    assert!(ALLOC.largest() < 64 << 20);
}

/// Every prefix and a spread of byte flips of a real chunk: an error or samples inside the
/// buffer, never a panic, a hang or a large allocation.
#[test]
fn damaged_real_files_never_hang_or_panic() {
    let bytes = good_files().swap_remove(1).1;
    within("damaged chunks", Duration::from_secs(120), move || {
        for cut in (0..bytes.len()).step_by(97) {
            if let Ok(v) = Demuxed::parse(&bytes[..cut]) {
                assert!(v.samples.iter().all(|s| s.offset + s.size <= cut));
            }
        }
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..2000 {
            // In the first 4 KiB: the boxes the demuxer reads, not the media it skips.
            let damaged = osprey_testkit::flip_bytes(&bytes, 4, 4096, &mut state);
            if let Ok(v) = Demuxed::parse(&damaged) {
                assert!(v.samples.iter().all(|s| s.offset + s.size <= damaged.len()));
            }
        }
    });
}
