// One E2E device: its identity, prekeys, pairwise sessions and sender keys, and the `e2e`
// envelope of a channel message built from them. No HTTP (see client.ts); the whole state is
// JSON-serialisable (toJSON / E2eDevice.restore).
import {
  cloneSession,
  decrypt,
  encrypt,
  initiate,
  NO_OPK,
  normalInner,
  parsePrekeyMessage,
  respond,
  type Bundle,
  type Session,
  type SessionJSON,
  sessionFromJSON,
  sessionToJSON,
  TYPE_NORMAL,
  TYPE_PREKEY,
  VERSION,
} from "./ratchet.js";
import {
  distribution,
  groupDecrypt,
  groupEncrypt,
  groupKeyId,
  newSenderKey,
  ownFromJSON,
  ownToJSON,
  type OwnSenderKey,
  type OwnSenderKeyJSON,
  parsePlaintext,
  peerFromJSON,
  peerKeyFrom,
  type PeerSenderKey,
  type PeerSenderKeyJSON,
  peerToJSON,
  type SenderKeyDistribution,
} from "./senderkey.js";
import {
  b64,
  E2eError,
  ed25519FromSeed,
  equal,
  type KeyPair,
  loadSodium,
  randomBytes,
  sign,
  unb64,
  utf8,
  x25519KeyPair,
} from "./sodium.js";

/** A device of a user. */
export interface Address {
  user_id: string;
  device_id: string;
}

/** The `e2e` object of a message in an e2e channel, as posted and as read back. */
export interface E2eEnvelope {
  sender_device: string;
  ciphertexts?: { user_id: string; device_id: string; body: string }[];
  group?: string | null;
}

/** What a message says once decrypted. */
export interface MessageContent {
  text: string;
  attachments: Record<string, unknown>[];
}

/** Public keys as the devices API takes them (`PUT /v1/users/{uid}/devices/{device_id}`). */
export interface WireSignedPrekey {
  key_id: number;
  public_key: string;
  signature: string;
}
export interface WirePrekey {
  key_id: number;
  public_key: string;
}
/** A bundle as `POST …/bundle` answers it. */
export interface WireBundle {
  user_id: string;
  device_id: string;
  identity_key: string;
  signed_prekey: WireSignedPrekey;
  one_time_prekey: WirePrekey | null;
}

export interface DeviceOptions {
  /**
   * Called when a device we know shows a different identity key (a safety-number change). Answer
   * false to refuse the new key (the message or bundle is rejected with `identity_changed`).
   * Default: refuse it for a device marked verified ({@link E2eDevice.markVerified}), accept it
   * otherwise (as Signal does: show the user a safety-number change).
   */
  onIdentityChange?: (address: Address, previous: Uint8Array, next: Uint8Array) => boolean;
}

/** Sessions kept per remote device: the current one (it sends) and three replaced ones (they still
 * decrypt late messages; the one that decrypts becomes current). */
const SESSIONS_PER_DEVICE = 4;
/** Rotated-out signed prekeys kept, for prekey messages built on a bundle fetched before a rotation. */
const OLD_SIGNED_PREKEYS = 3;
/** Sender keys kept per remote device and channel (older ones decrypt messages sent before a rotation). */
const SENDER_KEYS_PER_DEVICE = 3;
const USED_BASE_KEYS = 5000;
const SENT_CACHE = 500;

const addr = (a: Address) => `${a.user_id}\n${a.device_id}`;
const unaddr = (k: string): Address => {
  const i = k.indexOf("\n");
  return { user_id: k.slice(0, i), device_id: k.slice(i + 1) };
};

interface SignedPrekey {
  keyId: number;
  keyPair: KeyPair;
  signature: Uint8Array;
}

