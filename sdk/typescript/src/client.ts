import { Channel, type ChannelHost, type ChannelOptions } from "./channel.js";
import { backoff, Emitter } from "./emitter.js";
import { CaasError } from "./errors.js";
import type { ClientFrame, PresenceFrame, ServerFrame } from "./frames.js";
import { HttpClient, type HttpOptions } from "./http.js";
import { Outbox, type OutboxOptions } from "./outbox.js";

/** The part of the WebSocket API the client uses (browsers', Node ≥ 22's, or the `ws` package's). */
export interface SocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}
export type SocketConstructor = new (url: string) => SocketLike;

export interface ClientOptions extends HttpOptions, OutboxOptions {
  /** The WebSocket class; defaults to `globalThis.WebSocket` (browsers, Node ≥ 22). */
  WebSocket?: SocketConstructor;
  /** The user this token belongs to (for local echo and unread counts); read from the token if omitted. */
  userId?: string;
  /** Reconnect backoff: first delay and cap (default 1 s, 30 s), full jitter: the first reconnect
   * after a restart (1012), an error (1011) or a lost connection (1006) waits a random 0–1 s. */
  reconnectBaseMs?: number;
  reconnectMaxMs?: number;
  /** A ping this often; a socket silent for `pingIntervalMs + pingTimeoutMs` is dropped and reopened. */
  pingIntervalMs?: number;
  pingTimeoutMs?: number;
  /** The server's `CAAS_WS_MAX_FRAME_BYTES`: larger frames are refused before they are sent. */
  maxFrameBytes?: number;
  /** The server's `CAAS_WS_FRAMES_PER_SECOND` and `CAAS_WS_FRAMES_BURST` (20, 100): frames over
   * this pace wait on the client instead of being refused with `rate_limited`. */
  framesPerSecond?: number;
  framesBurst?: number;
  /** `"compact"`: the server sends channel events as compact `ev` frames (about a third of the
   * bytes; channels emit them as `ev` and yield them from `frames()`); default `"full"`. */
  frames?: "full" | "compact";
}

export type ClientEvents = {
  /** The socket is open and every subscription has been sent again. */
  connected: { attempt: number };
  /** The socket closed. `retrying`: the client reconnects after `delayMs`; otherwise it stopped
   * (closed by the app, or a refusal retrying cannot fix: a quota, a rate limit, a refreshed token
   * the server refuses again, reported as an `error` first); `connect()` starts it again. */
  disconnected: { code: number; reason: string; delayMs: number; retrying: boolean };
  /** Something the app should know: a 1009 close, a refused refresh, a rate limit, a quota. */
  error: CaasError;
  presence: PresenceFrame;
  /** A frame the client has no handling of its own for (e.g. E2E's `prekeys_low`, `identity_key_changed`). */
  frame: { type: string; [key: string]: unknown };
};

const OPEN = 1;

/**
 * The CAAS client: `http` calls any route; `channel()` opens a live timeline that resumes with
 * `since_seq` after every disconnect; `outbox` sends messages exactly once.
 */
export class CaasClient extends Emitter<ClientEvents> implements ChannelHost {
  readonly http: HttpClient;
  readonly outbox: Outbox;
  /** Last presence frame per watched user. */
  readonly presence = new Map<string, PresenceFrame>();
  private readonly options: ClientOptions;
  private readonly channels = new Map<string, Channel>();
  private readonly watched = new Set<string>();
  private socket: SocketLike | undefined;
  private attempt = 0;
  /** The next 1013 or auth close may reconnect at once: no such close since the last new event. */
  private atOnce = true;
  /** The token the current socket was opened with (a refreshed token equal to it is refused again). */
  private socketToken: string | undefined;
  /** Bumped by `close()`: work started before it (a refresh under way) must not reopen. */
  private generation = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private pinger: ReturnType<typeof setInterval> | undefined;
  private lastFrameAt = 0;
  private lastError: string | undefined;
  private closedByApp = true;
  private me: string | undefined;
  private frameLimit: number;
  private largestSent = 0;
  /** Subscribes sent on this socket and not yet answered with `subscribed`: sent again after a `rate_limited`. */
  private readonly unanswered = new Set<string>();
  /** Client-side token bucket of frames, and the frames waiting for it. */
  private tokens = 0;
  private refilledAt = 0;
  private readonly paced: string[] = [];
  private pacer: ReturnType<typeof setTimeout> | undefined;
  private resender: ReturnType<typeof setTimeout> | undefined;

