// Interoperability of the TypeScript E2E core with the Python SDK's (sdk/python/caas_client/e2e):
// 1. the committed known-answer vectors (tests/e2e_vectors/caas-e2e-v1.json, made by the Python
//    SDK) reproduced byte for byte from the same fixed keys;
// 2. a TypeScript device and a Python device (the Python SDK's JSON-lines driver in a subprocess)
//    talking both ways: either side starting the session, out-of-order and skipped messages, a
//    replay, a tampered message, signed prekeys rotated on either side, sender keys in a group with
//    a multi-device user and a rotation when a member leaves.
import assert from "node:assert/strict";
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { after, before, test } from "node:test";
import fc from "fast-check";
import { fileURLToPath } from "node:url";
import { type Address, E2eDevice, E2eError, loadSodium, type WireBundle } from "../src/e2e/index.js";
import { decrypt, encrypt, initiate, initiatorDh, kdfCk, messageKeys, parsePrekeyMessage, respond, x3dhSecret } from "../src/e2e/ratchet.js";
import { groupDecrypt, groupEncrypt, peerKeyFrom } from "../src/e2e/senderkey.js";
import { b64, concat, dh, ed25519FromSeed, edPrivateToX, edPublicToX, fromUtf8, unb64, utf8, x25519Public } from "../src/e2e/sodium.js";

const ROOT = fileURLToPath(new URL("../../../../", import.meta.url));
const VECTORS = JSON.parse(readFileSync(`${ROOT}tests/e2e_vectors/caas-e2e-v1.json`, "utf8")) as Record<string, Record<string, unknown>>;

// ---- the Python driver

type Answer = Record<string, unknown> & { error?: string; message?: string };

class PythonDevices {
  private readonly proc: ChildProcessWithoutNullStreams;
  private readonly waiting: ((a: Answer) => void)[] = [];
  private stderr = "";

  constructor() {
    const venv = `${ROOT}.venv/bin/python`;
    const python = process.env.CAAS_PYTHON ?? (existsSync(venv) ? venv : "python3");
    this.proc = spawn(python, ["-m", "caas_client.e2e.driver"], {
      cwd: ROOT,
      env: { ...process.env, PYTHONPATH: `${ROOT}sdk/python` },
    });
    this.proc.stderr.on("data", (d: Buffer) => (this.stderr += String(d)));
    createInterface({ input: this.proc.stdout }).on("line", (line) => this.waiting.shift()?.(JSON.parse(line) as Answer));
  }

  /** One request; a Python-side failure answers {"error": …}. */
  raw(req: Record<string, unknown>): Promise<Answer> {
    return new Promise((resolve, reject) => {
      this.waiting.push(resolve);
      this.proc.stdin.write(JSON.stringify(req) + "\n", (e) => e && reject(new Error(`${e.message}: ${this.stderr}`)));
    });
  }

  async call(req: Record<string, unknown>): Promise<Answer> {
    const a = await this.raw(req);
    if (a.error) throw new Error(`python ${String(req.cmd)}: ${a.error}: ${a.message ?? ""}`);
    return a;
  }

  async decrypt(device: string, from: Address, body: Uint8Array): Promise<string> {
    return (await this.call({ cmd: "decrypt", device, from: `${from.user_id}/${from.device_id}`, body: b64(body) })).plaintext as string;
  }

  async encrypt(device: string, to: Address, plaintext: string, bundle?: WireBundle): Promise<Uint8Array> {
    const a = await this.call({ cmd: "encrypt", device, to: `${to.user_id}/${to.device_id}`, plaintext, ...(bundle ? { bundle } : {}) });
    return unb64(a.body as string);
  }

  async bundle(device: string): Promise<WireBundle> {
    return (await this.call({ cmd: "bundle", device })).bundle as WireBundle;
  }

  close(): void {
    this.proc.stdin.end();
  }
}

let py: PythonDevices;
before(async () => {
  await loadSodium();
  py = new PythonDevices();
});
after(() => py.close());

function bundleOf(d: E2eDevice, withOpk = true): WireBundle {
  const reg = d.registration(1);
  return { ...d.address, identity_key: reg.identity_key, signed_prekey: reg.signed_prekey, one_time_prekey: withOpk ? (reg.one_time_prekeys[0] ?? null) : null };
}

const message = (text: string) => JSON.stringify({ type: "message", text, attachments: [] });

