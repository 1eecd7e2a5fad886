//! Decoding only what the sampled frames need gives exactly the pixels a full decode gives:
//! groups of pictures without a target are skipped, a group is decoded only up to its last
//! target, and keyframe-aligned sampling decodes the keyframes alone.

use osprey_media::{decode_frames, Demuxed, Sampling};
use std::collections::BTreeMap;

/// A hash of each handed frame's visible pixels, by pts.
fn pixels(video: &Demuxed, bytes: &[u8], sampling: Sampling) -> BTreeMap<i64, u64> {
    use std::hash::{Hash, Hasher};
    let mut out = BTreeMap::new();
    decode_frames(video, bytes, sampling, 1, |f| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for plane in 0..f.frame.planes() {
            let (stride, width) = (f.frame.stride(plane), f.frame.plane_width(plane) as usize);
            for row in f.frame.data(plane).chunks(stride).take(f.frame.plane_height(plane) as usize) {
                row[..width].hash(&mut h);
            }
        }
        out.insert(f.pts, h.finish());
        Ok(())
    })
    .unwrap();
    out
}

fn clip(gop: &str, extra: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("clip.mp4");
    let sample = osprey_testkit::repo_root().join("samples/vtest.mp4");
    let mut args = vec!["-t", "12", "-i", sample.to_str().unwrap(), "-c:v", "libx264", "-g", gop];
    args.extend_from_slice(extra);
    osprey_testkit::ffmpeg(&args, &out);
    std::fs::read(out).unwrap()
}

#[test]
fn skipped_groups_change_no_pixel() {
    // Closed groups with B-frames (x264's default), and open groups (leading frames refer back).
    for (gop, extra) in [("10", &[][..]), ("25", &["-x264-params", "open-gop=1"][..])] {
        let bytes = clip(gop, extra);
        let video = Demuxed::parse(&bytes).unwrap();
        let all = pixels(&video, &bytes, Sampling::All);
        // Keyframes alone on an open stream lose some (FFmpeg's doing, before this change too).
        let keyframes = if gop == "10" { Some(Sampling::Keyframes) } else { None };
        let samplings = [Sampling::Fps(1.0), Sampling::Fps(0.25), Sampling::EveryNth(37)];
        for sampling in samplings.into_iter().chain(keyframes) {
            let some = pixels(&video, &bytes, sampling);
            assert_eq!(some.len(), sampling.targets(&video).len(), "gop {gop}, {sampling}");
            for (pts, hash) in &some {
                assert_eq!(
                    all.get(pts),
                    Some(hash),
                    "gop {gop}, {sampling}: frame at {pts} differs from a full decode"
                );
            }
        }
        if gop == "10" {
            let keys: Vec<i64> = video.samples.iter().filter(|s| s.is_sync).map(|s| s.presentation_ts).collect();
            let one_fps: Vec<i64> = Sampling::Fps(1.0).targets(&video).into_iter().collect();
            assert!(one_fps.iter().all(|p| keys.contains(p)), "a keyframe a second: 1 fps takes the keyframes");
        } else {
            let keys = video.samples.iter().filter(|s| s.is_sync).count();
            assert!(Sampling::Fps(0.25).targets(&video).len() == 3 && keys > 1, "open groups are not aligned");
        }
    }
}
