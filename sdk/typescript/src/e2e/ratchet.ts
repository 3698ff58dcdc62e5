// X3DH and the Double Ratchet, byte for byte as docs/sdk/e2e-typescript.md (the wire protocol)
// describes: one Session per pair of devices. Pure functions of bytes and state; no I/O.
import {
  b64,
  concat,
  dh,
  E2eError,
  edPrivateToX,
  edPublicToX,
  equal,
  hkdf,
  hmac,
  type KeyPair,
  open,
  readU32,
  seal,
  u32,
  unb64,
  verify,
  x25519KeyPair,
} from "./sodium.js";

export const VERSION = 0x01;
export const TYPE_PREKEY = 0x01;
export const TYPE_NORMAL = 0x02;
export const TYPE_GROUP = 0x03;
/** Message keys one chain may skip (out-of-order or lost messages). */
export const MAX_SKIP = 1000;
/** Skipped message keys one session keeps in all (the oldest go first). */
export const MAX_SKIPPED_KEYS = 2000;
/** `opk_id` of a prekey message when no one-time prekey was used. */
export const NO_OPK = 0xffffffff;
const HEADER = 40;
const ONE = Uint8Array.of(0x01);
const TWO = Uint8Array.of(0x02);
const FF32 = new Uint8Array(32).fill(0xff);

/** A device's public prekey bundle, as `POST …/bundle` answers it (bytes decoded). */
export interface Bundle {
  identityKey: Uint8Array;
  signedPrekey: { keyId: number; publicKey: Uint8Array; signature: Uint8Array };
  oneTimePrekey: { keyId: number; publicKey: Uint8Array } | null;
}

export interface Header {
  dh: Uint8Array;
  pn: number;
  n: number;
}

/** The state of one pairwise session (serialisable with {@link sessionToJSON}). */
export interface Session {
  /** AD = IK_A ‖ IK_B (Ed25519 public keys, initiator first). */
  ad: Uint8Array;
  remoteIdentity: Uint8Array;
  /** EK_A: which X3DH run made this session (a prekey message with it goes to this session). */
  baseKey: Uint8Array;
  rootKey: Uint8Array;
  dhs: KeyPair;
  dhr: Uint8Array | null;
  cks: Uint8Array | null;
  ckr: Uint8Array | null;
  ns: number;
  nr: number;
  pn: number;
  /** b64(ratchet key) + ":" + n → message key, oldest first. */
  skipped: Map<string, Uint8Array>;
  /** Remote ratchet keys this session has moved past (a message on one that is not skipped is a replay). */
  oldRemote: string[];
  /** Set on the initiator until the first reply: what every message repeats in its prekey prefix. */
  pending: { ek: Uint8Array; spkId: number; opkId: number } | null;
  /** Set on the responder: the prekey ids the initiator's prekey messages name. */
  prekeys: { spkId: number; opkId: number } | null;
}

/** KDF_RK: (new root key, chain key). */
export const kdfRk = (rk: Uint8Array, out: Uint8Array): [Uint8Array, Uint8Array] => {
  const k = hkdf(out, rk, "CAAS_Ratchet", 64);
  return [k.slice(0, 32), k.slice(32)];
};
/** KDF_CK: (message key, next chain key). */
export const kdfCk = (ck: Uint8Array): [Uint8Array, Uint8Array] => [hmac(ck, ONE), hmac(ck, TWO)];

export function encodeHeader(h: Header): Uint8Array {
  return concat(h.dh, u32(h.pn), u32(h.n));
}

function decodeHeader(b: Uint8Array): Header {
  return { dh: b.slice(0, 32), pn: readU32(b, 32), n: readU32(b, 36) };
}