async function pyRejects(req: Record<string, unknown>): Promise<void> {
  const a = await py.raw(req);
  assert.ok(a.error, `python accepted what it should refuse: ${JSON.stringify(a)}`);
}

// ---- 1. known answers

const v = (group: string, key: string) => unb64(VECTORS[group]?.[key] as string);
const x25519Pair = (o: { private: string }) => ({ privateKey: unb64(o.private), publicKey: x25519Public(unb64(o.private)) });

test("known-answer vectors of the Python SDK: X3DH, the first prekey message, the reply, sender keys, byte for byte", () => {
  type Pair = { private: string; public: string; key_id: number; signature: string };
  const keys = VECTORS.keys as unknown as {
    [k in "alice_identity_public" | "bob_identity_public" | "alice_identity_x25519_private" | "bob_identity_x25519_public"]: string;
  } & { [k in "bob_signed_prekey" | "bob_one_time_prekey" | "alice_ephemeral" | "alice_ratchet_1" | "bob_ratchet_1"]: Pair };
  const alice = ed25519FromSeed(v("keys", "alice_identity_seed"));
  const bob = ed25519FromSeed(v("keys", "bob_identity_seed"));
  assert.equal(b64(alice.publicKey), keys.alice_identity_public);
  assert.equal(b64(bob.publicKey), keys.bob_identity_public);
  assert.equal(b64(edPrivateToX(alice.privateKey)), keys.alice_identity_x25519_private);
  assert.equal(b64(edPublicToX(bob.publicKey)), keys.bob_identity_x25519_public);
  const spk = x25519Pair(keys.bob_signed_prekey);
  const opk = x25519Pair(keys.bob_one_time_prekey);
  const ek = x25519Pair(keys.alice_ephemeral);
  const aliceRatchet = x25519Pair(keys.alice_ratchet_1);
  const bobRatchet = x25519Pair(keys.bob_ratchet_1);
  for (const [pair, name] of [[spk, "bob_signed_prekey"], [opk, "bob_one_time_prekey"], [ek, "alice_ephemeral"], [aliceRatchet, "alice_ratchet_1"], [bobRatchet, "bob_ratchet_1"]] as const) {
    assert.equal(b64(pair.publicKey), keys[name].public, name);
  }
  const bundle = {
    identityKey: bob.publicKey,
    signedPrekey: { keyId: 7, publicKey: spk.publicKey, signature: unb64(keys.bob_signed_prekey.signature) },
    oneTimePrekey: { keyId: 42, publicKey: opk.publicKey },
  };
  const dhs = initiatorDh(alice, bundle, ek);
  assert.deepEqual(dhs.map(b64), ["dh1", "dh2", "dh3", "dh4"].map((k) => VECTORS.x3dh?.[k]));
  assert.equal(b64(x3dhSecret(dhs)), VECTORS.x3dh?.sk_with_opk);
  assert.equal(b64(x3dhSecret(initiatorDh(alice, { ...bundle, oneTimePrekey: null }, ek))), VECTORS.x3dh?.sk_without_opk);
  const session = initiate(alice, bundle, { ek, ratchet: aliceRatchet });
  assert.equal(b64(session.ad), VECTORS.x3dh?.ad);
  assert.equal(b64(session.rootKey), VECTORS.ratchet?.alice_root_key_1);
  assert.equal(b64(session.cks as Uint8Array), VECTORS.ratchet?.alice_sending_chain_1);
  const [mk, next] = kdfCk(session.cks as Uint8Array);
  assert.equal(b64(mk), VECTORS.ratchet?.message_key_0);
  assert.equal(b64(next), VECTORS.ratchet?.next_chain_key);
  assert.equal(b64(concat(...messageKeys(mk))), VECTORS.ratchet?.key_nonce_0);
  // the first message, exactly
  const first = encrypt(session, utf8(VECTORS.first_message?.plaintext as string));
  assert.equal(b64(first), VECTORS.first_message?.bytes);
  // bob opens it and replies with a fixed ratchet key: exactly the reply's bytes
  const pre = parsePrekeyMessage(first);
  const [plaintext, bobSession] = decrypt(respond(bob, spk, opk, pre), pre.inner, bobRatchet);
  assert.equal(fromUtf8(plaintext), VECTORS.first_message?.plaintext);
  const reply = encrypt(bobSession, utf8(VECTORS.bob_reply?.plaintext as string));
  assert.equal(b64(reply), VECTORS.bob_reply?.bytes);
  const [back] = decrypt(session, reply.subarray(2));
  assert.equal(fromUtf8(back), VECTORS.bob_reply?.plaintext);
  // sender keys: the same chain and signing seed give the same group messages
  const sk = VECTORS.sender_key as { channel_id: string; key_id: number; chain_key: string; signing_seed: string; signing_public: string; messages: { iteration: number; plaintext: string; bytes: string }[] };
  const signing = ed25519FromSeed(unb64(sk.signing_seed));
  assert.equal(b64(signing.publicKey), sk.signing_public);
  const own = { keyId: sk.key_id, iteration: 0, chainKey: unb64(sk.chain_key), signing };
  let chain = peerKeyFrom({ type: "sender_key", channel_id: sk.channel_id, key_id: sk.key_id, iteration: 0, chain_key: sk.chain_key, signing_key: sk.signing_public });
  for (const m of sk.messages) {
    assert.equal(b64(groupEncrypt(own, sk.channel_id, utf8(m.plaintext))), m.bytes, `group message ${m.iteration}`);
  }
  for (const m of [...sk.messages].reverse()) {
    const [p, nextChain] = groupDecrypt(chain, sk.channel_id, unb64(m.bytes));
    assert.equal(fromUtf8(p), m.plaintext);
    chain = nextChain;
  }
  // and the DH function itself agrees on both sides of DH1
  assert.equal(b64(dh(spk.privateKey, edPublicToX(alice.publicKey))), VECTORS.x3dh?.dh1);
});

