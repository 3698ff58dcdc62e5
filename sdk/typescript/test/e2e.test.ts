// The E2E protocol's state machines (no server): X3DH and the Double Ratchet between two devices,
// sender keys in a group, multi-device envelopes, rotation, serialisation. Property tests: any
// delivery order within the skip window decrypts; replays and tampered messages are rejected and
// leave the state as it was.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { type Address, E2eDevice, E2eError, MAX_SKIP, type WireBundle } from "../src/e2e/index.js";
import { groupDecrypt, groupEncrypt, newSenderKey, peerKeyFrom, distribution } from "../src/e2e/senderkey.js";
import { utf8, fromUtf8, unb64 } from "../src/e2e/sodium.js";

function bundleOf(d: E2eDevice, withOpk = true): WireBundle {
  const reg = d.registration(1);
  return { ...d.address, identity_key: reg.identity_key, signed_prekey: reg.signed_prekey, one_time_prekey: withOpk ? (reg.one_time_prekeys[0] ?? null) : null };
}

async function pair(withOpk = true): Promise<[E2eDevice, E2eDevice]> {
  const a = await E2eDevice.create("alice", "a1");
  const b = await E2eDevice.create("bob", "b1");
  a.startSession(bundleOf(b, withOpk));
  return [a, b];
}

const rejects = (fn: () => unknown, code?: string) =>
  assert.throws(fn, (e: unknown) => e instanceof E2eError && (code === undefined || e.code === code));

function tamper(bytes: Uint8Array, at: number, bit: number): Uint8Array {
  const t = bytes.slice();
  const i = at % t.length;
  t[i] = (t[i] as number) ^ (1 << bit % 8);
  return t;
}

test("X3DH and the ratchet: both ways, with and without a one-time prekey", async () => {
  for (const withOpk of [true, false]) {
    const [a, b] = await pair(withOpk);
    const m1 = a.encryptTo(b.address, utf8("hello"));
    assert.equal(m1[1], 0x01, "the first message is a prekey message");
    assert.equal(fromUtf8(b.decryptFrom(a.address, m1)), "hello");
    const r1 = b.encryptTo(a.address, utf8("hi"));
    assert.equal(r1[1], 0x02);
    assert.equal(fromUtf8(a.decryptFrom(b.address, r1)), "hi");
    const m2 = a.encryptTo(b.address, utf8("after the reply"));
    assert.equal(m2[1], 0x02, "after a reply the initiator sends normal messages");
    assert.equal(fromUtf8(b.decryptFrom(a.address, m2)), "after the reply");
  }
});

test("a bundle whose signed prekey signature does not verify is refused", async () => {
  const a = await E2eDevice.create("alice", "a1");
  const b = await E2eDevice.create("bob", "b1");
  const bundle = bundleOf(b);
  const sig = unb64(bundle.signed_prekey.signature);
  sig[0] = (sig[0] as number) ^ 1;
  rejects(() => a.startSession({ ...bundle, signed_prekey: { ...bundle.signed_prekey, signature: Buffer.from(sig).toString("base64") } }), "bad_signature");
  const other = await E2eDevice.create("mallory", "m1");
  rejects(() => a.startSession({ ...bundle, identity_key: bundleOf(other).identity_key }), "bad_signature");
  assert.equal(a.hasSession(b.address), false);
});

test("a bundle whose one-time prekey id is the wire's none marker (0xFFFFFFFF) is refused", async () => {
  const a = await E2eDevice.create("alice", "a1");
  const b = await E2eDevice.create("bob", "b1");
  const bundle = bundleOf(b);
  rejects(() => a.startSession({ ...bundle, one_time_prekey: { key_id: 0xffffffff, public_key: bundle.one_time_prekey?.public_key ?? "" } }), "malformed");
  assert.equal(a.hasSession(b.address), false);
});

/** alice and bob talking both ways, and mallory (the server's own keys) posing as alice's device. */
async function talking(options: { onIdentityChange?: (a: Address, previous: Uint8Array, next: Uint8Array) => boolean } = {}) {
  const a = await E2eDevice.create("alice", "a1");
  const b = await E2eDevice.create("bob", "b1", options);
  a.startSession(bundleOf(b, false));
  b.decryptFrom(a.address, a.encryptTo(b.address, utf8("hi")));
  a.decryptFrom(b.address, b.encryptTo(a.address, utf8("hello")));
  const m = await E2eDevice.create("alice", "a1");
  m.startSession(bundleOf(b, false));
  return [a, b, m] as const;
}

