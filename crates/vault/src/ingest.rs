//! `POST /storage`: the Kerberos Agent upload, streamed to a provider, recorded with its event.

use crate::claims::{ClaimGuard, Claims};
use crate::db::{OutboxRow, Recording};
use crate::error::ApiResult;
use crate::{metrics as m, AppState};
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use osprey_core::mp4::Mp4Check;
use osprey_core::{ChunkEvent, ChunkId, Error, ErrorKind, EventMetadata, EventPayload, ObjectKey, Result, Timestamp};
use osprey_kerberos::name::leading_secs;
use osprey_kerberos::{FileName, TusMetadata, UploadHeaders};
use osprey_store::{Provider, Stored};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// First boxes an MP4 (ISO BMFF) upload may start with.
const MP4_FIRST_BOXES: [&[u8; 4]; 2] = [b"ftyp", b"styp"];

/// What an upload's headers (and, failing those, its file name) say about the chunk.
#[derive(Debug)]
struct UploadMeta {
    provider: String,
    key: ObjectKey,
    device: String,
    camera: String,
    capture: String,
    fps: Option<f64>,
    duration_ms: Option<i64>,
    recorded_at: Timestamp,
    region: String,
    changes: Option<i64>,
    /// Kerberos fields passed on in the event as the agent sent them.
    cloud_key: String,
    microseconds: String,
    token: String,
}

