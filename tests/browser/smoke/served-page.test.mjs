// The harness itself: Chromium opens a page `caas serve` serves, reads it, and axe-core runs on a page.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { launch, serverUrl, screenshot, axeViolations } from '../lib/browser.mjs';

test('Chromium opens a page served by caas serve', async () => {
  const { newContext, close } = await launch();
  try {
    const page = await (await newContext()).newPage();
    const response = await page.goto(`${serverUrl()}/healthz`);
    assert.equal(response.status(), 200);
    const text = await page.locator('body').innerText();
    assert.ok(text.length > 0);
    await screenshot(page, 'smoke-healthz');
    // axe-core runs in the page (a minimal accessible document: no violations)
    await page.setContent('<!doctype html><html lang="en"><head><title>t</title></head><body><main><h1>ok</h1></main></body></html>');
    assert.deepEqual(await axeViolations(page), []);
  } finally {
    await close();
  }
});
