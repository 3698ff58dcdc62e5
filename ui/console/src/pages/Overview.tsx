import { call, type ApiKey, type Session, type UsageReport } from "../api";
import { useTail } from "../tail";
import { ErrorNote, Section, useLoad } from "../ui";
import { useEffect, useRef } from "react";

function monthStart(now: Date): string {
  return new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1)).toISOString();
}

/** Month-to-date counters from /v1/usage, refreshed as the live tail shows new events, and the tail's own counts. */
export function Overview({ session }: { session: Session }) {
  const tail = useTail();
  const usage = useLoad(async () => {
    const now = new Date();
    const to = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1)).toISOString();
    return call<UsageReport>("GET", "/usage", undefined, { from: monthStart(now), to, granularity: "month" });
  }, []);
  const keys = useLoad(() => call<{ api_keys: ApiKey[] }>("GET", "/api-keys"), []);
  const reload = useRef(usage.reload);
  reload.current = usage.reload;
  // a new batch of events: read the counters again (at most every second)
  useEffect(() => {
    if (!tail.total) return;
    const t = setTimeout(() => reload.current(), 1000);
    return () => clearTimeout(t);
  }, [tail.total]);
  const totals = usage.data?.totals ?? {};
  const counters: [string, number | undefined][] = [
    ["Messages this month", totals.messages],
    ["Replies this month", totals.replies],
    ["Monthly active users", totals.mau],
    ["API calls this month", (totals.api_reads ?? 0) + (totals.api_writes ?? 0)],
    ["Active API keys", keys.data?.api_keys.filter((k) => !k.revoked).length],
    ["Events since this page opened", tail.total],
  ];
  return (
    <>
      <p>
        Signed in to <strong>{session.tenant_name ?? session.tenant_id}</strong> with API key{" "}
        <code>{session.key_name}</code> (<code>{session.key_id}</code>) until{" "}
        {new Date(session.expires_at).toLocaleString()}.
      </p>
      <ErrorNote error={usage.error ?? keys.error} />
      <Section title="Counters">
        <dl className="counters" aria-live="polite">
          {counters.map(([label, value]) => (
            <div key={label} className="counter">
              <dt>{label}</dt>
              <dd data-counter={label}>{value ?? "…"}</dd>
            </div>
          ))}
        </dl>
      </Section>
      <Section title="Events by type since this page opened">
        {Object.keys(tail.counts).length === 0 ? (
          <p className="muted">No events yet: they appear here as they are committed.</p>
        ) : (
          <table>
            <thead>
              <tr>
                <th scope="col">Event type</th>
                <th scope="col">Count</th>
              </tr>
            </thead>
            <tbody>
              {Object.entries(tail.counts)
                .sort((a, b) => b[1] - a[1])
                .map(([type, n]) => (
                  <tr key={type}>
                    <td>{type}</td>
                    <td>{n}</td>
                  </tr>
                ))}
            </tbody>
          </table>
        )}
      </Section>
    </>
  );
}
