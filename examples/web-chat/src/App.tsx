import { useEffect, useMemo, useState } from "react";
import {
  CaasProvider,
  ChannelList,
  Composer,
  ConnectionStatus,
  MessageList,
  PresenceBadge,
  Thread,
  TypingIndicator,
  type MessageView,
} from "@caas/react";
import { DEMO_USERS, startSession, type DemoSession } from "./session";

type Theme = "light" | "dark";

export function App() {
  const [session, setSession] = useState<DemoSession | null>(null);
  const [error, setError] = useState("");
  const [theme, setTheme] = useState<Theme>(() => (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light"));
  const signIn = (userId: string) => {
    setError("");
    startSession(userId).then(setSession, (e: Error) => setError(e.message));
  };
  useEffect(() => {
    // ?user=alice signs in at once (links to share, and the browser tests)
    const user = new URLSearchParams(location.search).get("user");
    if (user) signIn(user);
  }, []);
  useEffect(() => {
    document.documentElement.dataset.theme = theme;
  }, [theme]);
  const toggle = (
    <button type="button" className="theme-toggle" onClick={() => setTheme(theme === "dark" ? "light" : "dark")} aria-pressed={theme === "dark"}>
      Dark theme
    </button>
  );
  if (!session) {
    return (
      <div className="caas" data-theme={theme}>
        <main className="signin">
          <h1>CAAS demo chat</h1>
          <p>Pick a demo user. Open another window (or a private one) as someone else to chat between them.</p>
          <ul aria-label="Demo users">
            {DEMO_USERS.map((u) => (
              <li key={u.user_id}>
                <button type="button" onClick={() => signIn(u.user_id)}>
                  Sign in as {u.name}
                </button>
              </li>
            ))}
          </ul>
          {error ? <p role="alert">{error}</p> : null}
          {toggle}
        </main>
      </div>
    );
  }
  return <Chat session={session} theme={theme} toggle={toggle} onSignOut={() => setSession(null)} />;
}

function Chat({ session, theme, toggle, onSignOut }: { session: DemoSession; theme: Theme; toggle: React.ReactNode; onSignOut: () => void }) {
  const names = useMemo(() => Object.fromEntries(session.users.map((u) => [u.user_id, u.name])), [session]);
  const options = useMemo(
    () => ({
      baseUrl: location.origin,
      token: session.token,
      userId: session.user_id,
      refreshToken: async () => (await startSession(session.user_id)).token,
      reconnectMaxMs: 5000, // a demo server restarted by hand: back soon
    }),
    [session],
  );
  const [channelId, setChannelId] = useState(session.channels[0]?.channel_id ?? "general");
  const [thread, setThread] = useState<MessageView | null>(null);
  const channelName = session.channels.find((c) => c.channel_id === channelId)?.name ?? channelId;
  return (
    <CaasProvider options={options} userId={session.user_id} names={names} theme={theme}>
      <div className="app">
        <header className="top">
          <h1>CAAS demo chat</h1>
          <ConnectionStatus />
          <span className="me">
            Signed in as <strong>{session.name}</strong>
          </span>
          {toggle}
          <button type="button" onClick={onSignOut}>
            Sign out
          </button>
        </header>
        <div className="body">
          <aside className="side">
            <h2 className="caas-visually-hidden">Channels</h2>
            <ChannelList
              selected={channelId}
              onSelect={(id) => {
                setChannelId(id);
                setThread(null);
              }}
            />
            <h2 className="people-title">People</h2>
            <ul className="people" aria-label="People">
              {session.users
                .filter((u) => u.user_id !== session.user_id)
                .map((u) => (
                  <li key={u.user_id}>
                    <PresenceBadge userId={u.user_id} showName />
                  </li>
                ))}
            </ul>
          </aside>
          <main className="main">
            <h2 className="channel-title"># {channelName}</h2>
            <MessageList key={channelId} channelId={channelId} onOpenThread={setThread} />
            <TypingIndicator channelId={channelId} />
            <Composer key={`c-${channelId}`} channelId={channelId} label={`Message #${channelName}`} />
          </main>
          {thread ? <Thread key={thread.key} channelId={channelId} parent={thread} onClose={() => setThread(null)} /> : null}
        </div>
      </div>
    </CaasProvider>
  );
}
