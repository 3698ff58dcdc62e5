import { backoff, Emitter, reportListenerError } from "./emitter.js";
import { CaasError } from "./errors.js";
import type { HttpClient, RequestBody, ResponseBody } from "./http.js";

export type PostBody = RequestBody<"post_message">;
export type Ack = ResponseBody<"post_message">;

/** A message waiting for the server's acknowledgement. `id` is its `client_msg_id`. */
export interface OutboxEntry {
  id: string;
  channelId: string;
  body: PostBody;
  createdAt: number;
  /** Increases with every message queued, across sessions: the order they are sent in. */
  order: number;
}

let lastOrder = 0;
/** Microseconds since the epoch, strictly increasing in this process. */
function nextOrder(): number {
  lastOrder = Math.max(Date.now() * 1000, lastOrder + 1);
  return lastOrder;
}

/** Where pending messages wait: keep them across page reloads with {@link IndexedDbStorage}. */
export interface OutboxStorage {
  all(): Promise<OutboxEntry[]>;
  put(entry: OutboxEntry): Promise<void>;
  delete(id: string): Promise<void>;
}

export class MemoryStorage implements OutboxStorage {
  private readonly entries = new Map<string, OutboxEntry>();
  async all(): Promise<OutboxEntry[]> {
    return [...this.entries.values()];
  }
  async put(entry: OutboxEntry): Promise<void> {
    this.entries.set(entry.id, entry);
  }
  async delete(id: string): Promise<void> {
    this.entries.delete(id);
  }
}

/** Browser storage: pending messages survive a reload or a closed tab and are sent on the next start. */
export class IndexedDbStorage implements OutboxStorage {
  private db: Promise<IDBDatabase> | undefined;
  constructor(private readonly name = "caas-outbox") {}

  private open(): Promise<IDBDatabase> {
    this.db ??= new Promise<IDBDatabase>((resolve, reject) => {
      const request = indexedDB.open(this.name, 1);
      request.onupgradeneeded = () => request.result.createObjectStore("outbox", { keyPath: "id" });
      request.onsuccess = () => {
        const db = request.result;
        // another tab upgrading, or the browser closing the database: open it again next time
        const forget = () => {
          db.close();
          this.db = undefined;
        };
        db.onversionchange = forget;
        db.onclose = forget;
        resolve(db);
      };
      request.onerror = () => reject(request.error);
      request.onblocked = () => reject(new Error(`IndexedDB ${this.name} is blocked by another tab`));
    }).catch((error: unknown) => {
      this.db = undefined; // a failed open is tried again, not cached
      throw error;
    });
    return this.db;
  }

  /** Resolves when the transaction has committed (a request's success is not yet durable). */
  private async run<T>(mode: IDBTransactionMode, act: (store: IDBObjectStore) => IDBRequest<T>): Promise<T> {
    const db = await this.open();
    return new Promise((resolve, reject) => {
      const tx = db.transaction("outbox", mode);
      const request = act(tx.objectStore("outbox"));
      tx.oncomplete = () => resolve(request.result);
      tx.onabort = () => reject(tx.error ?? new Error("IndexedDB transaction aborted"));
      tx.onerror = () => reject(tx.error ?? request.error);
    });
  }

  async all(): Promise<OutboxEntry[]> {
    const entries = await this.run<OutboxEntry[]>("readonly", (s) => s.getAll());
    return entries.sort((a, b) => a.order - b.order);
  }
  async put(entry: OutboxEntry): Promise<void> {
    await this.run("readwrite", (s) => s.put(entry));
  }
  async delete(id: string): Promise<void> {
    await this.run("readwrite", (s) => s.delete(id));
  }
}

export interface OutboxOptions {
  storage?: OutboxStorage;
  /** First retry delay, doubled per failure with full jitter (default 250 ms, at most `retryMaxMs`, 30 s). */
  retryBaseMs?: number;
  retryMaxMs?: number;
  /** Give a message up (it fails with `code: "gave_up"`) after this many attempts or this long
   * since it was queued (default: never; the `stuck` event says when one keeps failing). */
  maxAttempts?: number;
  maxAgeMs?: number;
}

export type OutboxEvents = {
  acked: { entry: OutboxEntry; ack: Ack };
  failed: { entry: OutboxEntry; error: CaasError };
  retrying: { entry: OutboxEntry; error: CaasError; attempt: number; delayMs: number };
  /** A message failed 5 times in a row and holds up its channel's queue: `discard(id)` it, or wait. */
  stuck: { entry: OutboxEntry; error: CaasError; attempts: number };
};

