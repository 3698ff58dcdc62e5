// The message list's state: history pages from `GET …/messages` merged with the channel's live
// events, as a pure, idempotent reducer (the same event or page applied twice changes nothing).
import type { EventFrame, Schemas, TimelineMessage } from "@caas/client";

export type Attachment = { type: string; url: string; name?: string };

/** A message as the kit shows it: the SDK's timeline message (`status`: `delivered` for every
 * confirmed one, the outbox's state for local echoes) with what the list shows besides. */
export interface MessageView extends Omit<TimelineMessage, "attachments" | "error"> {
  /** `message_id`, or `local:<client_msg_id>` for a send not yet acknowledged. */
  key: string;
  attachments: Attachment[];
  reply_count: number;
  seen_by: string[];
  created_at: string | null;
}

export interface TimelineState {
  /** Confirmed top-level messages by id. */
  byId: ReadonlyMap<string, MessageView>;
  /** Read markers of the channel's members (user → seq), from pages' `seen_by` and live events. */
  markers: ReadonlyMap<string, number>;
  /** The oldest seq loaded (for `before_seq`), `null` before the first page. */
  oldestSeq: number | null;
  /** Whether older pages exist. */
  hasOlder: boolean;
}

export const emptyTimeline: TimelineState = { byId: new Map(), markers: new Map(), oldestSeq: null, hasOlder: true };

function attachments(raw: unknown[] | undefined): Attachment[] {
  return (raw ?? []).flatMap((a) => {
    const o = a as Record<string, unknown>;
    return typeof o.url === "string" ? [{ type: String(o.type ?? "link"), url: o.url, ...(typeof o.name === "string" ? { name: o.name } : {}) }] : [];
  });
}

/** A message of a history page as a view. */
export function fromMessage(m: Schemas["Message"]): MessageView {
  return {
    key: m.message_id,
    message_id: m.message_id,
    client_msg_id: null,
    seq: m.seq,
    author_id: m.author_id,
    text: m.text ?? "",
    parent_id: m.parent_id,
    attachments: attachments(m.attachments),
    reactions: { ...m.reactions },
    reply_count: m.reply_count,
    seen_by: [...(m.seen_by ?? [])],
    edited: m.edited_at !== null,
    deleted: m.deleted,
    created_at: m.created_at,
    status: "delivered",
  };
}

/** A history page (newest first, as the API answers) merged in. */
export function applyPage(state: TimelineState, page: Schemas["Message"][], nextBeforeSeq: number | null | undefined): TimelineState {
  const byId = new Map(state.byId);
  const markers = new Map(state.markers);
  let oldest = state.oldestSeq;
  for (const m of page) {
    const known = byId.get(m.message_id);
    // a live event may already have changed the message: the later of the two wins
    if (!known) byId.set(m.message_id, fromMessage(m));
    else byId.set(m.message_id, { ...fromMessage(m), reactions: known.reactions, text: known.deleted ? "" : known.text, deleted: known.deleted || m.deleted, edited: known.edited || m.edited_at !== null, reply_count: Math.max(known.reply_count, m.reply_count) });
    for (const u of m.seen_by ?? []) markers.set(u, Math.max(markers.get(u) ?? 0, m.seq));
    oldest = oldest === null ? m.seq : Math.min(oldest, m.seq);
  }
  return { byId: sortById(byId), markers, oldestSeq: oldest, hasOlder: nextBeforeSeq !== null && nextBeforeSeq !== undefined && page.length > 0 };
}

function sortById(byId: Map<string, MessageView>): Map<string, MessageView> {
  return new Map([...byId].sort(([, a], [, b]) => (a.seq ?? 0) - (b.seq ?? 0)));
}

/**
 * One live event applied. Replies (`parent_id`) are not in the channel's list: the kit counts them
 * with `replyCounts` (fetched, exact) rather than here, so a reply seen both in a page and live
 * is never counted twice.
 */