/** The device's whole state, as JSON. Keep it secret: it holds every private key. */
export interface DeviceJSON {
  version: 1;
  user_id: string;
  device_id: string;
  identity_seed: string;
  signed_prekeys: { key_id: number; public: string; private: string; signature: string }[];
  one_time_prekeys: { key_id: number; public: string; private: string }[];
  next_prekey_id: number;
  next_signed_prekey_id: number;
  sessions: [string, SessionJSON[]][];
  identities: [string, string][];
  used_base_keys: string[];
  /** Devices whose safety number the user compared (absent in states saved before it existed). */
  verified?: string[];
  own_sender_keys: [string, { key: OwnSenderKeyJSON; sent_to: string[] }][];
  peer_sender_keys: [string, PeerSenderKeyJSON[]][];
}

export class E2eDevice {
  readonly userId: string;
  readonly deviceId: string;
  private readonly identity: KeyPair;
  private readonly seed: Uint8Array;
  /** Newest first. */
  private signedPrekeys: SignedPrekey[] = [];
  private readonly oneTimePrekeys = new Map<number, KeyPair>();
  private nextPrekeyId = 1;
  private nextSignedPrekeyId = 1;
  private readonly sessions = new Map<string, Session[]>();
  private readonly identities = new Map<string, Uint8Array>();
  private usedBaseKeys: string[] = [];
  private readonly verified = new Set<string>();
  private readonly ownSenderKeys = new Map<string, { key: OwnSenderKey; sentTo: string[] }>();
  /** `${channel}\n${user}\n${device}` → that device's chains in the channel, newest first. */
  private readonly peerSenderKeys = new Map<string, PeerSenderKey[]>();
  /** Our own sent envelopes' content (we cannot decrypt what we encrypted for others). */
  private readonly sent = new Map<string, MessageContent>();
  private readonly onIdentityChange: NonNullable<DeviceOptions["onIdentityChange"]>;

  private constructor(userId: string, deviceId: string, seed: Uint8Array, options: DeviceOptions) {
    this.userId = userId;
    this.deviceId = deviceId;
    this.seed = seed;
    this.identity = ed25519FromSeed(seed);
    this.onIdentityChange = options.onIdentityChange ?? ((a) => !this.verified.has(addr(a)));
  }

  /** A new device: a fresh identity key and a signed prekey (one-time prekeys: {@link newOneTimePrekeys}). */
  static async create(userId: string, deviceId: string, options: DeviceOptions = {}): Promise<E2eDevice> {
    await loadSodium();
    const d = new E2eDevice(userId, deviceId, randomBytes(32), options);
    d.rotateSignedPrekey();
    return d;
  }

  /** A device from its saved state. */
  static async restore(state: DeviceJSON, options: DeviceOptions = {}): Promise<E2eDevice> {
    await loadSodium();
    if (state.version !== 1) throw new E2eError("malformed", `unknown device state version ${String(state.version)}`);
    const d = new E2eDevice(state.user_id, state.device_id, unb64(state.identity_seed), options);
    d.signedPrekeys = state.signed_prekeys.map((s) => ({
      keyId: s.key_id,
      keyPair: { publicKey: unb64(s.public), privateKey: unb64(s.private) },
      signature: unb64(s.signature),
    }));
    for (const k of state.one_time_prekeys) d.oneTimePrekeys.set(k.key_id, { publicKey: unb64(k.public), privateKey: unb64(k.private) });
    d.nextPrekeyId = state.next_prekey_id;
    d.nextSignedPrekeyId = state.next_signed_prekey_id;
    for (const [k, list] of state.sessions) d.sessions.set(k, list.map(sessionFromJSON));
    for (const [k, v] of state.identities) d.identities.set(k, unb64(v));
    d.usedBaseKeys = [...state.used_base_keys];
    for (const k of state.verified ?? []) d.verified.add(k);
    for (const [c, v] of state.own_sender_keys) d.ownSenderKeys.set(c, { key: ownFromJSON(v.key), sentTo: [...v.sent_to] });
    for (const [k, list] of state.peer_sender_keys) d.peerSenderKeys.set(k, list.map(peerFromJSON));
    return d;
  }

