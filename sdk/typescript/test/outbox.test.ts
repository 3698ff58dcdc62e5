// The outbox's failure handling with a scripted fetch (what the server answers is chosen per
// request, so refusals and storage failures are cheap to produce): nothing it meets leaves a
// send() pending, kills the process or drops a message a refused credential held back.
import assert from "node:assert/strict";
import { test } from "node:test";
import { HttpClient, MemoryStorage, Outbox, type OutboxEntry } from "../src/index.js";
import { until, withReportedErrors } from "./support.js";

/** A fetch that answers every post_message with `answer(bearer)`; counts the calls. */
function scripted(answer: (token: string, body: { text?: string }) => { status: number; body: unknown }) {
  const calls: string[] = [];
  const fetcher = (async (_url: string | URL | Request, init?: RequestInit) => {
    const token = String((init?.headers as Record<string, string>).authorization ?? "").replace("Bearer ", "");
    calls.push(token);
    const { status, body } = answer(token, JSON.parse(String(init?.body ?? "{}")) as { text?: string });
    return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
  }) as typeof fetch;
  return { fetcher, calls };
}
const ack = (n: number) => ({ status: 201, body: { message_id: `m${n}`, seq: n, position: n } });
const refused = { status: 401, body: { error: { code: "unauthenticated", message: "expired" } } };

test("a throwing acked listener and a storage that fails to delete leave no send() pending", async () => {
  await withReportedErrors(async (reported) => {
    let n = 0;
    const { fetcher } = scripted(() => ack(++n));
    class Flaky extends MemoryStorage {
      override async delete(id: string): Promise<void> {
        if (id === "a") throw new Error("transaction aborted");
        return super.delete(id);
      }
    }
    const outbox = new Outbox(new HttpClient({ baseUrl: "http://caas.test", token: "t", fetch: fetcher }), { storage: new Flaky() });
    outbox.on("acked", () => {
      throw new Error("app bug in acked");
    });
    const acks = await Promise.all([outbox.send("c", { text: "one" }, "a"), outbox.send("c", { text: "two" }, "b"), outbox.send("c", { text: "three" })]);
    assert.deepEqual(acks.map((a) => a.seq), [1, 2, 3]);
    assert.ok(reported.length >= 3);
    outbox.stop();
  });
});

test("a refused credential holds the message (no failure, no hot retry) until a new one arrives", async () => {
  let current = "old";
  let n = 0;
  const { fetcher, calls } = scripted((token) => (token === "good" ? ack(++n) : refused));
  const storage = new MemoryStorage();
  const http = new HttpClient({ baseUrl: "http://caas.test", token: () => current, fetch: fetcher });
  const outbox = new Outbox(http, { storage, retryBaseMs: 20, retryMaxMs: 100 });
  const retries: { code: string; delayMs: number }[] = [];
  outbox.on("retrying", (r) => retries.push({ code: r.error.code, delayMs: r.delayMs }));
  const sent = outbox.send("c", { text: "held" });
  await until(() => retries.length >= 3, 10_000, "three held retries");
  assert.ok(retries.every((r) => r.code === "unauthenticated"));
  assert.deepEqual((await storage.all()).map((e: OutboxEntry) => e.body.text), ["held"]);
  current = "good";
  outbox.wake();
  assert.equal((await sent).seq, 1);
  assert.equal(calls.at(-1), "good");
  assert.deepEqual(await storage.all(), []);
  outbox.stop();
});

test("a refresh callback that throws is an unauthenticated error, waited out with backoff, not a network retry", async () => {
  let refreshes = 0;
  const { fetcher } = scripted(() => refused);
  const http = new HttpClient({ baseUrl: "http://caas.test", token: "old", fetch: fetcher, refreshToken: async () => {
    refreshes++;
    throw new Error("identity provider down");
  } });
  const outbox = new Outbox(http, { retryBaseMs: 20, retryMaxMs: 100 });
  const retries: string[] = [];
  outbox.on("retrying", (r) => retries.push(r.error.code));
  const sent = outbox.send("c", { text: "x" });
  sent.catch(() => {});
  await until(() => retries.length >= 3, 10_000, "three retries");
  assert.deepEqual(retries.slice(0, 3), ["unauthenticated", "unauthenticated", "unauthenticated"]);
  assert.ok(refreshes >= 3 && refreshes <= retries.length + 1, `one refresh per retry: ${refreshes}`);
  outbox.stop();
  await assert.rejects(sent, { code: "closed" });
});

test("a message the server keeps refusing with 5xx gives up after maxAttempts, or is discarded when stuck", async () => {
  let n = 0;
  const unavailable = { status: 503, body: { error: { code: "unavailable", message: "try later" } } };
  const { fetcher } = scripted((_token, body) => (body.text === "poison" ? unavailable : ack(++n)));
  const http = new HttpClient({ baseUrl: "http://caas.test", token: "t", fetch: fetcher });
  const limited = new Outbox(http, { retryBaseMs: 1, retryMaxMs: 5, maxAttempts: 3 });
  await assert.rejects(limited.send("c", { text: "poison" }), { code: "gave_up" });
  assert.equal((await limited.send("c", { text: "fine" })).seq, 1);
  limited.stop();

  const storage = new MemoryStorage();
  const outbox = new Outbox(http, { storage, retryBaseMs: 1, retryMaxMs: 5 });
  const stuck = new Promise<OutboxEntry>((resolve) => outbox.on("stuck", ({ entry }) => resolve(entry)));
  const poison = outbox.send("c", { text: "poison" });
  const behind = outbox.send("c", { text: "behind it" });
  assert.equal(await outbox.discard((await stuck).id), true);
  await assert.rejects(poison, { code: "discarded" });
  assert.equal((await behind).seq, 2);
  assert.deepEqual(await storage.all(), []);
  outbox.stop();
});

test("concurrent calls refused with a retired token refresh once, and an app's token function is kept", async () => {
  let refreshes = 0;
  let source = "retired";
  const valid = new Set(["fresh1", "app-new"]);
  const { fetcher, calls } = scripted((token) => (valid.has(token) ? { status: 200, body: { channels: [] } } : refused));
  const http = new HttpClient({ baseUrl: "http://caas.test", token: () => source, fetch: fetcher, refreshToken: async () => {
    refreshes++;
    await new Promise((r) => setImmediate(r));
    return `fresh${refreshes}`;
  } });
  // 30 calls at once, answered one after another: the late 401s come after the refresh finished
  await Promise.all(Array.from({ length: 30 }, () => http.call("list_channels")));
  assert.equal(refreshes, 1);
  assert.equal(await http.currentToken(), "fresh1");
  source = "app-new"; // the app's own source moved on: it wins over the refreshed token
  assert.equal(await http.currentToken(), "app-new");
  await http.call("list_channels");
  assert.equal(calls.at(-1), "app-new");
});

test("restore() racing send() sends the message once", async () => {
  let n = 0;
  const { fetcher, calls } = scripted(() => ack(++n));
  const outbox = new Outbox(new HttpClient({ baseUrl: "http://caas.test", token: "t", fetch: fetcher }));
  let acked = 0;
  outbox.on("acked", () => acked++);
  const sent = outbox.send("c", { text: "once" });
  const [restored] = await Promise.all([outbox.restore(), outbox.restore()]);
  assert.deepEqual(restored, []);
  assert.equal((await sent).seq, 1);
  await until(() => acked === 1, 5_000, "the ack");
  assert.equal(calls.length, 1);
  outbox.stop();
});
