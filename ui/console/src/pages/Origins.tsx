import { useState, type FormEvent } from "react";
import { call, type Session } from "../api";
import { ErrorNote, Section, useAction, useLoad } from "../ui";

/** The browser origins allowed to read the tenant's API responses (CORS): PUT /v1/cors replaces the list. */
export function Origins(_: { session: Session }) {
  const origins = useLoad(() => call<{ origins: string[] }>("GET", "/cors"), []);
  const [adding, setAdding] = useState("");
  const action = useAction();
  const save = (next: string[]) =>
    action.run(async () => {
      await call("PUT", "/cors", { origins: next });
      origins.reload();
    });
  const add = (e: FormEvent) => {
    e.preventDefault();
    const list = origins.data?.origins ?? [];
    void save([...list, adding.trim()]).then(() => setAdding(""));
  };
  return (
    <>
      <ErrorNote error={origins.error ?? action.error} />
      <Section title="Allowed origins">
        <p>Browsers at these origins may read your API's answers (for apps that call CAAS from the browser with user tokens).</p>
        <ul className="origins">
          {(origins.data?.origins ?? []).map((o) => (
            <li key={o}>
              <code>{o}</code>{" "}
              <button type="button" onClick={() => void save((origins.data?.origins ?? []).filter((x) => x !== o))}>
                Remove {o}
              </button>
            </li>
          ))}
        </ul>
        {origins.data && origins.data.origins.length === 0 ? <p className="muted">None: no browser origin may read the answers.</p> : null}
        <form onSubmit={add} className="inline">
          <label htmlFor="origin">Origin</label>
          <input id="origin" value={adding} onChange={(e) => setAdding(e.target.value)} placeholder="https://app.example.com" required />
          <button type="submit" disabled={action.busy || !adding.trim()}>
            Add origin
          </button>
        </form>
      </Section>
    </>
  );
}
