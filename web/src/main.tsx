// Osprey's web app: sign in with an account's keys, then cameras, a camera's timeline, events,
// the player with its boxes, and the system's health. Routes live in the URL's hash so the
// vault serves one page.
import { render } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";
import { api, ApiError, Session, setCsrf } from "./api";
import { Cameras } from "./cameras";
import { Events } from "./events";
import { Player } from "./player";
import { System } from "./system";
import { Timeline } from "./timeline";
import { live } from "./live";

export type Route = { page: string; arg: string; params: URLSearchParams };

function route(): Route {
  const [path, q] = location.hash.replace(/^#\/?/, "").split("?");
  const [page, ...rest] = path.split("/");
  return { page: page || "cameras", arg: decodeURIComponent(rest.join("/")), params: new URLSearchParams(q ?? "") };
}

export function go(hash: string) {
  location.hash = hash;
}

function SignIn({ onSignedIn }: { onSignedIn: (s: Session) => void }) {
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  // `autofocus` works once per document: after signing out, the form takes the focus itself.
  const first = useRef<HTMLInputElement>(null);
  useEffect(() => first.current?.focus(), []);
  async function submit(e: SubmitEvent) {
    e.preventDefault();
    const form = new FormData(e.target as HTMLFormElement);
    setBusy(true);
    try {
      const body = JSON.stringify({ access_key: form.get("access_key"), secret_key: form.get("secret_key") });
      onSignedIn(await api<Session>("/api/v1/session", { method: "POST", body }));
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  }
  return (
    <main class="signin">
      <h1>Osprey</h1>
      <form onSubmit={submit} aria-describedby="signin-error">
        <label>
          Access key <input name="access_key" autocomplete="username" required autofocus ref={first} />
        </label>
        <label>
          Secret key <input name="secret_key" type="password" autocomplete="current-password" required />
        </label>
        <button type="submit" disabled={busy}>
          Sign in
        </button>
        <p id="signin-error" class="error" role="alert">
          {error}
        </p>
      </form>
    </main>
  );
}

function App() {
  const [session, setSession] = useState<Session | null | undefined>(undefined);
  const [at, setAt] = useState(route());
  useEffect(() => {
    const moved = () => setAt(route());
    addEventListener("hashchange", moved);
    api<Session | null>("/api/v1/session")
      .then((s) => (s ? signedIn(s) : setSession(null)))
      .catch(() => setSession(null));
    return () => removeEventListener("hashchange", moved);
  }, []);
  useEffect(() => (session ? live() : undefined), [session]);
  function signedIn(s: Session) {
    setCsrf(s.csrf_token);
    setSession(s);
  }
  async function signOut() {
    await api("/api/v1/session", { method: "DELETE" }).catch(() => undefined);
    setSession(null);
  }
  if (session === undefined) return <p class="loading">Loading…</p>;
  if (session === null) return <SignIn onSignedIn={signedIn} />;
  const pages: Record<string, [string, () => preact.JSX.Element]> = {
    cameras: ["Cameras", () => <Cameras />],
    timeline: ["Timeline", () => <Timeline device={at.arg} params={at.params} />],
    events: ["Events", () => <Events params={at.params} />],
    play: ["Player", () => <Player chunk={at.arg} params={at.params} />],
    system: ["System", () => <System />],
  };
  const [title, page] = pages[at.page] ?? pages.cameras;
  document.title = `${title} · Osprey`;
  return (
    <>
      <header>
        <nav aria-label="Main">
          <a href="#/" class="brand">
            Osprey
          </a>
          <a href="#/" aria-current={at.page === "cameras" ? "page" : undefined}>
            Cameras
          </a>
          <a href="#/events" aria-current={at.page === "events" ? "page" : undefined}>
            Events
          </a>
          <a href="#/system" aria-current={at.page === "system" ? "page" : undefined}>
            System
          </a>
        </nav>
        <span class="who">
          {session.account}{" "}
          <button type="button" onClick={signOut}>
            Sign out
          </button>
        </span>
      </header>
      <main id="main">
        <ErrorBoundary key={location.hash}>{page()}</ErrorBoundary>
      </main>
    </>
  );
}

function ErrorBoundary({ children }: { children: preact.ComponentChildren }) {
  return <>{children}</>;
}

addEventListener("unhandledrejection", (e) => {
  if (e.reason instanceof ApiError && e.reason.status === 401) location.reload();
});

render(<App />, document.getElementById("app")!);
