import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import type { CaasClient, Channel, EventFrame, PresenceFrame, Schemas, TimelineMessage } from "@caas/client";
import { useCaas } from "./provider.js";
import { applyEvent, applyPage, echoes, emptyTimeline, fromMessage, visible, type Attachment, type MessageView, type TimelineState } from "./timeline.js";

export type ChannelSummary = Schemas["Channel"];

/** Newest activity first; channels without messages last, by name. */
export function byActivity(a: ChannelSummary, b: ChannelSummary): number {
  const ta = a.last_message?.created_at ?? "";
  const tb = b.last_message?.created_at ?? "";
  if (ta !== tb) return ta < tb ? 1 : -1;
  return (a.name ?? a.channel_id).localeCompare(b.name ?? b.channel_id);
}

/**
 * The user's channels with unread counts and last messages, kept live: every channel is
 * subscribed, and a message, an edit or a read marker refreshes the list from the server (its
 * unread counts are the server's, read after the event's position), newest activity first.
 */
export function useChannels(): { channels: ChannelSummary[]; loading: boolean; error: Error | null } {
  const { client } = useCaas();
  const [channels, setChannels] = useState<ChannelSummary[]>([]);
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState<Error | null>(null);
  useEffect(() => {
    let alive = true;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let position = 0;
    const offs: (() => void)[] = [];
    const watched = new Set<string>();
    const load = async () => {
      try {
        const list = await client.http.call("list_channels", { query: { limit: 200, ...(position ? { min_position: position } : {}) } });
        if (!alive) return;
        setChannels([...list.channels].sort(byActivity));
        setError(null);
        for (const c of list.channels) {
          if (watched.has(c.channel_id)) continue;
          watched.add(c.channel_id);
          const channel = openFrom(client, c.channel_id, c.head_seq);
          offs.push(channel.on("event", (frame) => {
            position = Math.max(position, frame.position);
            clearTimeout(timer);
            timer = setTimeout(() => void load(), 100); // one refresh per burst
          }));
        }
      } catch (e) {
        if (alive) setError(e as Error);
      } finally {
        if (alive) setLoading(false);
      }
    };
    void load();
    offs.push(client.on("connected", () => void load())); // after a reconnect: what changed meanwhile
    return () => {
      alive = false;
      clearTimeout(timer);
      offs.forEach((off) => off());
    };
  }, [client]);
  return { channels, loading, error };
}

/** The channel from `seq` on (the list's snapshot), so nothing between the list and the
 * subscription is missed; a channel already open (from an earlier seq) is taken as it is. */
function openFrom(client: CaasClient, id: string, seq: number): Channel {
  try {
    return client.channel(id, { since: seq });
  } catch {
    return client.channel(id);
  }
}

/** The channel's live timeline object (one per id, shared by every component of the client). */
export function useChannel(channelId: string): Channel {
  const { client } = useCaas();
  return useMemo(() => client.channel(channelId), [client, channelId]);
}

/** The SDK timeline's messages (local echoes with their outbox status), re-read on each change. */
function useLocalTimeline(channel: Channel): TimelineMessage[] {
  const [timeline, setTimeline] = useState<TimelineMessage[]>(() => channel.messages);
  useEffect(() => {
    setTimeline(channel.messages);
    return channel.on("messages", setTimeline);
  }, [channel]);
  return timeline;
}

export interface MessagesApi {
  messages: MessageView[];
  loading: boolean;
  hasOlder: boolean;
  loadOlder: () => Promise<void>;
  send: (text: string, attachments?: Attachment[]) => void;
  retry: (message: MessageView) => void;
  discard: (message: MessageView) => void;
  edit: (message: MessageView, text: string) => Promise<void>;
  remove: (message: MessageView) => Promise<void>;
  react: (message: MessageView, emoji: string) => Promise<void>;
  markRead: () => Promise<void>;
  error: Error | null;
}

const PAGE = 30;