// ---- 2. live devices, both ways

test("property: a TypeScript and a Python device, either one starting, any sends and deliveries, replays refused", async () => {
  let run = 0;
  const op = fc.record({ op: fc.constantFrom("sendTs", "sendPy", "recvTs", "recvPy"), pick: fc.nat(), replay: fc.boolean() });
  await fc.assert(
    fc.asyncProperty(fc.boolean(), fc.array(op, { maxLength: 40 }), async (tsStarts, ops) => {
      const pyName = `prop-${run++}`;
      await py.call({ cmd: "create", device: pyName, user_id: "pyuser", device_id: pyName, one_time_prekeys: 1 });
      const pyAddr = { user_id: "pyuser", device_id: pyName };
      const ts = await E2eDevice.create("tsuser", `t-${pyName}`);
      const toPy: [Uint8Array, string][] = [];
      const toTs: [Uint8Array, string][] = [];
      let tsCan = tsStarts;
      let pyCan = !tsStarts;
      if (tsStarts) ts.startSession(await py.bundle(pyName));
      let n = 0;
      let bundleGiven = tsStarts;
      const sendPy = async (text: string) => {
        // when Python starts, its first message carries the TypeScript device's bundle (the driver starts the session)
        const bundle = bundleGiven ? undefined : bundleOf(ts);
        bundleGiven = true;
        return py.encrypt(pyName, ts.address, text, bundle);
      };
      for (const o of ops) {
        if (o.op === "sendTs" && tsCan) {
          const text = `ts ${n++}`;
          toPy.push([ts.encryptTo(pyAddr, utf8(text)), text]);
        } else if (o.op === "sendPy" && pyCan) {
          const text = `py ${n++}`;
          toTs.push([await sendPy(text), text]);
        } else if (o.op === "recvPy" && toPy.length) {
          const [bytes, text] = toPy.splice(o.pick % toPy.length, 1)[0] as [Uint8Array, string];
          assert.equal(await py.decrypt(pyName, ts.address, bytes), text);
          if (o.replay) await pyRejects({ cmd: "decrypt", device: pyName, from: `tsuser/t-${pyName}`, body: b64(bytes) });
          pyCan = true;
        } else if (o.op === "recvTs" && toTs.length) {
          const [bytes, text] = toTs.splice(o.pick % toTs.length, 1)[0] as [Uint8Array, string];
          assert.equal(fromUtf8(ts.decryptFrom(pyAddr, bytes)), text);
          if (o.replay) assert.throws(() => ts.decryptFrom(pyAddr, bytes), E2eError);
          tsCan = true;
        }
      }
      for (const [bytes, text] of toPy.reverse()) assert.equal(await py.decrypt(pyName, ts.address, bytes), text);
      for (const [bytes, text] of toTs.reverse()) assert.equal(fromUtf8(ts.decryptFrom(pyAddr, bytes)), text);
    }),
    { numRuns: 25 },
  );
});

