// New recordings and events as they happen, from the vault's server-sent events: pages
// subscribe with `onLive` and refresh what they show.
type Listener = (kind: string) => void;
const listeners = new Set<Listener>();

export function onLive(listener: Listener): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

/// Opens the stream; returns what closes it.
export function live(): () => void {
  const source = new EventSource("/api/v1/live");
  for (const kind of ["recording", "event"]) {
    source.addEventListener(kind, () => listeners.forEach((l) => l(kind)));
  }
  return () => source.close();
}
