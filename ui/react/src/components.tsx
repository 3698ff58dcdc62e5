import { useEffect, useId, useRef, useState, type FormEvent, type KeyboardEvent } from "react";
import { useCaas, useConnected, useName } from "./provider.js";
import { useChannel, useChannels, useMessages, usePresence, useThread, useTyping, type ChannelSummary } from "./hooks.js";
import type { Attachment, MessageView } from "./timeline.js";
import { VirtualList } from "./virtual.js";

const QUICK_REACTIONS = ["👍", "❤️", "😂"];

// --- presence and typing ------------------------------------------------------------------------
/** A dot and the word for a user's presence (`online`, `away`, `offline`), live. */
export function PresenceBadge({ userId, showName = false }: { userId: string; showName?: boolean }) {
  const status = usePresence(userId);
  const name = useName(userId);
  return (
    <span className="caas-presence" data-status={status} data-user={userId}>
      <span className="caas-presence-dot" aria-hidden="true" />
      {showName ? <span className="caas-presence-name">{name}</span> : null}
      <span className={showName ? "caas-visually-hidden" : "caas-presence-word"}>{showName ? `, ${status}` : status}</span>
    </span>
  );
}

/** "Bob is typing…" for the others typing in a channel; announced politely to screen readers. */
export function TypingIndicator({ channelId }: { channelId: string }) {
  const typing = useTyping(channelId);
  const { names } = useCaas();
  const who = typing.map((u) => names[u] ?? u);
  const text = who.length === 0 ? "" : who.length === 1 ? `${who[0]} is typing…` : `${who.slice(0, -1).join(", ")} and ${who.at(-1)} are typing…`;
  return (
    <div className="caas-typing" aria-live="polite" data-typing={typing.join(",")}>
      {text}
    </div>
  );
}

/** Whether the socket is open; "Reconnecting…" while it is not. */
export function ConnectionStatus() {
  const connected = useConnected();
  return (
    <div className="caas-connection" role="status" data-connected={connected}>
      {connected ? "Connected" : "Reconnecting…"}
    </div>
  );
}

// --- channel list -------------------------------------------------------------------------------
export interface ChannelListProps {
  selected?: string | undefined;
  onSelect: (channelId: string) => void;
}

/** The user's channels, most recent activity first, with unread badges and the last message. */
export function ChannelList({ selected, onSelect }: ChannelListProps) {
  const { channels, loading, error } = useChannels();
  return (
    <nav className="caas-channels" aria-label="Channels">
      {error ? <p role="alert">Could not load channels: {error.message}</p> : null}
      {loading && !channels.length ? <p>Loading channels…</p> : null}
      <ul>
        {channels.map((c) => (
          <ChannelItem key={c.channel_id} channel={c} current={c.channel_id === selected} onSelect={onSelect} />
        ))}
      </ul>
    </nav>
  );
}

function ChannelItem({ channel, current, onSelect }: { channel: ChannelSummary; current: boolean; onSelect: (id: string) => void }) {
  const last = channel.last_message;
  const author = useName(last?.author_id ?? "");
  const unread = current ? 0 : (channel.unread_count ?? 0);
  const preview = last ? (last.deleted ? "Message deleted" : `${author}: ${last.text ?? ""}`) : "No messages yet";
  return (
    <li data-channel={channel.channel_id}>
      <button type="button" className="caas-channel" aria-current={current ? "page" : undefined} onClick={() => onSelect(channel.channel_id)}>
        <span className="caas-channel-name"># {channel.name || channel.channel_id}</span>
        {unread > 0 ? (
          <span className="caas-badge" data-unread={unread}>
            {unread}
            <span className="caas-visually-hidden"> unread</span>
          </span>
        ) : null}
        <span className="caas-channel-last">{preview}</span>
      </button>
    </li>
  );
}

// --- messages -----------------------------------------------------------------------------------
interface MessageHandlers {
  onRetry: (m: MessageView) => void;
  onDiscard: (m: MessageView) => void;
  onEdit?: (m: MessageView, text: string) => Promise<void>;
  onDelete?: (m: MessageView) => Promise<void>;
  onReact?: (m: MessageView, emoji: string) => Promise<void>;
  onOpenThread?: ((m: MessageView) => void) | undefined;
  /** The key of the signed-in user's last confirmed message: "seen by" shows under it. */
  seenKey?: string | undefined;
}

