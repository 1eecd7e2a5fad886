//! Where frames come from: an RTSP camera (pulled with `retina`, H.264 as sent, never
//! re-encoded) or an MP4 file (for demos and tests), paced like a camera when asked to.

use crate::chunk::{mp4_frames, Frame};
use futures_util::StreamExt;
use osprey_core::{Error, ErrorKind, Result};
use retina::client::{Credentials, PlayOptions, SessionOptions, SetupOptions, Transport};
use retina::codec::{CodecItem, FrameFormat, ParametersRef};
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant;
use url::Url;

/// A camera that sends nothing for this long is treated as gone.
const STALL: Duration = Duration::from_secs(10);
/// Longest wait for a camera to answer DESCRIBE, SETUP and PLAY.
const CONNECT: Duration = Duration::from_secs(20);
/// RTCP "goodbye": the sender ends the stream (a file played to its end, a camera shutting down).
const RTCP_BYE: u8 = 203;

#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    File(PathBuf),
    Rtsp(Url),
}

impl SourceSpec {
    /// `rtsp://[user:password@]host[:port]/path`, or a path to an MP4 file.
    pub fn parse(source: &str) -> Result<SourceSpec> {
        if source.contains("://") {
            let url = Url::parse(source).map_err(|e| Error::invalid(format!("agent: bad source URL: {e}")))?;
            return match url.scheme() {
                "rtsp" => Ok(SourceSpec::Rtsp(url)),
                other => Err(Error::invalid(format!(
                    "agent: source scheme {other:?} is not supported; use rtsp:// or a file path"
                ))),
            };
        }
        Ok(SourceSpec::File(PathBuf::from(source)))
    }

    /// The source as it may be logged: no password.
    pub fn display(&self) -> String {
        match self {
            SourceSpec::File(path) => path.display().to_string(),
            SourceSpec::Rtsp(url) => {
                let mut url = url.clone();
                url.set_password(None).ok();
                url.set_username("").ok();
                url.to_string()
            }
        }
    }
}

/// One connection to a camera, or one pass over a file.
pub enum Session {
    File(FileSession),
    Rtsp(Box<RtspSession>),
}

impl Session {
    pub async fn open(spec: &SourceSpec, realtime: bool, transport: &Transport) -> Result<Session> {
        match spec {
            SourceSpec::File(path) => Ok(Session::File(FileSession::open(path, realtime).await?)),
            SourceSpec::Rtsp(url) => {
                let session = tokio::time::timeout(CONNECT, RtspSession::open(url, transport))
                    .await
                    .map_err(|_| Error::unavailable(format!("rtsp: no answer within {} s", CONNECT.as_secs())))??;
                Ok(Session::Rtsp(Box::new(session)))
            }
        }
    }

    /// The next frame in decode order; `None` when the source ended.
    pub async fn next(&mut self) -> Result<Option<Frame>> {
        match self {
            Session::File(s) => Ok(s.next().await),
            Session::Rtsp(s) => s.next().await,
        }
    }

    /// Picture width and height, as the stream describes them now.
    pub fn size(&self) -> (u32, u32) {
        match self {
            Session::File(s) => s.size,
            Session::Rtsp(s) => s.size,
        }
    }
}

pub struct FileSession {
    frames: std::vec::IntoIter<Frame>,
    size: (u32, u32),
    /// With real-time pacing: when the first frame is due, and its presentation time.
    pace: Option<(Instant, f64)>,
}

impl FileSession {
    async fn open(path: &std::path::Path, realtime: bool) -> Result<FileSession> {
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|e| Error::invalid(format!("agent: cannot read {}", path.display())).with_source(e))?;
        let (frames, size) = tokio::task::spawn_blocking(move || -> Result<_> {
            let video = osprey_media::Demuxed::parse(&bytes)?;
            Ok((mp4_frames(&video, &bytes)?, (video.width, video.height)))
        })
        .await
        .map_err(|e| Error::internal("reading the source failed").with_source(e))??;
        let first = frames.iter().map(|f| f.pts).fold(f64::INFINITY, f64::min);
        let pace = realtime.then(|| (Instant::now(), first));
        Ok(FileSession { frames: frames.into_iter(), size, pace })
    }

    async fn next(&mut self) -> Option<Frame> {
        let frame = self.frames.next()?;
        if let Some((start, first)) = self.pace {
            tokio::time::sleep_until(start + Duration::from_secs_f64((frame.pts - first).max(0.0))).await;
        }
        Some(frame)
    }
}

