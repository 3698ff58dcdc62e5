// The demo chat (/demo) in Chromium, as two users in two browser contexts, against a real
// `caas serve --demo` (tests/browser/test_demo.py starts it and kills/restarts it on request).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { axeViolations, launch, screenshot, serverUrl } from '../lib/browser.mjs';
import { control } from '../lib/control.mjs';

const NAMES = { alice: 'Alice Ames', bob: 'Bob Brook', carol: 'Carol Chen' };
const run = Date.now().toString(36);
let harness;
let alice;
let bob;

/** A page signed in as `user` (its own browser context: its own storage and socket). */
async function signIn(user, options = {}) {
  const context = await harness.newContext({ viewport: { width: 1100, height: 900 }, ...options });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.errors = errors;
  page.logs = [];
  page.on('console', (m) => page.logs.push(`${m.type()}: ${m.text()}`));
  await page.goto(`${serverUrl()}/demo/?user=${user}`);
  await page.getByRole('status').filter({ hasText: 'Connected' }).waitFor();
  await page.locator('.caas-channels [data-channel="general"]').waitFor();
  return page;
}

/** A message of the open channel's list, by its text. */
function shown(page, text) {
  return page.locator('.caas-messages .caas-text', { hasText: text });
}

/** The texts of the messages the page shows in its open channel, in order. */
function texts(page) {
  return page.locator('.caas-messages .caas-message .caas-text').allInnerTexts();
}

async function send(page, text, { channel = 'general' } = {}) {
  const box = page.getByRole('textbox', { name: new RegExp(`^Message #`) });
  await box.fill(text);
  await box.press('Enter');
  return text;
}

async function openChannel(page, id) {
  await page.locator(`.caas-channels [data-channel="${id}"] button`).click();
  await page.locator(`.caas-messages[data-channel="${id}"]`).waitFor();
}

async function noViolations(page, what) {
  assert.deepEqual(await axeViolations(page), [], `axe-core on ${what}`);
}

before(async () => {
  harness = await launch();
});

after(async () => {
  await harness?.close();
});

test('the sign-in page is accessible and signs a demo user in', async () => {
  const context = await harness.newContext();
  const page = await context.newPage();
  await page.goto(`${serverUrl()}/demo/`);
  await page.getByRole('heading', { name: 'CAAS demo chat' }).waitFor();
  await noViolations(page, 'the sign-in page');
  await screenshot(page, 'demo-signin');
  // keyboard only: Tab to "Sign in as Carol Chen" and press Enter
  const carol = page.getByRole('button', { name: 'Sign in as Carol Chen' });
  await carol.focus();
  await page.keyboard.press('Enter');
  await page.getByText('Signed in as').waitFor();
  assert.equal(await page.locator('.me strong').innerText(), NAMES.carol);
  await context.close();
});

