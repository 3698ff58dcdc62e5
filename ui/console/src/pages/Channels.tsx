import { useState, type FormEvent } from "react";
import { call, type Channel, type Member, type Message, type Session } from "../api";
import { ErrorNote, Head, Pager, Section, useAction, useLoad } from "../ui";

const ROLES = ["member", "admin", "owner"] as const;

/** Browse channels; in one: members with roles, mutes and bans, and its latest messages (delete one). */
export function Channels(_: { session: Session }) {
  const [after, setAfter] = useState<string | undefined>(undefined);
  const channels = useLoad(
    () => call<{ channels: Channel[]; next_after: string | null }>("GET", "/channels", undefined, { after, limit: 50 }),
    [after],
  );
  const [selected, setSelected] = useState<string | null>(null);
  return (
    <>
      <ErrorNote error={channels.error} />
      <Section title="Channels">
        <table>
          <Head columns={["Channel", "Kind", "Members", "Last message"]} actions="Actions" />
          <tbody>
            {(channels.data?.channels ?? []).map((c) => (
              <tr key={c.channel_id} aria-selected={selected === c.channel_id}>
                <td>
                  {c.name ?? c.channel_id} <code>{c.channel_id}</code>
                </td>
                <td>{c.kind}</td>
                <td>{c.members.length}</td>
                <td>{c.last_message?.text ?? ""}</td>
                <td>
                  <button type="button" onClick={() => setSelected(c.channel_id)}>
                    Open {c.channel_id}
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
        {channels.data && channels.data.channels.length === 0 ? <p className="muted">No channels yet.</p> : null}
        <Pager first={after === undefined} next={channels.data?.next_after} onFirst={() => setAfter(undefined)} onNext={setAfter} />
      </Section>
      {selected ? <ChannelDetail key={selected} channelId={selected} onChanged={channels.reload} /> : null}
    </>
  );
}

export function ChannelDetail({ channelId, onChanged }: { channelId: string; onChanged: () => void }) {
  const path = `/channels/${encodeURIComponent(channelId)}`;
  const members = useLoad(() => call<{ members: Member[] }>("GET", `${path}/members`), [path]);
  const messages = useLoad(() => call<{ messages: Message[] }>("GET", `${path}/messages`, undefined, { limit: 20 }), [path]);
  const action = useAction();
  const [newMember, setNewMember] = useState("");
  const act = (work: () => Promise<unknown>) =>
    action.run(async () => {
      await work();
      members.reload();
      messages.reload();
      onChanged();
    });
  const add = (e: FormEvent) => {
    e.preventDefault();
    void act(() => call("POST", `${path}/members`, { user_id: newMember.trim(), role: "member" })).then(() =>
      setNewMember(""),
    );
  };
  return (
    <>
      <ErrorNote error={members.error ?? messages.error ?? action.error} />
      <Section title={`Members of ${channelId}`}>
        <table>
          <Head columns={["User", "Role", "State"]} actions="Moderation" />
          <tbody>
            {(members.data?.members ?? []).map((m) => (
              <tr key={m.user_id}>
                <td>
                  <code>{m.user_id}</code>
                </td>
                <td>
                  {m.active ? (
                    <select
                      aria-label={`Role of ${m.user_id}`}
                      value={m.role ?? "member"}
                      onChange={(e) => void act(() => call("POST", `${path}/members`, { user_id: m.user_id, role: e.target.value }))}
                    >
                      {ROLES.map((r) => (
                        <option key={r} value={r}>
                          {r}
                        </option>
                      ))}
                    </select>
                  ) : (
                    m.role
                  )}
                </td>
                <td>{m.banned ? "banned" : !m.active ? "left" : m.muted ? "muted" : "member"}</td>
                <td className="actions">
                  {m.active && !m.muted ? (
                    <button type="button" onClick={() => void act(() => call("POST", `${path}/mutes`, { user_id: m.user_id }))}>
                      Mute {m.user_id}
                    </button>
                  ) : null}
                  {m.muted ? (
                    <button type="button" onClick={() => void act(() => call("DELETE", `${path}/mutes/${encodeURIComponent(m.user_id)}`))}>
                      Unmute {m.user_id}
                    </button>
                  ) : null}
                  {m.banned ? (
                    <button type="button" onClick={() => void act(() => call("DELETE", `${path}/bans/${encodeURIComponent(m.user_id)}`))}>
                      Lift ban on {m.user_id}
                    </button>
                  ) : (
                    <button
                      type="button"
                      className="danger"
                      onClick={() => void act(() => call("POST", `${path}/bans`, { user_id: m.user_id, reason: "banned from the console" }))}
                    >
                      Ban {m.user_id}
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
        <form onSubmit={add} className="inline">
          <label htmlFor="add-member">Add member (user id)</label>
          <input id="add-member" value={newMember} onChange={(e) => setNewMember(e.target.value)} required />
          <button type="submit" disabled={!newMember.trim() || action.busy}>
            Add
          </button>
        </form>
      </Section>
      <Section title={`Latest messages in ${channelId}`}>
        {messages.data && messages.data.messages.length === 0 ? <p className="muted">No messages.</p> : null}
        <ul className="messages">
          {(messages.data?.messages ?? []).map((m) => (
            <li key={m.message_id}>
              <span className="muted">
                #{m.seq} {m.author_id}:
              </span>{" "}
              {m.deleted ? <em>deleted</em> : m.text}
              {m.deleted ? null : (
                <button
                  type="button"
                  className="danger"
                  onClick={() => void act(() => call("DELETE", `${path}/messages/${encodeURIComponent(m.message_id)}`))}
                >
                  Delete message {m.seq}
                </button>
              )}
            </li>
          ))}
        </ul>
      </Section>
    </>
  );
}
