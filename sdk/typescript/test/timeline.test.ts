// Property tests of the channel timeline, the SDK's reducer (no server: the frames are generated).
// 1. Whatever the network does to the frames (drops, repeats, disconnects), a channel that asks
//    again from its `seq` whenever it sees a gap, as the client does, emits every seq once, in order,
//    and asks once per gap (the frames still in flight before the answer are ignored, not re-asked).
// 2. Whatever the order of a message's acknowledgement and its event, the timeline holds it once.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { Channel, type ChannelHost } from "../src/channel.js";
import type { EventFrame } from "../src/index.js";
import type { Ack } from "../src/outbox.js";

function frame(seq: number, payload: Record<string, unknown> = { message_id: `m${seq}`, author_id: "other", text: `t${seq}` }): EventFrame {
  return {
    type: "event",
    channel_id: "c",
    seq,
    position: seq,
    event: {
      event_id: `e${seq}`, tenant_id: "t", stream: "channel:c", seq, position: seq, type: "MessagePosted",
      schema_version: 1, occurred_at: "2026-01-01T00:00:00.000Z", actor: null, command_id: null,
      causation_id: null, correlation_id: null, payload,
    },
  } as EventFrame;
}

function host(send: ChannelHost["outbox"]["send"] = () => new Promise(() => {})): ChannelHost {
  return {
    http: undefined as never,
    outbox: { send } as ChannelHost["outbox"],
    userId: () => "me",
    sendFrame: () => true,
    resubscribe: () => {},
    release: () => {},
  };
}

// what the network does to the next frame: deliver it, lose it, deliver an earlier one again, or drop the socket
const fault = fc.constantFrom("deliver", "deliver", "deliver", "deliver", "lose", "repeat", "disconnect");

test("a channel that resubscribes from its seq on a gap or a drop emits every seq once, in order", () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 60 }), fc.array(fault, { maxLength: 300 }), fc.integer({ min: 0, max: 10 }), fc.integer({ min: 0, max: 20 }), (head, faults, since, inFlight) => {
      let subscribes = 0;
      const start = Math.min(since, head);
      const channel = new Channel("c", host(), { since: start });
      const seen: number[] = [];
      channel.on("event", (f) => seen.push(f.seq));
      let next = start + 1; // what the server sends next on the current subscription
      let i = 0;
      for (let steps = 0; (channel.seq ?? 0) < head && steps < 10_000; steps++) {
        const what = faults[i++] ?? "deliver";
        if (what === "disconnect") {
          next = (channel.seq ?? 0) + 1; // reconnect: subscribe with since_seq = seq
          continue;
        }
        if (next > head) {
          next = (channel.seq ?? 0) + 1; // lost the tail: the ping timeout reconnects
          continue;
        }
        if (what === "lose") {
          next++;
          continue;
        }
        const seq = what === "repeat" ? Math.max(1, next - 1) : next++;
        if (channel.onEvent(frame(seq)) === "gap") {
          // a gap: one subscribe from seq; the frames already in flight arrive before its answer
          subscribes++;
          for (let late = 0; late < inFlight && next <= head; late++) channel.onEvent(frame(next++));
          channel.onSubscribed(head);
          next = (channel.seq ?? 0) + 1;
        }
      }
      assert.deepEqual(seen, Array.from({ length: head - start }, (_, k) => start + k + 1));
      // one subscribe per gap, not one per frame behind it
      assert.ok(subscribes <= faults.filter((f) => f === "lose").length);
    }),
    { numRuns: 300 },
  );
});

test("a message sent with local echo is one timeline entry whatever the order of its ack and its event", async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(fc.boolean(), { minLength: 1, maxLength: 8 }), async (ackFirst) => {
      const acks = new Map<string, (a: Ack) => void>();
      const channel = new Channel("c", host((_cid, _body, id) => new Promise<Ack>((resolve) => acks.set(id as string, resolve))));
      channel.onSubscribed(0);
      const sends = ackFirst.map((_, k) => channel.send(`mine ${k}`));
      assert.equal(channel.messages.length, ackFirst.length);
      assert.ok(channel.messages.every((m) => m.status === "pending"));
      const ids = [...acks.keys()];
      for (const [k, first] of ackFirst.entries()) {
        const id = ids[k] as string;
        const seq = k + 1;
        const ack = { event_id: `e${seq}`, position: seq, seq, channel_id: "c", message_id: `m${seq}` } as Ack;
        const event = frame(seq, { message_id: `m${seq}`, author_id: "me", text: `mine ${k}`, client_msg_id: id });
        if (first) {
          acks.get(id)?.(ack);
          await sends[k];
          assert.equal(channel.messages.filter((m) => m.client_msg_id === id).length, 1);
          assert.equal(channel.messages.find((m) => m.client_msg_id === id)?.status, "sent");
          channel.onEvent(event);
        } else {
          channel.onEvent(event);
          assert.equal(channel.messages.filter((m) => m.client_msg_id === id).length, 1);
          acks.get(id)?.(ack);
          await sends[k];
        }
        await Promise.resolve();
      }
      const timeline = channel.messages;
      assert.deepEqual(timeline.map((m) => m.text), ackFirst.map((_, k) => `mine ${k}`));
      assert.ok(timeline.every((m) => m.status === "delivered"));
    }),
    { numRuns: 200 },
  );
});

test("a long timeline keeps a window of messages, and markRead() needs no spread of every seq", async () => {
  const marked: number[] = [];
  const h = host();
  (h as { http: unknown }).http = { call: async (_op: string, args: { body: { seq: number } }) => (marked.push(args.body.seq), { seq: args.body.seq }) };
  const channel = new Channel("c", h, { since: 0, maxMessages: 1000 });
  for (let seq = 1; seq <= 200_000; seq++) channel.onEvent(frame(seq));
  assert.equal(channel.messages.length, 1000);
  assert.equal(channel.messages[0]?.seq, 199_001);
  await channel.markRead();
  assert.deepEqual(marked, [200_000]);
});

test("an iterator whose consumer falls too far behind throws overflow with its last seq instead of growing", async () => {
  const channel = new Channel("c", host(), { since: 0, iteratorBuffer: 10 });
  const iterator = channel[Symbol.asyncIterator]();
  const first = iterator.next(); // the iterator is waiting
  channel.onEvent(frame(1));
  assert.equal((await first).value?.seq, 1);
  for (let seq = 2; seq <= 30; seq++) channel.onEvent(frame(seq)); // nobody takes these
  await assert.rejects(iterator.next(), (e: { code: string; details: { seq: number } }) => e.code === "overflow" && e.details.seq === 1);
});