test('a message sent by one user appears in the other\'s browser within a second', async () => {
  alice = await signIn('alice');
  bob = await signIn('bob');
  // both subscribed and caught up: a first exchange
  const hello = await send(alice, `hello bob ${run}`);
  await shown(bob, hello).waitFor();
  await shown(alice, hello).waitFor();

  const text = `are you there? ${run}`;
  const box = alice.getByRole('textbox', { name: /^Message #/ });
  await box.fill(text);
  const seen = shown(bob, text).waitFor({ timeout: 1000 }); // the bound: within a second
  await box.press('Enter');
  await seen;
  // the sender sees it once, confirmed (no duplicate of the optimistic echo)
  await alice.locator('.caas-message[data-status="delivered"]', { hasText: text }).waitFor();
  assert.equal((await texts(alice)).filter((t) => t === text).length, 1);
});

test('presence and typing are shown', async () => {
  await alice.locator('.people [data-user="bob"][data-status="online"]').waitFor();
  await bob.locator('.people [data-user="alice"][data-status="online"]').waitFor();
  await bob.getByRole('textbox', { name: /^Message #/ }).fill('typing something');
  await alice.locator('.caas-typing', { hasText: 'Bob Brook is typing…' }).waitFor();
  await screenshot(alice, 'demo-typing');
  await bob.getByRole('textbox', { name: /^Message #/ }).fill('');
});

test('read receipts update: "Seen by" shows once the other user has read', async () => {
  const text = await send(alice, `did you read this? ${run}`);
  await shown(bob, text).waitFor(); // bob's open list moves his read marker
  const seen = alice.locator('.caas-seen');
  await seen.filter({ hasText: 'Seen by Bob Brook' }).waitFor();
  // it sits under alice's last message
  const last = alice.locator('.caas-message[data-mine="true"]').last();
  assert.match(await last.innerText(), /did you read this\?[\s\S]*Seen by Bob Brook/);
});

test('unread badges count and the channel list reorders live', async () => {
  // bob stays on #general while alice writes in #random
  await openChannel(alice, 'random');
  await send(alice, `over here ${run}`);
  await send(alice, `and again ${run}`);
  const badge = bob.locator('.caas-channels [data-channel="random"] .caas-badge');
  await badge.filter({ hasText: '2' }).waitFor();
  // the newest activity first
  await bob.locator('.caas-channels li').first().and(bob.locator('[data-channel="random"]')).waitFor();
  assert.match(await bob.locator('.caas-channels [data-channel="random"]').innerText(), /Alice Ames: and again/);
  await noViolations(bob, 'the chat page with unread badges');
  await screenshot(bob, 'demo-unread');
  // reading clears it
  await openChannel(bob, 'random');
  await shown(bob, `and again ${run}`).waitFor();
  await openChannel(bob, 'general');
  await bob.locator('.caas-channels [data-channel="random"] .caas-badge').waitFor({ state: 'detached' });
  await openChannel(alice, 'general');
});

test('edits, tombstones, reactions and threads show in the other browser', async () => {
  const text = await send(alice, `a typo ${run}`);
  const mine = alice.locator('.caas-message[data-status="delivered"]', { hasText: text });
  await mine.waitFor();
  await mine.getByRole('button', { name: 'Edit' }).click();
  const edit = alice.getByRole('textbox', { name: 'Edit message' });
  await edit.fill(`fixed ${run}`);
  await edit.press('Enter');
  const theirs = bob.locator('.caas-message', { hasText: `fixed ${run}` });
  await theirs.waitFor();
  assert.match(await theirs.innerText(), /\(edited\)/);

  // bob reacts; alice sees it
  await theirs.getByRole('button', { name: 'React with 👍' }).click();
  await alice.locator('.caas-message', { hasText: `fixed ${run}` }).getByRole('button', { name: /^👍 1, by Bob Brook/ }).waitFor();

  // a thread: bob replies, alice sees the count
  await theirs.getByRole('button', { name: 'Reply' }).click();
  const thread = bob.getByRole('complementary', { name: /Thread of Alice Ames's message/ });
  await thread.waitFor();
  const reply = thread.getByRole('textbox', { name: 'Reply in thread' });
  await reply.fill(`a reply ${run}`);
  await reply.press('Enter');
  await thread.locator('.caas-message[data-status="delivered"]', { hasText: `a reply ${run}` }).waitFor();
  await noViolations(bob, 'the chat page with a thread open');
  await screenshot(bob, 'demo-thread');
  await alice.locator('.caas-message', { hasText: `fixed ${run}` }).getByRole('button', { name: '1 reply' }).waitFor();
  await thread.getByRole('button', { name: 'Close thread' }).click();

  // alice deletes it: a tombstone on both sides
  const deleted = await send(alice, `to be deleted ${run}`);
  const gone = alice.locator('.caas-message[data-status="delivered"]', { hasText: deleted });
  await gone.getByRole('button', { name: 'Delete' }).click();
  await shown(bob, deleted).waitFor({ state: 'detached' });
  await bob.locator('.caas-tombstone').last().waitFor();
  await alice.locator('.caas-tombstone').last().waitFor();
});

test('after the server is killed and restarted, every message shows once, in order', async () => {
  const before = [await send(alice, `before the crash 1 ${run}`), await send(bob, `before the crash 2 ${run}`)];
  await shown(bob, before[0]).waitFor();
  await shown(alice, before[1]).waitFor();

  await control('kill');
  await alice.getByRole('status').filter({ hasText: 'Reconnecting…' }).waitFor();
  await bob.getByRole('status').filter({ hasText: 'Reconnecting…' }).waitFor();
  // sent while the server is down: kept in alice's outbox, shown as Sending…
  const offline = [await send(alice, `while down 1 ${run}`), await send(alice, `while down 2 ${run}`)];
  await alice.locator('.caas-message[data-status="pending"]', { hasText: offline[1] }).waitFor();
  await screenshot(alice, 'demo-offline');

  await control('start');
  // posted by carol as soon as the server is back, possibly before the browsers reconnect
  const session = await (await fetch(`${serverUrl()}/demo/session`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user_id: 'carol' }),
  })).json();
  const fromCarol = [];
  for (const n of [1, 2]) {
    const text = `after the restart ${n} ${run}`;
    const r = await fetch(`${serverUrl()}/v1/channels/general/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${session.token}` },
      body: JSON.stringify({ text }),
    });
    assert.equal(r.status, 201, await r.text());
    fromCarol.push(text);
  }
  for (const page of [alice, bob]) {
    await page.getByRole('status').filter({ hasText: 'Connected' }).waitFor({ timeout: 30_000 });
    for (const text of [...offline, ...fromCarol]) {
      await page.locator('.caas-message[data-status="delivered"]', { hasText: text }).waitFor({ timeout: 30_000 }).catch(async (e) => {
        throw new Error(`${e.message}\nshown: ${JSON.stringify(await texts(page))}\nconsole: ${JSON.stringify(page.logs)}`);
      });
    }
  }
  // every message once, in order (alice's offline sends before carol's only if they reached the
  // server first: the order both browsers show is the server's, the same in both)
  const expected = [...before, ...offline, ...fromCarol];
  const orders = {};
  for (const [name, page] of [['alice', alice], ['bob', bob]]) {
    const all = (await texts(page)).filter((t) => t.endsWith(run) && expected.includes(t));
    for (const t of expected) assert.equal(all.filter((x) => x === t).length, 1, `${name} shows "${t}" once: ${JSON.stringify(all)}`);
    assert.deepEqual(all.slice(0, 2), before, `${name}: the messages before the crash first`);
    assert.deepEqual(all.filter((t) => offline.includes(t)), offline, `${name}: alice's offline sends in the order she sent them`);
    assert.deepEqual(all.filter((t) => fromCarol.includes(t)), fromCarol, `${name}: carol's messages in order`);
    orders[name] = all;
  }
  assert.deepEqual(orders.alice, orders.bob, 'both browsers show the same order');
  assert.deepEqual(alice.errors, []);
  assert.deepEqual(bob.errors, []);
  await screenshot(bob, 'demo-after-restart');
});

test('the chat page has no accessibility violations in the light and the dark theme', async () => {
  await noViolations(alice, 'the chat page (light)');
  await screenshot(alice, 'demo');
  await alice.getByRole('button', { name: 'Dark theme' }).click();
  await alice.locator('.caas[data-theme="dark"]').first().waitFor();
  await noViolations(alice, 'the chat page (dark)');
  await screenshot(alice, 'demo-dark');
});

/** Press Tab (or Shift+Tab) until the focused element matches `selector`; at most 80 presses. */
async function tabTo(page, selector, { back = false } = {}) {
  for (let i = 0; i < 80; i++) {
    await page.keyboard.press(back ? 'Shift+Tab' : 'Tab');
    if (await page.evaluate((s) => document.activeElement?.matches(s) ?? false, selector)) return;
  }
  throw new Error(`Tab never reached ${selector}`);
}

test('the chat works from the keyboard alone', async () => {
  await alice.evaluate(() => (document.activeElement instanceof HTMLElement ? document.activeElement.blur() : undefined));
  await tabTo(alice, '.caas-composer textarea');
  const text = `typed with the keyboard ${run}`;
  await alice.keyboard.type(text);
  await alice.keyboard.press('Enter');
  await shown(bob, text).waitFor();
  await alice.locator('.caas-message[data-status="delivered"]', { hasText: text }).waitFor();
  // back from the composer to the new message's 👍, and press Enter
  await tabTo(alice, '.caas-message[data-mine="true"] .caas-react[aria-label="React with 👍"]', { back: true });
  assert.match(await alice.evaluate(() => document.activeElement.closest('.caas-message').innerText), new RegExp(text));
  await alice.keyboard.press('Enter');
  await bob.locator('.caas-message', { hasText: text }).getByRole('button', { name: /^👍 1, by Alice Ames/ }).waitFor();
  // the log itself takes focus, so it scrolls with the arrow keys
  await tabTo(alice, '.caas-messages [role="log"]', { back: true });
});
