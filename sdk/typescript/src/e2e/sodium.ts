// libsodium (the sumo build: HMAC-SHA256, Ed25519↔X25519 conversion, XChaCha20-Poly1305), loaded
// on first use with a dynamic import, so an app that never calls E2E code never downloads it.
// Every primitive the protocol uses is here; the rest of src/e2e is plain byte arithmetic.
import type Sodium from "libsodium-wrappers-sumo";

type Lib = typeof Sodium;
let lib: Lib | undefined;
let loading: Promise<Lib> | undefined;

/** Load and initialise libsodium (once). Every E2E entry point awaits this before any crypto. */
export function loadSodium(): Promise<Lib> {
  loading ??= import("libsodium-wrappers-sumo").then(async (m) => {
    const s = m.default;
    await s.ready;
    lib = s;
    return s;
  });
  return loading;
}

function na(): Lib {
  if (lib === undefined) throw new Error("E2E: libsodium is not loaded yet (await loadSodium() or an async factory first)");
  return lib;
}

export interface KeyPair {
  publicKey: Uint8Array;
  privateKey: Uint8Array;
}

const ZERO32 = new Uint8Array(32);

/** HMAC-SHA256 (keys of at most 64 bytes: every key here is 32). */
export function hmac(key: Uint8Array, data: Uint8Array): Uint8Array {
  const s = na();
  if (key.length === 32) return s.crypto_auth_hmacsha256(data, key);
  const state = s.crypto_auth_hmacsha256_init(key);
  s.crypto_auth_hmacsha256_update(state, data);
  return s.crypto_auth_hmacsha256_final(state);
}

/** HKDF-SHA256 (RFC 5869): extract with `salt` (32 zero bytes when none), expand to `length` bytes. */
export function hkdf(ikm: Uint8Array, salt: Uint8Array | null, info: string, length: number): Uint8Array {
  const prk = hmac(salt ?? ZERO32, ikm);
  const infoBytes = utf8(info);
  const out = new Uint8Array(length);
  let previous: Uint8Array = new Uint8Array(0);
  for (let i = 1, filled = 0; filled < length; i++) {
    previous = hmac(prk, concat(previous, infoBytes, Uint8Array.of(i)));
    out.set(previous.subarray(0, Math.min(32, length - filled)), filled);
    filled += 32;
  }
  return out;
}

/** X25519. */
export function dh(privateKey: Uint8Array, publicKey: Uint8Array): Uint8Array {
  return na().crypto_scalarmult(privateKey, publicKey);
}

export function x25519KeyPair(): KeyPair {
  const privateKey = randomBytes(32);
  return { publicKey: na().crypto_scalarmult_base(privateKey), privateKey };
}

export function x25519Public(privateKey: Uint8Array): Uint8Array {
  return na().crypto_scalarmult_base(privateKey);
}

/** Ed25519 key pair: privateKey is libsodium's 64-byte secret key (seed ‖ public key). */
export function ed25519KeyPair(): KeyPair {
  return ed25519FromSeed(randomBytes(32));
}

export function ed25519FromSeed(seed: Uint8Array): KeyPair {
  const k = na().crypto_sign_seed_keypair(seed);
  return { publicKey: k.publicKey, privateKey: k.privateKey };
}

export function sign(privateKey: Uint8Array, message: Uint8Array): Uint8Array {
  return na().crypto_sign_detached(message, privateKey);
}

export function verify(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  if (publicKey.length !== 32 || signature.length !== 64) return false;
  try {
    return na().crypto_sign_verify_detached(signature, message, publicKey);
  } catch {
    return false;
  }
}

/** The X25519 form of an Ed25519 public key (throws on a key that is not a valid point). */
export function edPublicToX(publicKey: Uint8Array): Uint8Array {
  return na().crypto_sign_ed25519_pk_to_curve25519(publicKey);
}

export function edPrivateToX(privateKey: Uint8Array): Uint8Array {
  return na().crypto_sign_ed25519_sk_to_curve25519(privateKey);
}

/** XChaCha20-Poly1305-IETF: ciphertext ‖ 16-byte tag. */
export function seal(key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, aad: Uint8Array): Uint8Array {
  return na().crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, aad, null, nonce, key);
}

/** Opens or throws. */
export function open(key: Uint8Array, nonce: Uint8Array, ciphertext: Uint8Array, aad: Uint8Array): Uint8Array {
  return na().crypto_aead_xchacha20poly1305_ietf_decrypt(null, ciphertext, aad, nonce, key);
}

/** The platform's CSPRNG (Web Crypto: browsers and Node ≥ 20), far cheaper per call than the
 * WebAssembly build's randombytes_buf. */
export function randomBytes(n: number): Uint8Array {
  return globalThis.crypto.getRandomValues(new Uint8Array(n));
}

export function randomU32(): number {
  const b = randomBytes(4);
  return readU32(b, 0);
}

export function equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && na().memcmp(a, b);
}

/** Raw libsodium, for the benchmark's baseline (crypto_secretbox_easy). */
export function sodium(): Lib {
  return na();
}

// ---- bytes

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

export function utf8(text: string): Uint8Array {
  return encoder.encode(text);
}

export function fromUtf8(bytes: Uint8Array): string {
  return decoder.decode(bytes);
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export function u32(n: number): Uint8Array {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new RangeError(`not a uint32: ${n}`);
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n, false);
  return b;
}

export function readU32(bytes: Uint8Array, at: number): number {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(at, false);
}

/** Standard base64 with padding (the wire's encoding). */
export function b64(bytes: Uint8Array): string {
  return na().to_base64(bytes, na().base64_variants.ORIGINAL);
}

export function unb64(text: string): Uint8Array {
  try {
    return na().from_base64(text, na().base64_variants.ORIGINAL);
  } catch {
    throw new E2eError("malformed", "not standard base64");
  }
}

/** Why a message could not be decrypted (or a key could not be used): `code` says which case. */
export class E2eError extends Error {
  constructor(
    readonly code:
      | "malformed"
      | "bad_signature"
      | "unknown_prekey"
      | "no_session"
      | "no_sender_key"
      | "replay"
      | "too_many_skipped"
      | "decrypt_failed"
      | "identity_changed"
      | "not_for_this_device",
    message: string,
  ) {
    super(message);
    this.name = "E2eError";
  }
}
