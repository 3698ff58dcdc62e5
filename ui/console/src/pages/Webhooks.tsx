import { useState, type FormEvent } from "react";
import { call, type Delivery, type Session, type Webhook } from "../api";
import { ErrorNote, Head, Section, useAction, useLoad } from "../ui";

/** Outbound webhook endpoints: register, enable/disable, delete; an endpoint's delivery log; replay. */
export function Webhooks(_: { session: Session }) {
  const hooks = useLoad(() => call<{ webhooks: Webhook[] }>("GET", "/webhooks"), []);
  const action = useAction();
  const [url, setUrl] = useState("");
  const [types, setTypes] = useState("*");
  const [secret, setSecret] = useState<{ webhook_id: string; secret: string } | null>(null);
  const [selected, setSelected] = useState<string | null>(null);
  const register = (e: FormEvent) => {
    e.preventDefault();
    void action.run(async () => {
      const event_types = types.split(",").map((t) => t.trim()).filter(Boolean);
      const made = await call<{ webhook_id: string; secret: string }>("POST", "/webhooks", { url: url.trim(), event_types });
      setSecret(made);
      setUrl("");
      hooks.reload();
    });
  };
  const act = (work: () => Promise<unknown>) =>
    action.run(async () => {
      await work();
      hooks.reload();
    });
  return (
    <>
      <ErrorNote error={hooks.error ?? action.error} />
      <Section title="Register an endpoint">
        <form onSubmit={register} className="inline">
          <label htmlFor="hook-url">URL</label>
          <input id="hook-url" type="url" value={url} onChange={(e) => setUrl(e.target.value)} placeholder="https://example.com/hooks" required />
          <label htmlFor="hook-types">Event types (comma-separated, * for all)</label>
          <input id="hook-types" value={types} onChange={(e) => setTypes(e.target.value)} />
          <button type="submit" disabled={action.busy}>
            Register
          </button>
        </form>
        {secret ? (
          <div className="secret" role="status">
            <label htmlFor="hook-secret">Signing secret of {secret.webhook_id} (verify the deliveries' signatures with it)</label>
            <input id="hook-secret" readOnly value={secret.secret} />
          </div>
        ) : null}
      </Section>
      <Section title="Endpoints">
        <table>
          <Head columns={["Endpoint", "Events", "State"]} actions="Actions" />
          <tbody>
            {(hooks.data?.webhooks ?? []).map((h) => (
              <tr key={h.webhook_id}>
                <td>
                  <code>{h.webhook_id}</code> {h.url}
                </td>
                <td>{h.event_types.join(", ")}</td>
                <td>{h.enabled ? "enabled" : `disabled${h.disabled_reason ? `: ${h.disabled_reason}` : ""}`}</td>
                <td className="actions">
                  <button type="button" onClick={() => setSelected(h.webhook_id)}>
                    Deliveries of {h.webhook_id}
                  </button>
                  {h.enabled ? null : (
                    <button type="button" onClick={() => void act(() => call("PATCH", `/webhooks/${h.webhook_id}`, { enabled: true }))}>
                      Enable {h.webhook_id}
                    </button>
                  )}
                  <button type="button" className="danger" onClick={() => void act(() => call("DELETE", `/webhooks/${h.webhook_id}`))}>
                    Delete {h.webhook_id}
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
        {hooks.data && hooks.data.webhooks.length === 0 ? <p className="muted">No endpoints.</p> : null}
      </Section>
      {selected ? <DeliveryLog key={selected} webhookId={selected} /> : null}
    </>
  );
}

function DeliveryLog({ webhookId }: { webhookId: string }) {
  const [after, setAfter] = useState<string | undefined>(undefined);
  const log = useLoad(
    () => call<{ deliveries: Delivery[]; next_after: string | null }>("GET", `/webhooks/${webhookId}/deliveries`, undefined, { after, limit: 50 }),
    [webhookId, after],
  );
  const [from, setFrom] = useState("0");
  const action = useAction();
  const [replayed, setReplayed] = useState(false);
  const replay = (e: FormEvent) => {
    e.preventDefault();
    void action.run(async () => {
      await call("POST", `/webhooks/${webhookId}/replay`, { from_position: Number(from) });
      setReplayed(true);
      log.reload();
    });
  };
  return (
    <Section title={`Delivery log of ${webhookId}`}>
      <ErrorNote error={log.error ?? action.error} />
      <table>
        <Head columns={["At", "Event", "Attempt", "Status", "Latency", "Error"]} />
        <tbody>
          {(log.data?.deliveries ?? []).map((d) => (
            <tr key={d.delivery_id}>
              <td>{new Date(d.at).toLocaleString()}</td>
              <td>
                {d.event_type} @{d.position}
              </td>
              <td>{d.attempt}</td>
              <td>{d.ok ? `ok ${d.status_code ?? ""}` : `failed ${d.status_code ?? ""}`}</td>
              <td>{Math.round(d.latency_ms)} ms</td>
              <td>{d.error ?? ""}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {log.data && log.data.deliveries.length === 0 ? <p className="muted">No deliveries yet.</p> : null}
      <div className="pager">
        <button type="button" onClick={log.reload}>
          Refresh
        </button>
        {log.data?.next_after ? (
          <button type="button" onClick={() => setAfter(log.data?.next_after ?? undefined)}>
            Next page
          </button>
        ) : null}
      </div>
      <form onSubmit={replay} className="inline">
        <label htmlFor="replay-from">Replay events after position</label>
        <input id="replay-from" type="number" min={0} value={from} onChange={(e) => setFrom(e.target.value)} />
        <button type="submit" disabled={action.busy}>
          Replay
        </button>
        {replayed ? <span role="status">Replay requested.</span> : null}
      </form>
    </Section>
  );
}
