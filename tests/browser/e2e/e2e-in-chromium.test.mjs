// The TypeScript SDK's E2E entry (@caas/client/e2e, bundled for the browser with libsodium by the
// pytest driver: CAAS_E2E_BUNDLE) in Chromium: WebAssembly libsodium loads, Web Crypto gives the
// randomness, and a device in the page talks both ways with a device in Node.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { launch } from '../lib/browser.mjs';

test('E2E in Chromium: a page device and a Node device talk both ways', async () => {
  const { E2eDevice } = await import(process.env.CAAS_SDK_E2E);
  const { newContext, close } = await launch();
  try {
    const page = await (await newContext()).newPage();
    await page.setContent('<!doctype html><html lang="en"><head><title>e2e</title></head><body></body></html>');
    await page.addScriptTag({ path: process.env.CAAS_E2E_BUNDLE });
    // two devices inside the page: a group message sealed and opened there
    const inPage = await page.evaluate(async () => {
      const { E2eDevice } = window.caasE2e;
      const alice = await E2eDevice.create('alice', 'browser');
      const bob = await E2eDevice.create('bob', 'b1');
      const reg = bob.registration(1);
      alice.startSession({ ...bob.address, identity_key: reg.identity_key, signed_prekey: reg.signed_prekey, one_time_prekey: reg.one_time_prekeys[0] });
      const envelope = alice.seal('room', [bob.address], { text: 'sealed in the browser', attachments: [] });
      window.alice = alice;
      return { opened: bob.open('room', 'alice', envelope), userAgent: navigator.userAgent };
    });
    assert.deepEqual(inPage.opened, { text: 'sealed in the browser', attachments: [] });
    assert.match(inPage.userAgent, /Chrome/);

    // the page's device starts a session to a Node device and sends; Node replies; the page reads it
    const carol = await E2eDevice.create('carol', 'node');
    const reg = carol.registration(1);
    const bundle = { ...carol.address, identity_key: reg.identity_key, signed_prekey: reg.signed_prekey, one_time_prekey: reg.one_time_prekeys[0] };
    const fromPage = await page.evaluate((b) => {
      window.alice.startSession(b);
      return window.alice.seal('dm', [{ user_id: 'carol', device_id: 'node' }], { text: 'from the browser', attachments: [] }, 'pairwise');
    }, bundle);
    assert.equal(carol.open('dm', 'alice', fromPage)?.text, 'from the browser');
    const reply = carol.seal('dm', [{ user_id: 'alice', device_id: 'browser' }], { text: 'from node', attachments: [] }, 'pairwise');
    const readInPage = await page.evaluate((env) => window.alice.open('dm', 'carol', env), reply);
    assert.equal(readInPage?.text, 'from node');
  } finally {
    await close();
  }
});
