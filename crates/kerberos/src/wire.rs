//! Kerberos request headers and tus metadata, parsed into typed values at the edge.
//!
//! Units: current Kerberos agents send `Timestamp` as unix milliseconds and `Duration` as
//! milliseconds (agent `models.RecordingUploadMetadata`). Older senders used seconds; they are
//! told apart by magnitude, once, here:
//! - a timestamp below 10^11 is seconds (10^11 ms is March 1973, 10^11 s the year 5138);
//! - a duration with a fraction, or below 100, is seconds (no agent cuts chunks under 0.1 s).

use base64::Engine;
use http::HeaderMap;
use osprey_core::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const ACCESS_KEY: &str = "x-kerberos-storage-accesskey";
pub const SECRET_KEY: &str = "x-kerberos-storage-secretaccesskey";
pub const PROVIDER: &str = "x-kerberos-storage-provider";
pub const FILE_NAME: &str = "x-kerberos-storage-filename";
pub const DIRECTORY: &str = "x-kerberos-storage-directory";
pub const DEVICE: &str = "x-kerberos-storage-device";
pub const CAPTURE: &str = "x-kerberos-storage-capture";
pub const CLOUD_KEY: &str = "x-kerberos-storage-cloudkey";
pub const FPS: &str = "x-kerberos-storage-fps";
pub const DURATION: &str = "x-kerberos-storage-duration";
pub const TIMESTAMP: &str = "x-kerberos-storage-timestamp";

/// Longest header or metadata value accepted.
pub const MAX_VALUE_LEN: usize = 1024;
/// Below this a timestamp is unix seconds, at or above it unix milliseconds.
pub const SECONDS_BELOW: i64 = 100_000_000_000;
/// Below this an integer duration is seconds.
const DURATION_SECONDS_BELOW: f64 = 100.0;
/// Longest duration accepted, in milliseconds (about 11 days).
const MAX_DURATION_MS: f64 = 1e9;

/// The tus `Upload-Metadata` keys a Kerberos agent sends, and the header each stands for.
const METADATA_KEYS: [(&str, &str); 9] = [
    ("filename", FILE_NAME),
    ("provider", PROVIDER),
    ("directory", DIRECTORY),
    ("device", DEVICE),
    ("capture", CAPTURE),
    ("cloudkey", CLOUD_KEY),
    ("fps", FPS),
    ("duration", DURATION),
    ("timestamp", TIMESTAMP),
];

/// What an upload says about its chunk, from its headers or, for tus, its `Upload-Metadata`
/// (a header wins over a metadata value). Empty values count as absent, as agents send them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UploadHeaders {
    pub file_name: String,
    pub provider: Option<String>,
    pub directory: Option<String>,
    pub device: Option<String>,
    pub capture: Option<String>,
    /// The Kerberos Hub public key the agent is linked to (`CloudKey`), passed on in events.
    pub cloud_key: Option<String>,
    pub fps: Option<f64>,
    pub duration_ms: Option<i64>,
    /// When recording started, unix milliseconds.
    pub timestamp_ms: Option<i64>,
}

impl UploadHeaders {
    pub fn parse(headers: &HeaderMap, metadata: Option<&TusMetadata>) -> Result<Self> {
        let value = |name: &str| -> Result<Option<String>> {
            match header(headers, name)? {
                Some(v) => Ok(Some(v)),
                None => Ok(metadata.and_then(|m| m.for_header(name)).map(str::to_string)),
            }
        };
        let file_name =
            value(FILE_NAME)?.ok_or_else(|| Error::invalid("missing header X-Kerberos-Storage-filename"))?;
        Ok(UploadHeaders {
            file_name,
            provider: value(PROVIDER)?,
            directory: value(DIRECTORY)?,
            device: value(DEVICE)?,
            capture: value(CAPTURE)?,
            cloud_key: value(CLOUD_KEY)?,
            fps: value(FPS)?.map(|v| parse_fps(&v)).transpose()?,
            duration_ms: value(DURATION)?.map(|v| parse_duration_ms(&v)).transpose()?,
            timestamp_ms: value(TIMESTAMP)?.map(|v| parse_timestamp_ms(&v)).transpose()?,
        })
    }

