import { act, render, screen, waitFor } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { afterEach, describe, expect, it, vi } from "vitest";
import { rememberSession } from "../api";
import { TailProvider } from "../tail";
import { FakeSocket, SESSION, fakeServer } from "../test/fakes";
import { Keys } from "./Keys";
import { LiveTail } from "./LiveTail";
import { SignIn } from "./SignIn";
import { Usage } from "./Usage";
import { Users } from "./Users";

afterEach(() => {
  vi.unstubAllGlobals();
  rememberSession(null);
});

describe("SignIn", () => {
  it("exchanges the key for a session and forgets the key", async () => {
    const calls = fakeServer({ "POST /console/api/session": () => ({ status: 201, body: SESSION }) });
    const signedIn = vi.fn();
    render(<SignIn onSignedIn={signedIn} />);
    const box = screen.getByLabelText("API key");
    await userEvent.type(box, "caas_sk_t1_k1_secret");
    await userEvent.click(screen.getByRole("button", { name: "Sign in" }));
    await waitFor(() => expect(signedIn).toHaveBeenCalledWith(SESSION));
    expect(calls[0]?.body).toEqual({ api_key: "caas_sk_t1_k1_secret" });
    expect((box as HTMLInputElement).value).toBe("");
    expect((box as HTMLInputElement).type).toBe("password");
  });

  it("says why a key is refused", async () => {
    fakeServer({
      "POST /console/api/session": () => ({ status: 401, body: { error: { code: "unauthenticated", message: "unknown API key" } } }),
    });
    render(<SignIn onSignedIn={() => {}} />);
    await userEvent.type(screen.getByLabelText("API key"), "caas_sk_bad");
    await userEvent.click(screen.getByRole("button", { name: "Sign in" }));
    expect((await screen.findByRole("alert")).textContent).toContain("unknown API key (401 unauthenticated)");
  });
});

describe("Keys", () => {
  const keys = [
    { key_id: "k1", name: "default", revoked: false },
    { key_id: "k2", name: "ci", revoked: false },
  ];

  it("shows an issued key's secret once, and sends the CSRF token with every write", async () => {
    rememberSession(SESSION);
    const calls = fakeServer({
      "GET /console/api/v1/api-keys": () => ({ body: { api_keys: keys } }),
      "GET /console/api/v1/signing-keys": () => ({ body: { kid: "v1", verifying: ["v1"] } }),
      "POST /console/api/v1/api-keys": () => ({ status: 201, body: { key_id: "k3", api_key: "caas_sk_t1_k3_s3cret" } }),
    });
    render(<Keys session={SESSION} />);
    expect(await screen.findByText("active (this session)")).toBeTruthy();
    await userEvent.type(screen.getByLabelText("Name"), "backend");
    await userEvent.click(screen.getByRole("button", { name: "Issue key" }));
    const secret = (await screen.findByLabelText("New API key k3")) as HTMLInputElement;
    expect(secret.value).toBe("caas_sk_t1_k3_s3cret");
    const write = calls.find((c) => c.method === "POST")!;
    expect(write.body).toEqual({ name: "backend" });
    expect(write.headers["x-caas-csrf"]).toBe(SESSION.csrf_token);
    await userEvent.click(screen.getByRole("button", { name: "Done" }));
    expect(screen.queryByDisplayValue("caas_sk_t1_k3_s3cret")).toBeNull();
  });

  it("revokes only after a confirmation, and rotates the signing key", async () => {
    rememberSession(SESSION);
    let kid = "v1";
    const calls = fakeServer({
      "GET /console/api/v1/api-keys": () => ({ body: { api_keys: keys } }),
      "GET /console/api/v1/signing-keys": () => ({ body: { kid, verifying: [kid] } }),
      "DELETE /console/api/v1/api-keys/k2": () => ({ body: {} }),
      "POST /console/api/v1/signing-keys": () => {
        kid = "v2";
        return { status: 201, body: { kid } };
      },
    });
    render(<Keys session={SESSION} />);
    await userEvent.click(await screen.findByRole("button", { name: "Revoke k2" }));
    expect(calls.some((c) => c.method === "DELETE")).toBe(false);
    await userEvent.click(screen.getByRole("button", { name: "Confirm revoke k2" }));
    await waitFor(() => expect(calls.some((c) => c.method === "DELETE" && c.path.endsWith("/k2"))).toBe(true));
    await userEvent.click(screen.getByRole("button", { name: "Rotate signing key" }));
    await waitFor(() => expect(document.querySelector("code[data-kid]")?.textContent).toBe("v2"));
  });
});