/**
 * Sends messages until the server acknowledges them, retrying with the same `client_msg_id`, so
 * the server records each exactly once however often the network fails (a retry of a recorded
 * message answers its first result). Messages of one channel go in order, one at a time.
 * A transient failure (network, timeout, 429, 5xx) is retried forever with backoff; a refused
 * credential (401) keeps the message and waits, with backoff, for a new one (a refresh, or
 * `wake()` after the app changed its token); any other answer (403, 422…) fails the message.
 */
export class Outbox extends Emitter<OutboxEvents> {
  readonly storage: OutboxStorage;
  private readonly queues = new Map<string, OutboxEntry[]>();
  private readonly waiting = new Map<string, { resolve: (a: Ack) => void; reject: (e: unknown) => void }>();
  private readonly pumping = new Set<string>();
  private readonly wakers = new Set<() => void>();
  private readonly base: number;
  private readonly max: number;
  private readonly maxAttempts: number;
  private readonly maxAgeMs: number;
  private readonly discarded = new Set<string>();
  private stopped = false;
  /** Resolves the waits of messages held by a refused credential when a refresh brings a new one. */
  private readonly credentialWaiters = new Set<() => void>();

  constructor(
    private readonly http: HttpClient,
    options: OutboxOptions = {},
  ) {
    super();
    this.storage = options.storage ?? new MemoryStorage();
    this.base = options.retryBaseMs ?? 250;
    this.max = options.retryMaxMs ?? 30_000;
    this.maxAttempts = options.maxAttempts ?? Infinity;
    this.maxAgeMs = options.maxAgeMs ?? Infinity;
    http.onCredential(() => {
      for (const wake of [...this.credentialWaiters]) wake();
    });
  }

  /** Queue a message; resolves with the server's acknowledgement. */
  async send(channelId: string, body: PostBody, id: string = newId()): Promise<Ack> {
    const entry: OutboxEntry = { id, channelId, body: { ...body, client_msg_id: id }, createdAt: Date.now(), order: nextOrder() };
    if (this.stopped) {
      await this.storage.put(entry);
      throw new CaasError("closed", `the outbox is stopped: ${id} stays in the storage for restore() or start()`);
    }
    const acked = new Promise<Ack>((resolve, reject) => this.waiting.set(id, { resolve, reject }));
    await this.storage.put(entry);
    this.push(entry);
    return acked;
  }

  /** Send what a previous session left in the storage (acknowledgements arrive as `acked` events). */
  async restore(): Promise<OutboxEntry[]> {
    // a message this session queued, or is writing to the storage right now, is not restored again
    const known = new Set([...[...this.queues.values()].flat().map((e) => e.id), ...this.waiting.keys()]);
    const left = (await this.storage.all()).filter((e) => !known.has(e.id)).sort((a, b) => a.order - b.order);
    if (left.length) lastOrder = Math.max(lastOrder, (left.at(-1) as OutboxEntry).order);
    const fresh = left.filter((e) => !this.waiting.has(e.id) && !this.pending().some((p) => p.id === e.id));
    for (const entry of fresh) this.push(entry);
    return fresh;
  }

  /** Messages not yet acknowledged. */
  pending(channelId?: string): OutboxEntry[] {
    return channelId === undefined ? [...this.queues.values()].flat() : [...(this.queues.get(channelId) ?? [])];
  }

  /** Drop a message that is not acknowledged (e.g. one `stuck` in front of its channel's queue):
   * it leaves the storage and its `send` rejects with `code: "discarded"`. A request already on
   * the wire may still be recorded. `false` if no such message waits. */
  async discard(id: string): Promise<boolean> {
    for (const queue of this.queues.values()) {
      const index = queue.findIndex((e) => e.id === id);
      if (index < 0) continue;
      if (index === 0 && this.pumping.has((queue[0] as OutboxEntry).channelId)) {
        // being delivered: the pump ends it at its next retry
        this.discarded.add(id);
        this.wake();
        return true;
      }
      queue.splice(index, 1);
      await this.storage.delete(id);
      const waiter = this.waiting.get(id);
      this.waiting.delete(id);
      waiter?.reject(new CaasError("discarded", `${id} was discarded`));
      return true;
    }
    return false;
  }

  /** Retry now instead of waiting out the backoff (e.g. when the browser says it is online again). */
  wake(): void {
    for (const wake of [...this.wakers]) wake();
  }

