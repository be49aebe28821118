// The admin HTTP API (admin port): publish, memberships, offline messages, routing, stats.

import { decodeJson, type Message } from './protocol.js';

/** An `{"error": reason}` answer (or a non-JSON failure) from the server, with its HTTP status. */
export class IpushError extends Error {
  readonly status: number;
  readonly reason: string;
  constructor(status: number, reason: string) {
    super(`ipush: ${status} ${reason}`);
    this.name = 'IpushError';
    this.status = status;
    this.reason = reason;
  }
}

export interface PublishOptions {
  /** Seconds; server default 604800 (7 days). 0 = no seq, not stored, only delivered if online. */
  ttl?: number;
  /**
   * Sent as `&idempotency_key=K`: the server answers a repeat within its window with the
   * first result and publishes nothing (the same key with another body: 422).
   */
  idempotencyKey?: string;
}

export interface AdminOptions {
  /** A `fetch` to use instead of the global one. */
  fetch?: typeof fetch;
  /** Per-request timeout in ms (default 10000). */
  timeoutMs?: number;
}

/** Calls JSON endpoints and unwraps `{"result": ...}`; throws IpushError otherwise. */
export async function callJson(
  doFetch: typeof fetch,
  url: string,
  init: RequestInit,
  timeoutMs: number,
): Promise<unknown> {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), timeoutMs);
  let res: Response;
  let text: string;
  try {
    res = await doFetch(url, { ...init, signal: ctl.signal });
    text = await res.text();
  } catch (e) {
    if (ctl.signal.aborted) throw new IpushError(0, `timed out after ${timeoutMs} ms: ${url}`);
    throw new IpushError(0, `request failed: ${(e as Error).message}`);
  } finally {
    clearTimeout(timer);
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new IpushError(res.status, text.trim() || res.statusText || 'not JSON');
  }
  const o = (typeof body === 'object' && body !== null ? body : {}) as Record<string, unknown>;
  if (!res.ok || 'error' in o) {
    const reason = typeof o.error === 'string' ? o.error : text.trim();
    throw new IpushError(res.ok ? 500 : res.status, reason);
  }
  if (!('result' in o)) throw new IpushError(res.status, `no "result" in ${text.slice(0, 80)}`);
  return o.result;
}

/** A client of the admin port: `new AdminClient("http://127.0.0.1:9001")`. */
export class AdminClient {
  private readonly base: string;
  private readonly doFetch: typeof fetch;
  private readonly timeoutMs: number;

  constructor(baseUrl: string, options: AdminOptions = {}) {
    let u: URL;
    try {
      u = new URL(baseUrl);
    } catch {
      throw new TypeError(`AdminClient: invalid base URL ${JSON.stringify(baseUrl)}`);
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') {
      throw new TypeError(`AdminClient: base URL must be http(s), got ${baseUrl}`);
    }
    this.base = u.origin + u.pathname.replace(/\/+$/, '');
    const f = options.fetch ?? globalThis.fetch;
    if (typeof f !== 'function') throw new TypeError('AdminClient: no fetch available');
    this.doFetch = f.bind(globalThis);
    this.timeoutMs = options.timeoutMs ?? 10000;
  }

  private url(path: string, params: Record<string, string | number | undefined>): string {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== undefined) q.set(k, String(v));
    return `${this.base}${path}?${q.toString()}`;
  }

  private get(path: string, params: Record<string, string | number | undefined> = {}) {
    return callJson(this.doFetch, this.url(path, params), { method: 'GET' }, this.timeoutMs);
  }

  private post(path: string, params: Record<string, string | number | undefined>, body = '') {
    return callJson(
      this.doFetch,
      this.url(path, params),
      { method: 'POST', body, headers: { 'content-type': 'text/plain; charset=utf-8' } },
      this.timeoutMs,
    );
  }

  /** A type-3 message to `to`; resolves to the server's result ("ok"). */
  async publish(
    to: string,
    from: string,
    body: string,
    opts: PublishOptions = {},
  ): Promise<unknown> {
    checkTtl(opts.ttl);
    return this.post(
      '/pub',
      { to, from, ttl: opts.ttl, idempotency_key: opts.idempotencyKey },
      String(body),
    );
  }

  /** A type-4 message to every member of `channel`. */
  async publishChannel(
    channel: string,
    from: string,
    body: string,
    opts: PublishOptions = {},
  ): Promise<unknown> {
    checkTtl(opts.ttl);
    return this.post(
      '/pub',
      { channel, from, ttl: opts.ttl, idempotency_key: opts.idempotencyKey },
      String(body),
    );
  }

  async sub(uid: string, cid: string): Promise<unknown> {
    return this.get('/sub', { uid, cid });
  }

  async unsub(uid: string, cid: string): Promise<unknown> {
    return this.get('/unsub', { uid, cid });
  }

  /** The user's offline messages (seq > last_ack, unexpired), ascending, parsed. */
  async msg(uid: string): Promise<Message[]> {
    const r = await this.get('/msg', { uid });
    if (!Array.isArray(r)) throw new IpushError(200, '/msg: "result" is not an array');
    return r.map((item) => {
      if (typeof item !== 'string') throw new IpushError(200, '/msg: an item is not a string');
      const v = decodeJson(item);
      if (v.kind !== 'message') throw new IpushError(200, `/msg: unexpected item ${item}`);
      return v.message;
    });
  }

  /** `HOST:PORT`, the client address of the node that owns `uid`. */
  async shard(uid: string): Promise<string> {
    const r = await this.get('/shard', { uid });
    if (typeof r !== 'string') throw new IpushError(200, '/shard: "result" is not a string');
    return r;
  }

  async stats(): Promise<Record<string, unknown>> {
    return (await this.get('/stats')) as Record<string, unknown>;
  }

  async health(): Promise<Record<string, unknown>> {
    return (await this.get('/health')) as Record<string, unknown>;
  }

  /** Ends the user's stream with `{"error":"disconnected"}` (404 if not connected). */
  async disconnect(uid: string): Promise<unknown> {
    return this.post('/disconnect', { uid });
  }
}

function checkTtl(ttl: number | undefined): void {
  if (ttl !== undefined && (!Number.isInteger(ttl) || ttl < 0)) {
    throw new TypeError(`ttl must be a non-negative integer of seconds, got ${ttl}`);
  }
}
