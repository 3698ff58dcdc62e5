// E2E through a real server (`caas serve`, embedded): devices registered over the devices API,
// one-time prekeys topped up, bundles fetched, ciphertext-only posts to an e2e channel decrypted
// from history and from websocket frames by every member device (a two-device user included),
// a member's removal rotating the sender key, the device state saved and restored.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { CaasError, eventOf, HttpClient } from "../src/index.js";
import { type DeviceJSON, E2eClient, E2eError, type E2eMessage } from "../src/e2e/index.js";
import { newTenant, Server, type Tenant, until, userClient } from "./support.js";

let server: Server;
before(async () => {
  server = await new Server().start();
});
after(() => server.stop());

function memoryStore() {
  const box: { state?: DeviceJSON } = {};
  return { box, store: { load: async () => box.state, save: async (s: DeviceJSON) => void (box.state = s) } };
}

async function device(t: Tenant, user: string, deviceId: string, store = memoryStore().store, extra: Partial<Parameters<typeof E2eClient.open>[0]> = {}) {
  const http = new HttpClient({ baseUrl: t.url, token: await t.token(user) });
  return E2eClient.open({ http, userId: user, deviceId, store, prekeyBatch: 10, minPrekeys: 5, ...extra });
}

async function history(t: Tenant, cid: string): Promise<E2eMessage[]> {
  const page = await t.key.call("list_messages", { path: { cid } });
  // oldest first
  return (page.messages as unknown as (E2eMessage & { seq: number })[]).sort((a, b) => a.seq - b.seq);
}

/** The channel's messages once there are `n` (another client's post reaches the read model soon after). */
const messages = (t: Tenant, cid: string, n: number) => until(async () => {
  const found = await history(t, cid);
  return found.length >= n && found;
}, 30_000, `${n} messages in ${cid}`);

test("an e2e channel end to end: the server stores ciphertext only, every member device reads", async () => {
  const t = await newTenant(server.url, "alice", "bob", "carol");
  await t.key.call("create_channel", { body: { channel_id: "secret", kind: "group", members: ["alice", "bob", "carol"], e2e: true } as never });
  const aliceStore = memoryStore();
  const alice = await device(t, "alice", "phone", aliceStore.store);
  const bob1 = await device(t, "bob", "laptop");
  const bob2 = await device(t, "bob", "phone");
  const carol = await device(t, "carol", "web");
  const listed = (await t.key.call("get_channel", { path: { cid: "secret" } })) as { e2e: boolean };
  assert.equal(listed.e2e, true);

  // plaintext is refused in an e2e channel
  const aliceHttp = new HttpClient({ baseUrl: t.url, token: await t.token("alice") });
  await assert.rejects(aliceHttp.call("post_message", { path: { cid: "secret" }, body: { text: "in clear" } }), (e: unknown) => e instanceof CaasError && e.code === "plaintext_in_e2e_channel");

  // a live subscriber (bob's laptop) decrypts the websocket frame
  const ws = await userClient(t, "bob");
  const frames: E2eMessage[] = [];
  ws.channel("secret", { since: 0 }).on("event", (frame) => {
    const { type, payload } = eventOf(frame);
    if (type === "MessagePosted") frames.push({ channel_id: "secret", ...(payload as { author_id: string; message_id: string; e2e: E2eMessage["e2e"] }) });
  });

  await alice.send("secret", "the launch is at noon", { attachments: [{ name: "plan.pdf" }] });
  const [posted] = await messages(t, "secret", 1);
  assert.ok(posted?.e2e, "the read model carries the envelope");
  assert.equal((posted as unknown as { text: string | null }).text || null, null, "and no text");
  assert.ok(!JSON.stringify(posted).includes("launch"), "no plaintext anywhere in what the server answers");
  assert.equal(posted.e2e?.ciphertexts?.length, 3, "alice's sender key, pairwise, to bob's two devices and carol's");
  for (const d of [bob2, carol]) assert.deepEqual(await d.decrypt(posted), { text: "the launch is at noon", attachments: [{ name: "plan.pdf" }] });
  const frame = await until(() => frames[0], 30_000, "the websocket frame");
  assert.equal((await bob1.decrypt(frame))?.text, "the launch is at noon");
  assert.equal((await bob1.decrypt(posted))?.text, "the launch is at noon", "the same message from history: decrypted once, answered again");
  ws.close();

  // bob's phone replies: the others (its own laptop included) read it
  await bob2.send("secret", "noted");
  const reply = (await messages(t, "secret", 2))[1] as E2eMessage;
  assert.equal(reply.author_id, "bob");
  for (const d of [alice, bob1, carol]) assert.equal((await d.decrypt(reply))?.text, "noted");

  // carol leaves: alice's next message has a new sender key, for bob's devices only
  await t.key.call("remove_member", { path: { cid: "secret", uid: "carol" } });
  await until(async () => !(await alice.recipients("secret")).some((r) => r.user_id === "carol"), 30_000, "alice to see carol gone");
  await alice.send("secret", "carol is gone");
  const latest = (await messages(t, "secret", 3))[2] as E2eMessage;
  assert.equal(latest.author_id, "alice");
  assert.deepEqual(latest.e2e?.ciphertexts?.map((c) => `${c.user_id}/${c.device_id}`).sort(), ["bob/laptop", "bob/phone"]);
  for (const d of [bob1, bob2]) assert.equal((await d.decrypt(latest))?.text, "carol is gone");
  await assert.rejects(carol.decrypt(latest), (e: unknown) => e instanceof E2eError);

  // bob's phone edits its reply: a new envelope under the same message id
  await bob2.edit("secret", reply.message_id as string, "noted, and agreed");
  const edited = await until(async () => {
    const m = (await history(t, "secret")).find((x) => x.message_id === reply.message_id);
    return m?.e2e?.group !== reply.e2e?.group && m;
  }, 30_000, "the edit");
  assert.equal((await alice.decrypt(edited))?.text, "noted, and agreed");
  assert.equal((await bob1.decrypt(reply))?.text, "noted", "the old envelope still answers what it said");

  // bob's laptop is reset (a new identity key under the same device id): alice starts a new session
  const changes: string[] = [];
  const watcher = await device(t, "alice", "tablet", memoryStore().store, { onIdentityChange: (a) => (changes.push(`${a.user_id}/${a.device_id}`), true) });
  await watcher.send("secret", "before the reset");
  const bob1Reset = await device(t, "bob", "laptop", memoryStore().store);
  await watcher.send("secret", "after the reset");
  assert.deepEqual(changes, ["bob/laptop"], "the new identity key was shown to the app");
  const afterReset = (await messages(t, "secret", 5))[4] as E2eMessage;
  assert.equal((await bob1Reset.decrypt(afterReset))?.text, "after the reset");

  // alice's device from its saved state (a new process): keeps reading and writing
  const again = await device(t, "alice", "phone", aliceStore.store);
  await bob1.send("secret", "welcome back");
  const back = (await messages(t, "secret", 6))[5] as E2eMessage;
  assert.equal(back.author_id, "bob");
  assert.equal((await again.decrypt(back))?.text, "welcome back");
  assert.equal(await again.decrypt(posted), null, "its own message from before the restart: not encrypted for itself");

  // sends started together go out one after the other: every one decrypts, in order
  await Promise.all([0, 1, 2, 3, 4].map((i) => again.send("secret", `burst ${i}`)));
  const burst = (await messages(t, "secret", 11)).slice(6);
  const texts = await Promise.all(burst.map(async (m) => (await bob2.decrypt(m))?.text));
  assert.deepEqual(texts, ["burst 0", "burst 1", "burst 2", "burst 3", "burst 4"]);
});