    /// The headers as a Kerberos agent sends them (milliseconds), absent values left out.
    pub fn to_pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![(FILE_NAME, self.file_name.clone())];
        let optional = [
            (PROVIDER, self.provider.clone()),
            (DIRECTORY, self.directory.clone()),
            (DEVICE, self.device.clone()),
            (CAPTURE, self.capture.clone()),
            (CLOUD_KEY, self.cloud_key.clone()),
            (FPS, self.fps.map(|f| f.to_string())),
            (DURATION, self.duration_ms.map(format_duration_ms)),
            (TIMESTAMP, self.timestamp_ms.map(format_timestamp_ms)),
        ];
        pairs.extend(optional.into_iter().filter_map(|(name, v)| v.map(|v| (name, v))));
        pairs
    }

    /// The same values as tus `Upload-Metadata`, under the keys a Kerberos agent uses.
    pub fn to_metadata(&self) -> TusMetadata {
        let mut metadata = TusMetadata::default();
        for (name, value) in self.to_pairs() {
            if let Some((key, _)) = METADATA_KEYS.iter().find(|(_, h)| *h == name) {
                metadata.0.insert(key.to_string(), value);
            }
        }
        metadata
    }
}

/// The value of one header, trimmed; `None` when absent or empty. Given twice, not printable
/// ASCII, or longer than [`MAX_VALUE_LEN`]: an error naming the header.
pub fn header(headers: &HeaderMap, name: &str) -> Result<Option<String>> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(Error::invalid(format!("header {name} is given more than once")));
    }
    let text = value.to_str().map_err(|_| Error::invalid(format!("header {name} must be printable ASCII")))?.trim();
    check_len(name, text)?;
    Ok(Some(text.to_string()).filter(|t| !t.is_empty()))
}

fn check_len(name: &str, value: &str) -> Result<()> {
    if value.len() > MAX_VALUE_LEN {
        return Err(Error::invalid(format!("{name} is longer than {MAX_VALUE_LEN} bytes")));
    }
    Ok(())
}

fn bad(name: &str, value: &str) -> Error {
    Error::invalid(format!("{name} has invalid value {value:?}"))
}

/// A time in unix milliseconds as a `Timestamp` value that [`parse_timestamp_ms`] reads back as
/// the same time: milliseconds, except below 10^11 ms (before March 1973, a camera whose clock
/// was never set), which would be read as seconds and are sent as whole seconds instead.
pub fn format_timestamp_ms(ms: i64) -> String {
    match ms >= SECONDS_BELOW {
        true => ms.to_string(),
        false => ms.div_euclid(1000).max(1).to_string(),
    }
}

/// A duration in milliseconds as a `Duration` value that [`parse_duration_ms`] reads back as the
/// same: below 100 ms a bare number would be read as seconds, so it is sent as `0.050`.
pub fn format_duration_ms(ms: i64) -> String {
    match ms >= DURATION_SECONDS_BELOW as i64 {
        true => ms.to_string(),
        false => format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000)),
    }
}

/// A `Timestamp` value in unix milliseconds; seconds (below 10^11) are scaled up.
pub fn parse_timestamp_ms(value: &str) -> Result<i64> {
    let t: i64 = value.parse().ok().filter(|t| *t > 0).ok_or_else(|| bad("timestamp", value))?;
    match t {
        t if t < SECONDS_BELOW => Ok(t * 1000),
        t if t < SECONDS_BELOW * 1000 => Ok(t),
        _ => Err(bad("timestamp", value)),
    }
}

/// A `Duration` value in milliseconds; a value with a fraction, or below 100, is seconds.
pub fn parse_duration_ms(value: &str) -> Result<i64> {
    let d: f64 =
        value.parse().ok().filter(|d: &f64| d.is_finite() && *d >= 0.0).ok_or_else(|| bad("duration", value))?;
    let seconds = value.contains(['.', 'e', 'E']) || d < DURATION_SECONDS_BELOW;
    let ms = if seconds { d * 1000.0 } else { d };
    if ms > MAX_DURATION_MS {
        return Err(bad("duration", value));
    }
    Ok(ms.round() as i64)
}