/** Sends the kit keeps a retry for: text and attachments by client_msg_id. */
function useSender(channel: Channel, parentId: string | null) {
  const [hidden, setHidden] = useState<ReadonlySet<string>>(new Set());
  const send = useCallback(
    (text: string, attachments: Attachment[] = []) => {
      const extra = { ...(parentId ? { parent_id: parentId } : {}), ...(attachments.length ? { attachments: attachments as never } : {}) };
      channel.send(text, extra).catch(() => {}); // a refusal shows as the echo's `failed` status
    },
    [channel, parentId],
  );
  const discard = useCallback((m: MessageView) => {
    if (m.client_msg_id) setHidden((h) => new Set([...h, m.client_msg_id as string]));
  }, []);
  const retry = useCallback(
    (m: MessageView) => {
      discard(m);
      send(m.text, m.attachments);
    },
    [discard, send],
  );
  return { hidden, send, discard, retry };
}

/**
 * A channel's messages: the newest page, older pages on demand, the live tail with edits,
 * tombstones, reactions, reply counts and read markers ("seen by"), and local echoes of sends.
 */
export function useMessages(channelId: string): MessagesApi {
  const { client } = useCaas();
  const channel = useChannel(channelId);
  const [state, setState] = useState<TimelineState>(emptyTimeline);
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState<Error | null>(null);
  const [replyCounts, setReplyCounts] = useState<ReadonlyMap<string, number>>(new Map());
  const local = useLocalTimeline(channel);
  const sender = useSender(channel, null);
  const stateRef = useRef(state);
  stateRef.current = state;

  useEffect(() => {
    let alive = true;
    let loaded = false;
    const early: EventFrame[] = [];
    setState(emptyTimeline);
    setReplyCounts(new Map());
    setLoading(true);
    const countReplies = async (parent: string, position: number) => {
      // exact, from the server (read after the reply's position): a reply is never counted twice
      const thread = await client.http.call("get_thread", { path: { cid: channelId, mid: parent }, query: { limit: 1000, min_position: position } });
      if (alive) setReplyCounts((counts) => new Map(counts).set(parent, thread.messages.length));
    };
    const off = channel.on("event", (frame) => {
      const { type, payload } = frame.event as { type: string; payload: Record<string, unknown> };
      if (type === "MessagePosted" && typeof payload.parent_id === "string") void countReplies(payload.parent_id, frame.position).catch(() => {});
      if (!loaded) early.push(frame);
      else setState((s) => applyEvent(s, frame));
    });
    // the newest page once the subscription stands: an event is then either in the page or live
    const subscribed = channel.seq !== undefined ? Promise.resolve() : new Promise<void>((resolve) => {
      const stop = channel.on("subscribed", () => {
        stop();
        resolve();
      });
    });
    subscribed
      .then(() => client.http.call("list_messages", { path: { cid: channelId }, query: { limit: PAGE } }))
      .then(
        (page) => {
          if (!alive) return;
          loaded = true;
          setState((s) => early.reduce(applyEvent, applyPage(s, page.messages, page.next_before_seq)));
          setError(null);
        },
        (e: Error) => alive && setError(e),
      )
      .finally(() => alive && setLoading(false));
    return () => {
      alive = false;
      off();
    };
  }, [client, channel, channelId]);

  const loadOlder = useCallback(async () => {
    const { oldestSeq, hasOlder } = stateRef.current;
    if (!hasOlder || oldestSeq === null) return;
    const page = await client.http.call("list_messages", { path: { cid: channelId }, query: { limit: PAGE, before_seq: oldestSeq } });
    setState((s) => applyPage(s, page.messages, page.next_before_seq));
  }, [client, channelId]);

  const messages = useMemo(() => {
    const shown = visible(state).map((m) => (m.message_id && replyCounts.has(m.message_id) ? { ...m, reply_count: replyCounts.get(m.message_id) as number } : m));
    return [...shown, ...echoes(local, state.byId, null, sender.hidden)];
  }, [state, replyCounts, local, sender.hidden]);

  const api = useMessageActions(channelId);
  const markRead = useCallback(async () => {
    const last = [...stateRef.current.byId.values()].reduce((n, m) => Math.max(n, m.seq ?? 0), 0);
    if (last > (stateRef.current.markers.get(client.userId() ?? "") ?? 0) && last > channel.readSeq) await channel.markRead(Math.max(last, channel.seq ?? 0));
  }, [client, channel]);
  return { messages, loading, hasOlder: state.hasOlder, loadOlder, ...sender, ...api, markRead, error };
}

