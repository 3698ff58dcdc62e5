import { Emitter } from "./emitter.js";
import { CaasError } from "./errors.js";
import { eventOf, type ChannelEvent, type CompactEventFrame, type ErrorFrame, type EventFrame, type TypingFrame } from "./frames.js";
import type { HttpClient, RequestBody, ResponseBody, Schemas } from "./http.js";
import { newId, type Ack, type Outbox, type PostBody } from "./outbox.js";

/** A message as the timeline shows it: confirmed by an event, or a local echo of one being sent. */
export interface TimelineMessage {
  /** `null` while only the local echo exists. */
  message_id: string | null;
  client_msg_id: string | null;
  /** `null` until acknowledged. */
  seq: number | null;
  author_id: string;
  text: string;
  parent_id: string | null;
  attachments: unknown[];
  reactions: Record<string, string[]>;
  edited: boolean;
  deleted: boolean;
  /** `pending`: in the outbox; `sent`: acknowledged; `delivered`: its event arrived; `failed`: refused. */
  status: "pending" | "sent" | "delivered" | "failed";
  error?: CaasError;
}

export type ChannelEvents = {
  /** Every event, in `seq` order, exactly once (across reconnects and restarts). */
  event: EventFrame;
  /** The same, on a client made with `frames: "compact"`: its compact `ev` frames. */
  ev: CompactEventFrame;
  /** The timeline changed (a message added, echoed, acknowledged, edited, deleted, reacted to); once per burst of frames. */
  messages: TimelineMessage[];
  /** Who is typing now (others only). */
  typing: string[];
  /** An error frame for this channel (e.g. `forbidden` after removal); the subscription ends. */
  error: CaasError;
  /** `subscribed` answered: the channel's head at that moment. */
  subscribed: { headSeq: number };
};

export interface ChannelOptions {
  /** Replay every event after this seq first; omit for the live tail only. */
  since?: number;
  /** The timeline keeps at most this many confirmed messages, dropping the oldest (default 5000;
   * `history()` pages further back). */
  maxMessages?: number;
  /** An async iterator holds at most this many events its consumer has not taken (default
   * 10 000); past that it drops them and throws `overflow` (with `details.seq`, the last seq it
   * yielded) instead of growing without bound. */
  iteratorBuffer?: number;
  /** At most one typing signal per this many ms (the server's `CAAS_TYPING_THROTTLE_SECONDS`, 2 s). */
  typingThrottleMs?: number;
}

/** What a channel needs of its client (kept small so the channel is testable on its own). */
export interface ChannelHost {
  readonly http: HttpClient;
  readonly outbox: Outbox;
  userId(): string | undefined;
  sendFrame(frame: { type: "typing"; channel_id: string }): boolean;
  resubscribe(channel: Channel): void;
  release(channel: Channel): void;
}

/**
 * A channel's live timeline. It keeps the last `seq` it applied and the client resumes from it
 * after every disconnect, so `event` listeners see each event once, in order, with no gap.
 */
export class Channel extends Emitter<ChannelEvents> {
  /** The last seq applied (`undefined` before the first event or `subscribed` of a live-only subscription). */
  seq: number | undefined;
  headSeq = 0;
  /** The caller's read marker as last seen (by event or by `markRead`). */
  readSeq = 0;
  private readonly byId = new Map<string, TimelineMessage>();
  private readonly echoes = new Map<string, TimelineMessage>();
  private readonly typists = new Map<string, ReturnType<typeof setTimeout>>();
  private readonly throttle: number;
  private readonly maxMessages: number;
  private readonly iteratorBuffer: number;
  /** The highest seq of a message this timeline has held (kept when old messages are dropped). */
  private lastMessageSeq = 0;
  private lastTyping = -Infinity;
  private pendingChange = false;
  /** A gap was seen and a subscribe from `seq` sent: events are ignored until its `subscribed`. */
  private resyncing = false;
  private readonly iterators = new Set<(frame: ChannelEvent | null) => void>();
  private readonly waiters = new Set<(error: CaasError) => void>();
  active = true;

  constructor(
    readonly id: string,
    private readonly host: ChannelHost,
    options: ChannelOptions = {},
  ) {
    super();
    this.seq = options.since;
    this.throttle = options.typingThrottleMs ?? 2000;
    this.maxMessages = options.maxMessages ?? 5000;
    this.iteratorBuffer = options.iteratorBuffer ?? 10_000;
  }

  /** Confirmed messages in seq order, then the local echoes still waiting. */
  get messages(): TimelineMessage[] {
    const confirmed = [...this.byId.values()]; // inserted in seq order: events arrive in order
    return [...confirmed, ...[...this.echoes.values()].filter((m) => m.message_id === null || !this.byId.has(m.message_id))];
  }

  /** Top-level messages by others after the read marker, among those this timeline holds. */
  get unreadCount(): number {
    const me = this.host.userId();
    return [...this.byId.values()].filter((m) => !m.parent_id && !m.deleted && m.author_id !== me && (m.seq ?? 0) > this.readSeq).length;
  }