pub async fn upload(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> ApiResult<Json<Value>> {
    let result = store(&s, &headers, body).await;
    Ok(Json(answer(result)?))
}

/// Counts the outcome and shapes the JSON answer of a finished upload (plain or tus).
pub(crate) fn answer(result: Result<(Recording, bool)>) -> Result<Value> {
    let label = match &result {
        Ok((_, true)) => "duplicate",
        Ok((_, false)) => "stored",
        Err(_) => "rejected",
    };
    metrics::counter!(m::UPLOADS, "result" => label).increment(1);
    let (recording, duplicate) = result?;
    if !duplicate {
        metrics::counter!(m::UPLOAD_BYTES).increment(recording.size as u64);
    }
    Ok(json!({
        "chunk_id": recording.chunk_id,
        "key": recording.object_key,
        "provider": recording.provider,
        "size": recording.size,
        "sha256": recording.sha256,
        "duplicate": duplicate,
    }))
}

/// An upload whose headers passed every check: who sends it, where it goes, what it is.
pub(crate) struct Accepted {
    pub account: String,
    meta: UploadMeta,
    pub chunk_id: ChunkId,
}

/// Authenticates the upload and checks its headers (and tus metadata), before any byte of the
/// body is read.
pub(crate) fn accept(s: &AppState, headers: &HeaderMap, metadata: Option<&TusMetadata>) -> Result<Accepted> {
    let account = s.accounts.authenticate(headers)?;
    let mut sent = UploadHeaders::parse(headers, metadata)?;
    if sent.provider.is_none() {
        sent.provider = account.main_provider(s.providers.iter().map(|p| p.name()));
    }
    let meta = UploadMeta::new(sent, &account.name, s.clock.timestamp())?;
    let provider = s
        .providers
        .get(&meta.provider)
        .ok_or_else(|| Error::invalid(format!("unknown provider {:?}", meta.provider)))?;
    if !account.may_use(provider.name()) {
        return Err(Error::new(
            ErrorKind::PermissionDenied,
            format!("account {} may not use provider {}", account.name, provider.name()),
        ));
    }
    let chunk_id = ChunkId::derive(provider.name(), meta.key.as_str());
    Ok(Accepted { account: account.name.clone(), meta, chunk_id })
}

/// Stores the upload; returns its recording and whether it was already stored.
async fn store(s: &Arc<AppState>, headers: &HeaderMap, body: Body) -> Result<(Recording, bool)> {
    let accepted = accept(s, headers, None)?;
    check_content_type(headers)?;
    let max = s.config.vault.max_upload_bytes;
    let length = content_length(headers)?;
    if length.is_some_and(|len| len > max) {
        return Err(Error::new(ErrorKind::TooLarge, format!("upload is larger than the limit of {max} bytes")));
    }
    store_body(s, accepted, length, body.into_data_stream()).await
}

/// Streams an accepted upload's body (of `length` bytes, when announced) to its provider and
/// records it with its event; a retry of a stored chunk with the same bytes is recognised,
/// different bytes are a conflict. The work runs in a task of its own, so a client that hangs
/// up after its last byte cannot stop it halfway: between the object and its row, or with its
/// row still waiting in the writer after its claim was released.
pub(crate) async fn store_body<S, E>(
    s: &Arc<AppState>,
    accepted: Accepted,
    length: Option<u64>,
    body: S,
) -> Result<(Recording, bool)>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin + 'static,
    E: Into<BoxError> + Send + 'static,
{
    let state = s.clone();
    let task = s.tasks.spawn(async move {
        let fragmented = Arc::new(AtomicBool::new(false));
        let body = Mp4Stream::new(body, length, fragmented.clone());
        let key = accepted.meta.key.to_string();
        let Some(claim) = state.claims.claim(accepted.chunk_id.as_str(), &accepted.meta.provider, &key).await? else {
            return Err(Claims::busy(&key));
        };
        let stored = store_claimed(&state, &accepted, body, &claim, &fragmented).await;
        // Released before answering, so a client's next request finds the chunk free.
        claim.release().await;
        stored
    });
    task.await.map_err(|e| Error::internal("upload task failed").with_source(e))?
}

async fn store_claimed<S>(
    s: &AppState,
    accepted: &Accepted,
    body: S,
    claim: &ClaimGuard,
    fragmented: &AtomicBool,
) -> Result<(Recording, bool)>
where
    S: Stream<Item = std::result::Result<Bytes, BoxError>> + Send,
{
    let (meta, chunk_id) = (&accepted.meta, &accepted.chunk_id);
    let provider = s
        .providers
        .get(&meta.provider)
        .ok_or_else(|| Error::invalid(format!("unknown provider {:?}", meta.provider)))?;
    let max = s.config.vault.max_upload_bytes;
    if claim.took_over() {
        // A dead vault's upload of this chunk: its staging and multipart temporaries go now.
        match provider.remove_partials(&meta.key, chunk_id.as_str()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(key = %meta.key, removed = n, "removed a dead upload's temporaries"),
            Err(e) => tracing::warn!(key = %meta.key, error = %e, "cannot remove a dead upload's temporaries"),
        }
    }
    if let Some(existing) = s.db.recording(chunk_id.as_str()).await? {
        // Already stored: read the upload aside and compare, so a retry is recognised.
        let staged = provider.stage(chunk_id.as_str(), body, max).await?;
        let same = existing.sha256 == staged.sha256;
        provider.discard(staged).await;
        return match same {
            true => Ok((existing, true)),
            false => {
                Err(Error::new(ErrorKind::Conflict, format!("{} is already stored with different content", meta.key)))
            }
        };
    }
    // No recording, and none can appear while the claim is held: write in place. An object
    // already there is a dead upload's orphan and is replaced.
    let stored = provider.put(&meta.key, body, max).await?;
    let recording = meta.recording(&accepted.account, chunk_id, &stored, s.clock.timestamp());
    let event = outbox_row(&recording, meta, fragmented.load(Ordering::Relaxed));
    if let Err(e) = s.db.insert_claimed(&recording, &event, claim.owner()).await {
        remove_unrecorded(s, provider, accepted, claim).await;
        return Err(e);
    }
    s.relay_wake.notify_one();
    s.forward_wake.notify_one();
    // Nobody listening is fine.
    s.live.send(crate::live::Note::new(recording.account.clone(), "recording")).ok();
    tracing::debug!(chunk_id = %chunk_id, key = %meta.key, size = stored.size, "chunk stored");
    Ok((recording, false))
}

/// After a failed insert: removes the object just written, but only while this process still
/// holds the claim and no row points at the object; otherwise leaves it for reconciliation.
async fn remove_unrecorded(s: &AppState, provider: &Provider, accepted: &Accepted, claim: &ClaimGuard) {
    let key = &accepted.meta.key;
    let recorded = s.db.recording(accepted.chunk_id.as_str()).await;
    let held = claim.still_held().await;
    match (recorded, held) {
        (Ok(None), Ok(true)) => {
            if let Err(e) = provider.delete(key).await {
                tracing::error!(%key, error = %e, "cannot remove object after a failed insert; reconciliation will");
            }
        }
        (recorded, held) => tracing::error!(
            %key,
            recorded = ?recorded.map(|r| r.is_some()),
            held = ?held,
            "object kept after a failed insert: a row points at it or the claim was lost"
        ),
    }
}

fn outbox_row(r: &Recording, meta: &UploadMeta, is_fragmented: bool) -> OutboxRow {
    let kerberos = (meta.token.clone(), meta.microseconds.clone(), meta.cloud_key.clone());
    let event = chunk_event(r, kerberos, is_fragmented);
    OutboxRow {
        id: 0,
        topic: osprey_core::TOPIC_CHUNKS.to_string(),
        msg_key: r.device.clone(),
        chunk_id: r.chunk_id.clone(),
        payload: serde_json::to_string(&event).expect("events serialise"),
        created_at: r.uploaded_at,
    }
}

/// The chunk event of a stored recording, its signed URL left for the relay to fill in;
/// `kerberos` is the token, microseconds and public key the agent sent, passed on as they were.
pub(crate) fn chunk_event(r: &Recording, kerberos: (String, String, String), is_fragmented: bool) -> ChunkEvent {
    let (token, microseconds, public_key) = kerberos;
    ChunkEvent {
        date: r.uploaded_at.secs(),
        events: vec!["analysis".to_string()],
        provider: "kstorage".to_string(),
        source: r.provider.clone(),
        request: "persist".to_string(),
        chunk_id: r.chunk_id.clone(),
        trace_id: uuid::Uuid::new_v4().simple().to_string(),
        payload: EventPayload {
            key: r.object_key.to_string(),
            file_size: r.size as u64,
            is_fragmented,
            bytes_ranges: String::new(),
            bytes_range_on_time: None,
            signed_url: String::new(),
            metadata: EventMetadata {
                timestamp: r.recorded_at.secs().to_string(),
                instance_name: r.camera.clone(),
                product_id: r.device.clone(),
                region_coordinates: r.region.clone(),
                number_of_changes: r.changes.map(|c| c.to_string()).unwrap_or_default(),
                upload_time: r.uploaded_at.secs().to_string(),
                duration: r.duration_ms.map(|d| d.to_string()).unwrap_or_default(),
                fps: r.fps.map(|f| f.to_string()).unwrap_or_default(),
                capture: r.capture.clone(),
                token,
                microseconds,
                public_key,
            },
        },
        reanalyse_job: None,
    }
}

impl UploadMeta {
    fn new(sent: UploadHeaders, account: &str, now: Timestamp) -> Result<Self> {
        let provider = sent.provider.ok_or_else(|| {
            Error::invalid("missing header X-Kerberos-Storage-provider, and no provider is configured")
        })?;
        let file_name = osprey_core::key::encode_file_name(&sent.file_name)?;
        // Kerberos agents send an empty directory when none is configured: use the account's.
        let key = account_key(account, sent.directory.as_deref(), &file_name)?;
        let name = FileName::parse(&sent.file_name);
        let instance = name.as_ref().map(|n| n.instance.clone());
        let device = sent
            .device
            .or_else(|| instance.clone())
            .ok_or_else(|| Error::invalid("missing header X-Kerberos-Storage-device"))?;
        let started_ms = sent
            .timestamp_ms
            .or_else(|| name.as_ref().map(FileName::start_ms))
            .or_else(|| leading_secs(&sent.file_name).map(|s| s * 1000))
            .unwrap_or(now.millis());
        let microseconds = match &name {
            Some(n) => n.sub_second.clone(),
            None => osprey_kerberos::name::sub_second(started_ms),
        };
        Ok(UploadMeta {
            provider,
            key,
            camera: instance.unwrap_or_else(|| device.clone()),
            device,
            capture: sent.capture.unwrap_or_default(),
            fps: sent.fps,
            duration_ms: sent.duration_ms.or_else(|| name.as_ref().and_then(FileName::duration_ms)),
            recorded_at: Timestamp::from_millis(started_ms),
            region: name.as_ref().map(|n| n.region.clone()).unwrap_or_default(),
            changes: name.as_ref().map(|n| n.changes),
            cloud_key: sent.cloud_key.unwrap_or_default(),
            microseconds,
            token: name.map(|n| n.last.to_string()).unwrap_or_default(),
        })
    }

    fn recording(&self, account: &str, chunk_id: &ChunkId, stored: &Stored, now: Timestamp) -> Recording {
        Recording {
            chunk_id: chunk_id.clone(),
            account: account.to_string(),
            provider: self.provider.clone(),
            object_key: self.key.clone(),
            device: self.device.clone(),
            camera: self.camera.clone(),
            capture: self.capture.clone(),
            size: stored.size as i64,
            sha256: stored.sha256.clone(),
            recorded_at: self.recorded_at,
            uploaded_at: now,
            duration_ms: self.duration_ms,
            fps: self.fps,
            region: self.region.clone(),
            changes: self.changes,
            deleting_at: None,
            lost_at: None,
        }
    }
}

fn check_content_type(headers: &HeaderMap) -> Result<()> {
    let Some(value) = headers.get("content-type") else { return Ok(()) };
    let essence = value.to_str().unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match essence.as_str() {
        "video/mp4" | "application/octet-stream" => Ok(()),
        other => Err(Error::new(ErrorKind::UnsupportedMedia, format!("content type {other:?} is not video/mp4"))),
    }
}

fn content_length(headers: &HeaderMap) -> Result<Option<u64>> {
    let Some(value) = headers.get("content-length") else { return Ok(None) };
    value.to_str().ok().and_then(|v| v.parse().ok()).map(Some).ok_or_else(|| Error::invalid("invalid content-length"))
}

/// The object key of an upload: inside the account's namespace. Kerberos agents name a
/// directory, by default the account's own name: that, or none, is the account's top level;
/// any other directory is a folder inside it, never another account's space.
pub(crate) fn account_key(account: &str, directory: Option<&str>, file_name: &str) -> Result<ObjectKey> {
    match directory {
        None => ObjectKey::new(account, file_name),
        Some(d) if d == account => ObjectKey::new(account, file_name),
        Some(d) => {
            // Validated on its own first, so an error names what the client sent.
            ObjectKey::new(d, file_name)?;
            ObjectKey::new(&format!("{account}/{d}"), file_name)
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An upload body passed through the MP4 structure check and, when the request announced one,
/// a length check: a body that is not a complete MP4, or stops short of its `Content-Length`,
/// ends in an error instead of its end, so the write is aborted and nothing is kept.
struct Mp4Stream<S> {
    inner: S,
    check: Mp4Check,
    seen: u64,
    length: Option<u64>,
    done: bool,
    /// Set at a good end: whether the file has `moof` fragments.
    fragmented: Arc<AtomicBool>,
}

impl<S> Mp4Stream<S> {
    fn new(inner: S, length: Option<u64>, fragmented: Arc<AtomicBool>) -> Self {
        Mp4Stream { inner, check: Mp4Check::new(), seen: 0, length, done: false, fragmented }
    }

    fn at_end(&self) -> Result<()> {
        if let Some(length) = self.length.filter(|l| *l != self.seen) {
            return Err(Error::invalid(format!(
                "body ended after {} of the {length} bytes its length announced",
                self.seen
            )));
        }
        self.check.finish()?;
        self.fragmented.store(self.check.is_fragmented(), Ordering::Relaxed);
        Ok(())
    }
}

impl<S, E> Stream for Mp4Stream<S>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: Into<BoxError>,
{
    type Item = std::result::Result<Bytes, BoxError>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let item = match futures::ready!(this.inner.poll_next_unpin(cx)) {
            Some(Ok(piece)) => {
                this.seen += piece.len() as u64;
                this.check.feed(&piece).map(|_| piece)
            }
            Some(Err(e)) => {
                this.done = true;
                return Poll::Ready(Some(Err(e.into())));
            }
            None => {
                this.done = true;
                return Poll::Ready(this.at_end().err().map(|e| Err(e.into())));
            }
        };
        this.done = item.is_err();
        Poll::Ready(Some(item.map_err(Into::into)))
    }
}

/// Whether the first 8 bytes of a file are an `ftyp` or `styp` box header.
pub(crate) fn looks_like_mp4(head: &[u8]) -> bool {
    head.len() >= 8 && MP4_FIRST_BOXES.iter().any(|b| &head[4..8] == *b)
}

pub(crate) fn not_mp4() -> Error {
    Error::new(ErrorKind::UnsupportedMedia, "body is not an MP4 file: it must start with an ftyp or styp box")
}
