// What the benches record about the machine they ran on (a shared machine's load included).
import { cpus, loadavg, totalmem } from "node:os";

export const round1 = (x: number) => Math.round(x * 10) / 10;

export function machine(loadBefore: number[]) {
  return {
    cpu: cpus()[0]?.model,
    cores: cpus().length,
    ram_gib: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    load_average_before: loadBefore.map(round1),
    load_average_after: loadavg().map(round1),
  };
}
