// The component tests' server: a real `caas serve` at CAAS_URL (tests/ui/test_react_kit.py starts it),
// a fresh tenant per test, users with tokens, and clients as those users (Node 20: the ws package).
import { createClient, HttpClient, type CaasClient } from "@caas/client";
import WebSocket from "ws";
import type { ReactNode } from "react";
import { render } from "@testing-library/react";
import axe from "axe-core";
import { CaasProvider } from "../src/index.js";

export const URL_ = process.env.CAAS_URL ?? "";
const ADMIN = process.env.CAAS_ADMIN_TOKEN ?? "";
if (!URL_ || !ADMIN) throw new Error("CAAS_URL and CAAS_ADMIN_TOKEN: run through tests/ui/test_react_kit.py (or set them)");

export interface World {
  tenant: HttpClient;
  tokens: Record<string, string>;
  client: (user: string) => CaasClient;
  clients: CaasClient[];
}

/** A tenant with `users` (tokens minted) and `channels` (every user a member). */
export async function world(users: string[], channels: string[]): Promise<World> {
  const admin = new HttpClient({ baseUrl: URL_, token: ADMIN });
  const created = await admin.call("create_tenant", { body: { name: "kit" } });
  const tenant = new HttpClient({ baseUrl: URL_, token: created.api_key as string });
  const tokens: Record<string, string> = {};
  for (const u of users) {
    await tenant.call("put_user", { path: { user_id: u }, body: { name: u.toUpperCase() } });
    tokens[u] = (await tenant.call("create_token", { path: { user_id: u }, body: {} })).token;
  }
  for (const c of channels) await tenant.call("create_channel", { body: { channel_id: c, name: c, members: users } });
  const clients: CaasClient[] = [];
  const client = (user: string) => {
    const c = createClient({ baseUrl: URL_, token: tokens[user] as string, userId: user, WebSocket: WebSocket as never, reconnectMaxMs: 2000 });
    clients.push(c);
    return c;
  };
  return { tenant, tokens, client, clients };
}

/** Post as `user` through the API (another user's app). */
export function post(w: World, user: string, channel: string, text: string, extra: Record<string, unknown> = {}) {
  const http = new HttpClient({ baseUrl: URL_, token: w.tokens[user] as string });
  return http.call("post_message", { path: { cid: channel }, body: { text, ...extra } });
}

export function renderAs(client: CaasClient, user: string, ui: ReactNode) {
  return render(
    <CaasProvider client={client} userId={user} names={{ alice: "Alice", bob: "Bob", carol: "Carol" }}>
      <main>{ui}</main>
    </CaasProvider>,
  );
}

/** axe-core's violations in `node` (jsdom: no layout, so no color-contrast rule; the browser tests check it). */
export async function violations(node: Element): Promise<string[]> {
  const result = await axe.run(node, { rules: { "color-contrast": { enabled: false } } });
  return result.violations.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(" ")).join(", ")})`);
}