test("one-time prekeys: each bundle fetch hands one out once, the device tops them up", async () => {
  const t = await newTenant(server.url, "dora", "eve");
  const dora = await device(t, "dora", "d1", memoryStore().store, { prekeyBatch: 6, minPrekeys: 4 });
  const count = async () => {
    const r = await fetch(`${t.url}/v1/users/dora/devices`, { headers: { authorization: `Bearer ${t.apiKey}` } });
    const body = (await r.json()) as { devices: { device_id: string; one_time_prekeys_left: number }[] };
    return body.devices.find((d) => d.device_id === "d1")?.one_time_prekeys_left;
  };
  assert.equal(await count(), 6);
  const eve = await device(t, "eve", "e1");
  // each of eve's devices that starts a session claims one of dora's one-time prekeys
  for (const id of ["e2", "e3", "e4"]) {
    const other = await device(t, "eve", id);
    await other.ensureSessions([{ user_id: "dora", device_id: "d1" }]);
  }
  await eve.ensureSessions([{ user_id: "dora", device_id: "d1" }]);
  assert.equal(await count(), 2);
  assert.equal(await dora.topUpPrekeys(), 8, "below the minimum: a batch uploaded");
  assert.equal(await count(), 8);
  assert.equal(await dora.topUpPrekeys(), 8, "enough: nothing uploaded");
  // watching the user's socket: the prekeys_low frames of fetches that drain the pool make the device
  // upload batches by itself (below the server's threshold, whatever its own minimum)
  const ws = await userClient(t, "dora");
  const stop = dora.watch(ws);
  ws.connect();
  await until(() => ws.connected, 30_000, "dora's socket");
  const claim = () => fetch(`${t.url}/v1/users/dora/devices/d1/bundle`, { method: "POST", headers: { authorization: `Bearer ${t.apiKey}` } });
  for (let i = 0; i < 8; i++) assert.equal((await claim()).status, 200);
  await until(async () => ((await count()) ?? 0) >= 10, 30_000, "the device to top its prekeys up on prekeys_low");
  stop();
  ws.close();

  // a removed device is not brought back behind the app's back
  const gone = await device(t, "dora", "d2");
  await gone.unregister();
  await assert.rejects(gone.topUpPrekeys(), (e: unknown) => e instanceof CaasError && e.code === "device_not_found");
  await gone.register();
  assert.ok((await gone.topUpPrekeys()) > 0);

  // a rotated signed prekey is what the next bundle carries
  await dora.rotateSignedPrekey();
  const r = await fetch(`${t.url}/v1/users/dora/devices/d1/bundle`, { method: "POST", headers: { authorization: `Bearer ${t.apiKey}` } });
  const bundle = (await r.json()) as { signed_prekey: { key_id: number } };
  assert.equal(bundle.signed_prekey.key_id, dora.device.signedPrekey.key_id);
});
