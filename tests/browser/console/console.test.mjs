// The tenant portal (/console) in Chromium against a real `caas serve` (tests/browser/test_console.py starts
// it and gives a fresh tenant's API key in CAAS_API_KEY). One signed-in page walks every portal page in order:
// sign in, issue a key (shown once, not on reload), revoke it (the old key gets 401), rotate the signing key,
// the live tail while messages are posted, the usage chart with those counts, users, channels and moderation,
// webhooks, CORS origins, sign out (the cookie no longer works). axe-core on every page; a screenshot of each.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { axeViolations, launch, screenshot, serverUrl } from '../lib/browser.mjs';

const KEY = process.env.CAAS_API_KEY;
const POSTED = 7; // messages the tail and the usage chart must show
let harness;
let page;
let errors = [];

function api(path, { method = 'GET', key = KEY, body, headers = {} } = {}) {
  return fetch(`${serverUrl()}${path}`, {
    method,
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

async function ok(response, status) {
  const text = await response.text();
  assert.equal(response.status, status, text);
  return text ? JSON.parse(text) : {};
}

async function noViolations(what) {
  assert.deepEqual(await axeViolations(page), [], `axe-core on ${what}`);
}

/** Opens a portal page by its navigation link and waits for its heading. */
async function open(name) {
  await page.getByRole('navigation', { name: 'Console pages' }).getByRole('link', { name, exact: true }).click();
  await page.getByRole('heading', { level: 1, name, exact: true }).waitFor();
}

// An API key is caas_sk_<tenant>_<key id>_<secret>; the secret itself may hold '_'.
const keySecret = (key) => key.split('_').slice(4).join('_');

before(async () => {
  assert.ok(KEY, 'CAAS_API_KEY is set by tests/browser/test_console.py');
  harness = await launch();
  const context = await harness.newContext({ viewport: { width: 1280, height: 860 } });
  page = await context.newPage();
  page.on('pageerror', (e) => errors.push(e.message));
});

after(async () => {
  await harness?.close();
});

test('sign in with an API key: the session is an HttpOnly, SameSite=Strict cookie', async () => {
  await page.goto(`${serverUrl()}/console/`);
  await page.getByRole('heading', { name: 'CAAS console' }).waitFor();
  await noViolations('the sign-in page');
  await screenshot(page, 'console-sign-in');
  await page.getByLabel('API key').fill('caas_sk_not_a_key');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('alert').filter({ hasText: '401' }).waitFor();
  await page.getByLabel('API key').fill(KEY);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { level: 1, name: 'Overview' }).waitFor();
  const [cookie] = (await page.context().cookies()).filter((c) => c.name === 'caas_console');
  assert.ok(cookie, 'the session cookie is set');
  assert.equal(cookie.httpOnly, true);
  assert.equal(cookie.sameSite, 'Strict');
  assert.equal(cookie.path, '/console');
  assert.ok(!cookie.value.includes(keySecret(KEY)), 'the cookie is a session, not the key');
  assert.equal(await page.evaluate(() => document.cookie), '', 'page scripts cannot read the cookie');
  await page.getByText('Live tail: live').waitFor();
  await noViolations('the overview');
  await screenshot(page, 'console-overview');
});

test('issue a key: its secret is shown once, not on reload; revoke it: the old key gets 401', async () => {
  await open('API keys');
  await page.getByLabel('Name').fill('browser-test');
  await page.getByRole('button', { name: 'Issue key' }).click();
  const secretBox = page.locator('input[data-secret]');
  await secretBox.waitFor();
  const secret = await secretBox.inputValue();
  assert.match(secret, /^caas_sk_/);
  const keyId = secret.split('_')[3];
  await ok(await api('/v1/api-keys', { key: secret }), 200); // the new key works
  await page.locator(`tr[data-key-id="${keyId}"]`).waitFor();
  await noViolations('the API keys page with a new key shown');
  await screenshot(page, 'console-api-keys');
  await page.reload();
  await page.getByRole('heading', { level: 1, name: 'API keys' }).waitFor();
  await page.locator(`tr[data-key-id="${keyId}"]`).waitFor();
  assert.equal(await page.locator('input[data-secret]').count(), 0, 'no secret after a reload');
  assert.ok(!(await page.content()).includes(keySecret(secret)), 'the secret is nowhere on the page');
  await page.getByRole('button', { name: `Revoke ${keyId}` }).click();
  await page.getByRole('button', { name: `Confirm revoke ${keyId}` }).click();
  await page.locator(`tr[data-key-id="${keyId}"] td`, { hasText: /^revoked$/ }).waitFor();
  const refused = await api('/v1/api-keys', { key: secret });
  assert.equal(refused.status, 401, await refused.text());
});

test('rotate the signing key', async () => {
  const before = (await ok(await api('/v1/signing-keys'), 200)).kid;
  await page.locator('code[data-kid]', { hasText: before }).waitFor();
  await page.getByRole('button', { name: 'Rotate signing key' }).click();
  const next = `v${Number(before.slice(1)) + 1}`;
  await page.locator('code[data-kid]', { hasText: next }).waitFor();
  assert.equal((await ok(await api('/v1/signing-keys'), 200)).kid, next);
});

test('the live tail shows the events while messages are posted', async () => {
  await open('Live tail');
  await page.getByText(/^live: /).waitFor();
  for (const uid of ['alice', 'bob']) await ok(await api(`/v1/users/${uid}`, { method: 'PUT', body: { name: uid } }), 201);
  await ok(await api('/v1/channels', { method: 'POST', body: { channel_id: 'general', name: 'General', members: ['alice', 'bob'] } }), 201);
  for (let i = 1; i <= POSTED; i += 1) {
    const author = i % 2 ? 'alice' : 'bob';
    await ok(await api('/v1/channels/general/messages', { method: 'POST', body: { text: `tail message ${i}`, user_id: author } }), 201);
  }
  const rows = page.locator('tbody[data-tail] tr[data-event-type="MessagePosted"]');
  await page.locator('tbody[data-tail] tr', { hasText: `tail message ${POSTED}` }).waitFor();
  assert.equal(await rows.count(), POSTED);
  const newest = await rows.first().innerText();
  assert.match(newest, new RegExp(`tail message ${POSTED}`), 'newest first');
  await page.locator('tbody[data-tail] tr[data-event-type="ChannelCreated"]').waitFor();
  await noViolations('the live tail');
  await screenshot(page, 'console-live-tail');
});

test('the usage chart renders the counts just produced, and the invoice preview', async () => {
  await open('Usage and billing');
  const total = page.locator('td[data-total="messages"]');
  await total.waitFor();
  assert.equal(await total.innerText(), String(POSTED));
  // the chart: Recharts drew a bar for the hour the messages were posted in
  await page.locator('.recharts-bar-rectangle path').first().waitFor();
  const busy = page.getByRole('table', { name: 'Usage per bucket' }).locator('tbody tr');
  assert.equal(await busy.count(), 1);
  assert.match(await busy.first().innerText(), new RegExp(`\\b${POSTED}\\b`));
  await page.locator('[data-bill-total]').waitFor();
  await page.getByRole('table', { name: 'Invoice lines' }).locator('tbody tr').first().waitFor();
  await noViolations('usage and billing');
  await screenshot(page, 'console-usage', { fullPage: true });
});

test('users: search by id prefix, mint a test token', async () => {
  await open('Users');
  const bob = page.getByRole('button', { name: 'Mint test token for bob' });
  await bob.waitFor();
  await page.getByLabel('User id starts with').fill('al');
  await page.getByRole('button', { name: 'Search' }).click();
  await bob.waitFor({ state: 'detached' });
  await page.getByRole('button', { name: 'Mint test token for alice' }).click();
  const token = await page.getByRole('textbox', { name: 'Token' }).inputValue();
  assert.equal(token.split('.').length, 3, 'a JWT');
  const me = await fetch(`${serverUrl()}/v1/channels`, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(me.status, 200, 'the minted token works');
  await noViolations('users');
  await screenshot(page, 'console-users');
});

test('channels: browse, members, roles, mute, ban, delete a message', async () => {
  await open('Channels');
  await page.getByRole('button', { name: 'Open general' }).click();
  await page.getByRole('heading', { name: 'Members of general' }).waitFor();
  await page.getByLabel('Role of bob').selectOption('admin');
  await page.getByRole('button', { name: 'Mute alice' }).click();
  await page.getByRole('button', { name: 'Unmute alice' }).waitFor();
  await page.getByRole('button', { name: 'Ban bob' }).click();
  await page.getByRole('button', { name: 'Lift ban on bob' }).waitFor();
  await page.locator('.messages li', { hasText: 'tail message 3' }).getByRole('button', { name: /^Delete message/ }).click();
  await page.locator('.messages li em', { hasText: 'deleted' }).waitFor();
  assert.equal(await page.locator('.messages li', { hasText: 'tail message 3' }).count(), 0);
  const members = await ok(await api('/v1/channels/general/members'), 200);
  const byId = Object.fromEntries(members.members.map((m) => [m.user_id, m]));
  assert.equal(byId.alice.muted, true);
  assert.equal(byId.bob.banned, true);
  await noViolations('channels');
  await screenshot(page, 'console-channels', { fullPage: true });
});

test('webhooks: register an endpoint, see its delivery log, replay', async () => {
  await open('Webhooks');
  await page.getByLabel('URL').fill('http://127.0.0.1:9/console-test');
  await page.getByLabel(/^Event types/).fill('MessagePosted');
  await page.getByRole('button', { name: 'Register' }).click();
  const secret = page.getByLabel(/^Signing secret of/);
  await secret.waitFor();
  assert.match(await secret.inputValue(), /^whsec_/);
  const hooks = await ok(await api('/v1/webhooks'), 200);
  const id = hooks.webhooks[0].webhook_id;
  await page.getByRole('button', { name: `Deliveries of ${id}` }).click();
  await page.getByRole('heading', { name: `Delivery log of ${id}` }).waitFor();
  await page.getByRole('button', { name: 'Replay' }).click();
  await page.getByRole('status').filter({ hasText: 'Replay requested.' }).waitFor();
  await noViolations('webhooks');
  await screenshot(page, 'console-webhooks', { fullPage: true });
});

test('CORS origins: add and remove', async () => {
  await open('CORS origins');
  await page.getByLabel('Origin', { exact: true }).fill('https://app.example.com');
  await page.getByRole('button', { name: 'Add origin' }).click();
  await page.getByRole('button', { name: 'Remove https://app.example.com' }).waitFor();
  assert.deepEqual((await ok(await api('/v1/cors'), 200)).origins, ['https://app.example.com']);
  await noViolations('CORS origins');
  await screenshot(page, 'console-cors');
});

test('sign out: the cookie no longer works', async () => {
  await open('Overview');
  const [cookie] = (await page.context().cookies()).filter((c) => c.name === 'caas_console');
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByRole('heading', { name: 'CAAS console' }).waitFor();
  assert.equal((await page.context().cookies()).filter((c) => c.name === 'caas_console').length, 0);
  const replay = await fetch(`${serverUrl()}/console/api/v1/api-keys`, {
    headers: { cookie: `caas_console=${cookie.value}` },
  });
  assert.equal(replay.status, 401, await replay.text());
  await page.reload();
  await page.getByLabel('API key').waitFor();
  assert.deepEqual(errors, [], 'no script errors on any page');
});