describe("Users", () => {
  it("searches by id prefix and mints a test token", async () => {
    const calls = fakeServer({
      "GET /console/api/v1/users": (c) => ({
        body: {
          users: [{ user_id: c.path.includes("prefix=al") ? "alice" : "bob", name: "X", metadata: {}, created_at: null, updated_at: null }],
          next_after: null,
        },
      }),
      "POST /console/api/v1/users/alice/tokens": () => ({ status: 201, body: { token: "a.b.c", expires_at: "2030-01-01T00:00:00Z" } }),
    });
    render(<Users session={SESSION} />);
    await screen.findByRole("button", { name: "Mint test token for bob" });
    await userEvent.type(screen.getByLabelText("User id starts with"), "al");
    await userEvent.click(screen.getByRole("button", { name: "Search" }));
    await userEvent.click(await screen.findByRole("button", { name: "Mint test token for alice" }));
    expect(((await screen.findByRole("textbox", { name: "Token" })) as HTMLTextAreaElement).value).toBe("a.b.c");
    expect(calls.some((c) => c.path.startsWith("/console/api/v1/users?prefix=al"))).toBe(true);
  });
});

describe("LiveTail", () => {
  const event = (position: number, type: string, text?: string) => ({
    event_id: `e${position}`,
    tenant_id: "t1",
    stream: "channel:general",
    seq: position,
    position,
    type,
    occurred_at: "2030-01-01T00:00:00.000Z",
    actor: "tenant:k1",
    payload: text ? { text } : {},
  });

  it("lists events newest first as they arrive, and signs out on a refusal", async () => {
    rememberSession(SESSION);
    const refused = vi.fn();
    render(
      <TailProvider onRefused={refused} socket={(url) => new FakeSocket(url) as unknown as WebSocket}>
        <LiveTail session={SESSION} />
      </TailProvider>,
    );
    const socket = FakeSocket.last!;
    expect(socket.url).toContain(`/console/api/tail?csrf=${SESSION.csrf_token}`);
    act(() => socket.frame({ type: "ready" }));
    await screen.findByText("live: 0 events since this page opened");
    act(() => {
      socket.frame({ type: "event", event: event(1, "MessagePosted", "first") });
      socket.frame({ type: "event", event: event(2, "MessagePosted", "second") });
    });
    const rows = await screen.findAllByRole("row");
    expect(rows.slice(1).map((r) => r.textContent)).toEqual([
      expect.stringContaining("second"),
      expect.stringContaining("first"),
    ]);
    await userEvent.type(screen.getByLabelText("Event type contains"), "Created");
    expect(screen.queryByText("first")).toBeNull();
    act(() => socket.drop(1008));
    expect(refused).toHaveBeenCalled();
  });
});

describe("Usage", () => {
  it("charts the usage report and lists its totals and the invoice lines", async () => {
    fakeServer({
      "GET /console/api/v1/usage": () => ({
        body: {
          from: "2030-01-01T00:00:00Z",
          to: "2030-01-02T00:00:00Z",
          granularity: "hour",
          meters: ["messages", "api_writes"],
          buckets: [
            { start: "2030-01-01T09:00:00Z", meters: { messages: 0, api_writes: 0 } },
            { start: "2030-01-01T10:00:00Z", meters: { messages: 7, api_writes: 12 } },
          ],
          totals: { messages: 7, api_writes: 12 },
        },
      }),
      "GET /console/api/v1/billing/preview": () => ({
        body: {
          period: { start: "", end: "", label: "2030-01" },
          plan: "pro",
          currency: "usd",
          base_fee: 2900,
          lines: [{ meter: "messages", plan: "pro", used: 7, included: 100, billable: 0, amount: 0 }],
          total: 2900,
        },
      }),
    });
    render(<Usage session={SESSION} />);
    await waitFor(() => expect(document.querySelector('td[data-total="messages"]')?.textContent).toBe("7"));
    const busy = screen.getByRole("table", { name: "Usage per bucket" });
    expect(busy.querySelectorAll("tbody tr")).toHaveLength(1); // only the hour with usage
    expect(screen.getByRole("figure", { name: /Usage by hour/ })).toBeTruthy();
    expect((await screen.findByText("$29.00", { selector: "[data-bill-total]" })).textContent).toBe("$29.00");
  });
});
