import { useEffect, useState } from "preact/hooks";
import { api, Event, EventPage, query, Recording } from "./api";
import { colour, startOfDay, time } from "./format";
import { onLive } from "./live";
import { go } from "./main";

const DAY = 86_400_000;
const HOUR = 3_600_000;

/// One camera's day: its recordings as blocks on a strip, its events as marks by label. Zoom to
/// an hour; click a recording or a mark to play it.
export function Timeline({ device, params }: { device: string; params: URLSearchParams }) {
  const day = Number(params.get("day") ?? startOfDay(Date.now()));
  const hour = params.get("hour");
  const [from, span] = hour === null ? [day, DAY] : [day + Number(hour) * HOUR, HOUR];
  const [recordings, setRecordings] = useState<Recording[] | null>(null);
  const [events, setEvents] = useState<Event[]>([]);
  const [error, setError] = useState("");
  const [tick, setTick] = useState(0);
  useEffect(() => onLive(() => setTick((t) => t + 1)), []);
  useEffect(() => {
    const range = { device, from_ms: from, to_ms: from + span - 1, limit: 1000 };
    Promise.all([
      api<{ recordings: Recording[] }>(`/api/v1/recordings${query(range)}`),
      api<EventPage>(`/api/v1/events${query(range)}`),
    ])
      .then(([r, e]) => {
        setRecordings(r.recordings.reverse());
        setEvents(e.events);
      })
      .catch((e) => setError(e.message));
  }, [device, from, span, tick]);
  const at = (ms: number) => `${(100 * (ms - from)) / span}%`;
  const width = (ms: number) => `${Math.max((100 * ms) / span, 0.15)}%`;
  const link = (q: Record<string, number | null>) =>
    `#/timeline/${encodeURIComponent(device)}${query({ day, ...q })}`;
  if (error) return <p role="alert" class="error">{error}</p>;
  return (
    <section>
      <h1>{device}</h1>
      <p class="actions">
        <a href={link({ day: day - DAY, hour: null })}>← Day before</a>
        <strong>{new Date(from).toDateString()}</strong>
        {hour !== null && <a href={link({ hour: null })}>Whole day</a>}
        <a href={link({ day: day + DAY, hour: null })}>Day after →</a>
      </p>
      <div class="strip" aria-label={`${recordings?.length ?? 0} recordings`} data-recordings={recordings?.length}>
        {recordings?.map((r) => (
          <a
            class="rec"
            href={`#/play/${encodeURIComponent(r.chunk_id)}`}
            style={{ left: at(r.recorded_ms), width: width(r.duration_ms ?? 1000) }}
            title={time(r.recorded_ms)}
            aria-label={`Recording at ${time(r.recorded_ms)}`}
          />
        ))}
        {events.map((e) => (
          <span class="mark" style={{ left: at(e.start_ms), background: colour(e.label) }} title={e.label} />
        ))}
      </div>
      <div class="hours" aria-label="Zoom to an hour">
        {hour === null &&
          Array.from({ length: 24 }, (_, h) => (
            <a href={link({ hour: h })} style={{ left: at(day + h * HOUR) }}>
              {h}
            </a>
          ))}
      </div>
      <p>
        {recordings?.length ?? "…"} recordings, {events.length} events.{" "}
        {recordings?.[0] && (
          <button type="button" onClick={() => go(`#/play/${encodeURIComponent(recordings[0].chunk_id)}`)}>
            Play from the first
          </button>
        )}
      </p>
      <ul class="legend">
        {[...new Set(events.map((e) => e.label))].map((l) => (
          <li>
            <span class="swatch" style={{ background: colour(l) }} /> {l}
          </li>
        ))}
      </ul>
    </section>
  );
}
