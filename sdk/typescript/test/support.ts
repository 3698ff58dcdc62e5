// A real `caas serve` for the tests: spawned from the repository's Python CLI on a loopback port,
// as tests/support.py does (embedded), or as an API node of the Kafka cluster whose settings the
// pytest wrapper passes in CAAS_SDK_SERVER_ENV (tests/sdk/test_typescript_sdk.py).
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, openSync } from "node:fs";
import { createServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";
import { CaasClient, HttpClient, type ClientOptions, type SocketConstructor } from "../src/index.js";

export const ROOT = resolve(fileURLToPath(new URL(".", import.meta.url)), "../../../..");
export const ADMIN = "test-admin-token";
export const BACKEND = process.env.CAAS_SDK_BACKEND ?? "embedded";
const CLUSTER_ENV: Record<string, string> = JSON.parse(process.env.CAAS_SDK_SERVER_ENV ?? "{}");
const PYTHON = process.env.CAAS_PYTHON ?? (existsSync(join(ROOT, ".venv/bin/python")) ? join(ROOT, ".venv/bin/python") : "python3");
const UNLIMITED = Object.fromEntries(
  [
    "RATE_USER_WRITES_PER_SECOND", "RATE_USER_WRITES_BURST", "RATE_TENANT_WRITES_PER_SECOND",
    "RATE_TENANT_WRITES_BURST", "RATE_TENANT_READS_PER_SECOND", "RATE_TENANT_READS_BURST",
    "WS_FRAMES_PER_SECOND", "WS_FRAMES_BURST",
  ].map((name) => [`CAAS_${name}`, "1000000"]),
);
/** The ws package stands in for the WebSocket Node 20 lacks (tests and Node apps only). */
export const NodeWebSocket = WebSocket as unknown as SocketConstructor;

export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as AddressInfo;
  await new Promise((r) => server.close(r));
  return port;
}

/** Poll `check` until it returns a value other than undefined/false, or fail after `ms`. */
export async function until<T>(check: () => T | undefined | false | Promise<T | undefined | false>, ms = 30_000, what = "condition"): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** `caas serve` in a subprocess: start, stop (SIGTERM), kill -9, restart on the same data dir and port. */
export class Server {
  readonly dataDir: string;
  port = 0;
  private process: ChildProcess | undefined;

  constructor(private readonly env: Record<string, string> = {}) {
    this.dataDir = mkdtempSync(join(tmpdir(), "caas-sdk-"));
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(): Promise<this> {
    if (!this.port) this.port = await freePort();
    const log = openSync(join(this.dataDir, `server-${this.port}.log`), "a");
    const child = spawn(PYTHON, ["-m", "api.cli", "serve"], {
      cwd: ROOT,
      env: {
        ...process.env,
        CAAS_DATA_DIR: this.dataDir,
        CAAS_ADMIN_TOKEN: ADMIN,
        CAAS_PORT: String(this.port),
        CAAS_LOG_LEVEL: "warning",
        ...UNLIMITED,
        ...CLUSTER_ENV,
        ...this.env,
      },
      stdio: ["ignore", log, log],
    });
    this.process = child;
    let exited = false;
    child.once("exit", () => (exited = true));
    await until(async () => {
      if (exited) throw new Error(`caas serve exited (log: ${this.dataDir})`);
      try {
        return (await fetch(`${this.url}/healthz`)).ok;
      } catch {
        return false;
      }
    }, 60_000, "caas serve to be healthy");
    // on Kafka, until a decider answers (as tests/cluster.py waits)
    await until(async () => {
      try {
        const r = await fetch(`${this.url}/v1/tenants`, { method: "POST", headers: { authorization: `Bearer ${ADMIN}` }, body: '{"name":"probe"}' });
        return r.status === 201;
      } catch {
        return false;
      }
    }, 60_000, "a decider to answer");
    return this;
  }

  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    const child = this.process;
    this.process = undefined;
    if (child === undefined || child.exitCode !== null) return;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill(signal);
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(timer);
  }

  async restart(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    await this.stop(signal);
    await this.start();
  }
}

export interface Tenant {
  url: string;
  admin: HttpClient;
  key: HttpClient;
  apiKey: string;
  token(userId: string, ttl?: number): Promise<string>;
}

/** A fresh tenant with these users (tests isolate themselves by tenant). */
export async function newTenant(url: string, ...users: string[]): Promise<Tenant> {
  const admin = new HttpClient({ baseUrl: url, token: ADMIN });
  const created = await admin.call("create_tenant", { body: { name: "acme" } });
  const apiKey = created.api_key as string;
  const key = new HttpClient({ baseUrl: url, token: apiKey });
  for (const user of users) await key.call("put_user", { path: { user_id: user }, body: { name: user } });
  const token = async (userId: string, ttl?: number) =>
    (await key.call("create_token", { path: { user_id: userId }, body: ttl ? { ttl_seconds: ttl } : {} })).token;
  return { url, admin, key, apiKey, token };
}

/** A client of `user` with the ws package as its WebSocket. */
export async function userClient(tenant: Tenant, user: string, options: Partial<ClientOptions> = {}): Promise<CaasClient> {
  return new CaasClient({
    baseUrl: tenant.url,
    token: await tenant.token(user),
    refreshToken: () => tenant.token(user),
    WebSocket: NodeWebSocket,
    reconnectBaseMs: 100,
    reconnectMaxMs: 2000,
    ...options,
  });
}

/** A group channel of these members, created by the tenant. */
export async function room(tenant: Tenant, cid: string, ...members: string[]): Promise<void> {
  await tenant.key.call("create_channel", { body: { channel_id: cid, kind: "group", members } });
}

export function assertGapless(seqs: number[], first: number, last: number): void {
  const expected = Array.from({ length: last - first + 1 }, (_, i) => first + i);
  if (JSON.stringify(seqs) !== JSON.stringify(expected)) {
    throw new Error(`expected seqs ${first}..${last} once each, got ${seqs.length}: ${seqs.slice(0, 20).join(",")}…`);
  }
}

/** Run `fn` with `console.error` (where the SDK reports a throwing listener on Node) collected. */
export async function withReportedErrors<T>(fn: (reported: unknown[]) => Promise<T>): Promise<T> {
  const reported: unknown[] = [];
  const original = console.error;
  console.error = (...args: unknown[]) => void reported.push(args);
  try {
    return await fn(reported);
  } finally {
    console.error = original;
  }
}
