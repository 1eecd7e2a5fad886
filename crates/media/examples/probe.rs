//! Prints what the demuxer and decoder see in an MP4: `cargo run -p osprey-media --example probe FILE`.
fn main() {
    let path = std::env::args().nth(1).expect("usage: probe FILE.mp4");
    let bytes = std::fs::read(&path).unwrap();
    let video = osprey_media::Demuxed::parse(&bytes).unwrap();
    println!(
        "{:?} {}x{} timescale {} samples {} fragmented {}",
        video.codec,
        video.width,
        video.height,
        video.timescale,
        video.samples.len(),
        video.fragmented
    );
    for s in video.samples.iter().take(12) {
        println!("  #{} dts {} pts {} sync {} size {}", s.index, s.decode_ts, s.presentation_ts, s.is_sync, s.size);
    }
    let sampling: osprey_media::Sampling = std::env::args().nth(2).unwrap_or("all".into()).parse().unwrap();
    let targets = sampling.targets(&video);
    let mut seen = Vec::new();
    osprey_media::decode_frames(&video, &bytes, sampling, 1, |f| {
        seen.push(f.pts);
        Ok(())
    })
    .unwrap();
    println!(
        "targets {} decoded {} missing {:?}",
        targets.len(),
        seen.len(),
        targets.iter().filter(|t| !seen.contains(t)).collect::<Vec<_>>()
    );
}
