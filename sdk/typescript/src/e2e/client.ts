// E2E over the server's devices API: register this device, keep its one-time prekeys topped up,
// fetch other devices' bundles, post ciphertext-only messages to e2e channels and decrypt what
// arrives (history pages or websocket frames). The crypto is E2eDevice's; this adds HTTP.
import { CaasError } from "../errors.js";
import type { HttpClient } from "../http.js";
import {
  type Address,
  type DeviceJSON,
  type DeviceOptions,
  E2eDevice,
  type E2eEnvelope,
  type MessageContent,
  type WireBundle,
  type WirePrekey,
  type WireSignedPrekey,
} from "./device.js";
import { b64, E2eError } from "./sodium.js";

/** Where a device's state lives between sessions (it holds private keys: keep it on the device). */
export interface DeviceStore {
  load(): Promise<DeviceJSON | undefined>;
  save(state: DeviceJSON): Promise<void>;
}

export interface E2eClientOptions extends DeviceOptions {
  /** The SDK's HTTP client, authenticated as the user (a user token) or the tenant. */
  http: HttpClient;
  userId: string;
  deviceId: string;
  /** Saves the state after every change; without it the state lives in memory (`device.toJSON()`). */
  store?: DeviceStore;
  /** `group` (default): sender keys; `pairwise`: each message encrypted per device. */
  mode?: "group" | "pairwise";
  /** Upload more one-time prekeys when the server holds fewer than this (default 20)… */
  minPrekeys?: number;
  /** …this many at a time (default 50). */
  prekeyBatch?: number;
  /** Defaults to the global `fetch`. */
  fetch?: typeof fetch;
}

/** A message as history pages and websocket frames carry it (the fields E2E needs). */
export interface E2eMessage {
  channel_id: string;
  author_id: string;
  message_id?: string;
  e2e?: E2eEnvelope | null;
}

interface DeviceInfo {
  device_id: string;
  identity_key: string;
  signed_prekey: WireSignedPrekey;
  one_time_prekeys_left: number;
}

const DECRYPTED_CACHE = 1000;

export class E2eClient {
  readonly device: E2eDevice;
  private readonly http: HttpClient;
  private readonly store: DeviceStore | undefined;
  private readonly mode: "group" | "pairwise";
  private readonly minPrekeys: number;
  private readonly batch: number;
  private readonly fetcher: typeof fetch;
  /** The device's state changes one operation at a time (each saved before the next starts). */
  private queue: Promise<unknown> = Promise.resolve();
  /** message id and envelope → content: a message seen twice (history and a frame) decrypts once. */
  private readonly decrypted = new Map<string, MessageContent | null>();

  private constructor(device: E2eDevice, options: E2eClientOptions) {
    this.device = device;
    this.http = options.http;
    this.store = options.store;
    this.mode = options.mode ?? "group";
    this.minPrekeys = options.minPrekeys ?? 20;
    this.batch = options.prekeyBatch ?? 50;
    this.fetcher = options.fetch ?? ((input, init) => fetch(input, init));
  }

  /**
   * The device from the store, or a new one registered with the server (identity key, signed
   * prekey, a batch of one-time prekeys); then its one-time prekeys topped up.
   */
  static async open(options: E2eClientOptions): Promise<E2eClient> {
    const saved = await options.store?.load();
    const device = saved ? await E2eDevice.restore(saved, options) : await E2eDevice.create(options.userId, options.deviceId, options);
    const client = new E2eClient(device, options);
    if (saved === undefined) await client.register();
    else await client.topUpPrekeys();
    return client;
  }

  private devicePath(userId = this.device.userId, deviceId = this.device.deviceId): string {
    return `/v1/users/${encodeURIComponent(userId)}/devices/${encodeURIComponent(deviceId)}`;
  }

  /** `PUT …/devices/{device_id}`: the identity key, the signed prekey and a batch of one-time prekeys. */
  async register(): Promise<void> {
    await this.request("PUT", this.devicePath(), this.device.registration(this.batch));
    await this.save();
  }

  /** Upload a batch of one-time prekeys if the server holds fewer than `minimum` (`minPrekeys`); answers how many it holds. */
  topUpPrekeys(minimum = this.minPrekeys): Promise<number> {
    return this.serial(() => this.topUpNow(minimum));
  }