  toJSON(): DeviceJSON {
    return {
      version: 1,
      user_id: this.userId,
      device_id: this.deviceId,
      identity_seed: b64(this.seed),
      signed_prekeys: this.signedPrekeys.map((s) => ({
        key_id: s.keyId,
        public: b64(s.keyPair.publicKey),
        private: b64(s.keyPair.privateKey),
        signature: b64(s.signature),
      })),
      one_time_prekeys: [...this.oneTimePrekeys].map(([id, k]) => ({ key_id: id, public: b64(k.publicKey), private: b64(k.privateKey) })),
      next_prekey_id: this.nextPrekeyId,
      next_signed_prekey_id: this.nextSignedPrekeyId,
      sessions: [...this.sessions].map(([k, list]) => [k, list.map(sessionToJSON)]),
      identities: [...this.identities].map(([k, v]) => [k, b64(v)]),
      used_base_keys: [...this.usedBaseKeys],
      verified: [...this.verified],
      own_sender_keys: [...this.ownSenderKeys].map(([c, v]) => [c, { key: ownToJSON(v.key), sent_to: [...v.sentTo] }]),
      peer_sender_keys: [...this.peerSenderKeys].map(([k, list]) => [k, list.map(peerToJSON)]),
    };
  }

  get address(): Address {
    return { user_id: this.userId, device_id: this.deviceId };
  }

  /** The Ed25519 identity public key (what the server and the peers know this device by). */
  get identityKey(): Uint8Array {
    return this.identity.publicKey;
  }

  /** The current signed prekey, as the devices API takes it. */
  get signedPrekey(): WireSignedPrekey {
    const s = this.signedPrekeys[0] as SignedPrekey;
    return { key_id: s.keyId, public_key: b64(s.keyPair.publicKey), signature: b64(s.signature) };
  }

  /** How many one-time prekeys this device holds the private halves of. */
  get oneTimePrekeyCount(): number {
    return this.oneTimePrekeys.size;
  }

  /** The body of `PUT /v1/users/{uid}/devices/{device_id}`, with `count` new one-time prekeys. */
  registration(count = 50): { identity_key: string; signed_prekey: WireSignedPrekey; one_time_prekeys: WirePrekey[] } {
    return { identity_key: b64(this.identity.publicKey), signed_prekey: this.signedPrekey, one_time_prekeys: this.newOneTimePrekeys(count) };
  }

  /** Make `count` one-time prekeys (kept until a prekey message uses one); their public halves to upload. */
  newOneTimePrekeys(count: number): WirePrekey[] {
    const out: WirePrekey[] = [];
    for (let i = 0; i < count; i++) {
      const id = this.nextPrekeyId++;
      const k = x25519KeyPair();
      this.oneTimePrekeys.set(id, k);
      out.push({ key_id: id, public_key: b64(k.publicKey) });
    }
    return out;
  }

  /** A new signed prekey (the previous three still answer prekey messages built on them). */
  rotateSignedPrekey(): WireSignedPrekey {
    const keyPair = x25519KeyPair();
    const spk = { keyId: this.nextSignedPrekeyId++, keyPair, signature: sign(this.identity.privateKey, keyPair.publicKey) };
    this.signedPrekeys = [spk, ...this.signedPrekeys].slice(0, 1 + OLD_SIGNED_PREKEYS);
    return this.signedPrekey;
  }

  /**
   * Drop the sessions with a device (its identity key changed, or it was re-registered) and mark
   * it as not having our sender keys: the next message starts a new session from a fresh bundle.
   */
  forget(a: Address): void {
    const key = addr(a);
    this.sessions.delete(key);
    for (const own of this.ownSenderKeys.values()) own.sentTo = own.sentTo.filter((k) => k !== key);
  }

  hasSession(a: Address): boolean {
    return (this.sessions.get(addr(a))?.length ?? 0) > 0;
  }

