import { useEffect, useState } from "preact/hooks";
import { api } from "./api";
import { ago } from "./format";

type Health = { status: string; outbox_pending?: number; error?: string };
type Facts = {
  outbox_pending: number;
  not_analysed: number;
  storage: { provider: string; recordings: number; bytes: number }[];
  models: { model: string; results: number; recent: number; last_indexed_ms: number }[];
};

/// The vault's health, and this account's storage, models and the workers' backlog and pace.
export function System() {
  const [health, setHealth] = useState<Health | null>(null);
  const [facts, setFacts] = useState<Facts | null>(null);
  const [error, setError] = useState("");
  useEffect(() => {
    const load = () => {
      fetch("/healthz")
        .then((r) => r.json())
        .then(setHealth)
        .catch((e) => setHealth({ status: "unreachable", error: String(e) }));
      api<Facts>("/api/v1/system")
        .then(setFacts)
        .catch((e) => setError(e.message));
    };
    load();
    const every = setInterval(load, 5000);
    return () => clearInterval(every);
  }, []);
  return (
    <section>
      <h1>System</h1>
      {error && <p role="alert" class="error">{error}</p>}
      <dl class="facts">
        <dt>Vault</dt>
        <dd>{health ? health.status : "…"}</dd>
        {health?.error && (
          <>
            <dt>Error</dt>
            <dd>{health.error}</dd>
          </>
        )}
        <dt>Events waiting to be published</dt>
        <dd>{facts?.outbox_pending ?? "…"}</dd>
        <dt>Recordings waiting for a worker</dt>
        <dd>{facts?.not_analysed ?? "…"}</dd>
      </dl>
      <h2>Storage</h2>
      <table>
        <thead>
          <tr>
            <th scope="col">Provider</th>
            <th scope="col">Recordings</th>
            <th scope="col">Size</th>
          </tr>
        </thead>
        <tbody>
          {facts?.storage.map((p) => (
            <tr>
              <td>{p.provider}</td>
              <td>{p.recordings}</td>
              <td>{size(p.bytes)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <h2>Models</h2>
      <table>
        <thead>
          <tr>
            <th scope="col">Model</th>
            <th scope="col">Results</th>
            <th scope="col">Last hour</th>
            <th scope="col">Last result</th>
          </tr>
        </thead>
        <tbody>
          {facts?.models.map((m) => (
            <tr>
              <td>{m.model}</td>
              <td>{m.results}</td>
              <td>{m.recent}</td>
              <td>{ago(m.last_indexed_ms)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

function size(bytes: number): string {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (bytes >= 1000 && i < units.length - 1) (bytes /= 1000), i++;
  return `${bytes.toFixed(i ? 1 : 0)} ${units[i]}`;
}