  constructor(options: ClientOptions) {
    super();
    this.options = options;
    this.http = new HttpClient(options);
    this.outbox = new Outbox(this.http, options);
    // a browser back online: retry the outbox and reconnect now rather than after the backoff
    (globalThis as { addEventListener?: (type: string, fn: () => void) => void }).addEventListener?.("online", this.online);
    this.frameLimit = options.maxFrameBytes ?? 16384;
    this.me = options.userId ?? (typeof options.token === "string" ? subjectOf(options.token) : undefined);
  }

  userId(): string | undefined {
    return this.me;
  }

  /** Whether the websocket is open now. */
  get connected(): boolean {
    return this.socket?.readyState === OPEN;
  }

  /** Open the websocket (done by `channel()` and `watchPresence()` too); reconnects until `close()`. */
  connect(): void {
    if (!this.closedByApp) return;
    if (this.options.WebSocket === undefined && typeof (globalThis as { WebSocket?: unknown }).WebSocket !== "function") {
      throw new CaasError("unsupported", "no WebSocket here: pass the WebSocket option (e.g. the ws package on Node 20)");
    }
    this.closedByApp = false;
    this.outbox.start();
    this.attempt = 0;
    this.atOnce = true;
    void this.opened();
  }

  private async opened(): Promise<void> {
    try {
      await this.open();
    } catch (cause) {
      // e.g. a constructor that refuses the URL: report it and try again later
      this.emit("error", cause instanceof CaasError ? cause : new CaasError("network", String(cause), { cause }));
      this.retry(0, "connect failed", backoff(this.attempt++, this.base, this.cap));
    }
  }

  private readonly online = (): void => {
    this.outbox.wake();
    if (this.timer !== undefined && !this.closedByApp) {
      // waiting out a backoff: reconnect now
      clearTimeout(this.timer);
      this.timer = undefined;
      void this.opened();
    }
  };

  /** Close the socket and stop the outbox's retries: every channel ends (its iterators finish,
   * its `caughtUp` promises reject with `closed`); `connect()` starts the outbox again. */
  close(): void {
    (globalThis as { removeEventListener?: (type: string, fn: () => void) => void }).removeEventListener?.("online", this.online);
    this.closedByApp = true;
    this.generation++;
    clearTimeout(this.timer);
    this.timer = undefined;
    clearTimeout(this.pacer);
    this.pacer = undefined;
    clearTimeout(this.resender);
    this.resender = undefined;
    clearInterval(this.pinger);
    const socket = this.socket;
    this.socket = undefined;
    if (socket) {
      detach(socket);
      socket.close(1000);
    }
    for (const channel of [...this.channels.values()]) channel.close();
    this.channels.clear();
    this.outbox.stop();
  }

  /** A live timeline of a channel (one per id): events from `since` (or live), resumed on every
   * reconnect. An open channel is returned as it is; asking it for an earlier `since` throws
   * (`invalid_request`: close it first to replay). */
  channel(id: string, options: ChannelOptions = {}): Channel {
    const existing = this.channels.get(id);
    if (existing?.active) {
      if (options.since !== undefined && existing.seq !== undefined && options.since < existing.seq) {
        throw new CaasError("invalid_request", `channel ${id} is open at seq ${existing.seq}: close it before replaying from ${options.since}`);
      }
      return existing;
    }
    const channel = new Channel(id, this, options);
    this.channels.set(id, channel);
    this.connect();
    this.resubscribe(channel);
    return channel;
  }

  /** Presence frames of these users: their status now, then each change (also after reconnects). */
  watchPresence(userIds: string[], listener?: (frame: PresenceFrame) => void): () => void {
    const fresh = userIds.filter((u) => !this.watched.has(u));
    for (const u of fresh) this.watched.add(u);
    this.connect();
    if (fresh.length) this.sendFrame({ type: "subscribe_presence", user_ids: fresh });
    return listener ? this.on("presence", (f) => userIds.includes(f.user_id) && listener(f)) : () => {};
  }

