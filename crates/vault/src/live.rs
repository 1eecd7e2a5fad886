//! `GET /api/v1/live`: server-sent events telling a signed-in page that something new is there
//! to fetch: `recording` when an upload of its account is stored, `event` when the index took
//! results of its account. The data is only what kind of thing changed; the page asks the API
//! for the rest, with the same scoping as always.
//!
//! Each vault tells what it stored or indexed itself; with several replicas, a page hears of
//! the changes of the replica it is connected to.

use crate::error::ApiResult;
use crate::AppState;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::broadcast;

/// Notes kept for slow listeners; one that falls further behind is told `lagged` and refreshes.
const BACKLOG: usize = 256;

#[derive(Debug, Clone)]
pub struct Note {
    pub account: String,
    pub kind: &'static str,
}

pub fn channel() -> broadcast::Sender<Note> {
    broadcast::channel(BACKLOG).0
}

#[utoipa::path(get, path = "/api/v1/live", tag = "live",
    responses((status = 200, description = "Server-sent events `recording` and `event` for the account", content_type = "text/event-stream")))]
pub async fn stream(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let account = s.accounts.authenticate(&headers)?.name.clone();
    let notes = s.live.subscribe();
    let stop = s.shutdown.clone();
    let events = futures::stream::unfold((notes, account, stop), |(mut notes, account, stop)| async move {
        loop {
            let note = tokio::select! {
                note = notes.recv() => note,
                // Ends the stream so a vault that stops is not held open by pages.
                _ = stop.cancelled() => return None,
            };
            let event = match note {
                Ok(n) if n.account == account => Event::default().event(n.kind).data(n.kind),
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(_)) => Event::default().event("lagged").data("lagged"),
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            return Some((Ok(event), (notes, account, stop)));
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