export function applyEvent(state: TimelineState, frame: EventFrame): TimelineState {
  const { type, payload, occurred_at } = frame.event as { type: string; payload: Record<string, unknown>; occurred_at?: string };
  const mid = payload.message_id as string | undefined;
  const known = mid === undefined ? undefined : state.byId.get(mid);
  const put = (view: MessageView): TimelineState => {
    const byId = new Map(state.byId);
    byId.set(view.key, view);
    return { ...state, byId: known ? byId : sortById(byId) };
  };
  switch (type) {
    case "MessagePosted": {
      if (mid === undefined || known || payload.parent_id) return state;
      return put({
        key: mid,
        message_id: mid,
        client_msg_id: (payload.client_msg_id as string | null | undefined) ?? null,
        seq: frame.seq,
        author_id: payload.author_id as string,
        text: (payload.text as string | undefined) ?? "",
        parent_id: null,
        attachments: attachments(payload.attachments as unknown[] | undefined),
        reactions: {},
        reply_count: 0,
        seen_by: [],
        edited: payload.redacted === "edited",
        deleted: payload.redacted === "deleted",
        created_at: occurred_at ?? null,
        status: "delivered",
      });
    }
    case "MessageEdited":
      return known && !known.deleted ? put({ ...known, text: payload.text as string, edited: true }) : state;
    case "MessageDeleted":
      return known ? put({ ...known, text: "", attachments: [], deleted: true }) : state;
    case "ReactionAdded":
    case "ReactionRemoved": {
      if (!known) return state;
      const emoji = payload.emoji as string;
      const user = payload.user_id as string;
      const users = (known.reactions[emoji] ?? []).filter((u) => u !== user);
      if (type === "ReactionAdded") users.push(user);
      const reactions = { ...known.reactions };
      if (users.length) reactions[emoji] = users;
      else delete reactions[emoji];
      return put({ ...known, reactions });
    }
    case "ReadMarkerMoved": {
      const user = payload.user_id as string;
      const seq = payload.seq as number;
      if ((state.markers.get(user) ?? 0) >= seq) return state;
      const markers = new Map(state.markers);
      markers.set(user, seq);
      return { ...state, markers };
    }
    default:
      return state;
  }
}

/** The messages in order, each with `seen_by` (sorted) from the read markers (the author excluded). */
export function visible(state: TimelineState): MessageView[] {
  return [...state.byId.values()].map((m) => {
    const seen = [...state.markers].filter(([u, seq]) => u !== m.author_id && m.seq !== null && seq >= m.seq).map(([u]) => u).sort();
    return seen.length === m.seen_by.length && seen.every((u, i) => u === m.seen_by[i]) ? m : { ...m, seen_by: seen };
  });
}

/** Local echoes (sends not yet confirmed by their event) as views, after the confirmed ones. */
export function echoes(timeline: TimelineMessage[], confirmed: ReadonlyMap<string, MessageView>, parentId: string | null, hidden: ReadonlySet<string>): MessageView[] {
  const seenCmids = new Set([...confirmed.values()].map((m) => m.client_msg_id).filter((c): c is string => c !== null));
  return timeline
    .filter((m) => m.status !== "delivered" && m.client_msg_id !== null && (m.parent_id ?? null) === parentId)
    .filter((m) => !hidden.has(m.client_msg_id as string) && !seenCmids.has(m.client_msg_id as string) && !(m.message_id && confirmed.has(m.message_id)))
    .map((m) => ({
      key: `local:${m.client_msg_id}`,
      message_id: m.message_id,
      client_msg_id: m.client_msg_id,
      seq: m.seq,
      author_id: m.author_id,
      text: m.text,
      parent_id: m.parent_id,
      attachments: attachments(m.attachments),
      reactions: {},
      reply_count: 0,
      seen_by: [],
      edited: false,
      deleted: false,
      created_at: null,
      status: m.status,
    }));
}