  private async topUpNow(minimum: number): Promise<number> {
    const mine = (await this.devices(this.device.userId)).find((d) => d.device_id === this.device.deviceId);
    if (mine === undefined) {
      // removed (from another device, or by the tenant): registering again is the app's decision
      throw new CaasError("device_not_found", `device ${this.device.deviceId} of ${this.device.userId} is not registered: register() it again`);
    }
    if (mine.one_time_prekeys_left >= minimum) return mine.one_time_prekeys_left;
    const keys: WirePrekey[] = this.device.newOneTimePrekeys(this.batch);
    await this.save();
    await this.request("POST", `${this.devicePath()}/prekeys`, { one_time_prekeys: keys });
    return mine.one_time_prekeys_left + keys.length;
  }

  /** A new signed prekey, uploaded (`PUT …/signed-prekey`). */
  rotateSignedPrekey(): Promise<void> {
    return this.serial(async () => {
      const spk = this.device.rotateSignedPrekey();
      await this.save();
      await this.request("PUT", `${this.devicePath()}/signed-prekey`, spk);
    });
  }

  /** Remove this device from the server (`DELETE …/devices/{device_id}`); `register()` brings it back. */
  async unregister(): Promise<void> {
    await this.request("DELETE", this.devicePath());
  }

  private async devices(userId: string): Promise<DeviceInfo[]> {
    const answer = (await this.request("GET", `/v1/users/${encodeURIComponent(userId)}/devices`)) as { devices: DeviceInfo[] };
    return answer.devices;
  }

  /** Every device of every member of a channel (our own other devices included, this one not). */
  async recipients(channelId: string): Promise<Address[]> {
    const channel = await this.http.call("get_channel", { path: { cid: channelId } });
    if (!channel.e2e) throw new CaasError("not_e2e", `channel ${channelId} is not an e2e channel`);
    const out: Address[] = [];
    for (const m of channel.members) {
      for (const d of await this.devices(m.user_id)) {
        if (m.user_id === this.device.userId && d.device_id === this.device.deviceId) continue;
        const a = { user_id: m.user_id, device_id: d.device_id };
        const known = this.device.knownIdentity(a);
        // a device listed with another identity key than our session's: re-registered, start anew
        if (known !== undefined && b64(known) !== d.identity_key) this.device.forget(a);
        out.push(a);
      }
    }
    return out;
  }

  /**
   * An `identity_key_changed` frame (or any sign that a device was re-registered): its sessions
   * are dropped; the next message starts a new one, and `onIdentityChange` decides on the new key.
   */
  identityChanged(userId: string, deviceId: string): void {
    this.device.forget({ user_id: userId, device_id: deviceId });
  }

  /**
   * Follow the user's device notices on a realtime client: `prekeys_low` for this device uploads a
   * batch of one-time prekeys, `identity_key_changed` drops the sessions with that device. Returns a
   * function that stops it. Failures of the upload go to `onError` (default: ignored until the next).
   */
  watch(client: { on(type: "frame", fn: (frame: { type: string; [key: string]: unknown }) => void): () => void }, onError: (error: unknown) => void = () => {}): () => void {
    return client.on("frame", (frame) => {
      if (frame.type === "prekeys_low" && frame.user_id === this.device.userId && frame.device_id === this.device.deviceId) {
        this.topUpPrekeys(Math.max(this.minPrekeys, Number(frame.threshold) || 0)).catch(onError);
      } else if (frame.type === "identity_key_changed" && typeof frame.user_id === "string" && typeof frame.device_id === "string") {
        this.identityChanged(frame.user_id, frame.device_id);
      }
    });
  }

  /** Start sessions (X3DH on a fetched bundle) with every device we have none with. */
  async ensureSessions(devices: Address[]): Promise<void> {
    for (const d of devices) {
      if (this.device.hasSession(d)) continue;
      const bundle = (await this.request("POST", `${this.devicePath(d.user_id, d.device_id)}/bundle`)) as WireBundle;
      this.device.startSession(bundle);
    }
  }

  /** Run `fn` after every operation already started (sends, decrypts, key uploads). */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** Seal for every current recipient of the channel (sessions started where missing), then `post`. */
  private sealAndPost<T>(channelId: string, content: MessageContent, post: (e2e: E2eEnvelope) => Promise<T>): Promise<T> {
    return this.serial(() => this.sealAndPostNow(channelId, content, post));
  }

