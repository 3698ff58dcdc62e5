import { useState } from "react";
import type { Session, TailEvent } from "../api";
import { useTail } from "../tail";
import { Head, Section } from "../ui";

function summary(e: TailEvent): string {
  const p = e.payload;
  if (typeof p.text === "string") return p.text;
  if (typeof p.name === "string") return p.name;
  if (typeof p.user_id === "string") return p.user_id;
  return "";
}

/** The tenant's events as they are committed (newest first), over the portal's websocket. */
export function LiveTail(_: { session: Session }) {
  const tail = useTail();
  const [filter, setFilter] = useState("");
  const [paused, setPaused] = useState<TailEvent[] | null>(null);
  const shown = (paused ?? tail.events).filter((e) => !filter || e.type.toLowerCase().includes(filter.toLowerCase()));
  return (
    <Section title="Events">
      <div className="inline">
        <label htmlFor="tail-filter">Event type contains</label>
        <input id="tail-filter" value={filter} onChange={(e) => setFilter(e.target.value)} />
        <button type="button" onClick={() => setPaused(paused ? null : tail.events)} aria-pressed={paused !== null}>
          {paused ? "Resume" : "Pause"}
        </button>
        <span className="muted" aria-live="polite">
          {tail.status === "live" ? `live: ${tail.total} events since this page opened` : tail.status}
        </span>
      </div>
      <table aria-label="Live events">
        <Head columns={["Position", "Type", "Stream", "Actor", "Summary", "At"]} />
        <tbody data-tail>
          {shown.map((e) => (
            <tr key={e.event_id} data-event-type={e.type}>
              <td>{e.position}</td>
              <td>{e.type}</td>
              <td>
                <code>{e.stream}</code>
              </td>
              <td>{e.actor ?? ""}</td>
              <td>{summary(e)}</td>
              <td>{new Date(e.occurred_at).toLocaleTimeString()}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {shown.length === 0 ? <p className="muted">Waiting for events…</p> : null}
    </Section>
  );
}
