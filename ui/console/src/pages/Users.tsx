import { useState, type FormEvent } from "react";
import { call, type Session, type User } from "../api";
import { ErrorNote, Head, Pager, Section, useAction, useLoad } from "../ui";

/** Users by id prefix, paged; mint a short-lived test token for one. */
export function Users(_: { session: Session }) {
  const [prefix, setPrefix] = useState("");
  const [query, setQuery] = useState("");
  const [after, setAfter] = useState<string | undefined>(undefined);
  const users = useLoad(
    () => call<{ users: User[]; next_after: string | null }>("GET", "/users", undefined, { prefix: query, after, limit: 50 }),
    [query, after],
  );
  const [token, setToken] = useState<{ user_id: string; token: string; expires_at: string } | null>(null);
  const [newId, setNewId] = useState("");
  const [newName, setNewName] = useState("");
  const action = useAction();
  const search = (e: FormEvent) => {
    e.preventDefault();
    setAfter(undefined);
    setQuery(prefix.trim());
  };
  const mint = (userId: string) =>
    action.run(async () => {
      const made = await call<{ token: string; expires_at: string }>(
        "POST",
        `/users/${encodeURIComponent(userId)}/tokens`,
        { ttl_seconds: 900 },
      );
      setToken({ user_id: userId, ...made });
    });
  const create = (e: FormEvent) => {
    e.preventDefault();
    void action.run(async () => {
      await call("PUT", `/users/${encodeURIComponent(newId.trim())}`, { name: newName.trim() || newId.trim() });
      setNewId("");
      setNewName("");
      users.reload();
    });
  };
  return (
    <>
      <ErrorNote error={users.error ?? action.error} />
      <Section title="Search">
        <form role="search" onSubmit={search} className="inline">
          <label htmlFor="user-prefix">User id starts with</label>
          <input id="user-prefix" value={prefix} onChange={(e) => setPrefix(e.target.value)} />
          <button type="submit">Search</button>
        </form>
      </Section>
      {token ? (
        <Section title="Test token">
          <p role="status">
            A token for <code>{token.user_id}</code>, valid until {new Date(token.expires_at).toLocaleString()}:
          </p>
          <label htmlFor="test-token">Token</label>
          <textarea id="test-token" readOnly rows={3} value={token.token} />
        </Section>
      ) : null}
      <Section title="Users">
        <table>
          <Head columns={["User id", "Name", "Registered"]} actions="Actions" />
          <tbody>
            {(users.data?.users ?? []).map((u) => (
              <tr key={u.user_id}>
                <td>
                  <code>{u.user_id}</code>
                </td>
                <td>{u.name}</td>
                <td>{u.created_at ? new Date(u.created_at).toLocaleString() : ""}</td>
                <td>
                  <button type="button" onClick={() => void mint(u.user_id)} disabled={action.busy}>
                    Mint test token for {u.user_id}
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
        {users.data && users.data.users.length === 0 ? <p className="muted">No users match.</p> : null}
        <Pager first={after === undefined} next={users.data?.next_after} onFirst={() => setAfter(undefined)} onNext={setAfter} />
      </Section>
      <Section title="Register a user">
        <form onSubmit={create} className="inline">
          <label htmlFor="new-user-id">User id</label>
          <input id="new-user-id" value={newId} onChange={(e) => setNewId(e.target.value)} required />
          <label htmlFor="new-user-name">Name</label>
          <input id="new-user-name" value={newName} onChange={(e) => setNewName(e.target.value)} />
          <button type="submit" disabled={action.busy || !newId.trim()}>
            Register
          </button>
        </form>
      </Section>
    </>
  );
}
