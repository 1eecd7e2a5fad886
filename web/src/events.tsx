import { useEffect, useState } from "preact/hooks";
import { api, Device, Event, EventDetail, EventPage, query } from "./api";
import { colour, duration, time } from "./format";
import { onLive } from "./live";
import { go } from "./main";

const FILTERS = ["device", "label", "zone", "from", "to", "min_score", "min_duration"] as const;

/// Events newest first, filtered by the URL's parameters, a page at a time.
export function Events({ params }: { params: URLSearchParams }) {
  const filters = Object.fromEntries(FILTERS.map((f) => [f, params.get(f) ?? ""]));
  const [events, setEvents] = useState<Event[]>([]);
  const [cursor, setCursor] = useState<string | null>(null);
  const [error, setError] = useState("");
  const [loading, setLoading] = useState(true);
  const [tick, setTick] = useState(0);
  useEffect(() => onLive((kind) => kind === "event" && setTick((t) => t + 1)), []);
  const key = params.toString();
  function load(after: string | null) {
    setLoading(true);
    const { from, to, min_duration, ...rest } = filters;
    const q = { ...rest, from_ms: ms(from), to_ms: ms(to), min_duration_ms: min_duration, limit: 60, cursor: after };
    api<EventPage>(`/api/v1/events${query(q)}`)
      .then((p) => {
        setEvents((old) => (after ? [...old, ...p.events] : p.events));
        setCursor(p.next_cursor);
        setError("");
      })
      .catch((e) => setError(e.message))
      .finally(() => setLoading(false));
  }
  useEffect(() => load(null), [key, tick]);
  return (
    <section>
      <h1>Events</h1>
      <Filters values={filters} />
      {error && <p role="alert" class="error">{error}</p>}
      <ul class="cards events" aria-busy={loading}>
        {events.map((e) => (
          <EventCard key={e.id} event={e} />
        ))}
      </ul>
      {!loading && events.length === 0 && !error && <p>No events match.</p>}
      {cursor && (
        <button type="button" class="more" disabled={loading} onClick={() => load(cursor)}>
          More events
        </button>
      )}
    </section>
  );
}

/// `datetime-local` text to unix milliseconds.
function ms(local: string): string {
  return local ? String(new Date(local).getTime()) : "";
}

function Filters({ values }: { values: Record<string, string> }) {
  const [devices, setDevices] = useState<Device[]>([]);
  useEffect(() => {
    api<{ devices: Device[] }>("/api/v1/devices").then((d) => setDevices(d.devices));
  }, []);
  function submit(e: SubmitEvent) {
    e.preventDefault();
    const form = new FormData(e.target as HTMLFormElement);
    const q = new URLSearchParams();
    for (const f of FILTERS) {
      const v = String(form.get(f) ?? "");
      if (v) q.set(f, v);
    }
    go(`#/events?${q}`);
  }
  return (
    // Uncontrolled fields, remade when the URL's filters change: what a user types stays put
    // while the camera list loads.
    <form class="filters" onSubmit={submit} role="search" key={JSON.stringify(values)}>
      <label>
        Camera
        <select name="device">
          <option value="">All</option>
          {devices.map((d) => (
            <option value={d.device} selected={d.device === values.device}>
              {d.camera || d.device}
            </option>
          ))}
        </select>
      </label>
      <label>
        Label <input name="label" defaultValue={values.label} placeholder="person" />
      </label>
      <label>
        Zone <input name="zone" defaultValue={values.zone} />
      </label>
      <label>
        From <input name="from" type="datetime-local" defaultValue={values.from} />
      </label>
      <label>
        To <input name="to" type="datetime-local" defaultValue={values.to} />
      </label>
      <label>
        Min. score <input name="min_score" type="number" min="0" max="1" step="0.05" defaultValue={values.min_score} />
      </label>
      <label>
        Min. duration (ms) <input name="min_duration" type="number" min="0" step="500" defaultValue={values.min_duration} />
      </label>
      <button type="submit">Search</button>
    </form>
  );
}

function EventCard({ event: e }: { event: Event }) {
  async function open() {
    const d = await api<EventDetail>(`/api/v1/events/${e.id}`);
    const first = d.recordings[0];
    if (first) go(`#/play/${encodeURIComponent(first.chunk_id)}?t=${Math.max(0, e.start_ms - first.recorded_ms)}`);
  }
  return (
    <li class="card event">
      <button type="button" onClick={open} aria-label={`Play ${e.label} on ${e.device} at ${time(e.start_ms)}`}>
        <img src={e.thumbnail_url} alt="" loading="lazy" />
      </button>
      <p>
        <span class="tag" style={{ borderColor: colour(e.label) }}>
          {e.label}
        </span>{" "}
        {(e.best_score * 100).toFixed(0)}% · {duration(e.duration_ms)}
      </p>
      <p>
        <time dateTime={new Date(e.start_ms).toISOString()}>{time(e.start_ms)}</time> · {e.device}
      </p>
      {e.zones.length > 0 && <p>Zones: {e.zones.map((z) => z.zone).join(", ")}</p>}
    </li>
  );
}
