import { useEffect, useRef, useState } from "preact/hooks";
import { api, Box, Detections, query, Recording, TrackView } from "./api";
import { colour, duration, time } from "./format";
import { go } from "./main";

type Result = Detections["results"][number];

/// One recording with what the workers found drawn over it, in step with playback and seeking;
/// its tracks (click one to jump to it); the recordings before and after it.
export function Player({ chunk, params }: { chunk: string; params: URLSearchParams }) {
  const video = useRef<HTMLVideoElement>(null);
  const canvas = useRef<HTMLCanvasElement>(null);
  const [rec, setRec] = useState<Recording | null>(null);
  const [src, setSrc] = useState("");
  const [result, setResult] = useState<Result | null>(null);
  const [near, setNear] = useState<{ prev?: string; next?: string }>({});
  const [error, setError] = useState("");
  useEffect(() => {
    setError("");
    const id = encodeURIComponent(chunk);
    Promise.all([
      api<Recording>(`/api/v1/recordings/${id}`),
      api<{ url: string }>(`/api/v1/recordings/${id}/url`),
      api<Detections>(`/api/v1/recordings/${id}/detections`),
    ])
      .then(([r, u, d]) => {
        setRec(r);
        setSrc(sameOrigin(u.url));
        setResult(d.results[0] ?? null);
        neighbours(r).then(setNear);
      })
      .catch((e) => setError(e.message));
  }, [chunk]);
  const start = Number(params.get("t") ?? 0) / 1000;
  useEffect(() => {
    const v = video.current;
    const c = canvas.current;
    if (!v || !c || !src) return;
    let stop = false;
    const draw = () => drawAt(v, c, result);
    const loop = () => {
      if (stop) return;
      draw();
      if ("requestVideoFrameCallback" in v) v.requestVideoFrameCallback(loop);
      else requestAnimationFrame(loop);
    };
    const ready = () => {
      if (start > 0 && v.currentTime === 0) v.currentTime = start;
      draw();
    };
    v.addEventListener("loadeddata", ready);
    v.addEventListener("seeked", draw);
    v.addEventListener("play", loop);
    addEventListener("resize", draw);
    return () => {
      stop = true;
      v.removeEventListener("loadeddata", ready);
      v.removeEventListener("seeked", draw);
      v.removeEventListener("play", loop);
      removeEventListener("resize", draw);
    };
  }, [src, result]);
  if (error) return <p role="alert" class="error">{error}</p>;
  if (!rec) return <p class="loading">Loading the recording…</p>;
  const seek = (ms: number) => {
    if (video.current) video.current.currentTime = ms / 1000;
  };
  return (
    <section class="player">
      <h1>
        {rec.camera || rec.device} · <time>{time(rec.recorded_ms)}</time>
      </h1>
      <div class="stage">
        <video
          ref={video}
          src={src}
          controls
          muted
          playsInline
          preload="auto"
          onEnded={() => near.next && go(`#/play/${encodeURIComponent(near.next)}`)}
          aria-label={`Recording from ${rec.camera || rec.device}`}
        />
        <canvas ref={canvas} aria-hidden="true" />
      </div>
      <p class="actions">
        {near.prev && <a href={`#/play/${encodeURIComponent(near.prev)}`}>← Previous recording</a>}
        <a href={src} download>
          Download
        </a>
        <a href={`#/timeline/${encodeURIComponent(rec.device)}`}>Timeline</a>
        {near.next && <a href={`#/play/${encodeURIComponent(near.next)}`}>Next recording →</a>}
      </p>
      <h2>Tracks</h2>
      {!result && <p>Not analysed yet.</p>}
      <ul class="tracks">
        {result?.tracks.map((t) => (
          <li>
            <button type="button" onClick={() => seek(t.first_ms)}>
              <span class="tag" style={{ borderColor: colour(t.label) }}>
                {t.label} #{t.id}
              </span>{" "}
              {(t.first_ms / 1000).toFixed(1)} s, {duration(t.last_ms - t.first_ms)}, best{" "}
              {(t.best_score * 100).toFixed(0)}%
            </button>
          </li>
        ))}
      </ul>
    </section>
  );
}

/// A link to the vault itself becomes a path, so the page's origin serves it whatever name the
/// vault was reached by; a storage provider's own link stays as it is.
function sameOrigin(url: string): string {
  const u = new URL(url, location.href);
  return u.pathname.startsWith("/api/v1/download/") ? u.pathname + u.search : url;
}

async function neighbours(r: Recording): Promise<{ prev?: string; next?: string }> {
  type Page = { recordings: Recording[] };
  const after = await api<Page>(`/api/v1/recordings${query({ device: r.device, from_ms: r.recorded_ms + 1, limit: 1000 })}`);
  const before = await api<Page>(`/api/v1/recordings${query({ device: r.device, to_ms: r.recorded_ms - 1, limit: 1 })}`);
  return { next: after.recordings.at(-1)?.chunk_id, prev: before.recordings[0]?.chunk_id };
}

/// Draws the boxes of the tracks alive at the video's time (moved between analysed frames),
/// scaled to where the picture sits in the element; notes how many in `data-boxes`.
function drawAt(v: HTMLVideoElement, c: HTMLCanvasElement, result: Result | null) {
  const scale = devicePixelRatio || 1;
  c.width = Math.round(v.clientWidth * scale);
  c.height = Math.round(v.clientHeight * scale);
  const g = c.getContext("2d")!;
  g.clearRect(0, 0, c.width, c.height);
  if (!result || !v.videoWidth) {
    c.dataset.boxes = "0";
    return;
  }
  const fit = Math.min(c.width / v.videoWidth, c.height / v.videoHeight);
  const [ox, oy] = [(c.width - v.videoWidth * fit) / 2, (c.height - v.videoHeight * fit) / 2];
  const sx = (v.videoWidth / result.width) * fit;
  const sy = (v.videoHeight / result.height) * fit;
  const t = v.currentTime * 1000;
  let drawn = 0;
  g.lineWidth = 3 * scale;
  g.font = `${14 * scale}px system-ui, sans-serif`;
  for (const track of result.tracks) {
    const b = boxAt(track, t);
    if (!b) continue;
    const [x1, y1, x2, y2] = [ox + b[0] * sx, oy + b[1] * sy, ox + b[2] * sx, oy + b[3] * sy];
    g.strokeStyle = g.fillStyle = colour(track.label);
    g.strokeRect(x1, y1, x2 - x1, y2 - y1);
    g.fillText(`${track.label} #${track.id}`, x1 + 4 * scale, Math.max(y1 - 4 * scale, 14 * scale));
    drawn++;
  }
  c.dataset.boxes = String(drawn);
}

/// The track's box at `t` ms: between two analysed frames it moves in a straight line; it is
/// shown up to one analysis interval past its last box.
function boxAt(track: TrackView, t: number): Box | null {
  const boxes = track.boxes;
  if (!boxes.length || t < boxes[0].pts_ms) return null;
  for (let i = 0; i < boxes.length; i++) {
    const a = boxes[i];
    const b = boxes[i + 1];
    if (!b) {
      const step = i > 0 ? a.pts_ms - boxes[i - 1].pts_ms : 500;
      return t <= a.pts_ms + step ? a.box : null;
    }
    if (t < b.pts_ms) {
      const k = (t - a.pts_ms) / (b.pts_ms - a.pts_ms);
      return a.box.map((v, j) => v + (b.box[j] - v) * k) as Box;
    }
  }
  return null;
}
