// A stand-in for the portal's server in component tests: answers fetch() by method and path, and records calls.
import { vi } from "vitest";

export interface Recorded {
  method: string;
  path: string;
  headers: Record<string, string>;
  body: unknown;
}

type Handler = (call: Recorded) => { status?: number; body?: unknown };

export function fakeServer(routes: Record<string, Handler>): Recorded[] {
  const calls: Recorded[] = [];
  vi.stubGlobal(
    "fetch",
    vi.fn(async (input: string, init: RequestInit = {}) => {
      const url = new URL(input, "http://console.test");
      const call: Recorded = {
        method: init.method ?? "GET",
        path: url.pathname + url.search,
        headers: (init.headers ?? {}) as Record<string, string>,
        body: init.body ? JSON.parse(String(init.body)) : undefined,
      };
      calls.push(call);
      const handler = routes[`${call.method} ${url.pathname}`];
      const answer = handler ? handler(call) : { status: 404, body: { error: { code: "not_found", message: "no route" } } };
      return new Response(JSON.stringify(answer.body ?? {}), { status: answer.status ?? 200 });
    }),
  );
  return calls;
}

export const SESSION = {
  tenant_id: "t1",
  tenant_name: "Acme",
  key_id: "k1",
  key_name: "default",
  expires_at: "2030-01-01T00:00:00.000Z",
  csrf_token: "c".repeat(64),
};

/** A WebSocket the test drives: `open()` hands the page its frames. */
export class FakeSocket {
  static last: FakeSocket | null = null;
  onmessage: ((m: { data: string }) => void) | null = null;
  onclose: ((c: { code: number }) => void) | null = null;
  closed = false;
  constructor(readonly url: string) {
    FakeSocket.last = this;
  }
  frame(data: unknown) {
    this.onmessage?.({ data: JSON.stringify(data) });
  }
  drop(code: number) {
    this.onclose?.({ code });
  }
  close() {
    this.closed = true;
  }
}
