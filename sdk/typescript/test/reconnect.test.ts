// The client's reconnect policy and frame handling against a fake websocket server (the ws
// package's server on loopback) that closes with the codes a real node sends, so repeated closes
// are cheap to produce and count. Each close code follows the contract in streams/frames.py.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { WebSocketServer, type WebSocket as ServerSocket } from "ws";
import { CaasClient, type ClientEvents } from "../src/index.js";
import { NodeWebSocket, until, withReportedErrors } from "./support.js";

type Frame = Record<string, unknown> & { type: string };

/** A fake node: `onConnect` runs for every socket with its token and a way to send frames. */
class FakeNode {
  readonly server: WebSocketServer;
  readonly tokens: string[] = [];
  readonly received: Frame[] = [];
  constructor(onFrame: (socket: ServerSocket, frame: Frame, node: FakeNode) => void, onConnect: (socket: ServerSocket, token: string, node: FakeNode) => void = () => {}) {
    this.server = new WebSocketServer({ host: "127.0.0.1", port: 0 });
    this.server.on("connection", (socket, request) => {
      const token = new URL(request.url ?? "/", "http://x").searchParams.get("token") ?? "";
      this.tokens.push(token);
      socket.on("message", (data) => {
        const frame = JSON.parse(String(data)) as Frame;
        this.received.push(frame);
        onFrame(socket, frame, this);
      });
      onConnect(socket, token, this);
    });
  }
  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as { port: number }).port}`;
  }
  async listening(): Promise<this> {
    if (this.server.address() === null) await new Promise((r) => this.server.once("listening", r));
    return this;
  }
  close(): Promise<void> {
    for (const c of this.server.clients) c.terminate();
    return new Promise((r) => this.server.close(() => r()));
  }
}

const send = (socket: ServerSocket, frame: Frame) => socket.send(JSON.stringify(frame));
const event = (seq: number): Frame => ({
  type: "event", channel_id: "c", seq, position: seq,
  event: { event_id: `e${seq}`, type: "MessagePosted", seq, payload: { message_id: `m${seq}`, author_id: "other", text: `t${seq}` } },
});

const clients: CaasClient[] = [];
const nodes: FakeNode[] = [];
after(async () => {
  for (const c of clients) c.close();
  for (const n of nodes) await n.close();
});

async function setup(node: FakeNode, options: Partial<ConstructorParameters<typeof CaasClient>[0]> = {}) {
  nodes.push(await node.listening());
  const client = new CaasClient({ baseUrl: node.url, token: "t0", WebSocket: NodeWebSocket, reconnectBaseMs: 20, reconnectMaxMs: 200, ...options });
  clients.push(client);
  const closes: ClientEvents["disconnected"][] = [];
  const errors: string[] = [];
  client.on("disconnected", (d) => closes.push(d));
  client.on("error", (e) => errors.push(e.code));
  return { client, closes, errors };
}

test("repeated 1013s after `subscribed` but without a new event back off; only the first reconnects at once", async () => {
  const node = new FakeNode((socket, frame) => {
    if (frame.type === "subscribe") {
      send(socket, { type: "subscribed", channel_id: "c", head_seq: 0 });
      socket.close(1013, "slow");
    }
  });
  const { client, closes } = await setup(node);
  client.channel("c");
  await until(() => closes.length >= 6, 10_000, "six 1013 closes");
  client.close();
  assert.equal(closes[0]?.delayMs, 0);
  assert.ok(closes.slice(1, 6).some((c) => c.delayMs > 0), `later 1013s back off: ${closes.map((c) => c.delayMs)}`);
});

test("1012 (restart) reconnects after a jittered backoff, never at once, and resumes with since_seq", async () => {
  let connections = 0;
  const node = new FakeNode((socket, frame) => {
    if (frame.type !== "subscribe") return;
    send(socket, { type: "subscribed", channel_id: "c", head_seq: 1 });
    if (frame.since_seq === 0) send(socket, event(1));
    if (connections < 4) socket.close(1012, "restart");
  }, () => connections++);
  const { client, closes } = await setup(node);
  const channel = client.channel("c", { since: 0 });
  await until(() => connections >= 4 && node.received.filter((f) => f.type === "subscribe").length >= 4, 10_000, "four connections");
  assert.ok(closes.every((c) => c.code === 1012 && c.delayMs > 0 && c.retrying));
  assert.ok(node.received.filter((f) => f.type === "subscribe").slice(1).every((f) => f.since_seq === 1));
  assert.equal(channel.seq, 1);
  client.close();
});

test("a refreshed token the socket refuses again backs off; the same token again stops with an error", async () => {
  const node = new FakeNode(() => {}, (socket) => {
    send(socket, { type: "error", code: "unauthenticated", message: "expired" });
    socket.close(1008, "unauthenticated");
  });
  let n = 0;
  const { client, closes } = await setup(node, { refreshToken: async () => `t${++n}` });
  client.connect();
  await until(() => closes.length >= 6, 10_000, "six refusals");
  client.close();
  assert.equal(closes[0]?.delayMs, 0);
  assert.ok(closes.slice(1, 6).some((c) => c.delayMs > 0), `later refusals back off: ${closes.map((c) => c.delayMs)}`);

  const same = new FakeNode(() => {}, (socket) => {
    send(socket, { type: "error", code: "unauthenticated", message: "expired" });
    socket.close(1008, "unauthenticated");
  });
  const stuck = await setup(same, { refreshToken: async () => "t0" });
  stuck.client.connect();
  const stopped = await until(() => stuck.closes.find((c) => !c.retrying), 10_000, "the client to stop");
  assert.equal(stopped.code, 1008);
  assert.deepEqual(stuck.errors, ["unauthenticated"]);
  assert.equal(same.tokens.length, 1);
});

test("1008 after quota_exceeded stops and reports it instead of retrying", async () => {
  const node = new FakeNode(() => {}, (socket) => {
    send(socket, { type: "error", code: "quota_exceeded", message: "socket cap" });
    socket.close(1008, "quota_exceeded");
  });
  const { client, closes, errors } = await setup(node);
  client.connect();
  await until(() => closes.length >= 1, 10_000, "the close");
  assert.equal(closes[0]?.retrying, false);
  assert.ok(errors.includes("quota_exceeded"));
  assert.equal(client.connected, false);
});

test("a listener that throws neither loses events for the others nor stops the reconnect", async () => {
  await withReportedErrors(async (reported) => {
    let connections = 0;
    const node = new FakeNode((socket, frame) => {
      if (frame.type !== "subscribe") return;
      send(socket, { type: "subscribed", channel_id: "c", head_seq: 6 });
      const from = (frame.since_seq as number | undefined) ?? 0;
      for (let seq = from + 1; seq <= (connections === 1 ? 4 : 6); seq++) send(socket, event(seq));
      if (connections === 1) socket.close(1012, "restart");
    }, () => connections++);
    const { client } = await setup(node);
    client.on("disconnected", () => {
      throw new Error("app bug in disconnected");
    });
    const channel = client.channel("c", { since: 0 });
    const throwing: number[] = [];
    const other: number[] = [];
    channel.on("event", (f) => {
      throwing.push(f.seq);
      if (f.seq === 4) throw new Error("app bug in event");
    });
    channel.on("event", (f) => other.push(f.seq));
    await channel.caughtUp(6);
    assert.deepEqual(other, [1, 2, 3, 4, 5, 6]);
    assert.deepEqual(throwing, [1, 2, 3, 4, 5, 6]);
    assert.ok(reported.length >= 2);
    client.close();
  });
});

test("one gap asks once from seq, not once per frame behind it", async () => {
  const node = new FakeNode((socket, frame) => {
    if (frame.type !== "subscribe") return;
    send(socket, { type: "subscribed", channel_id: "c", head_seq: 100 });
    if (frame.since_seq === 0) for (let seq = 1; seq <= 100; seq++) seq !== 2 && send(socket, event(seq)); // seq 2 lost
    else for (let seq = (frame.since_seq as number) + 1; seq <= 100; seq++) send(socket, event(seq));
  });
  const { client } = await setup(node);
  const channel = client.channel("c", { since: 0 });
  const seen: number[] = [];
  channel.on("event", (f) => seen.push(f.seq));
  await channel.caughtUp(100);
  assert.deepEqual(seen, Array.from({ length: 100 }, (_, i) => i + 1));
  assert.equal(node.received.filter((f) => f.type === "subscribe").length, 2);
  client.close();
});

test("a malformed frame is reported, skipped, and asks for nothing again", async () => {
  const node = new FakeNode((socket, frame) => {
    if (frame.type !== "subscribe") return;
    send(socket, { type: "subscribed", channel_id: "c", head_seq: 2 });
    socket.send("{not json");
    send(socket, { ...event(1), seq: "1" });
    send(socket, event(1));
    send(socket, event(2));
  });
  const { client, errors } = await setup(node);
  const channel = client.channel("c", { since: 0 });
  await channel.caughtUp(2);
  assert.deepEqual(errors, ["invalid_frame", "invalid_frame"]);
  assert.equal(node.received.filter((f) => f.type === "subscribe").length, 1);
  client.close();
});

test("subscribes the server refuses for the pace are sent again; many channels are paced, none lost", async () => {
  // the server's frame bucket: burst 5, refilled at 50/s
  let tokens = 5;
  let at = Date.now();
  const answered = new Set<string>();
  const node = new FakeNode((socket, frame) => {
    tokens = Math.min(5, tokens + ((Date.now() - at) / 1000) * 50);
    at = Date.now();
    if (tokens < 1) {
      send(socket, { type: "error", code: "rate_limited", message: "too many frames", retry_after: 0.1 });
      return;
    }
    tokens--;
    if (frame.type === "subscribe") {
      answered.add(frame.channel_id as string);
      send(socket, { type: "subscribed", channel_id: frame.channel_id as string, head_seq: 0 });
    }
  });
  const { client } = await setup(node, { framesBurst: 100 }); // the client thinks it may send 100 at once
  const ids = Array.from({ length: 10 }, (_, i) => `c${i}`);
  const subscribed = new Set<string>();
  for (const id of ids) client.channel(id).on("subscribed", () => subscribed.add(id));
  await until(() => subscribed.size === 10, 10_000, `all ten subscribed (got ${[...subscribed]})`);
  assert.deepEqual([...answered].sort(), ids);
  client.close();
});

test("close() ends every channel: iterators finish, caughtUp rejects, a send after it rejects", async () => {
  const node = new FakeNode((socket, frame) => {
    if (frame.type === "subscribe") {
      send(socket, { type: "subscribed", channel_id: "c", head_seq: 1 });
      send(socket, event(1));
    }
  });
  const { client } = await setup(node);
  const channel = client.channel("c", { since: 0 });
  await channel.caughtUp(1);
  const iterated = (async () => {
    const seqs: number[] = [];
    for await (const f of channel) seqs.push(f.seq);
    return seqs;
  })();
  const later = channel.caughtUp(5);
  client.close();
  assert.deepEqual(await iterated, []);
  await assert.rejects(later, { code: "closed" });
  await assert.rejects(channel.caughtUp(9), { code: "closed" });
  const after: number[] = [];
  for await (const f of channel) after.push(f.seq);
  assert.deepEqual(after, []);
  await assert.rejects(client.outbox.send("c", { text: "after close" }), { code: "closed" });
});

test("asking an open channel for an earlier `since` throws instead of ignoring it", async () => {
  const node = new FakeNode((socket, frame) => {
    if (frame.type === "subscribe") {
      send(socket, { type: "subscribed", channel_id: "c", head_seq: 2 });
      send(socket, event(1));
      send(socket, event(2));
    }
  });
  const { client } = await setup(node);
  const channel = client.channel("c", { since: 0 });
  await channel.caughtUp(2);
  assert.equal(client.channel("c"), channel);
  assert.throws(() => client.channel("c", { since: 0 }), { code: "invalid_request" });
  client.close();
});