  /** Who is typing now. */
  get typing(): string[] {
    return [...this.typists.keys()];
  }

  /**
   * Post through the outbox with an optimistic local echo: the message is in `messages` at once
   * (`pending`), becomes `sent` on acknowledgement and `delivered` when its event arrives, always
   * one entry. Resolves with the acknowledgement.
   */
  send(text: string, extra: Omit<PostBody, "text" | "client_msg_id"> = {}): Promise<Ack> {
    const id = newId();
    const echo: TimelineMessage = {
      message_id: null,
      client_msg_id: id,
      seq: null,
      author_id: this.host.userId() ?? "",
      text,
      parent_id: extra.parent_id ?? null,
      attachments: extra.attachments ?? [],
      reactions: {},
      edited: false,
      deleted: false,
      status: "pending",
    };
    this.echoes.set(id, echo);
    this.changed();
    const acked = this.host.outbox.send(this.id, { ...extra, text }, id);
    acked.then(
      (ack) => {
        const confirmed = ack.message_id ? this.byId.get(ack.message_id) : undefined;
        if (confirmed) this.echoes.delete(id);
        else Object.assign(echo, { message_id: ack.message_id ?? null, seq: ack.seq, status: "sent" });
        this.changed();
      },
      (error: unknown) => {
        Object.assign(echo, { status: "failed", error });
        this.changed();
      },
    );
    return acked;
  }

  /** Signal typing, at most once per throttle window (as the server throttles); `false` if skipped. */
  async startTyping(): Promise<boolean> {
    const now = Date.now();
    if (now - this.lastTyping < this.throttle) return false;
    this.lastTyping = now;
    if (this.host.sendFrame({ type: "typing", channel_id: this.id })) return true;
    const answer = await this.host.http.call("typing", { path: { cid: this.id }, body: {} });
    return answer.sent;
  }

  /** Move the read marker to `seq` (default: the last message this timeline holds). */
  async markRead(seq?: number): Promise<ResponseBody<"move_read_marker">> {
    const target = seq ?? Math.max(this.readSeq, this.lastMessageSeq);
    const answer = await this.host.http.call("move_read_marker", { path: { cid: this.id }, body: { seq: target } });
    this.readSeq = Math.max(this.readSeq, target);
    this.changed();
    return answer;
  }

  /** Pages of history, newest first, until the beginning (each a `GET …/messages`). */
  async *history(options: { limit?: number; beforeSeq?: number } = {}): AsyncGenerator<Schemas["Message"][]> {
    let before = options.beforeSeq;
    for (;;) {
      const page = await this.host.http.call("list_messages", {
        path: { cid: this.id },
        query: { limit: options.limit ?? 50, ...(before === undefined ? {} : { before_seq: before }) },
      });
      if (page.messages.length) yield page.messages;
      if (page.next_before_seq === null || page.next_before_seq === undefined || !page.messages.length) return;
      before = page.next_before_seq;
    }
  }

  /** Every later `event` frame as an async iterator (ends when the channel or its client is
   * closed); `frames()` yields compact `ev` frames too. */
  async *[Symbol.asyncIterator](): AsyncGenerator<EventFrame> {
    for await (const frame of this.frames()) if (frame.type === "event") yield frame;
  }

  /** Every later event frame, of either kind, as an async iterator. */
  async *frames(): AsyncGenerator<ChannelEvent> {
    if (!this.active) return;
    const queue: (ChannelEvent | null)[] = [];
    let wake: (() => void) | undefined;
    let overflowed = false;
    let lastSeq: number | undefined;
    const push = (frame: ChannelEvent | null) => {
      if (frame !== null && queue.length >= this.iteratorBuffer) {
        overflowed = true; // the consumer is too slow: drop what waits rather than grow
        queue.length = 0;
      }
      queue.push(frame);
      wake?.();
    };
    this.iterators.add(push);
    try {
      for (;;) {
        while (!queue.length && !overflowed) await new Promise<void>((resolve) => (wake = resolve));
        if (overflowed) {
          throw new CaasError("overflow", `the iterator fell more than ${this.iteratorBuffer} events behind after seq ${lastSeq ?? "none"}`, {
            details: { seq: lastSeq ?? null },
          });
        }
        const frame = queue.shift() as ChannelEvent | null;
        if (frame === null) return;
        lastSeq = frame.seq;
        yield frame;
      }
    } finally {
      this.iterators.delete(push);
    }
  }

  /** Resolves once an event with `seq` or later has been applied; rejects with `code: "closed"`
   * if the channel (or its client) is closed first. */
  caughtUp(seq: number): Promise<void> {
    if ((this.seq ?? 0) >= seq) return Promise.resolve();
    if (!this.active) return Promise.reject(new CaasError("closed", `channel ${this.id} is closed`));
    return new Promise((resolve, reject) => {
      const fail = (error: CaasError) => {
        off();
        reject(error);
      };
      const check = (frame: ChannelEvent) => {
        if (frame.seq >= seq) {
          off();
          this.waiters.delete(fail);
          resolve();
        }
      };
      const offs = [this.on("event", check), this.on("ev", check)];
      const off = () => offs.forEach((o) => o());
      this.waiters.add(fail);
    });
  }

