// New recordings and events as they happen, from the vault's server-sent events: pages
// subscribe with `onLive` and refresh what they show.
//
// A browser opens at most six HTTP/1.1 connections to one host, and an open stream holds one
// for as long as it lives: six tabs, or pages kept in the back-forward cache, would leave none
// for the API. So only a page that is shown holds a stream; one shown again refreshes, since it
// may have missed news while hidden.
type Listener = (kind: string) => void;
const listeners = new Set<Listener>();
const KINDS = ["recording", "event"];

export function onLive(listener: Listener): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

function tell(kind: string) {
  listeners.forEach((l) => l(kind));
}

/// Follows the stream while the page is shown; returns what stops it.
export function live(): () => void {
  let source: EventSource | null = null;
  const open = () => {
    if (source || document.visibilityState !== "visible") return;
    source = new EventSource("/api/v1/live");
    for (const kind of KINDS) source.addEventListener(kind, () => tell(kind));
    source.addEventListener("lagged", () => KINDS.forEach(tell));
  };
  const close = () => {
    source?.close();
    source = null;
  };
  const shown = () => {
    if (document.visibilityState !== "visible") return close();
    if (source) return;
    open();
    KINDS.forEach(tell);
  };
  document.addEventListener("visibilitychange", shown);
  addEventListener("pagehide", close);
  addEventListener("pageshow", shown);
  open();
  return () => {
    close();
    document.removeEventListener("visibilitychange", shown);
    removeEventListener("pagehide", close);
    removeEventListener("pageshow", shown);
  };
}