test("TypeScript starts, Python answers: out of order, skipped, replayed and tampered messages", async () => {
  await py.call({ cmd: "create", device: "bob", user_id: "bob", device_id: "b1", one_time_prekeys: 5 });
  const bob = { user_id: "bob", device_id: "b1" };
  const alice = await E2eDevice.create("alice", "a1");
  alice.startSession(await py.bundle("bob"));
  // five prekey messages before any reply; Python reads 3, 0, 4 (1 and 2 come late)
  const m = Array.from({ length: 5 }, (_, i) => alice.encryptTo(bob, utf8(`ts ${i}`)));
  assert.ok(m.every((x) => x[1] === 0x01), "prekey messages until the first reply");
  for (const i of [3, 0, 4]) assert.equal(await py.decrypt("bob", alice.address, m[i] as Uint8Array), `ts ${i}`);
  await pyRejects({ cmd: "decrypt", device: "bob", from: "alice/a1", body: b64(m[3] as Uint8Array) });
  // Python replies five times; TypeScript reads 4, 1, 0, refuses a replay and a tampered copy
  const r: Uint8Array[] = [];
  for (let i = 0; i < 5; i++) r.push(await py.encrypt("bob", alice.address, `py ${i}`));
  for (const i of [4, 1, 0]) assert.equal(fromUtf8(alice.decryptFrom(bob, r[i] as Uint8Array)), `py ${i}`);
  assert.throws(() => alice.decryptFrom(bob, r[4] as Uint8Array), (e: unknown) => e instanceof E2eError && e.code === "replay");
  const tampered = (r[2] as Uint8Array).slice();
  tampered[tampered.length - 1] = (tampered[tampered.length - 1] as number) ^ 1;
  assert.throws(() => alice.decryptFrom(bob, tampered), E2eError);
  assert.equal(fromUtf8(alice.decryptFrom(bob, r[2] as Uint8Array)), "py 2");
  // after the reply: normal messages, across a new ratchet step, out of order; the late prekey messages still open
  const n = Array.from({ length: 3 }, (_, i) => alice.encryptTo(bob, utf8(`after ${i}`)));
  assert.ok(n.every((x) => x[1] === 0x02));
  for (const i of [2, 0]) assert.equal(await py.decrypt("bob", alice.address, n[i] as Uint8Array), `after ${i}`);
  for (const i of [2, 1]) assert.equal(await py.decrypt("bob", alice.address, m[i] as Uint8Array), `ts ${i}`);
  assert.equal(await py.decrypt("bob", alice.address, n[1] as Uint8Array), "after 1");
  assert.equal(fromUtf8(alice.decryptFrom(bob, r[3] as Uint8Array)), "py 3");
  // many turns both ways
  for (let i = 0; i < 4; i++) {
    assert.equal(fromUtf8(alice.decryptFrom(bob, await py.encrypt("bob", alice.address, `turn ${i}`))), `turn ${i}`);
    assert.equal(await py.decrypt("bob", alice.address, alice.encryptTo(bob, utf8(`back ${i}`))), `back ${i}`);
  }
  // the TypeScript state saved and restored mid-session keeps working with Python
  const restored = await E2eDevice.restore(JSON.parse(JSON.stringify(alice.toJSON())));
  assert.equal(await py.decrypt("bob", alice.address, restored.encryptTo(bob, utf8("restored"))), "restored");
});

test("Python starts, TypeScript answers: without a one-time prekey too, out of order both ways", async () => {
  for (const withOpk of [true, false]) {
    const ts = await E2eDevice.create("dana", withOpk ? "d1" : "d2");
    const name = `erin-${withOpk}`;
    await py.call({ cmd: "create", device: name, user_id: "erin", device_id: name });
    const erin = { user_id: "erin", device_id: name };
    const first = await py.encrypt(name, ts.address, "hello from python", bundleOf(ts, withOpk));
    const second = await py.encrypt(name, ts.address, "second");
    assert.equal(first[1], 0x01);
    assert.equal(fromUtf8(ts.decryptFrom(erin, second)), "second", "a later prekey message first");
    assert.equal(fromUtf8(ts.decryptFrom(erin, first)), "hello from python");
    const replies = [0, 1, 2].map((i) => ts.encryptTo(erin, utf8(`reply ${i}`)));
    for (const i of [1, 2, 0]) assert.equal(await py.decrypt(name, ts.address, replies[i] as Uint8Array), `reply ${i}`);
    const more = [await py.encrypt(name, ts.address, "x0"), await py.encrypt(name, ts.address, "x1")];
    assert.equal(more[0]?.[1], 0x02, "Python sends normal messages after the reply");
    assert.equal(fromUtf8(ts.decryptFrom(erin, more[1] as Uint8Array)), "x1");
    assert.equal(fromUtf8(ts.decryptFrom(erin, more[0] as Uint8Array)), "x0");
  }
});

