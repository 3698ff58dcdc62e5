// Asking the pytest driver to act on the server under test (tests/browser/harness.py): a spec writes
// a request file into CAAS_CONTROL and waits for the driver's answer file. The driver uses
// tests/support.py's Server (kill -9, start again on the same data dir and port).
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

let counter = 0;

/** Ask the driver to do `action` (e.g. "kill", "start"); resolves with its answer once it is done. */
export async function control(action, { timeoutMs = 60_000 } = {}) {
  const dir = process.env.CAAS_CONTROL;
  if (!dir) throw new Error('CAAS_CONTROL is not set: run this spec through its pytest driver');
  const id = `${process.pid}-${++counter}`;
  const answer = join(dir, `${id}.done`);
  writeFileSync(join(dir, `${id}.tmp`), action);
  // the driver reads only complete requests: write, then rename into place
  renameSync(join(dir, `${id}.tmp`), join(dir, `${id}.request`));
  const deadline = Date.now() + timeoutMs;
  while (!existsSync(answer)) {
    if (Date.now() > deadline) throw new Error(`the driver did not answer "${action}" in ${timeoutMs} ms`);
    await sleep(20); // polling a file for the driver's answer, bounded by the deadline
  }
  const text = readFileSync(answer, 'utf8');
  rmSync(answer);
  if (text.startsWith('error')) throw new Error(`the driver failed to ${action}: ${text}`);
  return text;
}