  /** Unread counts per channel, from the server (after the app's own writes: read-your-writes);
   * at most 200 channels, the most the server lists for a user token. */
  async unreadCounts(): Promise<Map<string, number>> {
    const list = await this.http.call("list_channels", { query: { limit: 200 } });
    return new Map(list.channels.map((c) => [c.channel_id, c.unread_count ?? 0]));
  }

  /** @internal */
  sendFrame(frame: ClientFrame): boolean {
    const socket = this.socket;
    if (socket?.readyState !== OPEN) return false;
    const text = JSON.stringify(frame);
    const size = new TextEncoder().encode(text).length;
    if (size > this.frameLimit) {
      if (frame.type === "subscribe_presence" && frame.user_ids.length > 1) {
        // split a long watch list into frames the server takes
        const half = frame.user_ids.length >> 1;
        return this.sendFrame({ ...frame, user_ids: frame.user_ids.slice(0, half) }) && this.sendFrame({ ...frame, user_ids: frame.user_ids.slice(half) });
      }
      throw new CaasError("payload_too_large", `frames are at most ${this.frameLimit} bytes`);
    }
    this.largestSent = Math.max(this.largestSent, size);
    this.paced.push(text);
    this.flush(socket);
    return true;
  }

  /** Send what the frame bucket allows now; wait for it to refill for the rest. */
  private flush(socket: SocketLike): void {
    const rate = this.options.framesPerSecond ?? 20;
    const burst = this.options.framesBurst ?? 100;
    const now = Date.now();
    this.tokens = Math.min(burst, this.tokens + ((now - this.refilledAt) / 1000) * rate);
    this.refilledAt = now;
    while (this.paced.length && this.tokens >= 1) {
      this.tokens--;
      socket.send(this.paced.shift() as string);
    }
    if (this.paced.length && this.pacer === undefined) {
      this.pacer = setTimeout(() => {
        this.pacer = undefined;
        if (this.socket === socket && socket.readyState === OPEN) this.flush(socket);
      }, Math.ceil(((1 - this.tokens) / rate) * 1000));
    }
  }

  /** @internal */
  resubscribe(channel: Channel): void {
    if (this.socket?.readyState === OPEN) this.unanswered.add(channel.id);
    this.sendFrame({ type: "subscribe", channel_id: channel.id, ...(channel.seq === undefined ? {} : { since_seq: channel.seq }) });
  }

  /** @internal */
  release(channel: Channel): void {
    if (this.channels.get(channel.id) === channel) {
      this.channels.delete(channel.id);
      this.sendFrame({ type: "unsubscribe", channel_id: channel.id });
    }
  }

  private async open(): Promise<void> {
    if (this.closedByApp) return;
    const Socket = (this.options.WebSocket ?? (globalThis as unknown as { WebSocket: SocketConstructor }).WebSocket);
    let token: string | undefined;
    try {
      token = await this.http.currentToken();
    } catch (cause) {
      this.emit("error", new CaasError("unauthenticated", "the token source failed", { cause }));
      this.retry(0, "token source failed", backoff(this.attempt++, this.base, this.cap));
      return;
    }
    if (this.closedByApp) return;
    if (token !== undefined) this.me ??= subjectOf(token);
    this.socketToken = token;
    const compact = this.options.frames === "compact" ? "&frames=compact" : "";
    const url = `${this.http.baseUrl.replace(/^http/, "ws")}/v1/ws?token=${encodeURIComponent(token ?? "")}${compact}`;
    const socket = new Socket(url);
    this.socket = socket;
    this.lastError = undefined;
    this.largestSent = 0;
    this.unanswered.clear();
    this.paced.length = 0;
    clearTimeout(this.pacer);
    this.pacer = undefined;
    clearTimeout(this.resender);
    this.resender = undefined;
    this.tokens = this.options.framesBurst ?? 100; // a new socket has a full bucket on the server
    this.refilledAt = Date.now();
    socket.onopen = () => {
      this.lastFrameAt = Date.now();
      const attempt = this.attempt;
      for (const channel of this.channels.values()) this.resubscribe(channel);
      if (this.watched.size) this.sendFrame({ type: "subscribe_presence", user_ids: [...this.watched] });
      this.startPinging(socket);
      this.emit("connected", { attempt });
    };
    socket.onmessage = (event) => {
      if (this.socket !== socket) return;
      this.lastFrameAt = Date.now();
      if (typeof event.data !== "string") return;
      let frame: ServerFrame | undefined;
      try {
        frame = wellFormed(JSON.parse(event.data));
      } catch {
        frame = undefined;
      }
      if (frame === undefined) {
        // a bad frame is reported and skipped: asking again would only bring it back
        this.emit("error", new CaasError("invalid_frame", `the server sent a frame the client cannot read: ${event.data.slice(0, 200)}`));
        return;
      }
      this.onFrame(socket, frame);
    };
    socket.onerror = () => {}; // a close follows
    socket.onclose = (event) => this.onClose(socket, event.code, event.reason);
  }