/// An `Fps` value: frames per second, above 0 and at most 1000.
pub fn parse_fps(value: &str) -> Result<f64> {
    value.parse::<f64>().ok().filter(|f| f.is_finite() && *f > 0.0 && *f <= 1000.0).ok_or_else(|| bad("fps", value))
}

/// tus `Upload-Metadata`: comma-separated `key base64(value)` pairs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TusMetadata(BTreeMap<String, String>);

impl TusMetadata {
    pub fn parse(header: &str) -> Result<Self> {
        let mut pairs = BTreeMap::new();
        for pair in header.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, encoded) = pair.split_once(' ').unwrap_or((pair, ""));
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(Error::invalid(format!("Upload-Metadata key {key:?} is not printable ASCII")));
            }
            let value = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .ok()
                .and_then(|d| String::from_utf8(d).ok())
                .ok_or_else(|| Error::invalid(format!("Upload-Metadata {key} is not base64 UTF-8")))?;
            check_len(&format!("Upload-Metadata {key}"), &value)?;
            // As its header would be: a vault forwarding the upload sends these values as headers,
            // and one it cannot send would be retried forever.
            if !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                return Err(Error::invalid(format!("Upload-Metadata {key} must be printable ASCII, as its header")));
            }
            if pairs.insert(key.to_string(), value).is_some() {
                return Err(Error::invalid(format!("Upload-Metadata {key} is given more than once")));
            }
        }
        Ok(TusMetadata(pairs))
    }

    /// The request's `Upload-Metadata`, if it has one.
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<Self>> {
        header(headers, "upload-metadata")?.map(|v| TusMetadata::parse(&v)).transpose()
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str).map(str::trim).filter(|v| !v.is_empty())
    }

    fn for_header(&self, header: &str) -> Option<&str> {
        let (key, _) = METADATA_KEYS.iter().find(|(_, h)| *h == header)?;
        self.get(key)
    }

    /// The header value, keys sorted and empty values left out, as the Kerberos agent writes it.
    pub fn encode(&self) -> String {
        let engine = base64::engine::general_purpose::STANDARD;
        let pairs: Vec<String> =
            self.0.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| format!("{k} {}", engine.encode(v))).collect();
        pairs.join(",")
    }
}

/// The vault's answer to a stored upload (`POST /storage`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UploadAnswer {
    pub chunk_id: String,
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub provider: String,
    #[serde(default)]
    pub size: i64,
    #[serde(default)]
    pub sha256: String,
    /// The vault had this chunk already, with the same bytes.
    #[serde(default)]
    pub duplicate: bool,
}

/// The facts a Kerberos agent's `POST /devices/heartbeat` carries that Osprey keeps. The agent
/// sends many more (memory, disks, ONVIF presets); they are ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Heartbeat {
    /// The device key: what the agent sends as `X-Kerberos-Storage-Device`.
    pub key: String,
    #[serde(rename = "cameraname")]
    pub camera_name: String,
    pub version: String,
    pub release: String,
    pub hostname: String,
    pub architecture: String,
    pub uptime: String,
    #[serde(rename = "cameraConnected")]
    pub camera_connected: String,
}