/** X3DH's DH outputs on the initiator's side: DH1..DH3 and DH4 when the bundle has a one-time prekey. */
export function initiatorDh(identity: KeyPair, bundle: Bundle, ek: KeyPair): Uint8Array[] {
  const spk = bundle.signedPrekey;
  if (!verify(bundle.identityKey, spk.publicKey, spk.signature)) {
    throw new E2eError("bad_signature", "the signed prekey's signature does not verify with the identity key");
  }
  let ikB: Uint8Array;
  try {
    ikB = edPublicToX(bundle.identityKey);
  } catch {
    throw new E2eError("malformed", "the identity key is not an Ed25519 public key");
  }
  const parts = [dh(edPrivateToX(identity.privateKey), spk.publicKey), dh(ek.privateKey, ikB), dh(ek.privateKey, spk.publicKey)];
  if (bundle.oneTimePrekey) parts.push(dh(ek.privateKey, bundle.oneTimePrekey.publicKey));
  return parts;
}

/** SK = HKDF(32×0xFF ‖ DH1 ‖ DH2 ‖ DH3 [‖ DH4], salt 0, "CAAS_X3DH"). */
export function x3dhSecret(dhs: Uint8Array[]): Uint8Array {
  return hkdf(concat(FF32, ...dhs), null, "CAAS_X3DH", 32);
}

/**
 * Initiator (A): X3DH against B's bundle (its SPK signature checked), then the first ratchet step.
 * `keys` fixes the ephemeral and first ratchet key pairs (known-answer tests); fresh ones otherwise.
 */
export function initiate(identity: KeyPair, bundle: Bundle, keys?: { ek: KeyPair; ratchet: KeyPair }): Session {
  const spk = bundle.signedPrekey;
  // 0xFFFFFFFF means "no one-time prekey" in a prekey message: the responder would skip DH4
  if (bundle.oneTimePrekey?.keyId === NO_OPK) throw new E2eError("malformed", "one-time prekey id 0xFFFFFFFF is the wire's none");
  const ek = keys?.ek ?? x25519KeyPair();
  const sk = x3dhSecret(initiatorDh(identity, bundle, ek));
  const dhs = keys?.ratchet ?? x25519KeyPair();
  const [rootKey, cks] = kdfRk(sk, dh(dhs.privateKey, spk.publicKey));
  return fresh({
    ad: concat(identity.publicKey, bundle.identityKey),
    remoteIdentity: bundle.identityKey.slice(),
    baseKey: ek.publicKey,
    rootKey,
    dhs,
    dhr: spk.publicKey.slice(),
    cks,
    pending: { ek: ek.publicKey, spkId: spk.keyId, opkId: bundle.oneTimePrekey?.keyId ?? NO_OPK },
  });
}

/** A session before its first message: counters at zero, nothing skipped. */
function fresh(s: Pick<Session, "ad" | "remoteIdentity" | "baseKey" | "rootKey" | "dhs"> & Partial<Session>): Session {
  return { dhr: null, cks: null, ckr: null, ns: 0, nr: 0, pn: 0, skipped: new Map(), oldRemote: [], pending: null, prekeys: null, ...s };
}

/** A parsed prekey message: what the responder needs to run X3DH. */
export interface PrekeyMessage {
  identityKey: Uint8Array;
  baseKey: Uint8Array;
  spkId: number;
  opkId: number;
  /** The normal-message part (header ‖ ciphertext), as {@link decrypt} takes it. */
  inner: Uint8Array;
}

export function parsePrekeyMessage(bytes: Uint8Array): PrekeyMessage {
  if (bytes.length < 2 + 32 + 32 + 8 + HEADER + 16 || bytes[0] !== VERSION || bytes[1] !== TYPE_PREKEY) {
    throw new E2eError("malformed", "not a prekey message");
  }
  return {
    identityKey: bytes.slice(2, 34),
    baseKey: bytes.slice(34, 66),
    spkId: readU32(bytes, 66),
    opkId: readU32(bytes, 70),
    inner: bytes.slice(74),
  };
}

