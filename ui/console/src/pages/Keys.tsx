import { useState, type FormEvent } from "react";
import { call, type ApiKey, type Session } from "../api";
import { ErrorNote, Head, Section, useAction, useLoad } from "../ui";

interface Issued {
  key_id: string;
  api_key: string;
}

/** API keys (issue: the secret shown once; revoke) and the end-user token signing key (rotate). */
export function Keys({ session }: { session: Session }) {
  const keys = useLoad(() => call<{ api_keys: ApiKey[] }>("GET", "/api-keys"), []);
  const signing = useLoad(() => call<{ kid: string; verifying: string[] }>("GET", "/signing-keys"), []);
  const [name, setName] = useState("");
  const [issued, setIssued] = useState<Issued | null>(null);
  const [confirming, setConfirming] = useState<string | null>(null);
  const action = useAction();
  const issue = (e: FormEvent) => {
    e.preventDefault();
    void action.run(async () => {
      const made = await call<Issued>("POST", "/api-keys", { name: name.trim() || "default" });
      setIssued(made);
      setName("");
      keys.reload();
    });
  };
  const revoke = (keyId: string) =>
    action.run(async () => {
      await call("DELETE", `/api-keys/${encodeURIComponent(keyId)}`);
      setConfirming(null);
      if (issued?.key_id === keyId) setIssued(null);
      keys.reload();
    });
  const rotate = () =>
    action.run(async () => {
      await call("POST", "/signing-keys");
      signing.reload();
    });
  return (
    <>
      <ErrorNote error={keys.error ?? signing.error ?? action.error} />
      <Section title="Issue an API key">
        <form onSubmit={issue} className="inline">
          <label htmlFor="key-name">Name</label>
          <input id="key-name" value={name} onChange={(e) => setName(e.target.value)} placeholder="backend-prod" />
          <button type="submit" disabled={action.busy}>
            Issue key
          </button>
        </form>
        {issued ? (
          <div className="secret" role="status" aria-live="polite">
            <p>
              <strong>Copy this key now: it is shown once.</strong> CAAS keeps only a hash of it.
            </p>
            <label htmlFor="new-key-secret">New API key {issued.key_id}</label>
            <input id="new-key-secret" readOnly value={issued.api_key} data-secret onFocus={(e) => e.target.select()} />
            <button type="button" onClick={() => void navigator.clipboard?.writeText(issued.api_key)}>
              Copy
            </button>
            <button type="button" onClick={() => setIssued(null)}>
              Done
            </button>
          </div>
        ) : null}
      </Section>
      <Section title="API keys">
        <table>
          <Head columns={["Key id", "Name", "State"]} actions="Actions" />
          <tbody>
            {(keys.data?.api_keys ?? []).map((k) => (
              <tr key={k.key_id} data-key-id={k.key_id}>
                <td>
                  <code>{k.key_id}</code>
                </td>
                <td>{k.name}</td>
                <td>{k.revoked ? "revoked" : k.key_id === session.key_id ? "active (this session)" : "active"}</td>
                <td>
                  {k.revoked ? null : confirming === k.key_id ? (
                    <>
                      <button type="button" className="danger" onClick={() => void revoke(k.key_id)}>
                        Confirm revoke {k.key_id}
                      </button>
                      <button type="button" onClick={() => setConfirming(null)}>
                        Cancel
                      </button>
                    </>
                  ) : (
                    <button type="button" onClick={() => setConfirming(k.key_id)}>
                      Revoke {k.key_id}
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </Section>
      <Section title="End-user token signing key">
        <p>
          New user tokens are signed with <code data-kid>{signing.data?.kid ?? "…"}</code>; tokens of{" "}
          {(signing.data?.verifying ?? []).map((k) => (
            <code key={k}>{k} </code>
          ))}
          verify. A rotation keeps the previous key's tokens working until the next one.
        </p>
        <button type="button" onClick={() => void rotate()} disabled={action.busy}>
          Rotate signing key
        </button>
      </Section>
    </>
  );
}