test("signed prekeys rotated on either side: old and new bundles both open sessions", async () => {
  // Python rotates: a session started from the old bundle and one from the new both reach it
  await py.call({ cmd: "create", device: "frank", user_id: "frank", device_id: "f1", one_time_prekeys: 3 });
  const frank = { user_id: "frank", device_id: "f1" };
  const early = await E2eDevice.create("gina", "g1");
  const oldBundle = await py.bundle("frank");
  early.startSession(oldBundle);
  const before = early.encryptTo(frank, utf8("on the old signed prekey"));
  const rotated = (await py.call({ cmd: "rotate_signed_prekey", device: "frank" })).signed_prekey as { key_id: number };
  const late = await E2eDevice.create("gina", "g2");
  const newBundle = await py.bundle("frank");
  assert.equal(newBundle.signed_prekey.key_id, rotated.key_id);
  assert.notEqual(newBundle.signed_prekey.key_id, oldBundle.signed_prekey.key_id);
  late.startSession(newBundle);
  assert.equal(await py.decrypt("frank", late.address, late.encryptTo(frank, utf8("on the new one"))), "on the new one");
  assert.equal(await py.decrypt("frank", early.address, before), "on the old signed prekey");
  // TypeScript rotates: Python starts from the new bundle, and a message on the old one still opens
  const ts = await E2eDevice.create("hugo", "h1");
  const tsOld = bundleOf(ts);
  await py.call({ cmd: "create", device: "ivy1", user_id: "ivy", device_id: "i1" });
  await py.call({ cmd: "create", device: "ivy2", user_id: "ivy", device_id: "i2" });
  const onOld = await py.encrypt("ivy1", ts.address, "python on the old one", tsOld);
  ts.rotateSignedPrekey();
  const tsNew = bundleOf(ts);
  assert.notEqual(tsNew.signed_prekey.key_id, tsOld.signed_prekey.key_id);
  const onNew = await py.encrypt("ivy2", ts.address, "python on the new one", tsNew);
  assert.equal(fromUtf8(ts.decryptFrom({ user_id: "ivy", device_id: "i2" }, onNew)), "python on the new one");
  assert.equal(fromUtf8(ts.decryptFrom({ user_id: "ivy", device_id: "i1" }, onOld)), "python on the old one");
  // a bundle whose signature was made by another identity is refused by both
  const forged = { ...newBundle, signed_prekey: { ...newBundle.signed_prekey, signature: tsNew.signed_prekey.signature } };
  assert.throws(() => late.startSession(forged), (e: unknown) => e instanceof E2eError && e.code === "bad_signature");
  await py.call({ cmd: "create", device: "jack", user_id: "jack", device_id: "j1" });
  await pyRejects({ cmd: "start_session", device: "jack", bundle: { ...tsNew, signed_prekey: { ...tsNew.signed_prekey, signature: newBundle.signed_prekey.signature } } });
});