/** Responder (B): X3DH from a prekey message with its own identity, SPK and (if named) OPK. */
export function respond(identity: KeyPair, spk: KeyPair, opk: KeyPair | null, msg: PrekeyMessage): Session {
  let ikA: Uint8Array;
  try {
    ikA = edPublicToX(msg.identityKey);
  } catch {
    throw new E2eError("malformed", "the sender's identity key is not an Ed25519 public key");
  }
  const parts = [dh(spk.privateKey, ikA), dh(edPrivateToX(identity.privateKey), msg.baseKey), dh(spk.privateKey, msg.baseKey)];
  if (opk) parts.push(dh(opk.privateKey, msg.baseKey));
  return fresh({
    ad: concat(msg.identityKey, identity.publicKey),
    remoteIdentity: msg.identityKey.slice(),
    baseKey: msg.baseKey.slice(),
    rootKey: x3dhSecret(parts),
    dhs: { publicKey: spk.publicKey.slice(), privateKey: spk.privateKey.slice() },
    prekeys: { spkId: msg.spkId, opkId: msg.opkId },
  });
}

/** (key, nonce) of a message key. */
export function messageKeys(mk: Uint8Array): [Uint8Array, Uint8Array] {
  const k = hkdf(mk, null, "CAAS_MessageKeys", 56);
  return [k.subarray(0, 32), k.subarray(32)];
}

/** Encrypt one message: a prekey message until the first reply, a normal message after. Mutates `s`. */
export function encrypt(s: Session, plaintext: Uint8Array): Uint8Array {
  if (s.cks === null) throw new E2eError("no_session", "this session cannot send before it has received a message");
  const [mk, next] = kdfCk(s.cks);
  s.cks = next;
  const header = encodeHeader({ dh: s.dhs.publicKey, pn: s.pn, n: s.ns });
  s.ns += 1;
  const [key, nonce] = messageKeys(mk);
  const body = seal(key, nonce, plaintext, concat(s.ad, header));
  if (s.pending === null) return concat(Uint8Array.of(VERSION, TYPE_NORMAL), header, body);
  const p = s.pending;
  return concat(Uint8Array.of(VERSION, TYPE_PREKEY), s.ad.subarray(0, 32), p.ek, u32(p.spkId), u32(p.opkId), header, body);
}

/** The header ‖ ciphertext part of a normal message (throws on anything else). */
export function normalInner(bytes: Uint8Array): Uint8Array {
  if (bytes.length < 2 + HEADER + 16 || bytes[0] !== VERSION || bytes[1] !== TYPE_NORMAL) throw new E2eError("malformed", "not a normal message");
  return bytes.subarray(2);
}

export function cloneSession(s: Session): Session {
  return {
    ...s,
    dhs: { publicKey: s.dhs.publicKey, privateKey: s.dhs.privateKey },
    skipped: new Map(s.skipped),
    oldRemote: [...s.oldRemote],
  };
}

/**
 * Decrypt header ‖ ciphertext (a normal message, or a prekey message's inner part) with a copy of
 * `s` (`nextRatchet`: the key pair of a DH ratchet step, for known-answer tests): answers the plaintext and the session's next state; `s` itself is never changed, so a
 * message that fails (tampered, replayed, too far ahead) leaves the session as it was.
 */
export function decrypt(s0: Session, inner: Uint8Array, nextRatchet?: KeyPair): [Uint8Array, Session] {
  if (inner.length < HEADER + 16) throw new E2eError("malformed", "message too short");
  const headerBytes = inner.subarray(0, HEADER);
  const header = decodeHeader(headerBytes);
  const body = inner.subarray(HEADER);
  const s = cloneSession(s0);
  const aad = concat(s.ad, headerBytes);
  const id = `${b64(header.dh)}:${header.n}`;
  const saved = s.skipped.get(id);
  if (saved !== undefined) {
    s.skipped.delete(id);
    return [openWith(saved, body, aad), s];
  }
  if (s.dhr === null || !equal(header.dh, s.dhr)) {
    if (s.oldRemote.includes(b64(header.dh))) throw new E2eError("replay", "a message key of an earlier chain that was used or never skipped");
    skip(s, header.pn);
    // DH ratchet step
    if (s.dhr !== null) {
      s.oldRemote.push(b64(s.dhr));
      if (s.oldRemote.length > 50) s.oldRemote.shift();
    }
    s.pn = s.ns;
    s.ns = 0;
    s.nr = 0;
    s.dhr = header.dh;
    [s.rootKey, s.ckr] = kdfRk(s.rootKey, dh(s.dhs.privateKey, s.dhr));
    s.dhs = nextRatchet ?? x25519KeyPair();
    [s.rootKey, s.cks] = kdfRk(s.rootKey, dh(s.dhs.privateKey, s.dhr));
  }
  if (header.n < s.nr) throw new E2eError("replay", "this message key was already used");
  skip(s, header.n);
  const [mk, next] = kdfCk(s.ckr as Uint8Array);
  s.ckr = next;
  s.nr += 1;
  const plaintext = openWith(mk, body, aad);
  s.pending = null; // a reply came: the peer has the session
  return [plaintext, s];
}

