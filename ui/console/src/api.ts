// The portal's calls to its server (docs/console.md): the session routes, and the /v1 routes a tenant API key
// may call, reached at /console/api/v1/… with the session cookie (HttpOnly: this code never sees it) and the
// session's anti-CSRF token in X-CAAS-CSRF on every unsafe method.

export const API_BASE = "/console/api";

export interface Session {
  tenant_id: string;
  tenant_name: string | null;
  key_id: string;
  key_name: string;
  expires_at: string;
  csrf_token: string;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

async function answer<T>(response: Response): Promise<T> {
  const text = await response.text();
  const data: unknown = text ? JSON.parse(text) : {};
  if (!response.ok) {
    const error = (data as { error?: { code?: string; message?: string; details?: Record<string, unknown> } }).error;
    throw new ApiError(response.status, error?.code ?? "error", error?.message ?? response.statusText, error?.details);
  }
  return data as T;
}

let csrf = "";

/** Remembers the session's anti-CSRF token (given by sign in and by GET /console/api/session). */
export function rememberSession(session: Session | null): void {
  csrf = session?.csrf_token ?? "";
}

export async function signIn(apiKey: string): Promise<Session> {
  const r = await fetch(`${API_BASE}/session`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ api_key: apiKey }),
    credentials: "same-origin",
  });
  return answer<Session>(r);
}

export async function currentSession(): Promise<Session | null> {
  const r = await fetch(`${API_BASE}/session`, { credentials: "same-origin" });
  if (r.status === 401) return null;
  return answer<Session>(r);
}

export async function signOut(): Promise<void> {
  const r = await fetch(`${API_BASE}/session`, {
    method: "DELETE",
    headers: { "x-caas-csrf": csrf },
    credentials: "same-origin",
  });
  if (r.status !== 401) await answer<unknown>(r);
}

/** A /v1 route through the session: `call("GET", "/users", undefined, {prefix: "al"})`. */
export async function call<T>(
  method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE",
  path: string,
  body?: unknown,
  query?: Record<string, string | number | undefined>,
): Promise<T> {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query ?? {})) {
    if (value !== undefined && value !== "") params.set(name, String(value));
  }
  const qs = params.toString();
  const headers: Record<string, string> = {};
  if (method !== "GET") headers["x-caas-csrf"] = csrf;
  if (body !== undefined) headers["content-type"] = "application/json";
  const r = await fetch(`${API_BASE}/v1${path}${qs ? `?${qs}` : ""}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  return answer<T>(r);
}

/** The live tail's websocket address (same origin; the token rides in the query: a websocket has no headers). */
export function tailUrl(location: Location = window.location): string {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${API_BASE}/tail?csrf=${encodeURIComponent(csrf)}`;
}

// --- the shapes the pages read (the OpenAPI document's schemas) ------------------------------------
export interface ApiKey {
  key_id: string;
  name: string;
  revoked: boolean;
}
export interface User {
  user_id: string;
  name: string | null;
  metadata: Record<string, unknown>;
  created_at: string | null;
  updated_at: string | null;
}
export interface Member {
  user_id: string;
  role: string | null;
  active: boolean;
  muted: boolean;
  muted_until: string | null;
  banned: boolean;
  last_read_seq: number;
}
export interface Message {
  message_id: string;
  seq: number;
  author_id: string;
  text: string;
  created_at: string;
  deleted: boolean;
}
export interface Channel {
  channel_id: string;
  name: string | null;
  kind: string | null;
  members: { user_id: string; role: string }[];
  head_seq: number;
  last_message: Message | null;
}
export interface TailEvent {
  event_id: string;
  tenant_id: string;
  stream: string;
  seq: number;
  position: number;
  type: string;
  occurred_at: string;
  actor: string | null;
  payload: Record<string, unknown>;
}
export interface UsageReport {
  from: string;
  to: string;
  granularity: "hour" | "day" | "month";
  meters: string[];
  buckets: { start: string; meters: Record<string, number> }[];
  totals: Record<string, number>;
}
export interface PreviewLine {
  meter: string;
  plan: string;
  used: number;
  included: number;
  billable: number;
  amount: number;
}
export interface BillingPreview {
  period: { start: string; end: string; label: string };
  plan: string;
  currency: string;
  base_fee: number;
  lines: PreviewLine[];
  total: number;
}
export interface Webhook {
  webhook_id: string;
  url: string;
  event_types: string[];
  description: string;
  enabled: boolean;
  disabled_reason?: string | null;
}
export interface Delivery {
  delivery_id: string;
  event_id: string;
  event_type: string;
  position: number;
  attempt: number;
  status_code: number | null;
  ok: boolean;
  latency_ms: number;
  error: string | null;
  at: string;
}