test("a verified contact's new identity key is refused by default; nothing changes and replies still reach the real device", async () => {
  const [a, b, m] = await talking();
  b.markVerified(a.address);
  const before = JSON.stringify(b.toJSON());
  rejects(() => b.decryptFrom(a.address, m.encryptTo(b.address, utf8("I am alice"))), "identity_changed");
  assert.equal(JSON.stringify(b.toJSON()), before);
  rejects(() => b.startSession(bundleOf(m)), "identity_changed");
  const reply = b.encryptTo(a.address, utf8("bob's secret"));
  assert.equal(fromUtf8(a.decryptFrom(b.address, reply)), "bob's secret");
  rejects(() => m.decryptFrom(b.address, reply));
  // the mark and the known key survive a restore; unmarking lets the default accept the change
  const b2 = await E2eDevice.restore(b.toJSON());
  assert.equal(b2.isVerified(a.address), true);
  rejects(() => b2.decryptFrom(a.address, m.encryptTo(b.address, utf8("again"))), "identity_changed");
  b2.markVerified(a.address, false);
  assert.equal(fromUtf8(b2.decryptFrom(a.address, m.encryptTo(b.address, utf8("new phone")))), "new phone");
  assert.deepEqual(b2.knownIdentity(a.address), m.identityKey);
});

test("an unverified contact's new identity key is accepted and reported, unless onIdentityChange answers false", async () => {
  const seen: string[] = [];
  const [a, b, m] = await talking({ onIdentityChange: (who) => (seen.push(`${who.user_id}/${who.device_id}`), true) });
  assert.equal(fromUtf8(b.decryptFrom(a.address, m.encryptTo(b.address, utf8("reinstalled")))), "reinstalled");
  assert.deepEqual(seen, ["alice/a1"]);
  const [a2, b2, m2] = await talking({ onIdentityChange: () => false });
  rejects(() => b2.decryptFrom(a2.address, m2.encryptTo(b2.address, utf8("x"))), "identity_changed");
  assert.deepEqual(b2.knownIdentity(a2.address), a2.identityKey);
  // with no hook, an unverified contact's change is accepted
  const [a3, b3, m3] = await talking();
  assert.equal(fromUtf8(b3.decryptFrom(a3.address, m3.encryptTo(b3.address, utf8("ok")))), "ok");
});

test("a one-time prekey is used once: a replayed first message is rejected", async () => {
  const [a, b] = await pair(true);
  const m1 = a.encryptTo(b.address, utf8("one"));
  b.decryptFrom(a.address, m1);
  rejects(() => b.decryptFrom(a.address, m1), "replay");
  // the same after a save and restore
  const b2 = await E2eDevice.restore(b.toJSON());
  rejects(() => b2.decryptFrom(a.address, m1), "replay");
});

// ---- property: two devices, arbitrary sends and deliveries

type Op = { op: "sendA" | "sendB" | "recvA" | "recvB"; pick: number; tamper: boolean; replay: boolean; at: number; bit: number };
const opArb: fc.Arbitrary<Op> = fc.record({
  op: fc.constantFrom("sendA", "sendB", "recvA", "recvB"),
  pick: fc.nat(),
  tamper: fc.boolean(),
  replay: fc.boolean(),
  at: fc.nat(),
  bit: fc.nat(7),
});

test("property: any delivery order decrypts; replays and tampering are rejected and change nothing", async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(opArb, { maxLength: 70 }), fc.boolean(), fc.array(fc.nat(), { maxLength: 200 }), async (ops, withOpk, finalOrder) => {
      const [a, b] = await pair(withOpk);
      const toB: [Uint8Array, string][] = [];
      const toA: [Uint8Array, string][] = [];
      let bCanSend = false;
      let counter = 0;
      const deliver = (to: E2eDevice, from: Address, queue: [Uint8Array, string][], o: Pick<Op, "pick" | "tamper" | "replay" | "at" | "bit">) => {
        const [bytes, text] = queue.splice(o.pick % queue.length, 1)[0] as [Uint8Array, string];
        if (o.tamper) rejects(() => to.decryptFrom(from, tamper(bytes, o.at, o.bit)));
        assert.equal(fromUtf8(to.decryptFrom(from, bytes)), text);
        if (o.replay) rejects(() => to.decryptFrom(from, bytes));
      };
      for (const o of ops) {
        if (o.op === "sendA") {
          const text = `a${counter++}`;
          toB.push([a.encryptTo(b.address, utf8(text)), text]);
        } else if (o.op === "sendB" && bCanSend) {
          const text = `b${counter++}`;
          toA.push([b.encryptTo(a.address, utf8(text)), text]);
        } else if (o.op === "recvB" && toB.length) {
          deliver(b, a.address, toB, o);
          bCanSend = true;
        } else if (o.op === "recvA" && toA.length) {
          deliver(a, b.address, toA, o);
        }
      }
      // whatever is still in flight arrives, in any order, after a save and restore of both devices
      const [a2, b2] = [await E2eDevice.restore(a.toJSON()), await E2eDevice.restore(b.toJSON())];
      let i = 0;
      while (toB.length || toA.length) {
        const pick = finalOrder[i++ % Math.max(1, finalOrder.length)] ?? 0;
        const none = { tamper: false, replay: true, at: 0, bit: 0 };
        if (toB.length && (pick % 2 === 0 || !toA.length)) deliver(b2, a2.address, toB, { ...none, pick });
        else deliver(a2, b2.address, toA, { ...none, pick });
      }
    }),
    { numRuns: 60 },
  );
});

