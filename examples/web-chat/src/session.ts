// The demo's credentials: `POST /demo/session` (only when the server runs with --demo) answers a
// token of one demo user. The browser never holds an API key or the admin token (api/ui.py).
export interface DemoSession {
  user_id: string;
  name: string;
  token: string;
  expires_in: number;
  users: { user_id: string; name: string }[];
  channels: { channel_id: string; name: string }[];
}

export const DEMO_USERS = [
  { user_id: "alice", name: "Alice Ames" },
  { user_id: "bob", name: "Bob Brook" },
  { user_id: "carol", name: "Carol Chen" },
];

export async function startSession(userId: string): Promise<DemoSession> {
  const r = await fetch(`${import.meta.env.BASE_URL}session`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ user_id: userId }),
  });
  const body = (await r.json()) as DemoSession & { error?: { message: string } };
  if (!r.ok) throw new Error(body.error?.message ?? `the demo session failed (${r.status})`);
  return body;
}
