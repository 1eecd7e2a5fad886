import { useEffect, useState } from "preact/hooks";
import { api } from "./api";

type Health = { status: string; outbox_pending?: number; error?: string };

/// The vault's health as it reports it.
export function System() {
  const [health, setHealth] = useState<Health | null>(null);
  useEffect(() => {
    const load = () =>
      fetch("/healthz")
        .then((r) => r.json())
        .then(setHealth)
        .catch((e) => setHealth({ status: "unreachable", error: String(e) }));
    load();
    const every = setInterval(load, 5000);
    return () => clearInterval(every);
  }, []);
  const [models, setModels] = useState<Record<string, number>>({});
  useEffect(() => {
    api<{ events: { model: string }[] }>("/api/v1/events?limit=1000").then((p) => {
      const m: Record<string, number> = {};
      for (const e of p.events) m[e.model] = (m[e.model] ?? 0) + 1;
      setModels(m);
    });
  }, []);
  return (
    <section>
      <h1>System</h1>
      <dl class="facts">
        <dt>Vault</dt>
        <dd>{health ? health.status : "…"}</dd>
        <dt>Events waiting to be published</dt>
        <dd>{health?.outbox_pending ?? "…"}</dd>
        {health?.error && (
          <>
            <dt>Error</dt>
            <dd>{health.error}</dd>
          </>
        )}
        <dt>Models in the latest 1,000 events</dt>
        <dd>
          {Object.entries(models)
            .map(([m, n]) => `${m} (${n})`)
            .join(", ") || "none yet"}
        </dd>
      </dl>
    </section>
  );
}
