//! Cutting the sample video into chunks: each a valid MP4 that starts at a keyframe, decodes
//! completely, and together they hold every frame.

use osprey_media::{decode_frames, Demuxed, Sampling};
use osprey_testkit::repo_root;

#[test]
fn chunks_are_whole_decodable_mp4s_at_keyframes() {
    let source = std::fs::read(repo_root().join("samples/vtest.mp4")).unwrap();
    let total = Demuxed::parse(&source).unwrap().samples.len();
    let chunks = osprey_agent::cut(&source, 10.0).unwrap();
    assert_eq!(chunks.len(), 8, "79.5 s in 10 s chunks");
    let mut frames = 0;
    for chunk in &chunks {
        let video = Demuxed::parse(&chunk.bytes).unwrap_or_else(|e| panic!("chunk {}: {e}", chunk.index));
        assert!(video.samples[0].is_sync, "chunk {} starts at a keyframe", chunk.index);
        assert_eq!((video.width, video.height), (768, 576));
        assert_eq!(video.samples.len(), chunk.frames);
        // Every frame decodes: nothing depends on a frame left in another chunk.
        let decoded = decode_frames(&video, &chunk.bytes, Sampling::All, 1, |_| Ok(())).unwrap();
        assert_eq!(decoded, chunk.frames, "chunk {}", chunk.index);
        assert!(chunk.duration_secs <= 10.0 + 1e-6, "chunk {} lasts {}", chunk.index, chunk.duration_secs);
        frames += chunk.frames;
    }
    assert_eq!(frames, total);
    let starts: Vec<f64> = chunks.iter().map(|c| c.start_secs).collect();
    assert!(starts.windows(2).all(|w| w[1] > w[0]) && starts[0] == 0.0, "{starts:?}");
}

#[test]
fn ffmpeg_reads_the_chunks() {
    let source = std::fs::read(repo_root().join("samples/vtest.mp4")).unwrap();
    let chunk = osprey_agent::cut(&source, 5.0).unwrap().remove(1);
    let dir = std::env::temp_dir().join(format!("osprey-chunk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("chunk.mp4");
    std::fs::write(&path, &chunk.bytes).unwrap();
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=codec_name,nb_read_frames",
            "-of",
            "csv=p=0",
        ])
        .arg(&path)
        .output()
        .expect("ffprobe (apt-get install ffmpeg)");
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("h264,{}", chunk.frames),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