function openWith(mk: Uint8Array, body: Uint8Array, aad: Uint8Array): Uint8Array {
  const [key, nonce] = messageKeys(mk);
  try {
    return open(key, nonce, body, aad);
  } catch {
    throw new E2eError("decrypt_failed", "the message does not authenticate");
  }
}

function skip(s: Session, until: number): void {
  if (s.ckr === null) return;
  if (until - s.nr > MAX_SKIP) throw new E2eError("too_many_skipped", `more than ${MAX_SKIP} messages skipped in one chain`);
  const dhr = b64(s.dhr as Uint8Array);
  while (s.nr < until) {
    const [mk, next] = kdfCk(s.ckr);
    s.skipped.set(`${dhr}:${s.nr}`, mk);
    s.ckr = next;
    s.nr += 1;
  }
  while (s.skipped.size > MAX_SKIPPED_KEYS) s.skipped.delete(s.skipped.keys().next().value as string);
}

// ---- serialisation (JSON with standard base64)

export interface SessionJSON {
  ad: string;
  remote_identity: string;
  base_key: string;
  root_key: string;
  dhs: { public: string; private: string };
  dhr: string | null;
  cks: string | null;
  ckr: string | null;
  ns: number;
  nr: number;
  pn: number;
  skipped: [string, string][];
  old_remote: string[];
  pending: { ek: string; spk_id: number; opk_id: number } | null;
  prekeys: { spk_id: number; opk_id: number } | null;
}

const opt = (b: Uint8Array | null) => (b === null ? null : b64(b));
const unopt = (s: string | null) => (s === null ? null : unb64(s));

export function sessionToJSON(s: Session): SessionJSON {
  return {
    ad: b64(s.ad),
    remote_identity: b64(s.remoteIdentity),
    base_key: b64(s.baseKey),
    root_key: b64(s.rootKey),
    dhs: { public: b64(s.dhs.publicKey), private: b64(s.dhs.privateKey) },
    dhr: opt(s.dhr),
    cks: opt(s.cks),
    ckr: opt(s.ckr),
    ns: s.ns,
    nr: s.nr,
    pn: s.pn,
    skipped: [...s.skipped].map(([k, v]) => [k, b64(v)]),
    old_remote: [...s.oldRemote],
    pending: s.pending && { ek: b64(s.pending.ek), spk_id: s.pending.spkId, opk_id: s.pending.opkId },
    prekeys: s.prekeys && { spk_id: s.prekeys.spkId, opk_id: s.prekeys.opkId },
  };
}

export function sessionFromJSON(j: SessionJSON): Session {
  return {
    ad: unb64(j.ad),
    remoteIdentity: unb64(j.remote_identity),
    baseKey: unb64(j.base_key),
    rootKey: unb64(j.root_key),
    dhs: { publicKey: unb64(j.dhs.public), privateKey: unb64(j.dhs.private) },
    dhr: unopt(j.dhr),
    cks: unopt(j.cks),
    ckr: unopt(j.ckr),
    ns: j.ns,
    nr: j.nr,
    pn: j.pn,
    skipped: new Map(j.skipped.map(([k, v]) => [k, unb64(v)])),
    oldRemote: [...j.old_remote],
    pending: j.pending && { ek: unb64(j.pending.ek), spkId: j.pending.spk_id, opkId: j.pending.opk_id },
    prekeys: j.prekeys && { spkId: j.prekeys.spk_id, opkId: j.prekeys.opk_id },
  };
}
