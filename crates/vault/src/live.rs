//! `GET /api/v1/live`: server-sent events telling a signed-in page that something new is there
//! to fetch: `recording` when an upload of its account is stored, `event` when the index took
//! results of its account. The data is only what kind of thing changed; the page asks the API
//! for the rest, with the same scoping as always.
//!
//! Each vault tells what it stored or indexed itself; with several replicas, a page hears of
//! the changes of the replica it is connected to.
//!
//! Invariants: a stream obeys the session it was opened with: it ends at once when that session
//! signs out on this replica, and within `vault.live_recheck_secs` when it expired, signed out on
//! another replica, or its account's keys were rotated or removed; it carries nothing after.
//! An account holds at most `vault.live_streams_per_account` streams, a session at most
//! `vault.live_streams_per_session` and a client address at most `vault.live_streams_per_client`
//! (429 beyond), fewer than one address's connections, so streams cannot take the connections
//! API calls need, however many accounts one holds.

use crate::error::{too_many_requests, ApiResult};
use crate::session::SessionRef;
use crate::AppState;
use axum::extract::{Request, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Notes kept for slow listeners; one that falls further behind is told `lagged` and refreshes.
const BACKLOG: usize = 256;

#[derive(Debug, Clone)]
pub struct Note {
    pub account: String,
    pub kind: &'static str,
    /// For `session_ended`: the digest of the session's token.
    session: Option<String>,
}

impl Note {
    pub fn new(account: String, kind: &'static str) -> Note {
        Note { account, kind, session: None }
    }

    /// The session with this token digest signed out: its streams end.
    pub fn session_ended(digest: String) -> Note {
        Note { account: String::new(), kind: "session_ended", session: Some(digest) }
    }
}

pub fn channel() -> broadcast::Sender<Note> {
    broadcast::channel(BACKLOG).0
}

/// Streams open per account and per session.
#[derive(Default)]
pub struct Streams(Mutex<HashMap<String, usize>>);

/// One open stream's places in [`Streams`]; dropping it frees them.
struct Held {
    state: Arc<AppState>,
    names: Vec<String>,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut open = self.state.streams.0.lock().unwrap();
        for name in &self.names {
            if let Some(n) = open.get_mut(name) {
                *n -= 1;
                if *n == 0 {
                    open.remove(name);
                }
            }
        }
    }
}

impl Streams {
    /// Takes a place for a stream of `account` (and `session`), or says which cap is full.
    fn take(state: &Arc<AppState>, client: IpAddr, account: &str, session: Option<&str>) -> Result<Held, &'static str> {
        let v = &state.config.vault;
        let mut wanted = vec![
            (format!("client:{client}"), v.live_streams_per_client, "client"),
            (format!("account:{account}"), v.live_streams_per_account, "account"),
        ];
        if let Some(digest) = session {
            wanted.push((format!("session:{digest}"), v.live_streams_per_session, "session"));
        }
        let mut open = state.streams.0.lock().unwrap();
        if let Some((_, _, cap)) = wanted.iter().find(|(name, max, _)| open.get(name).copied().unwrap_or(0) >= *max) {
            return Err(cap);
        }
        for (name, _, _) in &wanted {
            *open.entry(name.clone()).or_default() += 1;
        }
        Ok(Held { state: state.clone(), names: wanted.into_iter().map(|(name, _, _)| name).collect() })
    }
}

#[utoipa::path(get, path = "/api/v1/live", tag = "live",
    responses((status = 200, description = "Server-sent events `recording` and `event` for the account", content_type = "text/event-stream"),
        (status = 429, description = "The account or the session has as many streams open as it may")))]
pub async fn stream(State(s): State<Arc<AppState>>, request: Request) -> ApiResult<Response> {
    let account = s.accounts.authenticate(request.headers())?.name.clone();
    let session = request.extensions().get::<SessionRef>().map(|SessionRef(digest)| digest.clone());
    let client = crate::auth::client_ip(&s, &request);
    let held = match Streams::take(&s, client, &account, session.as_deref()) {
        Ok(held) => held,
        Err(cap) => {
            ::metrics::counter!(crate::metrics::LIVE_REFUSED, "cap" => cap).increment(1);
            let why = format!("this {cap} has as many live streams open as it may (vault.live_streams_per_{cap})");
            return Ok(too_many_requests(&why, s.config.vault.live_recheck));
        }
    };
    let every = s.config.vault.live_recheck;
    let recheck = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let follow = Follow { notes: s.live.subscribe(), recheck, account, session, state: s.clone(), _held: held };
    let events = futures::stream::unfold(follow, |mut f| async move {
        let event = f.next().await?;
        Some((Ok::<_, std::convert::Infallible>(event), f))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}

/// What one stream follows: the notes of its account, while its session lasts.
struct Follow {
    notes: broadcast::Receiver<Note>,
    /// Ticks every `vault.live_recheck_secs` for the whole stream, whatever it sends between.
    recheck: tokio::time::Interval,
    account: String,
    session: Option<String>,
    state: Arc<AppState>,
    _held: Held,
}

impl Follow {
    /// The next event to send, or `None` when the stream must end.
    async fn next(&mut self) -> Option<Event> {
        loop {
            let note = tokio::select! {
                note = self.notes.recv() => note,
                _ = self.recheck.tick() => {
                    if !self.session_is_good().await { return None }
                    continue;
                }
                // Ends the stream so a vault that stops is not held open by pages.
                _ = self.state.shutdown.cancelled() => return None,
            };
            let event = match note {
                Ok(n) if n.kind == "session_ended" => {
                    if n.session.is_some() && n.session == self.session {
                        return None;
                    }
                    continue;
                }
                Ok(n) if n.account == self.account => Event::default().event(n.kind).data(n.kind),
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(_)) => Event::default().event("lagged").data("lagged"),
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            // Nothing is carried for a session that ended since the last look.
            if !self.session_is_good().await {
                return None;
            }
            return Some(event);
        }
    }

    /// Whether the stream may go on: its session is live with the keys it was made with, or,
    /// opened with keys, its account is still configured.
    async fn session_is_good(&self) -> bool {
        match &self.session {
            Some(digest) => match crate::session::by_digest(&self.state, digest).await {
                Ok(found) => found.is_some_and(|s| s.account == self.account),
                // The database is away for a moment: keep the stream, look again next time.
                Err(e) => {
                    tracing::debug!(error = %e, "cannot check a live stream's session");
                    true
                }
            },
            None => self.state.accounts.keys_of(&self.account).is_some(),
        }
    }
}