  /** The identity key we know a device by (first seen, or accepted since). */
  knownIdentity(a: Address): Uint8Array | undefined {
    return this.identities.get(addr(a));
  }

  /**
   * The user compared safety numbers with a device (its current identity key): by default a later
   * key change of that device is refused (`identity_changed`) until this is undone with `false`.
   */
  markVerified(a: Address, verified = true): void {
    if (verified) this.verified.add(addr(a));
    else this.verified.delete(addr(a));
  }

  isVerified(a: Address): boolean {
    return this.verified.has(addr(a));
  }

  /** Remember the identity key a device is known by; a new one is not verified. */
  private trust(key: string, identity: Uint8Array): void {
    const known = this.identities.get(key);
    if (known !== undefined && !equal(known, identity)) this.verified.delete(key);
    this.identities.set(key, identity.slice());
  }

  private checkIdentity(a: Address, key: Uint8Array): void {
    const known = this.identities.get(addr(a));
    if (known !== undefined && !equal(known, key) && !this.onIdentityChange(a, known, key)) {
      throw new E2eError("identity_changed", `${a.user_id}/${a.device_id} shows a new identity key`);
    }
  }

  /** Start a session to a device from its bundle (X3DH; the signed prekey's signature is checked). */
  startSession(bundle: WireBundle): void {
    const a = { user_id: bundle.user_id, device_id: bundle.device_id };
    const b: Bundle = {
      identityKey: unb64(bundle.identity_key),
      signedPrekey: {
        keyId: bundle.signed_prekey.key_id,
        publicKey: unb64(bundle.signed_prekey.public_key),
        signature: unb64(bundle.signed_prekey.signature),
      },
      oneTimePrekey: bundle.one_time_prekey && { keyId: bundle.one_time_prekey.key_id, publicKey: unb64(bundle.one_time_prekey.public_key) },
    };
    this.checkIdentity(a, b.identityKey);
    const s = initiate(this.identity, b);
    this.trust(addr(a), b.identityKey);
    this.keepSession(addr(a), s);
  }

  private keepSession(key: string, s: Session, replacing?: Session): void {
    const list = (this.sessions.get(key) ?? []).filter((x) => x !== replacing);
    this.sessions.set(key, [s, ...list].slice(0, SESSIONS_PER_DEVICE));
  }

  /** Encrypt bytes for one device (a session must exist: {@link startSession} or a received message). */
  encryptTo(a: Address, plaintext: Uint8Array): Uint8Array {
    const s = this.sessions.get(addr(a))?.[0];
    if (s === undefined) throw new E2eError("no_session", `no session with ${a.user_id}/${a.device_id}`);
    return encrypt(s, plaintext);
  }

