// The vault's API as the app uses it: same origin, the session cookie, the CSRF token on every
// state-changing call, errors as `ApiError` with the vault's message.

export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

let csrf = "";

export function setCsrf(token: string) {
  csrf = token;
}

export async function api<T>(path: string, init: RequestInit = {}): Promise<T> {
  const headers = new Headers(init.headers);
  const method = (init.method ?? "GET").toUpperCase();
  if (method !== "GET" && method !== "HEAD") headers.set("X-CSRF-Token", csrf);
  if (init.body) headers.set("Content-Type", "application/json");
  const resp = await fetch(path, { ...init, headers, credentials: "same-origin" });
  if (resp.status === 204) return undefined as T;
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new ApiError(body.error ?? `${resp.status} ${resp.statusText}`, resp.status);
  return body as T;
}

export type Session = { account: string; csrf_token: string; expires_ms: number };

export type Device = {
  device: string;
  camera: string;
  recordings: number;
  /// Unix milliseconds, as every time in the API.
  last_upload_ms: number | null;
  last_recorded_ms: number | null;
  last_heartbeat_ms: number | null;
  /// With `?events_since_ms=`: events per label since then, and the newest event's picture.
  events_since?: { counts: Record<string, number>; newest_event: number | null; thumbnail_url: string | null };
};

export type Zone = { zone: string; entered_ms: number; left_ms: number; dwell_ms: number };

export type Event = {
  id: number;
  device: string;
  model: string;
  label: string;
  start_ms: number;
  end_ms: number;
  duration_ms: number;
  best_score: number;
  zones: Zone[];
  thumbnail_url: string;
};

export type EventPage = { events: Event[]; next_cursor: string | null };

export type EventDetail = Event & {
  recordings: { chunk_id: string; recorded_ms: number; tracks: number[] }[];
};

export type Recording = {
  chunk_id: string;
  device: string;
  camera: string;
  size: number;
  recorded_ms: number;
  duration_ms: number | null;
};

export type Box = [number, number, number, number];
export type Frame = { pts_ms: number; detections: { label: string; score: number; box: Box }[] };
export type TrackView = {
  id: number;
  event_id: number;
  label: string;
  first_ms: number;
  last_ms: number;
  best_score: number;
  boxes: { pts_ms: number; box: Box; score: number }[];
};
export type Detections = {
  chunk_id: string;
  recorded_ms: number;
  results: { model: string; width: number; height: number; frames: Frame[]; tracks: TrackView[] }[];
};

export type Summary = { bucket: string; buckets: { start_ms: number; counts: Record<string, number> }[] };

export function query(params: Record<string, string | number | undefined | null>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  const s = q.toString();
  return s ? `?${s}` : "";
}
