// E2E cost per message in the TypeScript SDK: Double Ratchet encrypt+decrypt of a ~100-byte
// message between two devices (one way: a chain step per message; alternating: a DH ratchet step
// per message), a sender-key group message encrypt+decrypt (Ed25519 sign and verify included),
// beside raw libsodium crypto_secretbox_easy + crypto_secretbox_open_easy of the same plaintext, in
// the same run, rounds interleaved (the secretbox's nonce from the same CSPRNG the SDK uses). CPU µs per message (process.cpuUsage) and wall µs. Prints JSON.
// node dist-test/bench/e2e.js [--messages 2000] [--rounds 5] [--out file.json]
import { execSync } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { loadavg } from "node:os";
import { E2eDevice } from "../src/e2e/index.js";
import { distribution, groupDecrypt, groupEncrypt, newSenderKey, peerKeyFrom } from "../src/e2e/senderkey.js";
import { randomBytes, sodium, utf8 } from "../src/e2e/sodium.js";
import { machine, round1 } from "./machine.js";

const arg = (name: string, fallback: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? (process.argv[i + 1] as string) : fallback;
};
const MESSAGES = Number(arg("messages", "2000"));
const ROUNDS = Number(arg("rounds", "5"));
const OUT = arg("out", "");
const PLAINTEXT = utf8(JSON.stringify({ type: "message", text: `message ${"x".repeat(60)}`, attachments: [] }));

const alice = await E2eDevice.create("alice", "a1");
const bob = await E2eDevice.create("bob", "b1");
const reg = bob.registration(1);
alice.startSession({ ...bob.address, identity_key: reg.identity_key, signed_prekey: reg.signed_prekey, one_time_prekey: reg.one_time_prekeys[0] ?? null });
bob.decryptFrom(alice.address, alice.encryptTo(bob.address, PLAINTEXT));
alice.decryptFrom(bob.address, bob.encryptTo(alice.address, PLAINTEXT)); // both sides past the prekey stage
const s = sodium();
const secretKey = s.crypto_secretbox_keygen();
const own = newSenderKey();
let chain = peerKeyFrom(distribution("bench", own));

const variants: Record<string, (n: number) => void> = {
  ratchet_one_way: (n) => {
    for (let i = 0; i < n; i++) bob.decryptFrom(alice.address, alice.encryptTo(bob.address, PLAINTEXT));
  },
  ratchet_alternating: (n) => {
    for (let i = 0; i < n; i++) {
      if (i % 2) alice.decryptFrom(bob.address, bob.encryptTo(alice.address, PLAINTEXT));
      else bob.decryptFrom(alice.address, alice.encryptTo(bob.address, PLAINTEXT));
    }
  },
  sender_key: (n) => {
    for (let i = 0; i < n; i++) [, chain] = groupDecrypt(chain, "bench", groupEncrypt(own, "bench", PLAINTEXT));
  },
  secretbox: (n) => {
    for (let i = 0; i < n; i++) {
      const nonce = randomBytes(s.crypto_secretbox_NONCEBYTES); // as the SDK draws its randomness
      s.crypto_secretbox_open_easy(s.crypto_secretbox_easy(PLAINTEXT, nonce, secretKey), nonce, secretKey);
    }
  },
};

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
for (const run of Object.values(variants)) run(200); // warm up
const loadBefore = loadavg();
const samples: Record<string, { cpu_us: number[]; wall_us: number[] }> = {};
const names = Object.keys(variants);
for (let round = 0; round < ROUNDS; round++) {
  const order = round % 2 ? [...names].reverse() : names;
  for (const name of order) {
    const cpu = process.cpuUsage();
    const t0 = performance.now();
    (variants[name] as (n: number) => void)(MESSAGES);
    const wall = ((performance.now() - t0) * 1000) / MESSAGES;
    const used = process.cpuUsage(cpu);
    const entry = (samples[name] ??= { cpu_us: [], wall_us: [] });
    entry.cpu_us.push(round1((used.user + used.system) / MESSAGES));
    entry.wall_us.push(round1(wall));
  }
}
const perMessage = Object.fromEntries(names.map((n) => [n, { median_cpu_us: median(samples[n]?.cpu_us ?? []), median_wall_us: median(samples[n]?.wall_us ?? []), ...samples[n] }]));
const box = median(samples.secretbox?.cpu_us ?? []);
const result = {
  what: "E2E encrypt+decrypt per message in the TypeScript SDK (libsodium-wrappers-sumo, WebAssembly) beside raw crypto_secretbox_easy+open of the same plaintext, same run (sdk/typescript/bench/e2e.ts)",
  date: new Date().toISOString(),
  commit: execSync("git rev-parse --short HEAD").toString().trim(),
  plaintext_bytes: PLAINTEXT.length,
  messages_per_round: MESSAGES,
  rounds: ROUNDS,
  per_message: perMessage,
  cpu_over_secretbox: Object.fromEntries(names.map((n) => [n, Math.round((median(samples[n]?.cpu_us ?? []) / box) * 10) / 10])),
  machine: machine(loadBefore),
};
const text = JSON.stringify(result, null, 2);
console.log(text);
if (OUT) await writeFile(OUT, text + "\n");