pub struct RtspSession {
    demuxed: retina::client::Demuxed,
    stream: usize,
    size: (u32, u32),
}

impl RtspSession {
    async fn open(url: &Url, transport: &Transport) -> Result<RtspSession> {
        let (url, creds) = split_credentials(url);
        let unavailable = |what: &str, e: retina::Error| Error::unavailable(format!("rtsp: {what} failed: {e}"));
        let options =
            SessionOptions::default().creds(creds).user_agent(format!("osprey/{}", env!("CARGO_PKG_VERSION")));
        let mut session =
            retina::client::Session::describe(url, options).await.map_err(|e| unavailable("DESCRIBE", e))?;
        let stream = session
            .streams()
            .iter()
            .position(|s| s.media() == "video" && s.encoding_name().eq_ignore_ascii_case("h264"))
            .ok_or_else(|| Error::new(ErrorKind::UnsupportedMedia, "rtsp: the camera offers no H.264 video stream"))?;
        let setup = SetupOptions::default().transport(transport.clone()).frame_format(FrameFormat::SIMPLE);
        session.setup(stream, setup).await.map_err(|e| unavailable("SETUP", e))?;
        let playing = session.play(PlayOptions::default()).await.map_err(|e| unavailable("PLAY", e))?;
        let demuxed = playing.demuxed().map_err(|e| unavailable("demuxing", e))?;
        let mut session = RtspSession { demuxed, stream, size: (0, 0) };
        session.read_size();
        Ok(session)
    }

    async fn next(&mut self) -> Result<Option<Frame>> {
        // Measured from the last frame: RTCP and keep-alives go on flowing from a stuck camera.
        let deadline = Instant::now() + STALL;
        loop {
            let item = tokio::time::timeout_at(deadline, self.demuxed.next())
                .await
                .map_err(|_| Error::unavailable(format!("rtsp: no frame for {} s", STALL.as_secs())))?;
            let frame = match item {
                None => return Ok(None),
                Some(Err(e)) => return Err(Error::unavailable(format!("rtsp: {e}"))),
                Some(Ok(CodecItem::VideoFrame(frame))) if frame.stream_id() == self.stream => frame,
                Some(Ok(CodecItem::Rtcp(rtcp))) if rtcp.pkts().any(|p| p.payload_type() == RTCP_BYE) => {
                    return Ok(None)
                }
                Some(Ok(_)) => continue,
            };
            if frame.has_new_parameters() || self.size == (0, 0) {
                self.read_size();
            }
            if frame.loss() > 0 {
                metrics::counter!(crate::metrics::RTP_PACKETS_LOST_TOTAL).increment(frame.loss() as u64);
            }
            return Ok(Some(Frame {
                pts: frame.timestamp().elapsed_secs(),
                keyframe: frame.is_random_access_point(),
                data: frame.into_data(),
            }));
        }
    }

    fn read_size(&mut self) {
        if let Some(ParametersRef::Video(v)) = self.demuxed.streams()[self.stream].parameters() {
            self.size = v.pixel_dimensions();
        }
    }
}

/// retina takes credentials apart from the URL.
fn split_credentials(url: &Url) -> (Url, Option<Credentials>) {
    if url.username().is_empty() {
        return (url.clone(), None);
    }
    let creds = Credentials {
        username: percent_decode(url.username()),
        password: percent_decode(url.password().unwrap_or("")),
    };
    let mut bare = url.clone();
    bare.set_username("").ok();
    bare.set_password(None).ok();
    (bare, Some(creds))
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_and_hide_passwords() {
        assert_eq!(SourceSpec::parse("clips/a.mp4").unwrap(), SourceSpec::File("clips/a.mp4".into()));
        let spec = SourceSpec::parse("rtsp://admin:p%40ss@10.0.0.5:554/stream1").unwrap();
        assert_eq!(spec.display(), "rtsp://10.0.0.5:554/stream1");
        let SourceSpec::Rtsp(url) = spec else { panic!() };
        let (bare, creds) = split_credentials(&url);
        assert_eq!(bare.as_str(), "rtsp://10.0.0.5:554/stream1");
        let creds = creds.unwrap();
        assert_eq!((creds.username.as_str(), creds.password.as_str()), ("admin", "p@ss"));
        let err = SourceSpec::parse("http://camera/stream").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    }
}
