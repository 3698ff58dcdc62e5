/** An error answered by the server (its `{"error": {code, message, details}}` envelope), a
 * websocket error frame or close, or a network failure (`code: "network"`). */
export class CaasError extends Error {
  readonly code: string;
  readonly status: number | undefined;
  readonly details: Record<string, unknown>;
  /** Seconds to wait before retrying (429 `Retry-After`, 503, a `rate_limited` frame). */
  readonly retryAfter: number | undefined;

  constructor(
    code: string,
    message: string,
    init: { status?: number; details?: Record<string, unknown>; retryAfter?: number; cause?: unknown } = {},
  ) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = "CaasError";
    this.code = code;
    this.status = init.status;
    this.details = init.details ?? {};
    this.retryAfter = init.retryAfter;
  }

  /** Worth retrying unchanged: the network, a timeout, 429 or 5xx. */
  get transient(): boolean {
    return this.code === "network" || this.status === 408 || this.status === 429 || (this.status ?? 0) >= 500;
  }
}