impl Heartbeat {
    /// Refuses values no agent sends, so stored facts stay small and printable.
    pub fn validate(&self) -> Result<()> {
        let fields = [
            ("key", &self.key),
            ("cameraname", &self.camera_name),
            ("version", &self.version),
            ("release", &self.release),
            ("hostname", &self.hostname),
            ("architecture", &self.architecture),
            ("uptime", &self.uptime),
            ("cameraConnected", &self.camera_connected),
        ];
        for (name, value) in fields {
            if value.len() > 256 || value.chars().any(char::is_control) {
                return Err(Error::invalid(format!(
                    "heartbeat {name} is longer than 256 bytes or has control characters"
                )));
            }
        }
        if self.key.is_empty() {
            return Err(Error::invalid("heartbeat has no device key"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_milliseconds_and_seconds_are_scaled() {
        assert_eq!(parse_timestamp_ms("1700000000123").unwrap(), 1_700_000_000_123);
        assert_eq!(parse_timestamp_ms("1700000000").unwrap(), 1_700_000_000_000);
        assert_eq!(parse_timestamp_ms("99999999999").unwrap(), 99_999_999_999_000);
        assert_eq!(parse_timestamp_ms("100000000000").unwrap(), 100_000_000_000);
        for bad in ["0", "-5", "abc", "1.5", "99999999999999999"] {
            assert!(parse_timestamp_ms(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn what_a_forwarding_vault_sends_is_read_back_as_the_same_time() {
        for ms in [1_700_000_000_123, 100_000_000_000, 99_999_999_999_999, 5_000_000] {
            let sent = format_timestamp_ms(ms);
            let read = parse_timestamp_ms(&sent).unwrap();
            let expected = if ms >= SECONDS_BELOW { ms } else { ms / 1000 * 1000 };
            assert_eq!(read, expected, "{ms} sent as {sent}");
        }
        for ms in [0, 1, 50, 99, 100, 769, 10_000, 120_250] {
            let sent = format_duration_ms(ms);
            assert_eq!(parse_duration_ms(&sent).unwrap(), ms, "{ms} sent as {sent}");
        }
    }

    #[test]
    fn durations_are_milliseconds_unless_they_look_like_seconds() {
        assert_eq!(parse_duration_ms("10000").unwrap(), 10_000);
        assert_eq!(parse_duration_ms("769").unwrap(), 769);
        assert_eq!(parse_duration_ms("100").unwrap(), 100);
        assert_eq!(parse_duration_ms("10").unwrap(), 10_000);
        assert_eq!(parse_duration_ms("9.5").unwrap(), 9_500);
        assert_eq!(parse_duration_ms("120.25").unwrap(), 120_250);
        for bad in ["-1", "nan", "inf", "x", "1e12"] {
            assert!(parse_duration_ms(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn headers_win_over_metadata_and_empty_is_absent() {
        let mut headers = HeaderMap::new();
        headers.insert(FILE_NAME, "a.mp4".parse().unwrap());
        headers.insert(PROVIDER, "".parse().unwrap());
        headers.insert(DURATION, "5000".parse().unwrap());
        let metadata = TusMetadata::parse(
            &UploadHeaders {
                file_name: "b.mp4".into(),
                provider: Some("s3".into()),
                duration_ms: Some(1),
                fps: Some(12.5),
                timestamp_ms: Some(1_700_000_000_000),
                ..Default::default()
            }
            .to_metadata()
            .encode(),
        )
        .unwrap();
        let parsed = UploadHeaders::parse(&headers, Some(&metadata)).unwrap();
        assert_eq!(parsed.file_name, "a.mp4");
        assert_eq!(parsed.provider.as_deref(), Some("s3"));
        assert_eq!(parsed.duration_ms, Some(5000));
        assert_eq!(parsed.fps, Some(12.5));
        assert_eq!(parsed.timestamp_ms, Some(1_700_000_000_000));
    }

    #[test]
    fn metadata_round_trips_and_refuses_junk() {
        let m = TusMetadata::parse("filename YS5tcDQ=,empty,device Zm9v").unwrap();
        assert_eq!(m.get("filename"), Some("a.mp4"));
        assert_eq!(m.get("empty"), None);
        assert_eq!(TusMetadata::parse(&m.encode()).unwrap().get("device"), Some("foo"));
        assert!(TusMetadata::parse("filename !!!").is_err());
        assert!(TusMetadata::parse("a YQ==,a Yg==").is_err());
        // What no header can carry, so a forwarding vault could not send it on: "Küche", "a\nb".
        for value in ["S8O8Y2hl", "YQpi"] {
            let err = TusMetadata::parse(&format!("device {value}")).unwrap_err();
            assert!(err.to_string().contains("printable ASCII"), "{err}");
        }
    }

    #[test]
    fn duplicate_headers_are_refused() {
        let mut headers = HeaderMap::new();
        headers.append(FILE_NAME, "a.mp4".parse().unwrap());
        headers.append(FILE_NAME, "b.mp4".parse().unwrap());
        assert!(UploadHeaders::parse(&headers, None).is_err());
    }
}
