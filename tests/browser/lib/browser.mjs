// The shared browser launcher for CAAS's browser tests (tests/browser/<area>/*.test.mjs).
//
// playwright-core drives Debian's Chromium (/usr/bin/chromium, `make tools` installs it), headless, with a
// fresh --user-data-dir per launch: no browser download, no profile shared between runs. The pytest drivers
// (tests/browser/test_*.py) start a real `caas serve` and give its address in CAAS_URL; screenshots go to the
// directory in CAAS_ARTIFACTS.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { AxeBuilder } from '@axe-core/playwright';

export const CHROMIUM = process.env.CAAS_CHROMIUM || '/usr/bin/chromium';

// Without the background-networking flags Chromium opens connections the closed test network refuses.
const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-dev-shm-usage',
];

/** The server under test (`caas serve`), from CAAS_URL, without a trailing slash. */
export function serverUrl() {
  const url = process.env.CAAS_URL;
  if (!url) throw new Error('CAAS_URL is not set: run the browser tests through their pytest driver');
  return url.replace(/\/$/, '');
}

/** Where screenshots go: CAAS_ARTIFACTS, else tests/browser/artifacts. */
export function artifactsDir() {
  const dir = process.env.CAAS_ARTIFACTS || join(import.meta.dirname, '..', 'artifacts');
  mkdirSync(dir, { recursive: true });
  return dir;
}

/**
 * Launches headless Chromium. Playwright gives every launch a new empty --user-data-dir (a temporary
 * directory it deletes on close), so no profile is shared between runs. Each `newContext()` is an
 * isolated session (its own cookies and storage): one per user.
 */
export async function launch() {
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS });
  return {
    browser,
    newContext: (options = {}) => browser.newContext({ viewport: { width: 1100, height: 720 }, ...options }),
    close: () => browser.close(),
  };
}

/** Saves a screenshot of the viewport (or the full page) as <CAAS_ARTIFACTS>/<name>.png and returns its path. */
export async function screenshot(page, name, { fullPage = false } = {}) {
  const path = join(artifactsDir(), `${name}.png`);
  await page.screenshot({ path, fullPage });
  return path;
}

/**
 * Runs axe-core on the page (WCAG 2.x A and AA rules) and returns its violations, each summarised as
 * "rule-id: help (targets)"; tests assert the list is empty so a failure names what is wrong.
 */
export async function axeViolations(page, { exclude = [] } = {}) {
  let builder = new AxeBuilder({ page }).withTags(['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']);
  for (const selector of exclude) builder = builder.exclude(selector);
  const results = await builder.analyze();
  return results.violations.map(
    (v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).join(', ')})`,
  );
}