  /** Decrypt a pairwise message (prekey or normal) from a device. State changes only on success. */
  decryptFrom(a: Address, bytes: Uint8Array): Uint8Array {
    if (bytes.length < 2 || bytes[0] !== VERSION) throw new E2eError("malformed", "unknown message version");
    const key = addr(a);
    const sessions = this.sessions.get(key) ?? [];
    if (bytes[1] === TYPE_PREKEY) {
      const msg = parsePrekeyMessage(bytes);
      const existing = sessions.find((s) => equal(s.baseKey, msg.baseKey));
      if (existing !== undefined) {
        const p = existing.prekeys;
        if (!equal(existing.remoteIdentity, msg.identityKey) || p === null || p.spkId !== msg.spkId || p.opkId !== msg.opkId) {
          throw new E2eError("decrypt_failed", "a prekey message whose prefix does not match its session");
        }
        const [plaintext, next] = decrypt(existing, msg.inner);
        this.keepSession(key, next, existing);
        return plaintext;
      }
      if (this.usedBaseKeys.includes(b64(msg.baseKey))) throw new E2eError("replay", "a prekey message of a session already started");
      const spk = this.signedPrekeys.find((s) => s.keyId === msg.spkId);
      if (spk === undefined) throw new E2eError("unknown_prekey", `no signed prekey ${msg.spkId}`);
      let opk: KeyPair | null = null;
      if (msg.opkId !== NO_OPK) {
        opk = this.oneTimePrekeys.get(msg.opkId) ?? null;
        if (opk === null) throw new E2eError("unknown_prekey", `no one-time prekey ${msg.opkId} (used already?)`);
      }
      this.checkIdentity(a, msg.identityKey);
      const [plaintext, next] = decrypt(respond(this.identity, spk.keyPair, opk, msg), msg.inner);
      this.oneTimePrekeys.delete(msg.opkId);
      this.usedBaseKeys.push(b64(msg.baseKey));
      if (this.usedBaseKeys.length > USED_BASE_KEYS) this.usedBaseKeys.shift();
      this.trust(key, msg.identityKey);
      this.keepSession(key, next);
      return plaintext;
    }
    if (bytes[1] !== TYPE_NORMAL) throw new E2eError("malformed", "not a pairwise message");
    const inner = normalInner(bytes);
    if (sessions.length === 0) throw new E2eError("no_session", `no session with ${a.user_id}/${a.device_id}`);
    let first: unknown;
    for (const s of sessions) {
      try {
        const [plaintext, next] = decrypt(s, inner);
        this.keepSession(key, next, s); // the session that answered becomes the one we send on
        return plaintext;
      } catch (e) {
        first ??= e;
      }
    }
    throw first;
  }

  // ---- channels

  /** Our sender key in a channel (made on first use). */
  private senderKey(channelId: string, recipients: string[]): { key: OwnSenderKey; sentTo: string[] } {
    let own = this.ownSenderKeys.get(channelId);
    // a device that had our key is no longer a recipient (a member left, a device was removed): a new key
    if (own === undefined || own.sentTo.some((k) => !recipients.includes(k))) {
      own = { key: newSenderKey(own === undefined ? undefined : (own.key.keyId + 1) % 2 ** 32), sentTo: [] };
      this.ownSenderKeys.set(channelId, own);
    }
    return own;
  }

  /** Forget our sender key in a channel: the next message makes and distributes a new one. */
  resetSenderKey(channelId: string): void {
    this.ownSenderKeys.delete(channelId);
  }

  /**
   * The `e2e` envelope of a message for `recipients` (every device of every member, our own other
   * devices included; sessions must exist). `group` mode (default): the text once under our sender
   * key, plus our sender key for any device that does not have it yet, pairwise. `pairwise`: the
   * text encrypted for each device.
   */
  seal(channelId: string, recipients: Address[], content: MessageContent, mode: "group" | "pairwise" = "group"): E2eEnvelope {
    const targets = recipients.filter((r) => !(r.user_id === this.userId && r.device_id === this.deviceId));
    const missing = targets.filter((r) => !this.hasSession(r));
    if (missing.length) throw new E2eError("no_session", `no session with ${missing.map((m) => `${m.user_id}/${m.device_id}`).join(", ")}`);
    const message = utf8(JSON.stringify({ type: "message", text: content.text, attachments: content.attachments }));
    const ciphertexts: NonNullable<E2eEnvelope["ciphertexts"]> = [];
    const env: E2eEnvelope = { sender_device: this.deviceId };
    // with no other device yet, the sender-key message alone is the envelope (the server wants one of the two)
    if (mode === "pairwise" && targets.length > 0) {
      for (const r of targets) ciphertexts.push({ ...r, body: b64(this.encryptTo(r, message)) });
      env.ciphertexts = ciphertexts;
    } else {
      const keys = targets.map(addr);
      const own = this.senderKey(channelId, keys);
      const dist = utf8(JSON.stringify(distribution(channelId, own.key)));
      for (const r of targets) {
        if (own.sentTo.includes(addr(r))) continue;
        ciphertexts.push({ ...r, body: b64(this.encryptTo(r, dist)) });
        own.sentTo.push(addr(r));
      }
      if (ciphertexts.length) env.ciphertexts = ciphertexts;
      env.group = b64(groupEncrypt(own.key, channelId, message));
    }
    this.sent.set(env.group ?? ciphertexts[0]?.body ?? "", { text: content.text, attachments: content.attachments });
    if (this.sent.size > SENT_CACHE) this.sent.delete(this.sent.keys().next().value as string);
    return env;
  }

