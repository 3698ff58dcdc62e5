// The components in jsdom against a real `caas serve`: two users' clients, one rendered, the other
// acting through the API (or rendered too).
import { afterEach, describe, expect, it } from "vitest";
import { StrictMode } from "react";
import { act, fireEvent, render, screen, waitFor, within } from "@testing-library/react";
import { userEvent } from "@testing-library/user-event";
import { CaasProvider, ChannelList, Composer, MessageList, PresenceBadge, TypingIndicator } from "../src/index.js";
import { post, renderAs, violations, world, type World } from "./support.js";

let current: World | undefined;
afterEach(() => {
  for (const c of current?.clients ?? []) c.close();
  current = undefined;
});

async function setup(channels = ["general"]) {
  current = await world(["alice", "bob"], channels);
  return current;
}

describe("ChannelList", () => {
  it("shows unread badges and the last message, and moves the busiest channel first", async () => {
    const w = await setup(["general", "random"]);
    await post(w, "bob", "general", "first in general");
    renderAs(w.client("alice"), "alice", <ChannelList onSelect={() => {}} />);
    const nav = await screen.findByRole("navigation", { name: "Channels" });
    await waitFor(() => expect(within(nav).getAllByRole("button")[0]?.textContent).toMatch(/# general.*1 unread.*Bob: first in general/));
    // bob writes in random twice: it moves to the top with 2 unread, live
    await post(w, "bob", "random", "one");
    await post(w, "bob", "random", "two");
    await waitFor(() => expect(within(nav).getAllByRole("button")[0]?.textContent).toMatch(/# random.*2 unread.*Bob: two/), { timeout: 5000 });
    expect(await violations(nav)).toEqual([]);
  });
});

/** Alice's MessageList and Composer on an empty channel. */
async function chat() {
  const w = await setup();
  const user = userEvent.setup();
  const view = renderAs(w.client("alice"), "alice", (
    <>
      <MessageList channelId="general" />
      <Composer channelId="general" />
    </>
  ));
  await screen.findByText("No messages yet: say hello.");
  return { w, user, view };
}

describe("MessageList and Composer", () => {
  it("shows a send at once, then delivered; live messages, edits, tombstones and reactions", async () => {
    const { w, user, view: { container } } = await chat();
    await user.type(screen.getByRole("textbox", { name: "Message" }), "hello from alice{Enter}");
    await screen.findByText("hello from alice"); // at once, as a local echo
    await waitFor(() => expect(screen.getByText("hello from alice").closest("article")?.dataset.status).toBe("delivered"), { timeout: 5000 });
    expect(screen.getAllByText("hello from alice")).toHaveLength(1);

    const { message_id } = await post(w, "bob", "general", "hi alice");
    await screen.findByText("hi alice");
    const bobHttp = new (await import("@caas/client")).HttpClient({ baseUrl: process.env.CAAS_URL as string, token: w.tokens.bob as string });
    await bobHttp.call("add_reaction", { path: { cid: "general", mid: message_id }, body: { emoji: "🎉" } });
    await screen.findByRole("button", { name: "🎉 1, by Bob" });
    await bobHttp.call("edit_message", { path: { cid: "general", mid: message_id }, body: { text: "hi alice (fixed)" } });
    await screen.findByText("hi alice (fixed)");
    expect(screen.getByText("hi alice (fixed)").closest("article")?.textContent).toMatch(/\(edited\)/);
    await bobHttp.call("delete_message", { path: { cid: "general", mid: message_id } });
    await screen.findByText("This message was deleted.");
    expect(await violations(container)).toEqual([]);
  });

  it("offers Retry for a send the server refuses, and Retry sends it again", async () => {
    const { user } = await chat();
    const box = screen.getByRole("textbox", { name: "Message" });
    // over CAAS_MAX_TEXT_CHARS (5000): refused with 422, shown as failed
    fireEvent.change(box, { target: { value: "x".repeat(5001) } });
    await user.click(screen.getByRole("button", { name: "Send" }));
    const alert = await screen.findByRole("alert");
    expect(alert.textContent).toMatch(/Not sent/);
    // Retry sends it again (refused again: still one failed message, not two)
    await user.click(within(alert).getByRole("button", { name: "Retry" }));
    await waitFor(() => expect(screen.getByRole("alert")).not.toBe(alert));
    expect(screen.getAllByRole("alert")).toHaveLength(1);
    await user.click(within(screen.getByRole("alert")).getByRole("button", { name: "Discard" }));
    await waitFor(() => expect(screen.queryByRole("alert")).toBeNull());
  });

  it("loads older pages when scrolled to the top", async () => {
    const w = await setup();
    for (let i = 0; i < 45; i++) await post(w, "bob", "general", `message ${i}`);
    renderAs(w.client("alice"), "alice", <MessageList channelId="general" />);
    await screen.findByText("message 44", {}, { timeout: 5000 });
    expect(screen.queryByText("message 0")).toBeNull(); // the newest page is 30 messages
    const log = screen.getByRole("log");
    // jsdom lays nothing out: give the list a viewport scrolled away from the bottom
    Object.defineProperty(log, "clientHeight", { value: 500 });
    Object.defineProperty(log, "scrollHeight", { value: 5000 });
    await act(async () => {
      log.scrollTop = 0;
      fireEvent.scroll(log);
    });
    await waitFor(() => expect(log.querySelector('[data-key]')?.textContent).toMatch(/message 0/), { timeout: 5000 });
  });

  it("attaches a link by URL and refuses an address that is not http(s)", async () => {
    const { user } = await chat();
    await user.click(screen.getByRole("button", { name: "Attach link" }));
    const url = screen.getByLabelText("Attachment URL");
    await user.type(url, "ftp://nope{Enter}");
    expect(screen.getByText("Enter an http:// or https:// address")).toBeTruthy();
    await user.clear(url);
    await user.type(url, "https://example.com/cat.png{Enter}");
    await user.type(screen.getByRole("textbox", { name: "Message" }), "a cat{Enter}");
    const link = await screen.findByRole("link", { name: "cat.png" });
    expect(link.getAttribute("href")).toBe("https://example.com/cat.png");
    expect(screen.getByRole("img", { name: "cat.png" })).toBeTruthy();
  });
});

describe("TypingIndicator and PresenceBadge", () => {
  it("show the other user typing and online", async () => {
    const w = await setup();
    const bob = w.client("bob");
    renderAs(w.client("alice"), "alice", (
      <>
        <PresenceBadge userId="bob" showName />
        <TypingIndicator channelId="general" />
      </>
    ));
    const channel = bob.channel("general");
    await new Promise<void>((resolve) => channel.on("subscribed", () => resolve()));
    await waitFor(() => expect(document.querySelector('[data-user="bob"]')?.getAttribute("data-status")).toBe("online"), { timeout: 10_000 });
    await channel.startTyping();
    await screen.findByText("Bob is typing…", {}, { timeout: 5000 });
    expect(await violations(document.body)).toEqual([]);
  });
});

describe("CaasProvider", () => {
  it("owns its client and keeps its channels live under StrictMode's double mount", async () => {
    const w = await setup();
    const WebSocket = (await import("ws")).default;
    const options = { baseUrl: process.env.CAAS_URL as string, token: w.tokens.alice as string, WebSocket: WebSocket as never };
    const view = render(
      <StrictMode>
        <CaasProvider options={options} userId="alice">
          <main>
            <MessageList channelId="general" />
          </main>
        </CaasProvider>
      </StrictMode>,
    );
    await screen.findByText("No messages yet: say hello.");
    await post(w, "bob", "general", "live after a double mount");
    await screen.findByText("live after a double mount", {}, { timeout: 5000 });
    view.unmount();
  });
});
