// SDK resume after a restart: time from a fresh client to caught-up for a channel N events
// behind (default 10 000), beside a bare websocket client (the `ws` package: connect, subscribe
// with since_seq, JSON.parse every frame until the head) reading the same frames from the same
// server in the same run. Alternates the two, prints JSON.
// node dist-test/bench/resume.js [--events 10000] [--rounds 3] [--out file.json]
import { execSync } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { loadavg } from "node:os";
import WebSocket from "ws";
import { CaasClient } from "../src/index.js";
import { newTenant, NodeWebSocket, room, Server } from "../test/support.js";
import { machine, round1 } from "./machine.js";

const arg = (name: string, fallback: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? (process.argv[i + 1] as string) : fallback;
};
const EVENTS = Number(arg("events", "10000"));
const ROUNDS = Number(arg("rounds", "3"));
const OUT = arg("out", "");
const SINCE = 3; // bob holds the channel's three membership events, then falls behind

async function sdkCatchUp(url: string, token: string, head: number): Promise<number> {
  const t0 = performance.now();
  const client = new CaasClient({ baseUrl: url, token, WebSocket: NodeWebSocket });
  const channel = client.channel("bench", { since: SINCE });
  let count = 0;
  channel.on("event", () => count++);
  await channel.caughtUp(head);
  const ms = performance.now() - t0;
  client.close();
  if (count !== head - SINCE) throw new Error(`sdk: ${count} events, expected ${head - SINCE}`);
  return ms;
}

async function bareCatchUp(url: string, token: string, head: number): Promise<number> {
  const t0 = performance.now();
  const ws = new WebSocket(`${url.replace(/^http/, "ws")}/v1/ws?token=${token}`);
  let count = 0;
  await new Promise<void>((resolve, reject) => {
    ws.on("open", () => ws.send(JSON.stringify({ type: "subscribe", channel_id: "bench", since_seq: SINCE })));
    ws.on("message", (data) => {
      const frame = JSON.parse(String(data)) as { type: string; seq?: number };
      if (frame.type === "event") {
        count++;
        if (frame.seq === head) resolve();
      }
    });
    ws.on("error", reject);
  });
  const ms = performance.now() - t0;
  ws.close();
  if (count !== head - SINCE) throw new Error(`bare: ${count} events, expected ${head - SINCE}`);
  return ms;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

const server = await new Server().start();
try {
  const t = await newTenant(server.url, "alice", "bob");
  await room(t, "bench", "alice", "bob");
  const alice = await t.token("alice");
  const bob = await t.token("bob");
  // N messages, 16 at a time
  let next = 0;
  let head = 0;
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (next < EVENTS) {
        const i = next++;
        const r = await fetch(`${server.url}/v1/channels/bench/messages`, {
          method: "POST",
          headers: { authorization: `Bearer ${alice}`, "content-type": "application/json" },
          body: JSON.stringify({ text: `message ${i} ${"x".repeat(80)}`, client_msg_id: `b${i}` }),
        });
        if (r.status !== 201) throw new Error(await r.text());
        head = Math.max(head, ((await r.json()) as { seq: number }).seq);
      }
    }),
  );
  const loadBefore = loadavg();
  await server.restart();
  // wall time (server and client, what a user waits) and this process's CPU time (the client's
  // own cost, which the load of other processes on the machine disturbs far less)
  const runs: { round: number; client: string; ms: number; client_cpu_ms: number }[] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    const order = round % 2 ? ["sdk", "bare"] : ["bare", "sdk"];
    for (const client of order) {
      const cpu = process.cpuUsage();
      const ms = client === "sdk" ? await sdkCatchUp(server.url, bob, head) : await bareCatchUp(server.url, bob, head);
      const used = process.cpuUsage(cpu);
      runs.push({ round, client, ms: round1(ms), client_cpu_ms: round1((used.user + used.system) / 1000) });
    }
  }
  const of = (client: string, key: "ms" | "client_cpu_ms") => median(runs.filter((r) => r.client === client).map((r) => r[key]));
  const sdk = of("sdk", "ms");
  const bare = of("bare", "ms");
  const result = {
    what: "TypeScript SDK resume after a server restart: a fresh client to caught-up on a channel N events behind (sdk/typescript/bench/resume.ts)",
    date: new Date().toISOString(),
    commit: execSync("git rev-parse --short HEAD").toString().trim(),
    backend: "embedded",
    events_behind: head - SINCE,
    first_run_after_restart: runs[0],
    runs,
    median_ms: { sdk, bare_ws: bare },
    sdk_over_bare: Math.round((sdk / bare) * 100) / 100,
    median_client_cpu_ms: { sdk: of("sdk", "client_cpu_ms"), bare_ws: of("bare", "client_cpu_ms") },
    events_per_second: { sdk: Math.round(((head - SINCE) / sdk) * 1000), bare_ws: Math.round(((head - SINCE) / bare) * 1000) },
    machine: machine(loadBefore),
  };
  const text = JSON.stringify(result, null, 2);
  console.log(text);
  if (OUT) await writeFile(OUT, text + "\n");
} finally {
  await server.stop();
}
