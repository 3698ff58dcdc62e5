// The SDK against a real `caas serve` (embedded, or a node of the Kafka cluster the pytest
// wrapper started): send and receive, resume across a restart and a forced 1013, the outbox
// through a proxy that cuts requests, token refresh on 1008, and the generated types.
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { after, before, describe, test } from "node:test";
import { CaasClient, HttpClient, IndexedDbStorage, type CompactEventFrame, type EventFrame, type SocketConstructor } from "../src/index.js";
import { Proxy } from "./proxy.js";
import { assertGapless, BACKEND, newTenant, NodeWebSocket, room, Server, until, userClient, type Tenant } from "./support.js";

const RESUME_ONLY = BACKEND !== "embedded"; // on Kafka the wrapper runs the resume tests
const clients: CaasClient[] = [];
const track = (c: CaasClient) => (clients.push(c), c);

function collect(client: CaasClient, cid: string, since?: number): { seqs: number[]; frames: EventFrame[] } {
  const seen = { seqs: [] as number[], frames: [] as EventFrame[] };
  client.channel(cid, since === undefined ? {} : { since }).on("event", (frame) => {
    seen.seqs.push(frame.seq);
    seen.frames.push(frame);
  });
  return seen;
}

describe(`caas sdk (${BACKEND})`, () => {
  const server = new Server();
  before(async () => {
    await server.start();
  });
  after(async () => {
    for (const c of clients) c.close();
    await server.stop();
  });

  test("compact frames: the same seqs, events and timeline as event frames", { skip: RESUME_ONLY }, async () => {
    const t = await newTenant(server.url, "alice", "bob");
    await room(t, "compact", "alice", "bob");
    const alice = track(await userClient(t, "alice"));
    const full = collect(track(await userClient(t, "bob")), "compact", 0);
    const bob = track(await userClient(t, "bob", { frames: "compact" }));
    const channel = bob.channel("compact", { since: 0 });
    const short: CompactEventFrame[] = [];
    channel.on("ev", (frame) => short.push(frame));
    const general = alice.channel("compact", { since: 0 });
    await until(() => alice.connected && bob.connected, 10_000, "sockets");
    let last = 0;
    for (let i = 0; i < 3; i++) last = (await general.send(`c${i}`)).seq;
    await channel.caughtUp(last);
    await general.caughtUp(last);
    await until(() => full.seqs.at(-1) === last, 10_000, "the full socket");
    assertGapless(short.map((f) => f.seq), 1, last);
    assert.deepEqual(
      short.map((f) => [f.ch, f.seq, f.ev, f.d.text ?? null]),
      full.frames.map((f) => [f.channel_id, f.seq, f.event.type, f.event.payload.text ?? null]),
    );
    assert.deepEqual(channel.messages.map((m) => [m.text, m.seq, m.status]), general.messages.map((m) => [m.text, m.seq, "delivered"]));
  });

  test("send and receive, local echo, history pages, read markers, typing, presence", { skip: RESUME_ONLY }, async () => {
    const t = await newTenant(server.url, "alice", "bob");
    await room(t, "general", "alice", "bob");
    const alice = track(await userClient(t, "alice"));
    const bob = track(await userClient(t, "bob"));
    const got = collect(bob, "general", 0);
    const general = alice.channel("general", { since: 0 });
    const presence: string[] = [];
    bob.watchPresence(["alice"], (f) => presence.push(f.status));
    await until(() => alice.connected && bob.connected, 10_000, "sockets");

    const sending = general.send("hello bob");
    const echo = general.messages.at(-1);
    assert.equal(echo?.status, "pending");
    assert.equal(echo?.text, "hello bob");
    const ack = await sending;
    await general.caughtUp(ack.seq);
    const mine = general.messages.filter((m) => m.text === "hello bob");
    assert.equal(mine.length, 1, "the echo and the confirmed message are one entry");
    assert.equal(mine[0]?.status, "delivered");
    assert.equal(mine[0]?.message_id, ack.message_id);
    await until(() => got.frames.some((f) => f.event.payload.text === "hello bob"), 10_000, "bob to receive it");

    // history pages, newest first, read after our own writes (min_position passed for us)
    for (let i = 0; i < 6; i++) await general.send(`m${i}`);
    const pages: string[][] = [];
    for await (const page of general.history({ limit: 3 })) pages.push(page.map((m) => m.text ?? ""));
    assert.deepEqual(pages, [["m5", "m4", "m3"], ["m2", "m1", "m0"], ["hello bob"]]);

    // unread counts and read markers: bob's own write is visible to his next read
    assert.equal((await bob.unreadCounts()).get("general"), 7);
    const bobGeneral = bob.channel("general");
    await until(() => bobGeneral.seq !== undefined && bobGeneral.messages.length === 7, 10_000, "bob's timeline");
    assert.equal(bobGeneral.unreadCount, 7);
    await bobGeneral.markRead();
    assert.equal(bobGeneral.unreadCount, 0);
    assert.equal((await bob.unreadCounts()).get("general"), 0);

    // typing: throttled as the server throttles, shown to the others
    assert.equal(await general.startTyping(), true);
    assert.equal(await general.startTyping(), false);
    await until(() => bobGeneral.typing.includes("alice"), 10_000, "bob to see alice typing");
    await until(() => presence.includes("online"), 10_000, "alice's presence");

    // every route is a typed call
    const channel = await alice.http.call("get_channel", { path: { cid: "general" } });
    assert.deepEqual(channel.members.map((m) => m.user_id).sort(), ["alice", "bob"]);
    assert.equal(got.seqs.length, new Set(got.seqs).size);
  });

  test("resume across a server restart: no gap, no duplicate, the outbox sends what was written meanwhile", async () => {
    const t = await newTenant(server.url, "alice", "bob");
    await room(t, "r", "alice", "bob");
    const alice = track(await userClient(t, "alice", { timeoutMs: 5000 }));
    const bob = track(await userClient(t, "bob"));
    const got = collect(bob, "r", 0);
    const posting = alice.channel("r");
    for (let i = 0; i < 5; i++) await posting.send(`before ${i}`);
    await until(() => got.seqs.length >= 8, 20_000, "bob to have the first messages"); // 3 membership events + 5
    await server.stop();
    const meanwhile = [0, 1, 2].map((i) => posting.send(`meanwhile ${i}`)); // the outbox keeps them
    await until(() => !bob.connected, 10_000, "bob to notice");
    await server.start();
    const acks = await Promise.all(meanwhile);
    let head = 0;
    for (let i = 0; i < 5; i++) head = (await posting.send(`after ${i}`)).seq; // the last write: the head
    await until(() => (got.seqs.at(-1) ?? 0) >= head, 60_000, `bob to catch up to ${head}`);
    assertGapless(got.seqs, 1, head);
    const texts = got.frames.filter((f) => f.event.type === "MessagePosted").map((f) => f.event.payload.text);
    assert.deepEqual(texts, [0, 1, 2, 3, 4].map((i) => `before ${i}`).concat([0, 1, 2].map((i) => `meanwhile ${i}`), [0, 1, 2, 3, 4].map((i) => `after ${i}`)));
    assert.equal(new Set(acks.map((a) => a.message_id)).size, 3);
  });

  test("resume across a forced 1013 (slow reader): no gap, no duplicate", async () => {
    const slow = new Server({ CAAS_WS_QUEUE_FRAMES: "50", CAAS_WS_MAX_BUFFERED_BYTES: "65536", CAAS_WS_STALL_SECONDS: "120" });
    await slow.start();
    const proxy = await new Proxy(slow.port).start();
    try {
      const t = await newTenant(slow.url, "alice", "bob");
      await room(t, "fat", "alice", "bob");
      const bob = track(await userClient({ ...t, url: proxy.url }, "bob", { pingIntervalMs: 600_000 }));
      const closes: number[] = [];
      bob.on("disconnected", (d) => closes.push(d.code));
      const got = collect(bob, "fat", 0);
      await until(() => got.seqs.length === 3, 10_000, "bob subscribed"); // the membership events
      proxy.pauseDownstream();
      const alice = await t.token("alice");
      const slowCloses = async () => {
        const text = await (await fetch(`${slow.url}/metrics`, { headers: { authorization: "Bearer test-admin-token" } })).text();
        return Number(/^caas_websocket_slow_consumer_closes_total (\S+)/m.exec(text)?.[1] ?? 0);
      };
      const bytes = (n: number) => Array.from(crypto.getRandomValues(new Uint8Array(n)), (b) => b.toString(16).padStart(2, "0")).join("");
      let posted = 0;
      // ~25 KB frames, incompressible, until the server sheds bob's socket with 1013
      while ((await slowCloses()) === 0) {
        await Promise.all(
          Array.from({ length: 20 }, async () => {
            const body = {
              text: `fat ${posted++} ${bytes(2480)}`,
              attachments: Array.from({ length: 10 }, () => ({ type: "file" as const, url: `https://files.example/${bytes(1000)}` })),
            };
            const r = await fetch(`${slow.url}/v1/channels/fat/messages`, {
              method: "POST",
              headers: { authorization: `Bearer ${alice}`, "content-type": "application/json" },
              body: JSON.stringify(body),
            });
            assert.equal(r.status, 201, await r.text());
          }),
        );
        assert.ok(posted < 4000, "the server never closed the slow socket");
      }
      const head = 3 + posted;
      proxy.resumeDownstream();
      await until(() => (got.seqs.at(-1) ?? 0) >= head, 120_000, `bob to catch up to ${head}`);
      assert.ok(closes.includes(1013), `closed with ${closes.join(",")}`);
      assertGapless(got.seqs, 1, head);
    } finally {
      await proxy.close();
      await slow.stop();
    }
  });

  test("the outbox retries through dropped connections and the message exists exactly once", { skip: RESUME_ONLY }, async () => {
    const proxy = await new Proxy(server.port).start();
    try {
      const t = await newTenant(server.url, "alice", "bob");
      await room(t, "flaky", "alice", "bob");
      const bob = track(await userClient(t, "bob"));
      const got = collect(bob, "flaky", 0);
      const alice = track(await userClient({ ...t, url: proxy.url }, "alice", { retryBaseMs: 50, retryMaxMs: 200 }));
      const retries: string[] = [];
      alice.outbox.on("retrying", ({ error }) => retries.push(error.code));
      // the first attempt dies mid-request; the second reaches the server, which records the
      // message, but the answer is lost; the third is answered with the first result
      proxy.cuts.push({ match: "POST /v1/channels/flaky/messages", how: "mid-request" });
      proxy.cuts.push({ match: "POST /v1/channels/flaky/messages", how: "before-answer" });
      const flaky = alice.channel("flaky");
      const ack = await flaky.send("exactly once");
      assert.equal(proxy.cutCount, 2);
      assert.deepEqual(retries, ["network", "network"]);
      const page = await t.key.call("list_messages", { path: { cid: "flaky" } });
      assert.deepEqual(page.messages.map((m) => [m.message_id, m.text]), [[ack.message_id, "exactly once"]]);
      await until(() => got.frames.some((f) => f.event.payload.text === "exactly once"), 10_000, "bob to receive it");
      await flaky.caughtUp(ack.seq);
      assert.equal(flaky.messages.filter((m) => m.text === "exactly once").length, 1);
      const posted = got.frames.filter((f) => f.event.type === "MessagePosted");
      assert.equal(posted.length, 1);
      assert.equal(alice.outbox.pending().length, 0);
    } finally {
      await proxy.close();
    }
  });

  test("a 1008 (the token's key retired) calls the app's refresh and resumes without a gap", { skip: RESUME_ONLY }, async () => {
    const t = await newTenant(server.url, "alice", "bob");
    await room(t, "auth", "alice", "bob");
    let refreshes = 0;
    const retired = await t.token("bob");
    const bob = track(
      await userClient(t, "bob", {
        refreshToken: async () => {
          refreshes++;
          return t.token("bob");
        },
      }),
    );
    const closes: number[] = [];
    bob.on("disconnected", (d) => closes.push(d.code));
    const got = collect(bob, "auth", 0);
    await until(() => got.seqs.length === 3, 10_000, "bob subscribed");
    const alice = track(await userClient(t, "alice"));
    const posting = alice.channel("auth");
    await posting.send("one");
    // two rotations retire the key that signed bob's token: the server closes his socket with 1008
    await t.key.call("rotate_signing_key");
    await t.key.call("rotate_signing_key");
    await until(() => closes.includes(1008), 20_000, "the 1008 close");
    await until(() => refreshes >= 1 && bob.connected, 20_000, "a refresh and a new socket");
    alice.close();
    const again = track(await userClient(t, "alice"));
    const ack = await again.channel("auth").send("two");
    await until(() => (got.seqs.at(-1) ?? 0) >= ack.seq, 20_000, "bob to receive the message after the refresh");
    assertGapless(got.seqs, 1, ack.seq);
    // HTTP calls with the refreshed token work too
    assert.equal((await bob.http.call("get_channel", { path: { cid: "auth" } })).channel_id, "auth");
    // and an HTTP call with a retired token answers 401, refreshes once and is repeated
    let httpRefreshes = 0;
    const http = new HttpClient({ baseUrl: server.url, token: retired, refreshToken: async () => (httpRefreshes++, t.token("bob")) });
    assert.equal((await http.call("get_channel", { path: { cid: "auth" } })).channel_id, "auth");
    assert.equal(httpRefreshes, 1);
  });

  test("an IndexedDB outbox keeps what a closed page left and sends it once on the next start", { skip: RESUME_ONLY }, async () => {
    // fake-indexeddb implements the IndexedDB API in memory: Node has no browser storage
    const { indexedDB } = await import("fake-indexeddb");
    (globalThis as { indexedDB?: unknown }).indexedDB = indexedDB;
    try {
      const t = await newTenant(server.url, "alice");
      await room(t, "kept", "alice");
      // the first page's server is unreachable: its messages wait in IndexedDB
      const gone = new CaasClient({ baseUrl: "http://127.0.0.1:9", token: await t.token("alice"), storage: new IndexedDbStorage("kept-db"), retryBaseMs: 10_000 });
      const waiting = [gone.outbox.send("kept", { text: "first" }), gone.outbox.send("kept", { text: "second" })];
      await until(async () => (await new IndexedDbStorage("kept-db").all()).length === 2, 10_000, "the entries in IndexedDB");
      gone.outbox.stop(); // the page closes
      await Promise.allSettled(waiting);
      const next = track(await userClient(t, "alice", { storage: new IndexedDbStorage("kept-db") }));
      const acked: string[] = [];
      next.outbox.on("acked", ({ entry }) => acked.push(entry.body.text ?? ""));
      const restored = await next.outbox.restore();
      assert.deepEqual(restored.map((e) => e.body.text), ["first", "second"]);
      await until(() => acked.length === 2, 10_000, "both acknowledged");
      assert.deepEqual(acked, ["first", "second"]);
      assert.deepEqual(await new IndexedDbStorage("kept-db").all(), []);
      await next.outbox.restore(); // nothing left: nothing sent twice
      const page = await t.key.call("list_messages", { path: { cid: "kept" } });
      assert.deepEqual(page.messages.map((m) => m.text).reverse(), ["first", "second"]);
    } finally {
      delete (globalThis as { indexedDB?: unknown }).indexedDB;
    }
  });

  test("a 1009 is surfaced as an error, and the client resumes with frames the server takes", { skip: RESUME_ONLY }, async () => {
    const strict = await new Server({ CAAS_WS_MAX_FRAME_BYTES: "1024" }).start();
    try {
      const users = Array.from({ length: 120 }, (_, i) => `user-${String(i).padStart(4, "0")}`);
      const t = await newTenant(strict.url, "alice", "bob", ...users);
      await room(t, "big", "alice", "bob");
      const bob = track(await userClient(t, "bob")); // believes the default 16 KiB limit
      const errors: string[] = [];
      bob.on("error", (e) => errors.push(e.code));
      const got = collect(bob, "big", 0);
      const seen = new Set<string>();
      bob.watchPresence(users, (p) => seen.add(p.user_id)); // one ~2 KB frame: over the server's 1 KiB
      await until(() => errors.includes("payload_too_large"), 10_000, "the 1009 error");
      await until(() => seen.size === users.length, 20_000, "every user's presence after the resume");
      const alice = track(await userClient(t, "alice"));
      const ack = await alice.channel("big").send("still here");
      await until(() => (got.seqs.at(-1) ?? 0) >= ack.seq, 10_000, "the channel after the 1009");
      assertGapless(got.seqs, 1, ack.seq);
    } finally {
      await strict.stop();
    }
  });

  test("a server refusing frames over a small burst still gets every subscribe, and every channel delivers", { skip: RESUME_ONLY }, async () => {
    const paced = await new Server({ CAAS_WS_FRAMES_BURST: "5", CAAS_WS_FRAMES_PER_SECOND: "20" }).start();
    try {
      const t = await newTenant(paced.url, "alice", "bob");
      const ids = Array.from({ length: 12 }, (_, i) => `burst-${i}`);
      for (const id of ids) await room(t, id, "alice", "bob");
      const bob = track(await userClient(t, "bob")); // believes the default burst of 100
      const got = new Map(ids.map((id) => [id, collect(bob, id, 0)]));
      const alice = track(await userClient(t, "alice"));
      const acks = await Promise.all(ids.map((id) => alice.outbox.send(id, { text: `hello ${id}` })));
      await until(() => ids.every((id, i) => (got.get(id)?.seqs.at(-1) ?? 0) >= (acks[i]?.seq ?? Infinity)), 30_000, "every channel's message");
      for (const [i, id] of ids.entries()) assertGapless(got.get(id)?.seqs ?? [], 1, acks[i]?.seq ?? 0);
    } finally {
      await paced.stop();
    }
  });

  test("a client closed while its socket is still connecting stops quietly", { skip: RESUME_ONLY }, async () => {
    const t = await newTenant(server.url, "alice");
    const sockets: { readyState: number }[] = [];
    const states: number[] = [];
    let client: CaasClient | undefined;
    class Closing extends (NodeWebSocket as unknown as new (url: string) => { readyState: number }) {
      constructor(url: string) {
        super(url);
        sockets.push(this);
        queueMicrotask(() => {
          states.push(this.readyState);
          client?.close(); // before any byte of the handshake came back
        });
      }
    }
    client = await userClient(t, "alice", { WebSocket: Closing as unknown as SocketConstructor });
    const errors: unknown[] = [];
    client.on("error", (e) => errors.push(e));
    client.channel("nowhere");
    await until(() => sockets[0]?.readyState === 3, 10_000, "the socket closed");
    assert.deepEqual(states, [0]); // it was still connecting
    assert.equal(client.connected, false);
    assert.equal(sockets.length, 1, "no reconnect after close()");
    assert.deepEqual(errors, []);
  });

  test("the committed generated types equal what the live server's /openapi.json and /asyncapi.json generate", { skip: RESUME_ONLY }, async () => {
    // @ts-expect-error the code generator is plain JavaScript
    const { framesSource, openapiSource, routesSource } = await import("../../scripts/codegen.mjs");
    const spec = await (await fetch(`${server.url}/openapi.json`)).json();
    const root = new URL("../../src/generated/", import.meta.url);
    assert.equal(await openapiSource(spec), await readFile(new URL("openapi.ts", root), "utf8"), "run `npm run generate -- --url <server>`");
    assert.equal(routesSource(spec), await readFile(new URL("routes.ts", root), "utf8"));
    const asyncapi = await (await fetch(`${server.url}/asyncapi.json`)).json();
    assert.equal(await framesSource(asyncapi), await readFile(new URL("frames.ts", root), "utf8"), "run `npm run generate -- --url <server>`");
  });
});