test("a group channel across SDKs: sender keys both ways, a two-device Python user, out of order, rotation on leave", async () => {
  const room = "room-x";
  const alice = await E2eDevice.create("alice", "ta1");
  const carol = await E2eDevice.create("carol", "tc1");
  await py.call({ cmd: "create", device: "kim1", user_id: "kim", device_id: "k1", one_time_prekeys: 2 });
  await py.call({ cmd: "create", device: "kim2", user_id: "kim", device_id: "k2", one_time_prekeys: 2 });
  const kim1 = { user_id: "kim", device_id: "k1" };
  const kim2 = { user_id: "kim", device_id: "k2" };
  alice.startSession(await py.bundle("kim1"));
  alice.startSession(await py.bundle("kim2"));
  alice.startSession(bundleOf(carol));
  // TypeScript sends: the sender key pairwise to each device, then three group messages read out of order
  const everyone = [kim1, kim2, carol.address];
  const envs = [0, 1, 2].map((i) => alice.seal(room, everyone, { text: `ts group ${i}`, attachments: [] }));
  assert.equal(envs[0]?.ciphertexts?.length, 3);
  assert.equal(envs[1]?.ciphertexts, undefined);
  for (const [name, a] of [["kim1", kim1], ["kim2", kim2]] as const) {
    const body = envs[0]?.ciphertexts?.find((c) => c.device_id === a.device_id)?.body as string;
    const dist = JSON.parse(await py.decrypt(name, alice.address, unb64(body))) as { type: string; channel_id: string };
    assert.equal(dist.type, "sender_key");
    assert.equal(dist.channel_id, room);
    for (const i of [2, 0, 1]) {
      const got = await py.call({ cmd: "decrypt_group", device: name, from: "alice/ta1", channel_id: room, body: envs[i]?.group });
      assert.deepEqual(JSON.parse(got.plaintext as string), { type: "message", text: `ts group ${i}`, attachments: [] });
    }
    await pyRejects({ cmd: "decrypt_group", device: name, from: "alice/ta1", channel_id: room, body: envs[1]?.group });
  }
  // Python sends to the TypeScript devices and its own other device (it has no session with carol: a bundle)
  const recipients = ["alice/ta1", "carol/tc1", "kim/k2"];
  const bundles = { "carol/tc1": bundleOf(carol), "alice/ta1": bundleOf(alice), "kim/k2": await py.bundle("kim2") };
  const sent: Answer[] = [];
  for (let i = 0; i < 3; i++) {
    sent.push(await py.call({ cmd: "encrypt_group", device: "kim1", channel_id: room, plaintext: message(`py group ${i}`), recipients, bundles }));
  }
  const pairwise = sent[0]?.pairwise as Record<string, string>;
  assert.deepEqual(Object.keys(pairwise).sort(), recipients);
  for (const d of [alice, carol]) {
    const mine = pairwise[`${d.userId}/${d.deviceId}`] as string;
    const env = (i: number) => ({ sender_device: "k1", ...(i === 0 ? { ciphertexts: [{ ...d.address, body: mine }] } : {}), group: sent[i]?.group as string });
    assert.equal(d.open(room, "kim", env(0))?.text, "py group 0");
    assert.equal(d.open(room, "kim", env(2))?.text, "py group 2", "group 1 skipped for now");
    assert.equal(d.open(room, "kim", env(1))?.text, "py group 1");
    assert.throws(() => d.open(room, "kim", env(2)), (e: unknown) => e instanceof E2eError && e.code === "replay");
  }
  // carol leaves: alice's next message carries a new sender key to kim's devices only
  const after = alice.seal(room, [kim1, kim2], { text: "carol left", attachments: [] });
  assert.deepEqual(after.ciphertexts?.map((c) => c.device_id).sort(), ["k1", "k2"]);
  for (const [name, a] of [["kim1", kim1], ["kim2", kim2]] as const) {
    await py.decrypt(name, alice.address, unb64(after.ciphertexts?.find((c) => c.device_id === a.device_id)?.body as string));
    const got = await py.call({ cmd: "decrypt_group", device: name, from: "alice/ta1", channel_id: room, body: after.group });
    assert.equal(JSON.parse(got.plaintext as string).text, "carol left");
  }
  assert.throws(() => carol.open(room, "alice", { sender_device: "ta1", group: after.group as string }), (e: unknown) => e instanceof E2eError && e.code === "no_sender_key");
  // kim1 rotates too when carol leaves (Python's rule): alice reads the new key, carol gets none
  const rotated = await py.call({ cmd: "encrypt_group", device: "kim1", channel_id: room, plaintext: message("kim after carol"), recipients: ["alice/ta1", "kim/k2"] });
  const rp = rotated.pairwise as Record<string, string>;
  assert.deepEqual(Object.keys(rp).sort(), ["alice/ta1", "kim/k2"]);
  const content = alice.open(room, "kim", { sender_device: "k1", ciphertexts: [{ ...alice.address, body: rp["alice/ta1"] as string }], group: rotated.group as string });
  assert.equal(content?.text, "kim after carol");
});
