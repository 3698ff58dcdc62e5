// Sender keys for group channels: each sending device has one chain per channel, hands its chain
// key and public signing key to every member device inside pairwise messages, then encrypts each
// group message once. Pure functions of bytes and state; no I/O.
import { kdfCk, MAX_SKIP, TYPE_GROUP, VERSION } from "./ratchet.js";
import {
  b64,
  concat,
  E2eError,
  ed25519KeyPair,
  fromUtf8,
  hkdf,
  type KeyPair,
  open,
  randomBytes,
  randomU32,
  readU32,
  seal,
  sign,
  u32,
  unb64,
  utf8,
  verify,
} from "./sodium.js";

/** Skipped group message keys one sender's chain keeps. */
export const MAX_SKIPPED_GROUP_KEYS = 2000;

/** Our own sending chain in one channel. */
export interface OwnSenderKey {
  keyId: number;
  iteration: number;
  chainKey: Uint8Array;
  signing: KeyPair;
}

/** Another device's chain in one channel, as its distribution gave it (then advanced). */
export interface PeerSenderKey {
  keyId: number;
  iteration: number;
  chainKey: Uint8Array;
  signingKey: Uint8Array;
  /** iteration → message key of a message not yet received. */
  skipped: Map<number, Uint8Array>;
}

/** The distribution message's JSON (inside a pairwise message's plaintext). */
export interface SenderKeyDistribution {
  type: "sender_key";
  channel_id: string;
  key_id: number;
  iteration: number;
  chain_key: string;
  signing_key: string;
}

/** A new sending chain: key id `keyId` (the previous one's + 1 on a rotation), random otherwise. */
export function newSenderKey(keyId = randomU32() >>> 1): OwnSenderKey {
  return { keyId, iteration: 0, chainKey: randomBytes(32), signing: ed25519KeyPair() };
}

export function distribution(channelId: string, k: OwnSenderKey): SenderKeyDistribution {
  return {
    type: "sender_key",
    channel_id: channelId,
    key_id: k.keyId,
    iteration: k.iteration,
    chain_key: b64(k.chainKey),
    signing_key: b64(k.signing.publicKey),
  };
}

export function peerKeyFrom(d: SenderKeyDistribution): PeerSenderKey {
  const chainKey = unb64(d.chain_key);
  const signingKey = unb64(d.signing_key);
  const ok = (n: unknown) => Number.isInteger(n) && (n as number) >= 0 && (n as number) <= 0xffffffff;
  if (chainKey.length !== 32 || signingKey.length !== 32 || !ok(d.key_id) || !ok(d.iteration)) {
    throw new E2eError("malformed", "a sender key distribution with bad fields");
  }
  return { keyId: d.key_id, iteration: d.iteration, chainKey, signingKey, skipped: new Map() };
}

function groupKeys(mk: Uint8Array): [Uint8Array, Uint8Array] {
  const k = hkdf(mk, null, "CAAS_SenderKey", 56);
  return [k.subarray(0, 32), k.subarray(32)];
}

/** Encrypt one group message with our chain (advances it). */
export function groupEncrypt(k: OwnSenderKey, channelId: string, plaintext: Uint8Array): Uint8Array {
  const [mk, next] = kdfCk(k.chainKey);
  const [key, nonce] = groupKeys(mk);
  const body = concat(Uint8Array.of(VERSION, TYPE_GROUP), u32(k.keyId), u32(k.iteration), seal(key, nonce, plaintext, utf8(channelId)));
  k.chainKey = next;
  k.iteration += 1;
  return concat(body, sign(k.signing.privateKey, body));
}

/** The key id a group message names (to pick the sender's chain). */
export function groupKeyId(bytes: Uint8Array): number {
  if (bytes.length < 2 + 8 + 16 + 64 || bytes[0] !== VERSION || bytes[1] !== TYPE_GROUP) throw new E2eError("malformed", "not a sender-key message");
  return readU32(bytes, 2);
}