function MessageItem({ message: m, handlers: h }: { message: MessageView; handlers: MessageHandlers }) {
  const { userId, names } = useCaas();
  const author = useName(m.author_id);
  const [editing, setEditing] = useState(false);
  const mine = m.author_id === userId;
  const confirmed = m.status === "delivered" && m.message_id !== null;
  return (
    <article className="caas-message" data-status={m.status} data-mine={mine} data-message={m.message_id ?? ""} aria-label={`${author}${m.deleted ? ", deleted message" : ""}`}>
      <header className="caas-message-head">
        <span className="caas-author">{author}</span>
        {m.created_at ? <time dateTime={m.created_at}>{new Date(m.created_at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}</time> : null}
        {m.edited && !m.deleted ? <span className="caas-edited">(edited)</span> : null}
      </header>
      {m.deleted ? (
        <p className="caas-tombstone">This message was deleted.</p>
      ) : editing && h.onEdit ? (
        <EditForm text={m.text} onCancel={() => setEditing(false)} onSave={(text) => h.onEdit?.(m, text).then(() => setEditing(false))} />
      ) : (
        <p className="caas-text">{m.text}</p>
      )}
      {!m.deleted && m.attachments.length ? (
        <ul className="caas-attachments" aria-label="Attachments">
          {m.attachments.map((a) => (
            <li key={a.url}>
              {a.type === "image" ? <img src={a.url} alt={a.name ?? "attached image"} loading="lazy" /> : null}
              <a href={a.url} target="_blank" rel="noopener noreferrer">
                {a.name ?? a.url}
              </a>
            </li>
          ))}
        </ul>
      ) : null}
      {m.status === "pending" ? <p className="caas-sending" role="status">Sending…</p> : null}
      {m.status === "failed" ? (
        <p className="caas-failed" role="alert">
          Not sent.{" "}
          <button type="button" onClick={() => h.onRetry(m)}>
            Retry
          </button>{" "}
          <button type="button" onClick={() => h.onDiscard(m)}>
            Discard
          </button>
        </p>
      ) : null}
      {confirmed && !m.deleted ? (
        <div className="caas-actions">
          {Object.entries(m.reactions).map(([emoji, users]) => (
            <button key={emoji} type="button" className="caas-reaction" aria-pressed={users.includes(userId)} aria-label={`${emoji} ${users.length}, by ${users.map((u) => names[u] ?? u).join(", ")}`} onClick={() => void h.onReact?.(m, emoji)}>
              {emoji} {users.length}
            </button>
          ))}
          {h.onReact
            ? QUICK_REACTIONS.filter((e) => !m.reactions[e]).map((emoji) => (
                <button key={emoji} type="button" className="caas-react" aria-label={`React with ${emoji}`} onClick={() => void h.onReact?.(m, emoji)}>
                  {emoji}
                </button>
              ))
            : null}
          {h.onOpenThread ? (
            <button type="button" className="caas-replies" onClick={() => h.onOpenThread?.(m)}>
              {m.reply_count ? `${m.reply_count} ${m.reply_count === 1 ? "reply" : "replies"}` : "Reply"}
            </button>
          ) : null}
          {mine && h.onEdit ? (
            <button type="button" onClick={() => setEditing(true)}>
              Edit
            </button>
          ) : null}
          {mine && h.onDelete ? (
            <button type="button" onClick={() => void h.onDelete?.(m)}>
              Delete
            </button>
          ) : null}
        </div>
      ) : null}
      {h.seenKey === m.key && m.seen_by.length ? (
        <p className="caas-seen" data-seen-by={m.seen_by.join(",")}>
          Seen by {m.seen_by.map((u) => names[u] ?? u).join(", ")}
        </p>
      ) : null}
    </article>
  );
}

function EditForm({ text, onSave, onCancel }: { text: string; onSave: (text: string) => void; onCancel: () => void }) {
  const [value, setValue] = useState(text);
  const id = useId();
  return (
    <form
      className="caas-edit"
      onSubmit={(e) => {
        e.preventDefault();
        if (value.trim()) onSave(value);
      }}
    >
      <label htmlFor={id} className="caas-visually-hidden">
        Edit message
      </label>
      <input id={id} value={value} autoFocus onChange={(e) => setValue(e.target.value)} onKeyDown={(e) => e.key === "Escape" && onCancel()} />
      <button type="submit">Save</button>
      <button type="button" onClick={onCancel}>
        Cancel
      </button>
    </form>
  );
}

export interface MessageListProps {
  channelId: string;
  /** Open a message's thread (shows the Reply / "N replies" button). */
  onOpenThread?: (message: MessageView) => void;
  /** Move the read marker when messages arrive while the list is shown (default true). */
  markRead?: boolean;
}

/**
 * A channel's messages, virtualized: older pages load when scrolled to the top; sends show at
 * once (Sending…, then delivered; a refused one offers Retry); edits, tombstones, reactions,
 * thread reply counts and "Seen by" under the user's last message update live.
 */
export function MessageList({ channelId, onOpenThread, markRead = true }: MessageListProps) {
  const { userId } = useCaas();
  const api = useMessages(channelId);
  const { messages } = api;
  const newest = messages.filter((m) => m.status === "delivered").at(-1)?.seq ?? 0;
  useEffect(() => {
    if (markRead && newest > 0) void api.markRead().catch(() => {});
  }, [markRead, newest, api.markRead]);
  const seenKey = messages.filter((m) => m.author_id === userId && m.status === "delivered" && !m.deleted).at(-1)?.key;
  const handlers: MessageHandlers = { onRetry: api.retry, onDiscard: api.discard, onEdit: api.edit, onDelete: api.remove, onReact: api.react, onOpenThread, seenKey };
  return (
    <section className="caas-messages" aria-label="Messages" data-channel={channelId}>
      {api.error ? <p role="alert">Could not load messages: {api.error.message}</p> : null}
      {api.loading ? <p className="caas-loading">Loading messages…</p> : null}
      {!api.loading && !messages.length ? <p className="caas-empty">No messages yet: say hello.</p> : null}
      <VirtualList
        className="caas-scroll"
        label={`Messages in ${channelId}`}
        items={messages}
        itemKey={(m) => m.key}
        onTop={api.hasOlder ? api.loadOlder : undefined}
        render={(m) => <MessageItem message={m} handlers={handlers} />}
      />
    </section>
  );
}

// --- thread -------------------------------------------------------------------------------------
export interface ThreadProps {
  channelId: string;
  parent: MessageView;
  onClose: () => void;
}

/** A message's replies, live, with a composer for a reply. */
export function Thread({ channelId, parent, onClose }: ThreadProps) {
  const thread = useThread(channelId, parent.message_id ?? "");
  const author = useName(parent.author_id);
  const handlers: MessageHandlers = { onRetry: thread.retry, onDiscard: thread.discard };
  return (
    <aside className="caas-thread" aria-label={`Thread of ${author}'s message`}>
      <header className="caas-thread-head">
        <h2>Thread</h2>
        <button type="button" onClick={onClose} aria-label="Close thread">
          ×
        </button>
      </header>
      <blockquote className="caas-thread-parent">
        <span className="caas-author">{author}</span>: {parent.deleted ? "This message was deleted." : parent.text}
      </blockquote>
      {thread.loading ? <p className="caas-loading">Loading replies…</p> : null}
      <ul className="caas-thread-replies" aria-label="Replies">
        {thread.replies.map((r) => (
          <li key={r.key}>
            <MessageItem message={r} handlers={handlers} />
          </li>
        ))}
      </ul>
      <Composer channelId={channelId} onSend={thread.send} label="Reply in thread" />
    </aside>
  );
}

// --- composer -----------------------------------------------------------------------------------
export interface ComposerProps {
  channelId: string;
  /** Where the text goes (default: the channel, through the outbox). */
  onSend?: (text: string, attachments: Attachment[]) => void;
  label?: string;
}

function attachmentOf(url: string): Attachment {
  const name = decodeURIComponent(url.split(/[?#]/)[0]?.split("/").at(-1) || url);
  return { type: /\.(png|jpe?g|gif|webp|avif|svg)$/i.test(url.split(/[?#]/)[0] ?? "") ? "image" : "link", url, name };
}

/**
 * Text (Enter sends, Shift+Enter adds a line), typing signals while typing, attachments by URL.
 * Messages go through the SDK's outbox: sent exactly once even across reconnects.
 */
export function Composer({ channelId, onSend, label = "Message" }: ComposerProps) {
  const channel = useChannel(channelId);
  const connected = useConnected();
  const [text, setText] = useState("");
  const [url, setUrl] = useState("");
  const [attachments, setAttachments] = useState<Attachment[]>([]);
  const [urlError, setUrlError] = useState("");
  const [showUrl, setShowUrl] = useState(false);
  const input = useRef<HTMLTextAreaElement>(null);
  const ids = { text: useId(), url: useId(), urlError: useId() };
  // a refused send shows as its echo's `failed` state in the MessageList, with Retry
  const send = onSend ?? ((t: string, a: Attachment[]) => void channel.send(t, a.length ? { attachments: a as never } : {}).catch(() => {}));

  const submit = (e?: FormEvent) => {
    e?.preventDefault();
    if (!text.trim() && !attachments.length) return;
    send(text.trim(), attachments);
    setText("");
    setAttachments([]);
    input.current?.focus();
  };
  const onKeyDown = (e: KeyboardEvent<HTMLTextAreaElement>) => {
    if (e.key === "Enter" && !e.shiftKey && !e.nativeEvent.isComposing) submit(e);
  };
  const addUrl = () => {
    if (!/^https?:\/\/\S+$/.test(url.trim())) {
      setUrlError("Enter an http:// or https:// address");
      return;
    }
    setAttachments((a) => [...a, attachmentOf(url.trim())]);
    setUrl("");
    setUrlError("");
    setShowUrl(false);
  };
  return (
    <form className="caas-composer" onSubmit={submit} aria-label={label}>
      {!connected ? (
        <p className="caas-offline" role="status">
          Offline: messages are kept and sent when the connection is back.
        </p>
      ) : null}
      {attachments.length ? (
        <ul className="caas-pending-attachments" aria-label="Attachments to send">
          {attachments.map((a) => (
            <li key={a.url}>
              {a.name}{" "}
              <button type="button" aria-label={`Remove ${a.name}`} onClick={() => setAttachments((all) => all.filter((x) => x !== a))}>
                ×
              </button>
            </li>
          ))}
        </ul>
      ) : null}
      {showUrl ? (
        <div className="caas-url">
          <label htmlFor={ids.url}>Attachment URL</label>
          <input
            id={ids.url}
            type="url"
            value={url}
            aria-invalid={urlError ? true : undefined}
            aria-describedby={urlError ? ids.urlError : undefined}
            onChange={(e) => setUrl(e.target.value)}
            onKeyDown={(e) => {
              if (e.key === "Enter") {
                e.preventDefault();
                addUrl();
              } else if (e.key === "Escape") setShowUrl(false);
            }}
          />
          <button type="button" onClick={addUrl}>
            Attach
          </button>
          {urlError ? (
            <span id={ids.urlError} className="caas-error">
              {urlError}
            </span>
          ) : null}
        </div>
      ) : null}
      <div className="caas-compose-row">
        <button type="button" className="caas-attach" aria-expanded={showUrl} onClick={() => setShowUrl((s) => !s)}>
          Attach link
        </button>
        <label htmlFor={ids.text} className="caas-visually-hidden">
          {label}
        </label>
        <textarea
          id={ids.text}
          ref={input}
          rows={1}
          value={text}
          placeholder={`${label}…`}
          onKeyDown={onKeyDown}
          onChange={(e) => {
            setText(e.target.value);
            if (e.target.value) void channel.startTyping().catch(() => {});
          }}
        />
        <button type="submit" className="caas-send" disabled={!text.trim() && !attachments.length}>
          Send
        </button>
      </div>
    </form>
  );
}