test(`the skip window: ${MAX_SKIP} skipped messages decrypt, one more is refused`, async () => {
  const [a, b] = await pair();
  const sent = Array.from({ length: MAX_SKIP + 2 }, (_, i) => a.encryptTo(b.address, utf8(`m${i}`)));
  rejects(() => b.decryptFrom(a.address, sent[MAX_SKIP + 1] as Uint8Array), "too_many_skipped");
  assert.equal(fromUtf8(b.decryptFrom(a.address, sent[MAX_SKIP] as Uint8Array)), `m${MAX_SKIP}`);
  assert.equal(fromUtf8(b.decryptFrom(a.address, sent[MAX_SKIP + 1] as Uint8Array)), `m${MAX_SKIP + 1}`);
  for (let i = MAX_SKIP - 1; i >= 0; i -= 97) assert.equal(fromUtf8(b.decryptFrom(a.address, sent[i] as Uint8Array)), `m${i}`);
});

test("a rotated signed prekey: new sessions use it, a prekey message built on the old one still decrypts", async () => {
  const a = await E2eDevice.create("alice", "a1");
  const c = await E2eDevice.create("carol", "c1");
  const b = await E2eDevice.create("bob", "b1");
  const old = bundleOf(b);
  a.startSession(old);
  const early = a.encryptTo(b.address, utf8("built on the old signed prekey"));
  const rotated = b.rotateSignedPrekey();
  assert.notEqual(rotated.key_id, old.signed_prekey.key_id);
  c.startSession(bundleOf(b));
  const late = c.encryptTo(b.address, utf8("built on the new one"));
  assert.equal(fromUtf8(b.decryptFrom(c.address, late)), "built on the new one");
  assert.equal(fromUtf8(b.decryptFrom(a.address, early)), "built on the old signed prekey");
  // four rotations later the oldest is gone
  for (let i = 0; i < 3; i++) b.rotateSignedPrekey();
  const d = await E2eDevice.create("dave", "d1");
  d.startSession(old);
  rejects(() => b.decryptFrom(d.address, d.encryptTo(b.address, utf8("too old"))), "unknown_prekey");
});

test("simultaneous session starts converge: both sides keep talking", async () => {
  const a = await E2eDevice.create("alice", "a1");
  const b = await E2eDevice.create("bob", "b1");
  a.startSession(bundleOf(b));
  b.startSession(bundleOf(a));
  const fromA = a.encryptTo(b.address, utf8("a first"));
  const fromB = b.encryptTo(a.address, utf8("b first"));
  assert.equal(fromUtf8(b.decryptFrom(a.address, fromA)), "a first");
  assert.equal(fromUtf8(a.decryptFrom(b.address, fromB)), "b first");
  for (let i = 0; i < 3; i++) {
    assert.equal(fromUtf8(b.decryptFrom(a.address, a.encryptTo(b.address, utf8(`a${i}`)))), `a${i}`);
    assert.equal(fromUtf8(a.decryptFrom(b.address, b.encryptTo(a.address, utf8(`b${i}`)))), `b${i}`);
  }
});

// ---- sender keys

/** The key id a group message names. */
const alice1KeyId = (env: { group?: string | null }) => new DataView(unb64(env.group as string).buffer).getUint32(2);

