/** A small typed event emitter (no Node built-ins, so it runs in browsers). */
export class Emitter<E extends Record<string, unknown>> {
  private readonly listeners = new Map<keyof E, Set<(value: never) => void>>();

  /** Listen to `type`; returns a function that stops listening. */
  on<K extends keyof E>(type: K, fn: (value: E[K]) => void): () => void {
    let set = this.listeners.get(type);
    if (set === undefined) this.listeners.set(type, (set = new Set()));
    set.add(fn as (value: never) => void);
    return () => set.delete(fn as (value: never) => void);
  }

  /** Whether anyone listens to `type`. */
  protected heard(type: keyof E): boolean {
    return (this.listeners.get(type)?.size ?? 0) > 0;
  }

  /** Call every listener of `type`; one that throws is reported (see {@link reportListenerError})
   * and neither stops the others nor the SDK's own work. */
  protected emit<K extends keyof E>(type: K, value: E[K]): void {
    for (const fn of [...(this.listeners.get(type) ?? [])]) {
      try {
        (fn as (value: E[K]) => void)(value);
      } catch (error) {
        reportListenerError(error);
      }
    }
  }
}

/** An app listener threw: report it as the platform reports uncaught errors (`reportError` in
 * browsers, `console.error` elsewhere) without throwing into the SDK. */
export function reportListenerError(error: unknown): void {
  const report = (globalThis as { reportError?: (e: unknown) => void }).reportError;
  if (typeof report === "function") report(error);
  else console.error("@caas/client: a listener threw", error);
}

/** Full-jitter exponential backoff: a random delay in [0, min(max, base·2^attempt)]. */
export function backoff(attempt: number, baseMs: number, maxMs: number): number {
  return Math.random() * Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30));
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
