import { CaasError } from "./errors.js";
import type { components, operations } from "./generated/openapi.js";
import { routes } from "./generated/routes.js";

export type Schemas = components["schemas"];
export type OperationId = keyof operations & keyof typeof routes;
type Params<K extends OperationId> = operations[K]["parameters"];
type JsonOf<T> = T extends { content: { "application/json": infer B } } ? B : never;
/** The JSON body an operation takes. */
export type RequestBody<K extends OperationId> = operations[K] extends { requestBody?: infer R } ? JsonOf<R> : never;
/** The JSON an operation answers on success (200, 201 or 202). */
export type ResponseBody<K extends OperationId> = JsonOf<
  operations[K]["responses"][keyof operations[K]["responses"] & (200 | 201 | 202)]
>;
type Defined<T> = Exclude<T, undefined>;
type PathArg<K extends OperationId> = [Defined<Params<K>["path"]>] extends [never]
  ? { path?: undefined }
  : { path: Defined<Params<K>["path"]> };
type QueryArg<K extends OperationId> = [Defined<Params<K>["query"]>] extends [never]
  ? { query?: undefined }
  : { query?: Defined<Params<K>["query"]> };
type BodyArg<K extends OperationId> = [RequestBody<K>] extends [never] ? { body?: undefined } : { body?: RequestBody<K> };
/** The arguments of one call: path parameters, query, body and transport options. */
export type CallArgs<K extends OperationId> = PathArg<K> &
  QueryArg<K> &
  BodyArg<K> & {
    /** `Idempotency-Key`: a retry with the same key answers the first result, appends nothing. */
    idempotencyKey?: string;
    signal?: AbortSignal;
  };

/** A credential, or a function that returns the current one (called per request). */
export type TokenSource = string | (() => string | Promise<string>);

export interface HttpOptions {
  /** e.g. `https://chat.example.com` (no trailing `/v1`). */
  baseUrl: string;
  /** A user token, a tenant API key, or the admin token. */
  token?: TokenSource;
  /** Called on `401` (HTTP) or a 1008 `unauthenticated` close (websocket): return a fresh token. */
  refreshToken?: () => Promise<string>;
  /** Defaults to the global `fetch`. */
  fetch?: typeof fetch;
  /** Per-request timeout in milliseconds (default 30 000). */
  timeoutMs?: number;
}

/**
 * A thin typed client over every route of `/openapi.json`: `call("post_message", {path, body})`.
 * It remembers the highest `position` its own writes answered and passes it as `min_position`
 * to every read that takes one (read-your-writes), unless the caller gives its own.
 */
export class HttpClient {
  readonly baseUrl: string;
  /** The highest `position` a write through this client answered: what reads wait for. */
  position = 0;
  private readonly token: TokenSource | undefined;
  /** The last refreshed token, and what the app's source answered when it was refused: used
   * while the source still answers that (a source that moved on wins). */
  private refreshed: { token: string; replaced: string | undefined } | undefined;
  private readonly refresh: (() => Promise<string>) | undefined;
  private readonly fetcher: typeof fetch;
  private readonly timeoutMs: number;
  private refreshing: Promise<string> | null = null;
  private readonly credentialListeners = new Set<() => void>();

  constructor(options: HttpOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.token = options.token;
    this.refresh = options.refreshToken;
    this.fetcher = options.fetch ?? ((input, init) => fetch(input, init));
    this.timeoutMs = options.timeoutMs ?? 30_000;
  }

  /** The current credential. */
  async currentToken(): Promise<string | undefined> {
    const t = this.token;
    const source = typeof t === "function" ? await t() : t;
    return this.refreshed !== undefined && this.refreshed.replaced === source ? this.refreshed.token : source;
  }

  /** Call `fn` whenever a refresh brings a new credential; returns a function that stops it. */
  onCredential(fn: () => void): () => void {
    this.credentialListeners.add(fn);
    return () => this.credentialListeners.delete(fn);
  }