  private get base(): number {
    return this.options.reconnectBaseMs ?? 1000;
  }
  private get cap(): number {
    return this.options.reconnectMaxMs ?? 30_000;
  }

  private onFrame(socket: SocketLike, frame: ServerFrame): void {
    switch (frame.type) {
      case "event":
      case "ev": {
        const channel = this.channels.get(frame.type === "ev" ? frame.ch : frame.channel_id);
        const outcome = channel?.onEvent(frame);
        if (outcome === "applied") {
          // progress: the next drop starts the backoff afresh
          this.attempt = 0;
          this.atOnce = true;
        } else if (outcome === "gap" && channel) this.resubscribe(channel); // once: ask again from seq
        break;
      }
      case "subscribed":
        this.unanswered.delete(frame.channel_id);
        this.channels.get(frame.channel_id)?.onSubscribed(frame.head_seq);
        break;
      case "typing":
        this.channels.get(frame.channel_id)?.onTyping(frame);
        break;
      case "presence":
        this.presence.set(frame.user_id, frame);
        this.emit("presence", frame);
        break;
      case "error":
        this.lastError = frame.code;
        if (frame.code === "rate_limited" && (frame.channel_id ?? null) === null) this.resendLater(socket, frame.retry_after ?? 1);
        if (frame.channel_id !== undefined && frame.channel_id !== null) this.channels.get(frame.channel_id)?.onError(frame);
        else if (frame.code !== "unauthenticated")
          this.emit("error", new CaasError(frame.code, frame.message, { details: { ...frame.details }, ...(frame.retry_after ? { retryAfter: frame.retry_after } : {}) }));
        break;
      default:
        this.emit("frame", frame as unknown as ClientEvents["frame"]);
    }
  }

  /** A frame was refused for the pace: after `retryAfter` s send again every subscribe not answered. */
  private resendLater(socket: SocketLike, retryAfter: number): void {
    if (this.resender !== undefined) return;
    this.resender = setTimeout(() => {
      this.resender = undefined;
      if (this.socket !== socket) return;
      for (const id of [...this.unanswered]) {
        const channel = this.channels.get(id);
        if (channel?.active) this.resubscribe(channel);
        else this.unanswered.delete(id);
      }
    }, retryAfter * 1000);
  }

  private startPinging(socket: SocketLike): void {
    clearInterval(this.pinger);
    const every = this.options.pingIntervalMs ?? 20_000;
    const grace = this.options.pingTimeoutMs ?? 10_000;
    this.pinger = setInterval(() => {
      if (this.socket !== socket) return;
      if (Date.now() - this.lastFrameAt > every + grace) {
        // silent too long: the network is gone without a close; drop it and reconnect
        detach(socket);
        try {
          socket.close(4000);
        } catch {
          /* already closing */
        }
        this.onClose(socket, 1006, "no answer to ping");
        return;
      }
      this.sendFrame({ type: "ping" });
    }, every);
  }

