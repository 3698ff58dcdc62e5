// The portal: sign in with an API key, then one page per concern, chosen by the URL's hash (#/keys…).
import { useEffect, useState } from "react";
import { currentSession, signOut, rememberSession, type Session } from "./api";
import { SignIn } from "./pages/SignIn";
import { Overview } from "./pages/Overview";
import { Keys } from "./pages/Keys";
import { Users } from "./pages/Users";
import { Channels } from "./pages/Channels";
import { LiveTail } from "./pages/LiveTail";
import { Usage } from "./pages/Usage";
import { Webhooks } from "./pages/Webhooks";
import { Origins } from "./pages/Origins";
import { TailProvider, useTail } from "./tail";
import { describe } from "./ui";

export const PAGES = [
  { id: "overview", title: "Overview", page: Overview },
  { id: "keys", title: "API keys", page: Keys },
  { id: "users", title: "Users", page: Users },
  { id: "channels", title: "Channels", page: Channels },
  { id: "tail", title: "Live tail", page: LiveTail },
  { id: "usage", title: "Usage and billing", page: Usage },
  { id: "webhooks", title: "Webhooks", page: Webhooks },
  { id: "cors", title: "CORS origins", page: Origins },
] as const;

function pageFromHash(): string {
  const id = window.location.hash.replace(/^#\/?/, "");
  return PAGES.some((p) => p.id === id) ? id : "overview";
}

export function App() {
  const [session, setSession] = useState<Session | null | undefined>(undefined);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    currentSession().then(
      (s) => {
        rememberSession(s);
        setSession(s);
      },
      (err: unknown) => {
        setError(describe(err));
        setSession(null);
      },
    );
  }, []);
  const signedIn = (s: Session) => {
    rememberSession(s);
    setSession(s);
  };
  const signedOut = () => {
    rememberSession(null);
    setSession(null);
  };
  if (session === undefined) {
    return (
      <main className="centered">
        <p aria-live="polite">Loading…</p>
      </main>
    );
  }
  if (session === null) return <SignIn onSignedIn={signedIn} error={error} />;
  return (
    <TailProvider onRefused={signedOut}>
      <Shell session={session} onSignedOut={signedOut} />
    </TailProvider>
  );
}

function Shell({ session, onSignedOut }: { session: Session; onSignedOut: () => void }) {
  const [current, setCurrent] = useState(pageFromHash);
  const [error, setError] = useState<string | null>(null);
  const tail = useTail();
  useEffect(() => {
    const onHash = () => setCurrent(pageFromHash());
    window.addEventListener("hashchange", onHash);
    return () => window.removeEventListener("hashchange", onHash);
  }, []);
  const page = PAGES.find((p) => p.id === current) ?? PAGES[0];
  const Page = page.page;
  useEffect(() => {
    document.title = `${page.title} · CAAS console`;
  }, [page.title]);
  const out = async () => {
    try {
      await signOut();
      onSignedOut();
    } catch (err) {
      setError(describe(err));
    }
  };
  return (
    <div className="shell">
      <header className="topbar">
        <span className="brand">CAAS console</span>
        <span className="tenant">
          {session.tenant_name ?? session.tenant_id} <span className="muted">({session.tenant_id})</span>
        </span>
        <span className={`status status-${tail.status}`} aria-live="polite">
          Live tail: {tail.status}
        </span>
        <button type="button" onClick={out}>
          Sign out
        </button>
      </header>
      <nav aria-label="Console pages" className="sidebar">
        <ul>
          {PAGES.map((p) => (
            <li key={p.id}>
              <a href={`#/${p.id}`} aria-current={p.id === current ? "page" : undefined}>
                {p.title}
              </a>
            </li>
          ))}
        </ul>
      </nav>
      <main className="content">
        <h1>{page.title}</h1>
        {error ? (
          <p role="alert" className="error">
            {error}
          </p>
        ) : null}
        <Page session={session} />
      </main>
    </div>
  );
}