  /** Stop sending: what is not acknowledged stays in the storage (for `restore()` on the next
   * start) and its `send` promise rejects with `code: "closed"`. */
  stop(): void {
    this.stopped = true;
    this.wake();
    for (const [id, waiter] of this.waiting) waiter.reject(new CaasError("closed", `the outbox stopped before ${id} was acknowledged; it stays in the storage`));
    this.waiting.clear();
  }

  /** Send again after `stop()` (done by the client's `connect()`): the queued messages go on. */
  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    for (const [channelId, queue] of this.queues) if (queue.length && !this.pumping.has(channelId)) this.startPump(channelId);
  }

  private push(entry: OutboxEntry): void {
    const queue = this.queues.get(entry.channelId) ?? [];
    queue.push(entry);
    this.queues.set(entry.channelId, queue);
    if (!this.pumping.has(entry.channelId)) this.startPump(entry.channelId);
  }

  private startPump(channelId: string): void {
    this.pump(channelId).catch((error: unknown) => {
      // never expected (every step is guarded): report it and keep the queue moving
      reportListenerError(error);
      if (!this.stopped && this.queues.get(channelId)?.length) this.startPump(channelId);
    });
  }

  private async pump(channelId: string): Promise<void> {
    this.pumping.add(channelId);
    const queue = this.queues.get(channelId) ?? [];
    try {
      while (queue.length && !this.stopped) {
        const entry = queue[0] as OutboxEntry;
        let outcome: Ack | CaasError | undefined;
        try {
          outcome = await this.deliver(entry);
        } catch (e) {
          outcome = e instanceof CaasError ? e : new CaasError("network", String(e), { cause: e });
        }
        if (this.stopped || outcome === undefined) return;
        queue.shift();
        this.discarded.delete(entry.id);
        // settle the sender first: nothing after this (storage, listeners) can leave it pending
        const waiter = this.waiting.get(entry.id);
        this.waiting.delete(entry.id);
        if (outcome instanceof CaasError) waiter?.reject(outcome);
        else waiter?.resolve(outcome);
        try {
          await this.storage.delete(entry.id);
        } catch (error) {
          // e.g. an aborted IndexedDB transaction: a later restore() sends it again, and the server
          // answers its first result for the same client_msg_id
          reportListenerError(error);
        }
        if (outcome instanceof CaasError) this.emit("failed", { entry, error: outcome });
        else this.emit("acked", { entry, ack: outcome });
      }
    } finally {
      this.pumping.delete(channelId);
      // started again while this pump was winding down from a stop: go on
      if (!this.stopped && queue.length) this.startPump(channelId);
    }
  }

  /** The ack, or the error that ends the message; `undefined` when stopped while waiting to retry. */
  private async deliver(entry: OutboxEntry): Promise<Ack | CaasError | undefined> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.http.call("post_message", { path: { cid: entry.channelId }, body: entry.body });
      } catch (e) {
        const error = e instanceof CaasError ? e : new CaasError("network", String(e), { cause: e });
        const refused = error.status === 401 || error.code === "unauthenticated";
        if (!error.transient && !refused) return error;
        if (attempt + 1 >= this.maxAttempts || Date.now() - entry.createdAt >= this.maxAgeMs) {
          return new CaasError("gave_up", `gave up on ${entry.id} after ${attempt + 1} attempts: ${error.message}`, { cause: error });
        }
        if (attempt === 4) this.emit("stuck", { entry, error, attempts: attempt + 1 });
        const delayMs = Math.max(backoff(attempt, this.base, this.max), (error.retryAfter ?? 0) * 1000);
        this.emit("retrying", { entry, error, attempt, delayMs });
        await new Promise<void>((resolve) => {
          const done = () => {
            clearTimeout(timer);
            this.wakers.delete(done);
            this.credentialWaiters.delete(done);
            resolve();
          };
          const timer = setTimeout(done, delayMs);
          this.wakers.add(done);
          if (refused) this.credentialWaiters.add(done); // a new credential ends the wait
        });
        if (this.stopped) return undefined;
        if (this.discarded.delete(entry.id)) return new CaasError("discarded", `${entry.id} was discarded`, { cause: error });
      }
    }
  }
}

/** A random UUID (v4), also where `crypto.randomUUID` is missing (a browser page over plain http). */
export function newId(): string {
  const crypto = globalThis.crypto;
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = ((b[6] as number) & 0x0f) | 0x40;
  b[8] = ((b[8] as number) & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
