//! What each fuzz target does with its input, and the invariants it checks. The same bodies run
//! under libFuzzer (`fuzz_targets/`) and, over the committed corpus, as ordinary tests on stable
//! (`crates/worker/tests/fuzz_corpus.rs`, which includes this file).
//!
//! A body never returns an error for bad input (that is the parsers' answer); it panics only
//! when an invariant breaks: the whole-file and streamed upload checks disagree, a sample lies
//! outside its buffer, a parsed name does not print back to itself.

use osprey_core::mp4::{check, Mp4Check};
use osprey_media::{decode_frames, Demuxed, Sampling};

/// The vault's upload check, whole and streamed in pieces whose sizes come from the input: both
/// must agree.
pub fn upload_check(data: &[u8]) {
    let whole = check(data);
    let piece = 1 + data.first().copied().unwrap_or(0) as usize % 61;
    let mut streamed = Mp4Check::new();
    let fed = data.chunks(piece).try_for_each(|p| streamed.feed(p)).and_then(|_| streamed.finish());
    assert_eq!(whole.is_ok(), fed.is_ok(), "whole: {whole:?}, streamed by {piece}: {fed:?}");
}

/// The demuxer: an error, or samples that lie inside the buffer, in bounded number.
pub fn demux(data: &[u8]) {
    let Ok(video) = Demuxed::parse(data) else { return };
    assert!(!video.samples.is_empty() && video.samples.len() <= osprey_media::MAX_SAMPLES);
    for s in &video.samples {
        assert!(s.size > 0 && s.offset + s.size <= data.len(), "sample {s:?} of {} bytes", data.len());
    }
    let _ = video.pts_ms(video.samples[0].presentation_ts);
}

/// Demux and decode every frame, as a worker does: an error or frames, never a crash.
pub fn decode(data: &[u8]) {
    let Ok(video) = Demuxed::parse(data) else { return };
    // A bound on the work one input may ask for: decoding is linear in the samples.
    if video.samples.len() > 64 || video.width as u64 * video.height as u64 > 1920 * 1080 {
        return;
    }
    let _ = decode_frames(&video, data, Sampling::All, 1, |_| Ok(()));
}

/// The Kerberos wire parsers: a file name, tus metadata, and upload headers built from the
/// input's lines (`name: value`).
pub fn kerberos_wire(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Some(name) = osprey_kerberos::FileName::parse(text) {
        let again = osprey_kerberos::FileName::parse(&name.to_string());
        assert_eq!(again.as_ref(), Some(&name), "{text:?} does not print back to itself");
        let _ = name.start_ms();
    }
    let _ = osprey_kerberos::name::leading_secs(text);
    let _ = osprey_kerberos::wire::parse_timestamp_ms(text);
    let _ = osprey_kerberos::wire::parse_duration_ms(text);
    let _ = osprey_kerberos::wire::parse_fps(text);
    let metadata = osprey_kerberos::TusMetadata::parse(text).ok();
    let mut headers = http::HeaderMap::new();
    for line in text.lines() {
        let Some((name, value)) = line.split_once(':') else { continue };
        let (Ok(name), Ok(value)) =
            (http::HeaderName::try_from(name.trim()), http::HeaderValue::try_from(value.trim()))
        else {
            continue;
        };
        headers.append(name, value);
    }
    if let Ok(parsed) = osprey_kerberos::UploadHeaders::parse(&headers, metadata.as_ref()) {
        // What a forwarding vault sends on is read back as the same values.
        let mut sent = http::HeaderMap::new();
        for (name, value) in parsed.to_pairs() {
            sent.insert(name, http::HeaderValue::try_from(value).expect("values are header values"));
        }
        let again = osprey_kerberos::UploadHeaders::parse(&sent, None).expect("what was parsed parses again");
        assert_eq!(again.duration_ms, parsed.duration_ms, "{text:?}");
        if parsed.timestamp_ms.is_some_and(|t| t >= osprey_kerberos::wire::SECONDS_BELOW) {
            assert_eq!(again.timestamp_ms, parsed.timestamp_ms, "{text:?}");
        }
    }
}