  /** Ask the app for a new token (once at a time, however many callers need it). */
  async refreshCredential(): Promise<string> {
    if (this.refresh === undefined) throw new CaasError("unauthenticated", "the token was refused and no refreshToken callback is set");
    const refresh = this.refresh;
    this.refreshing ??= (async () => {
      const t = this.token;
      const replaced = typeof t === "function" ? await t() : t;
      return { token: await refresh(), replaced };
    })().then(
      ({ token, replaced }) => {
        this.refreshed = { token, replaced };
        this.refreshing = null;
        for (const fn of [...this.credentialListeners]) fn();
        return token;
      },
      (error: unknown) => {
        this.refreshing = null;
        throw error;
      },
    );
    return this.refreshing;
  }

  /** Call one operation by its `operationId`. Throws {@link CaasError} on any failure. */
  async call<K extends OperationId>(op: K, ...[args]: {} extends CallArgs<K> ? [CallArgs<K>?] : [CallArgs<K>]): Promise<ResponseBody<K>> {
    const a = (args ?? {}) as CallArgs<OperationId> & { path?: Record<string, string>; query?: Record<string, unknown>; body?: unknown };
    const [method, template, takesPosition] = routes[op];
    let url = this.baseUrl + template.replace(/\{(\w+)\}/g, (_, name: string) => encodeURIComponent(String(a.path?.[name] ?? "")));
    const query: Record<string, unknown> = { ...a.query };
    if (takesPosition && query.min_position === undefined && this.position > 0) query.min_position = this.position;
    const search = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null) search.set(k, String(v));
    if ([...search].length) url += `?${search}`;
    let refreshed = false;
    for (let tries = 0; ; tries++) {
      const headers: Record<string, string> = { accept: "application/json" };
      const token = await this.currentToken();
      if (token) headers.authorization = `Bearer ${token}`;
      if (a.idempotencyKey) headers["idempotency-key"] = a.idempotencyKey;
      if (a.body !== undefined) headers["content-type"] = "application/json";
      const signals = [AbortSignal.timeout(this.timeoutMs), ...(a.signal ? [a.signal] : [])];
      let response: Response;
      try {
        response = await this.fetcher(url, {
          method,
          headers,
          body: a.body === undefined ? null : JSON.stringify(a.body),
          signal: signals.length > 1 ? anySignal(signals) : signals[0],
        });
      } catch (cause) {
        if (a.signal?.aborted) throw cause;
        throw new CaasError("network", `${method} ${template}: ${String((cause as Error)?.message ?? cause)}`, { cause });
      }
      const text = await response.text().catch((cause: unknown) => {
        throw new CaasError("network", `${method} ${template}: the answer was cut short`, { cause });
      });
      const data: unknown = text ? safeJson(text) : undefined;
      if (response.ok) {
        const position = (data as { position?: unknown } | undefined)?.position;
        if (method !== "GET" && typeof position === "number" && position > this.position) this.position = position;
        return data as ResponseBody<K>;
      }
      if (response.status === 401 && this.refresh !== undefined && tries < 3 && (await this.currentToken()) !== token) {
        continue; // another call refreshed the token meanwhile: use it, no refresh of our own
      }
      if (response.status === 401 && this.refresh !== undefined && !refreshed) {
        refreshed = true;
        try {
          await this.refreshCredential();
        } catch (cause) {
          // the app's refresh failed: the call is still unauthenticated, not a network failure
          throw cause instanceof CaasError ? cause : new CaasError("unauthenticated", `${method} ${template}: the token was refused and refreshing it failed`, { status: 401, cause });
        }
        continue;
      }
      const error = (data as { error?: { code?: string; message?: string; details?: Record<string, unknown> } } | undefined)?.error;
      const retry = Number(response.headers.get("retry-after"));
      throw new CaasError(error?.code ?? "http_" + response.status, error?.message ?? `${method} ${template}: ${response.status}`, {
        status: response.status,
        details: error?.details ?? {},
        ...(Number.isFinite(retry) && retry > 0 ? { retryAfter: retry } : {}),
      });
    }
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function anySignal(signals: AbortSignal[]): AbortSignal {
  const any = (AbortSignal as unknown as { any?: (s: AbortSignal[]) => AbortSignal }).any;
  if (any) return any(signals);
  const controller = new AbortController();
  for (const s of signals) s.addEventListener("abort", () => controller.abort(s.reason), { once: true });
  return controller.signal;
}
