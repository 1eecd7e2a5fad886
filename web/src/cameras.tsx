import { useEffect, useState } from "preact/hooks";
import { api, Device, query } from "./api";
import { ago, colour, startOfDay } from "./format";
import { onLive } from "./live";

/// Every camera of the account: its latest event's picture, when it was last seen, and today's
/// events per label, from one call however many cameras there are.
export function Cameras() {
  const [devices, setDevices] = useState<Device[] | null>(null);
  const [error, setError] = useState("");
  const [tick, setTick] = useState(0);
  useEffect(() => onLive(() => setTick((t) => t + 1)), []);
  useEffect(() => {
    const since = startOfDay(Date.now());
    api<{ devices: Device[] }>(`/api/v1/devices${query({ events_since_ms: since })}`)
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
          <CameraCard key={d.device} device={d} />
        ))}
      </ul>
    </section>
  );
}

function CameraCard({ device }: { device: Device }) {
  const latest = device.events_since?.thumbnail_url;
  const counts = device.events_since?.counts ?? {};
  const seen = Math.max(device.last_upload_ms ?? 0, device.last_heartbeat_ms ?? 0) || null;
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
