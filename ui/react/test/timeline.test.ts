// Properties of the message list's reducer: idempotent (a page or an event applied twice changes
// nothing), and a page merged before or after live events gives the same list.
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import type { EventFrame, Schemas } from "@caas/client";
import { applyEvent, applyPage, emptyTimeline, visible } from "../src/timeline.js";

const users = fc.constantFrom("alice", "bob", "carol");
const ids = fc.constantFrom("m1", "m2", "m3", "m4");
const emojis = fc.constantFrom("👍", "❤️");

const frame = (seq: number, type: string, payload: Record<string, unknown>): EventFrame =>
  ({ type: "event", channel_id: "c", seq, position: seq, event: { type, payload, occurred_at: "2026-01-01T00:00:00.000Z" } }) as unknown as EventFrame;

const event = fc.oneof(
  fc.record({ kind: fc.constant("post"), id: ids, user: users, text: fc.string({ maxLength: 5 }) }),
  fc.record({ kind: fc.constant("edit"), id: ids, text: fc.string({ maxLength: 5 }) }),
  fc.record({ kind: fc.constant("delete"), id: ids }),
  fc.record({ kind: fc.constant("react"), id: ids, user: users, emoji: emojis, add: fc.boolean() }),
  fc.record({ kind: fc.constant("read"), user: users, seq: fc.integer({ min: 1, max: 30 }) }),
);
type Ev = { kind: string; id?: string; user?: string; text?: string; emoji?: string; add?: boolean; seq?: number };

function frames(events: Ev[]): EventFrame[] {
  return events.map((e, i) => {
    const seq = i + 1;
    switch (e.kind) {
      case "post":
        return frame(seq, "MessagePosted", { message_id: e.id, author_id: e.user, text: e.text, parent_id: null });
      case "edit":
        return frame(seq, "MessageEdited", { message_id: e.id, text: e.text });
      case "delete":
        return frame(seq, "MessageDeleted", { message_id: e.id });
      case "react":
        return frame(seq, e.add ? "ReactionAdded" : "ReactionRemoved", { message_id: e.id, user_id: e.user, emoji: e.emoji });
      default:
        return frame(seq, "ReadMarkerMoved", { user_id: e.user, seq: e.seq });
    }
  });
}

const page = (n: number): Schemas["Message"][] =>
  Array.from({ length: n }, (_, i) => ({
    message_id: `p${i}`, channel_id: "c", seq: 100 + i, author_id: "bob", text: `page ${i}`, parent_id: null, attachments: [],
    client_msg_id: null, created_at: "2026-01-01T00:00:00.000Z", edited_at: null, deleted: false, reactions: {}, reply_count: 0, seen_by: ["alice"],
  })) as unknown as Schemas["Message"][];

describe("the message list's reducer", () => {
  it("applies each event idempotently: a repeated frame changes nothing", () => {
    fc.assert(
      fc.property(fc.array(event, { maxLength: 30 }), (events) => {
        const all = frames(events);
        const once = all.reduce(applyEvent, emptyTimeline);
        const twice = all.flatMap((f) => [f, f]).reduce(applyEvent, emptyTimeline);
        expect(visible(twice)).toEqual(visible(once));
      }),
    );
  });

  it("keeps messages in seq order, each once, and a deleted one as a tombstone", () => {
    fc.assert(
      fc.property(fc.array(event, { maxLength: 30 }), (events) => {
        const shown = visible(frames(events).reduce(applyEvent, emptyTimeline));
        const seqs = shown.map((m) => m.seq ?? 0);
        expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
        expect(new Set(shown.map((m) => m.key)).size).toBe(shown.length);
        for (const m of shown) if (m.deleted) expect(m.text).toBe("");
      }),
    );
  });

  it("merges a history page the same before or after live events", () => {
    fc.assert(
      fc.property(fc.array(event, { maxLength: 20 }), fc.integer({ min: 0, max: 5 }), (events, n) => {
        const live = frames(events);
        const pageFirst = live.reduce(applyEvent, applyPage(emptyTimeline, page(n), null));
        const liveFirst = applyPage(live.reduce(applyEvent, emptyTimeline), page(n), null);
        expect(visible(liveFirst)).toEqual(visible(pageFirst));
      }),
    );
  });

  it("shows seen_by from read markers, never the author", () => {
    const s = frames([
      { kind: "post", id: "m1", user: "alice", text: "hi" },
      { kind: "read", user: "bob", seq: 1 },
      { kind: "read", user: "alice", seq: 2 },
    ]).reduce(applyEvent, emptyTimeline);
    expect(visible(s)[0]?.seen_by).toEqual(["bob"]);
  });
});
