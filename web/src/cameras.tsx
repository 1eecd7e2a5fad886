import { useEffect, useState } from "preact/hooks";
import { api, Device, EventPage, query, Summary } from "./api";
import { ago, colour, startOfDay } from "./format";
import { onLive } from "./live";

/// Every camera of the account: its latest event's picture, when it was last seen, and today's
/// events per label.
export function Cameras() {
  const [devices, setDevices] = useState<Device[] | null>(null);
  const [error, setError] = useState("");
  const [tick, setTick] = useState(0);
  useEffect(() => onLive(() => setTick((t) => t + 1)), []);
  useEffect(() => {
    api<{ devices: Device[] }>("/api/v1/devices")
      .then((d) => setDevices(d.devices))
      .catch((e) => setError(e.message));
  }, [tick]);
  if (error) return <p role="alert" class="error">{error}</p>;
  if (!devices) return <p class="loading">Loading cameras…</p>;
  return (
    <section>
      <h1>Cameras</h1>
      {devices.length === 0 && <p>No camera has uploaded yet.</p>}
      <ul class="cards cameras">
        {devices.map((d) => (
          <CameraCard key={d.device} device={d} tick={tick} />
        ))}
      </ul>
    </section>
  );
}

function CameraCard({ device, tick }: { device: Device; tick: number }) {
  const [latest, setLatest] = useState<string | null>(null);
  const [counts, setCounts] = useState<Record<string, number>>({});
  useEffect(() => {
    api<EventPage>(`/api/v1/events${query({ device: device.device, limit: 1 })}`).then((p) =>
      setLatest(p.events[0]?.thumbnail_url ?? null),
    );
    const from = Math.floor(startOfDay(Date.now()) / 1000);
    api<Summary>(`/api/v1/summary${query({ bucket: "day", device: device.device, from })}`).then((s) => {
      const total: Record<string, number> = {};
      for (const b of s.buckets) for (const [l, n] of Object.entries(b.counts)) total[l] = (total[l] ?? 0) + n;
      setCounts(total);
    });
  }, [device.device, tick]);
  const seen = Math.max(device.last_upload_at ?? 0, device.last_heartbeat_at ?? 0) || null;
  return (
    <li class="card">
      <a href={`#/timeline/${encodeURIComponent(device.device)}`}>
        {latest ? (
          <img src={latest} alt={`Latest event on ${device.camera || device.device}`} loading="lazy" />
        ) : (
          <div class="noimage" aria-hidden="true" />
        )}
        <h2>{device.camera || device.device}</h2>
      </a>
      <p>
        Last seen {ago(seen)} · {device.recordings} recordings
      </p>
      <p class="counts" aria-label="Events today">
        {Object.keys(counts).length === 0 && "No events today"}
        {Object.entries(counts).map(([label, n]) => (
          <span class="tag" style={{ borderColor: colour(label) }}>
            {label} {n}
          </span>
        ))}
      </p>
    </li>
  );
}
