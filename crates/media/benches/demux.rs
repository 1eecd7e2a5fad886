//! Demux cost, side by side in one run: Osprey's bounded demuxer (which runs the recursive
//! structure check first) against re_mp4 0.5.1, the parser it replaced, and the upload check
//! alone (whole, and streamed in 64 KiB pieces as the vault sees a body), on the bundled sample
//! (progressive, 80 s) and a 10 s chunk laid out as the Kerberos agent writes it (fragmented).
//! Prints a table: µs per parse, the median of the rounds.

use std::time::Instant;

fn median_us(rounds: usize, f: &dyn Fn()) -> f64 {
    let mut times: Vec<f64> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    let sample = osprey_testkit::repo_root().join("samples/vtest.mp4");
    let dir = tempfile::tempdir().unwrap();
    let chunk = dir.path().join("kerberos.mp4");
    osprey_testkit::kerberos_fragmented(&sample, "10", "10", &chunk);
    let files = [
        ("sample (80 s, progressive)", std::fs::read(&sample).unwrap()),
        ("chunk (10 s, fragmented)", std::fs::read(&chunk).unwrap()),
    ];
    let rounds = 200;
    println!(
        "{:<28} {:>8} {:>12} {:>12} {:>12} {:>14}",
        "file", "samples", "osprey µs", "re_mp4 µs", "check µs", "streamed µs"
    );
    for (name, bytes) in &files {
        let samples = osprey_media::Demuxed::parse(bytes).unwrap().samples.len();
        let ours = median_us(rounds, &|| {
            std::hint::black_box(osprey_media::Demuxed::parse(bytes).unwrap());
        });
        let theirs = median_us(rounds, &|| {
            std::hint::black_box(re_mp4::Mp4::read_bytes(bytes).unwrap());
        });
        let check = median_us(rounds, &|| osprey_core::mp4::check(bytes).unwrap());
        let streamed = median_us(rounds, &|| {
            let mut c = osprey_core::mp4::Mp4Check::new();
            bytes.chunks(64 << 10).for_each(|p| c.feed(p).unwrap());
            c.finish().unwrap();
        });
        println!("{name:<28} {samples:>8} {ours:>12.1} {theirs:>12.1} {check:>12.1} {streamed:>14.1}");
    }
}