  private async sealAndPostNow<T>(channelId: string, content: MessageContent, post: (e2e: E2eEnvelope) => Promise<T>): Promise<T> {
    const recipients = await this.recipients(channelId);
    await this.ensureSessions(recipients);
    const e2e = this.device.seal(channelId, recipients, content, this.mode);
    await this.save();
    try {
      return await post(e2e);
    } catch (error) {
      // the recipients may never see the sender key this message carried: the next message makes a new one
      this.device.resetSenderKey(channelId);
      await this.save();
      throw error;
    }
  }

  /**
   * Post a message to an e2e channel: the server gets ciphertexts only. Answers the post's result.
   * `user_id` is the device's user, so the HTTP client may hold the user's token or the tenant key.
   */
  async send(channelId: string, text: string, options: { attachments?: Record<string, unknown>[]; clientMsgId?: string } = {}) {
    return this.sealAndPost(channelId, { text, attachments: options.attachments ?? [] }, (e2e) => {
      const body = { e2e, user_id: this.device.userId, ...(options.clientMsgId ? { client_msg_id: options.clientMsgId } : {}) };
      return this.http.call("post_message", { path: { cid: channelId }, body: body as never });
    });
  }

  /** Replace the text of one of this user's messages with a new envelope (`PATCH …/messages/{mid}`). */
  async edit(channelId: string, messageId: string, text: string, options: { attachments?: Record<string, unknown>[] } = {}) {
    return this.sealAndPost(channelId, { text, attachments: options.attachments ?? [] }, (e2e) =>
      this.http.call("edit_message", { path: { cid: channelId, mid: messageId }, body: { e2e } as never }),
    );
  }

  /**
   * Decrypt a message of an e2e channel (from a history page or a websocket frame). Answers null
   * when it only carried keys for this device. Throws {@link E2eError} when it cannot be read.
   */
  decrypt(message: E2eMessage): Promise<MessageContent | null> {
    return this.serial(() => this.decryptNow(message));
  }

  private async decryptNow(message: E2eMessage): Promise<MessageContent | null> {
    if (!message.e2e) throw new E2eError("malformed", "the message has no e2e envelope");
    // keyed by the message and its envelope: an edit brings a new envelope under the same id
    const env = message.e2e;
    const mine = env.ciphertexts?.find((c) => c.user_id === this.device.userId && c.device_id === this.device.deviceId);
    const id = message.message_id === undefined ? undefined : `${message.message_id}\n${env.group ?? ""}\n${mine?.body ?? ""}`;
    if (id !== undefined && this.decrypted.has(id)) return this.decrypted.get(id) ?? null;
    const content = this.device.open(message.channel_id, message.author_id, message.e2e);
    if (id !== undefined) {
      this.decrypted.set(id, content);
      if (this.decrypted.size > DECRYPTED_CACHE) this.decrypted.delete(this.decrypted.keys().next().value as string);
    }
    await this.save();
    return content;
  }

  async save(): Promise<void> {
    await this.store?.save(this.device.toJSON());
  }

  /** A devices-API call (routes newer than the generated table), with the SDK's credential and errors. */
  private async request(method: string, path: string, body?: unknown, refreshed = false): Promise<unknown> {
    const headers: Record<string, string> = { accept: "application/json" };
    const token = await this.http.currentToken();
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers["content-type"] = "application/json";
    let response: Response;
    try {
      response = await this.fetcher(this.http.baseUrl + path, { method, headers, body: body === undefined ? null : JSON.stringify(body) });
    } catch (cause) {
      throw new CaasError("network", `${method} ${path}: ${String((cause as Error)?.message ?? cause)}`, { cause });
    }
    const text = await response.text();
    let data: unknown;
    try {
      data = text ? JSON.parse(text) : undefined;
    } catch {
      data = undefined;
    }
    if (response.ok) return data;
    if (response.status === 401 && !refreshed) {
      // the token expired: the SDK's refreshToken callback (if any) gives a new one, once
      const fresh = await this.http.refreshCredential().then(() => true, () => false);
      if (fresh) return this.request(method, path, body, true);
    }
    const error = (data as { error?: { code?: string; message?: string; details?: Record<string, unknown> } } | undefined)?.error;
    throw new CaasError(error?.code ?? `http_${response.status}`, error?.message ?? `${method} ${path}: ${response.status}`, {
      status: response.status,
      details: error?.details ?? {},
    });
  }
}