  private onClose(socket: SocketLike, code: number, reason: string): void {
    if (this.socket !== socket) return;
    detach(socket);
    this.socket = undefined;
    clearInterval(this.pinger);
    if (this.closedByApp) return;
    const error = this.lastError;
    if (code === 1013) {
      // the server shed a slow socket: resume at once from seq, but back off if it keeps shedding
      // without a new event in between
      this.retry(code, reason, this.quickDelay());
    } else if (code === 1008 && (error === undefined || error === "unauthenticated")) {
      const refused = this.socketToken;
      const generation = this.generation;
      this.http.refreshCredential().then(
        (token) => {
          if (this.closedByApp || generation !== this.generation) return; // closed meanwhile
          if (token === refused) {
            this.stop(code, reason, new CaasError("unauthenticated", "the refreshed token is the one the server refused: not reconnecting"));
          } else this.retry(code, reason, this.quickDelay());
        },
        (cause: unknown) => {
          if (this.closedByApp || generation !== this.generation) return;
          this.emit("error", cause instanceof CaasError ? cause : new CaasError("unauthenticated", "token refresh failed", { cause }));
          this.retry(code, reason, backoff(this.attempt++, this.base, this.cap));
        },
      );
    } else if (code === 1008) {
      // a quota or too many sockets: retrying in a loop cannot help; the app decides when to connect()
      this.stop(code, reason, new CaasError(error ?? "forbidden", `the server refused the socket (${reason || error})`));
    } else {
      if (code === 1009) {
        // the server takes less than we thought: stay under the largest frame sent on that socket
        if (this.largestSent > 1) this.frameLimit = Math.min(this.frameLimit, this.largestSent - 1);
        this.emit("error", new CaasError("payload_too_large", `the server closed the socket: a frame was too large (1009); frames now at most ${this.frameLimit} bytes`));
      }
      this.retry(code, reason, backoff(this.attempt++, this.base, this.cap));
    }
  }

  /** 0 for the first 1013 or auth close since the last new event, a growing backoff for the next ones. */
  private quickDelay(): number {
    if (this.atOnce) {
      this.atOnce = false;
      return 0;
    }
    return backoff(this.attempt++, this.base, this.cap);
  }

  private retry(code: number, reason: string, delayMs: number): void {
    // the timer first: a listener of `disconnected` that throws cannot stop the reconnect
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.opened();
    }, delayMs);
    this.emit("disconnected", { code, reason, delayMs, retrying: true });
  }

  /** Stop reconnecting after a refusal retrying cannot fix; `connect()` starts again. */
  private stop(code: number, reason: string, error: CaasError): void {
    this.closedByApp = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.emit("error", error);
    this.emit("disconnected", { code, reason, delayMs: 0, retrying: false });
  }
}

/** The frame if it has the shape the client relies on, else `undefined`. */
function wellFormed(value: unknown): ServerFrame | undefined {
  if (typeof value !== "object" || value === null) return undefined;
  const f = value as Record<string, unknown>;
  if (typeof f.type !== "string") return undefined;
  if (f.type === "event") {
    const event = f.event as Record<string, unknown> | null | undefined;
    if (typeof f.seq !== "number" || typeof f.channel_id !== "string" || typeof event !== "object" || event === null || typeof event.payload !== "object") return undefined;
  }
  if (f.type === "ev" && (typeof f.seq !== "number" || typeof f.ch !== "string" || typeof f.ev !== "string" || typeof f.d !== "object" || f.d === null)) return undefined;
  if (f.type === "subscribed" && (typeof f.channel_id !== "string" || typeof f.head_seq !== "number")) return undefined;
  if (f.type === "error" && typeof f.code !== "string") return undefined;
  return value as ServerFrame;
}

function detach(socket: SocketLike): void {
  socket.onopen = socket.onmessage = null;
  socket.onclose = null;
  socket.onerror = () => {}; // closing a socket still connecting reports an error: nobody needs it
}

/** The `sub` claim of a JWT (no verification: the server does that). */
function subjectOf(token: string): string | undefined {
  const part = token.split(".")[1];
  if (part === undefined) return undefined;
  try {
    const json = atob(part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "="));
    const sub = (JSON.parse(json) as { sub?: unknown }).sub;
    return typeof sub === "string" ? sub : undefined;
  } catch {
    return undefined;
  }
}

/** A client for `baseUrl` with a credential; see {@link ClientOptions}. */
export function createClient(options: ClientOptions): CaasClient {
  return new CaasClient(options);
}