  /** Stop receiving this channel's events: iterators end, `caughtUp` promises reject (`closed`). */
  close(): void {
    if (!this.active) return;
    this.active = false;
    this.host.release(this);
    for (const push of [...this.iterators]) push(null);
    const closed = new CaasError("closed", `channel ${this.id} is closed`);
    for (const fail of [...this.waiters]) fail(closed);
    this.waiters.clear();
    for (const timer of this.typists.values()) clearTimeout(timer);
    this.typists.clear();
  }

  // frames from the connection -----------------------------------------------------------
  /** @internal */
  onSubscribed(headSeq: number): void {
    this.resyncing = false;
    this.headSeq = headSeq;
    if (this.seq === undefined) this.seq = headSeq; // live only: resume from here after a drop
    this.emit("subscribed", { headSeq });
  }

  /**
   * @internal `"applied"`: a new seq; `"gap"`: the frame shows a gap, so the client resubscribes
   * from `seq` (once: later frames are ignored until the `subscribed` answer replays from there);
   * `"ignored"`: already applied, or waiting for that answer.
   */
  onEvent(frame: ChannelEvent): "applied" | "gap" | "ignored" {
    if (this.resyncing) return "ignored";
    const last = this.seq ?? frame.seq - 1;
    if (frame.seq <= last) return "ignored"; // already applied (never expected: the server sends each once)
    if (frame.seq !== last + 1 && this.seq !== undefined) {
      this.resyncing = true;
      return "gap";
    }
    this.seq = frame.seq;
    if (frame.seq > this.headSeq) this.headSeq = frame.seq;
    this.apply(frame);
    if (frame.type === "ev") this.emit("ev", frame);
    else this.emit("event", frame);
    for (const push of this.iterators) push(frame);
    return "applied";
  }

  /** @internal */
  onTyping(frame: TypingFrame): void {
    clearTimeout(this.typists.get(frame.user_id));
    this.typists.set(
      frame.user_id,
      setTimeout(() => {
        this.typists.delete(frame.user_id);
        this.emit("typing", this.typing);
      }, frame.expires_in_ms),
    );
    this.emit("typing", this.typing);
  }

  /** @internal */
  onError(frame: ErrorFrame): void {
    this.emit("error", new CaasError(frame.code, frame.message, { details: { ...frame.details } }));
    if (frame.code === "forbidden" || frame.code === "not_found") this.close();
  }

  private apply(frame: ChannelEvent): void {
    const { type, payload } = eventOf(frame);
    const mid = payload.message_id as string | undefined;
    const message = mid === undefined ? undefined : this.byId.get(mid);
    switch (type) {
      case "MessagePosted": {
        const cmid = (payload.client_msg_id as string | null | undefined) ?? null;
        const posted: TimelineMessage = {
          message_id: mid ?? null,
          client_msg_id: cmid,
          seq: frame.seq,
          author_id: payload.author_id as string,
          text: payload.text as string,
          parent_id: (payload.parent_id as string | null | undefined) ?? null,
          attachments: (payload.attachments as unknown[] | undefined) ?? [],
          reactions: {},
          edited: payload.redacted === "edited",
          deleted: payload.redacted === "deleted",
          status: "delivered",
        };
        if (mid !== undefined) {
          this.byId.set(mid, posted);
          // a window, not the whole channel: the oldest message goes (Maps keep insertion order)
          if (this.byId.size > this.maxMessages) this.byId.delete(this.byId.keys().next().value as string);
        }
        this.lastMessageSeq = Math.max(this.lastMessageSeq, frame.seq);
        if (cmid !== null && posted.author_id === this.host.userId()) this.echoes.delete(cmid);
        break;
      }
      case "MessageEdited":
        if (message) Object.assign(message, { text: payload.text as string, edited: true });
        break;
      case "MessageDeleted":
        if (message) Object.assign(message, { text: "", attachments: [], deleted: true });
        break;
      case "ReactionAdded":
      case "ReactionRemoved":
        if (message) {
          const emoji = payload.emoji as string;
          const users = (message.reactions[emoji] ?? []).filter((u) => u !== payload.user_id);
          if (type === "ReactionAdded") users.push(payload.user_id as string);
          if (users.length) message.reactions[emoji] = users;
          else delete message.reactions[emoji];
        }
        break;
      case "ReadMarkerMoved":
        if (payload.user_id === this.host.userId()) this.readSeq = Math.max(this.readSeq, payload.seq as number);
        break;
      default:
        return;
    }
    this.changed();
  }

  private changed(): void {
    // once per burst of frames, and only for listeners: a replay of 10k events builds no 10k lists
    if (this.pendingChange || !this.heard("messages")) return;
    this.pendingChange = true;
    setTimeout(() => {
      this.pendingChange = false;
      this.emit("messages", this.messages);
    }, 0);
  }
}

export type { RequestBody };