  /**
   * Decrypt a channel message's envelope from `authorId`: our pairwise ciphertexts first (sender
   * keys are stored; a message is the content), then the group message. Answers the content, or
   * null when the envelope only carried a sender key for us (or is this device's own message and
   * no longer in its memory of the last 500 it sent).
   */
  open(channelId: string, authorId: string, env: E2eEnvelope): MessageContent | null {
    const from = { user_id: authorId, device_id: env.sender_device };
    if (authorId === this.userId && env.sender_device === this.deviceId) {
      // what this device sent is not encrypted for itself: the copy it kept, or null once forgotten
      return this.sent.get(env.group ?? env.ciphertexts?.[0]?.body ?? "") ?? null;
    }
    let content: MessageContent | null = null;
    let forMe = false;
    for (const c of env.ciphertexts ?? []) {
      if (c.user_id !== this.userId || c.device_id !== this.deviceId) continue;
      forMe = true;
      const value = parsePlaintext(this.decryptFrom(from, unb64(c.body)));
      if (value.type === "sender_key") {
        if (value.channel_id !== channelId) throw new E2eError("malformed", "a sender key for another channel");
        this.acceptSenderKey(from, value as unknown as SenderKeyDistribution);
      }
      else if (value.type === "message") content = toContent(value);
    }
    if (env.group !== undefined && env.group !== null) {
      const bytes = unb64(env.group);
      const k = `${channelId}\n${addr(from)}`;
      const chains = this.peerSenderKeys.get(k) ?? [];
      const keyId = groupKeyId(bytes);
      const chain = chains.find((c) => c.keyId === keyId);
      if (chain === undefined) throw new E2eError("no_sender_key", `no sender key ${keyId} of ${authorId}/${env.sender_device} in ${channelId}`);
      const [plaintext, next] = groupDecrypt(chain, channelId, bytes);
      this.peerSenderKeys.set(k, chains.map((c) => (c === chain ? next : c)));
      const value = parsePlaintext(plaintext);
      if (value.type !== "message") throw new E2eError("malformed", "a group message that is not a message");
      return toContent(value);
    }
    if (!forMe) throw new E2eError("not_for_this_device", "the message carries nothing for this device");
    return content;
  }

  /** Store a sender key another device sent us (inside a pairwise message). */
  acceptSenderKey(from: Address, d: SenderKeyDistribution): void {
    const key = peerKeyFrom(d);
    const k = `${d.channel_id}\n${addr(from)}`;
    const chains = (this.peerSenderKeys.get(k) ?? []).filter((c) => c.keyId !== key.keyId);
    this.peerSenderKeys.set(k, [key, ...chains].slice(0, SENDER_KEYS_PER_DEVICE));
  }

  /** The devices our current sender key in a channel went to. */
  senderKeyRecipients(channelId: string): Address[] {
    return (this.ownSenderKeys.get(channelId)?.sentTo ?? []).map(unaddr);
  }

  /** For tests and tools: a copy of one session's state with a device. */
  sessionWith(a: Address): Session | undefined {
    const s = this.sessions.get(addr(a))?.[0];
    return s && cloneSession(s);
  }
}

function toContent(value: { [k: string]: unknown }): MessageContent {
  if (typeof value.text !== "string") throw new E2eError("malformed", "a message without text");
  const attachments = Array.isArray(value.attachments) ? (value.attachments as Record<string, unknown>[]) : [];
  return { text: value.text, attachments };
}