/**
 * Decrypt a group message with a copy of the sender's chain: answers the plaintext and the chain's
 * next state (the given one is unchanged, so a forged, replayed or tampered message changes nothing).
 */
export function groupDecrypt(k0: PeerSenderKey, channelId: string, bytes: Uint8Array): [Uint8Array, PeerSenderKey] {
  const keyId = groupKeyId(bytes);
  if (keyId !== k0.keyId) throw new E2eError("no_sender_key", "another sender key id");
  const body = bytes.subarray(0, bytes.length - 64);
  if (!verify(k0.signingKey, body, bytes.subarray(bytes.length - 64))) throw new E2eError("bad_signature", "the group message's signature does not verify");
  const iteration = readU32(bytes, 6);
  const k: PeerSenderKey = { ...k0, skipped: new Map(k0.skipped) };
  let mk = k.skipped.get(iteration);
  if (mk !== undefined) {
    k.skipped.delete(iteration);
  } else {
    if (iteration < k.iteration) throw new E2eError("replay", "this group message key was already used");
    if (iteration - k.iteration > MAX_SKIP) throw new E2eError("too_many_skipped", `more than ${MAX_SKIP} group messages skipped`);
    while (k.iteration < iteration) {
      const [skippedKey, next] = kdfCk(k.chainKey);
      k.skipped.set(k.iteration, skippedKey);
      k.chainKey = next;
      k.iteration += 1;
    }
    [mk, k.chainKey] = kdfCk(k.chainKey);
    k.iteration += 1;
    while (k.skipped.size > MAX_SKIPPED_GROUP_KEYS) k.skipped.delete(k.skipped.keys().next().value as number);
  }
  const [key, nonce] = groupKeys(mk);
  try {
    return [open(key, nonce, body.subarray(10), utf8(channelId)), k];
  } catch {
    throw new E2eError("decrypt_failed", "the group message does not authenticate");
  }
}

// ---- serialisation

export interface OwnSenderKeyJSON {
  key_id: number;
  iteration: number;
  chain_key: string;
  signing_public: string;
  signing_private: string;
}

export interface PeerSenderKeyJSON {
  key_id: number;
  iteration: number;
  chain_key: string;
  signing_key: string;
  skipped: [number, string][];
}

export const ownToJSON = (k: OwnSenderKey): OwnSenderKeyJSON => ({
  key_id: k.keyId,
  iteration: k.iteration,
  chain_key: b64(k.chainKey),
  signing_public: b64(k.signing.publicKey),
  signing_private: b64(k.signing.privateKey),
});

export const ownFromJSON = (j: OwnSenderKeyJSON): OwnSenderKey => ({
  keyId: j.key_id,
  iteration: j.iteration,
  chainKey: unb64(j.chain_key),
  signing: { publicKey: unb64(j.signing_public), privateKey: unb64(j.signing_private) },
});

export const peerToJSON = (k: PeerSenderKey): PeerSenderKeyJSON => ({
  key_id: k.keyId,
  iteration: k.iteration,
  chain_key: b64(k.chainKey),
  signing_key: b64(k.signingKey),
  skipped: [...k.skipped].map(([i, mk]) => [i, b64(mk)]),
});

export const peerFromJSON = (j: PeerSenderKeyJSON): PeerSenderKey => ({
  keyId: j.key_id,
  iteration: j.iteration,
  chainKey: unb64(j.chain_key),
  signingKey: unb64(j.signing_key),
  skipped: new Map(j.skipped.map(([i, mk]) => [i, unb64(mk)])),
});

/** Parse a pairwise plaintext: a sender key distribution, a message, or anything else (null). */
export function parsePlaintext(bytes: Uint8Array): { type: string; [k: string]: unknown } {
  let value: unknown;
  try {
    value = JSON.parse(fromUtf8(bytes));
  } catch {
    throw new E2eError("malformed", "the plaintext is not UTF-8 JSON");
  }
  if (typeof value !== "object" || value === null || typeof (value as { type?: unknown }).type !== "string") {
    throw new E2eError("malformed", "the plaintext has no type");
  }
  return value as { type: string };
}