test("property: a sender-key chain decrypts in any order within the window; replays and tampering are rejected", async () => {
  await E2eDevice.create("x", "y"); // loads libsodium
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 1, max: 40 }),
      fc.array(fc.record({ pick: fc.nat(), drop: fc.boolean(), tamper: fc.boolean(), replay: fc.boolean(), at: fc.nat(), bit: fc.nat(7) }), { maxLength: 40 }),
      async (n, picks) => {
        const own = newSenderKey();
        let chain = peerKeyFrom(distribution("room", own));
        const sent = Array.from({ length: n }, (_, i) => [groupEncrypt(own, "room", utf8(`g${i}`)), `g${i}`] as const);
        const queue = [...sent];
        for (const p of picks) {
          if (!queue.length) break;
          const [bytes, text] = queue.splice(p.pick % queue.length, 1)[0] as (typeof sent)[number];
          if (p.drop) continue;
          if (p.tamper) rejects(() => groupDecrypt(chain, "room", tamper(bytes, p.at, p.bit)));
          rejects(() => groupDecrypt(chain, "another room", bytes), "decrypt_failed");
          const [plaintext, next] = groupDecrypt(chain, "room", bytes);
          assert.equal(fromUtf8(plaintext), text);
          chain = next;
          if (p.replay) rejects(() => groupDecrypt(chain, "room", bytes), "replay");
        }
      },
    ),
    { numRuns: 80 },
  );
});

test("a group channel: sender keys go pairwise once, the text once; a member leaving rotates the key", async () => {
  const alice = await E2eDevice.create("alice", "a1");
  const alice2 = await E2eDevice.create("alice", "a2");
  const bob = await E2eDevice.create("bob", "b1");
  const carol = await E2eDevice.create("carol", "c1");
  const everyone = [alice2, bob, carol];
  for (const d of everyone) alice.startSession(bundleOf(d));
  const env1 = alice.seal("room", everyone.map((d) => d.address), { text: "hello all", attachments: [{ name: "a.png" }] });
  assert.equal(env1.ciphertexts?.length, 3, "the sender key, pairwise, to each device (our other device too)");
  assert.ok(env1.group);
  for (const d of everyone) assert.deepEqual(d.open("room", "alice", env1), { text: "hello all", attachments: [{ name: "a.png" }] });
  const env2 = alice.seal("room", everyone.map((d) => d.address), { text: "second", attachments: [] });
  assert.equal(env2.ciphertexts, undefined, "everyone has the key: only the group message");
  for (const d of everyone) assert.equal(d.open("room", "alice", env2)?.text, "second");
  rejects(() => bob.open("room", "alice", env2), "replay");
  assert.equal(alice.open("room", "alice", env2)?.text, "second", "the sender reads its own message back");
  // carol leaves: a new sender key, to the remaining devices only; carol cannot read on
  const remaining = [alice2, bob];
  const env3 = alice.seal("room", remaining.map((d) => d.address), { text: "after carol left", attachments: [] });
  assert.equal(alice.toJSON().own_sender_keys[0]?.[1].key.key_id, (alice1KeyId(env1) + 1) % 2 ** 32, "the next key id");
  assert.deepEqual(env3.ciphertexts?.map((c) => c.user_id).sort(), ["alice", "bob"]);
  for (const d of remaining) assert.equal(d.open("room", "alice", env3)?.text, "after carol left");
  rejects(() => carol.open("room", "alice", env3), "no_sender_key");
  rejects(() => carol.open("room", "alice", { sender_device: "a1", ciphertexts: env3.ciphertexts ?? [] }), "not_for_this_device");
  // a late message under the old key still decrypts for those who had it
  const bobJson = bob.toJSON();
  const bobRestored = await E2eDevice.restore(bobJson);
  const env4 = alice.seal("room", remaining.map((d) => d.address), { text: "fourth", attachments: [] });
  assert.equal(bobRestored.open("room", "alice", env4)?.text, "fourth");
});

test("pairwise mode: the text encrypted for each device, replies from every device", async () => {
  const alice = await E2eDevice.create("alice", "a1");
  const bob1 = await E2eDevice.create("bob", "b1");
  const bob2 = await E2eDevice.create("bob", "b2");
  for (const d of [bob1, bob2]) alice.startSession(bundleOf(d));
  const env = alice.seal("dm", [bob1.address, bob2.address], { text: "to both", attachments: [] }, "pairwise");
  assert.equal(env.group, undefined);
  for (const d of [bob1, bob2]) assert.equal(d.open("dm", "alice", env)?.text, "to both");
  const reply = bob2.seal("dm", [alice.address, bob1.address].filter((x) => bob2.hasSession(x)), { text: "from b2", attachments: [] }, "pairwise");
  assert.equal(alice.open("dm", "bob", reply)?.text, "from b2");
  assert.throws(() => bob2.seal("dm", [bob1.address], { text: "x", attachments: [] }), (e: unknown) => e instanceof E2eError && e.code === "no_session");
  // alone in a channel: a sender-key message, even in pairwise mode (an envelope needs one or the other)
  const alone = alice.seal("notes", [], { text: "to myself", attachments: [] }, "pairwise");
  assert.ok(alone.group && alone.ciphertexts === undefined);
  assert.equal(alice.open("notes", "alice", alone)?.text, "to myself");
});