/** Edit, delete and react, as the signed-in user. */
function useMessageActions(channelId: string) {
  const { client, userId } = useCaas();
  return useMemo(
    () => ({
      edit: async (m: MessageView, text: string) => {
        if (m.message_id) await client.http.call("edit_message", { path: { cid: channelId, mid: m.message_id }, body: { text } });
      },
      remove: async (m: MessageView) => {
        if (m.message_id) await client.http.call("delete_message", { path: { cid: channelId, mid: m.message_id } });
      },
      react: async (m: MessageView, emoji: string) => {
        if (!m.message_id) return;
        const path = { cid: channelId, mid: m.message_id };
        if (m.reactions[emoji]?.includes(userId)) await client.http.call("remove_reaction", { path: { ...path, emoji } });
        else await client.http.call("add_reaction", { path, body: { emoji } });
      },
    }),
    [client, channelId, userId],
  );
}

/** A thread: the parent's replies (oldest first), live, with local echoes of replies being sent. */
export function useThread(channelId: string, parentId: string): { replies: MessageView[]; loading: boolean; send: (text: string, attachments?: Attachment[]) => void; retry: (m: MessageView) => void; discard: (m: MessageView) => void } {
  const { client } = useCaas();
  const channel = useChannel(channelId);
  const [byId, setById] = useState<ReadonlyMap<string, MessageView>>(new Map());
  const [loading, setLoading] = useState(true);
  const local = useLocalTimeline(channel);
  const sender = useSender(channel, parentId);
  useEffect(() => {
    let alive = true;
    setById(new Map());
    setLoading(true);
    const put = (view: MessageView) => setById((m) => (m.has(view.key) ? m : new Map(m).set(view.key, view)));
    const off = channel.on("event", (frame) => {
      const { type, payload } = frame.event as { type: string; payload: Record<string, unknown> };
      if (type === "MessagePosted" && payload.parent_id === parentId) {
        // the reducer reads top-level posts: read the reply as one, then put it back under its parent
        const next = applyEvent(emptyTimeline, { ...frame, event: { ...frame.event, payload: { ...payload, parent_id: null } } } as EventFrame);
        for (const v of next.byId.values()) put({ ...v, parent_id: parentId });
      } else if (type === "MessageEdited" || type === "MessageDeleted" || type === "ReactionAdded" || type === "ReactionRemoved") {
        setById((m) => {
          const known = m.get(payload.message_id as string);
          if (!known) return m;
          const next = applyEvent({ ...emptyTimeline, byId: new Map([[known.key, known]]) }, frame).byId.get(known.key) as MessageView;
          return new Map(m).set(known.key, next);
        });
      }
    });
    client.http
      .call("get_thread", { path: { cid: channelId, mid: parentId }, query: { limit: 1000 } })
      .then((t) => alive && t.messages.forEach((r) => put(fromMessage(r))))
      .catch(() => {})
      .finally(() => alive && setLoading(false));
    return () => {
      alive = false;
      off();
    };
  }, [client, channel, channelId, parentId]);
  const replies = useMemo(() => {
    const sorted = [...byId.values()].sort((a, b) => (a.seq ?? 0) - (b.seq ?? 0));
    return [...sorted, ...echoes(local, byId, parentId, sender.hidden)];
  }, [byId, local, parentId, sender.hidden]);
  return { replies, loading, ...sender };
}

/** Who is typing in a channel now (others only). */
export function useTyping(channelId: string): string[] {
  const channel = useChannel(channelId);
  const [typing, setTyping] = useState<string[]>(() => channel.typing);
  useEffect(() => {
    setTyping(channel.typing);
    return channel.on("typing", setTyping);
  }, [channel]);
  return typing;
}

export type PresenceStatus = PresenceFrame["status"] | "unknown";

/** A user's presence (`online`, `away`, `offline`), live. */
export function usePresence(userId: string): PresenceStatus {
  const { client } = useCaas();
  const [status, setStatus] = useState<PresenceStatus>(() => client.presence.get(userId)?.status ?? "unknown");
  useEffect(() => {
    setStatus(client.presence.get(userId)?.status ?? "unknown");
    return client.watchPresence([userId], (frame) => setStatus(frame.status));
  }, [client, userId]);
  return status;
}
