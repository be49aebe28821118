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
  /** Most messages per `/pub/batch` request (default 10000, the server's `--max_batch_lines`). */
  maxBatchLines?: number;
  /** Most body bytes per `/pub/batch` request (default 16777216, `--max_batch_bytes`). */
  maxBatchBytes?: number;
}

/** One message of `publishBatch`: exactly one of `to` (a user) and `channel`. */
export type BatchItem = (
  { to: string; channel?: undefined } | { channel: string; to?: undefined }
) &
  PublishOptions & { from: string; body: string };

/** The outcome of one batch item, in item order: the server's result ("ok") or its error. */
export type BatchResult = { ok: true; result: unknown } | { ok: false; error: IpushError };

/** Fetches with a timeout; network failures and timeouts are IpushError status 0. */
async function fetchText(
  doFetch: typeof fetch,
  url: string,
  init: RequestInit,
  timeoutMs: number,
): Promise<[Response, string]> {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), timeoutMs);
  try {
    const res = await doFetch(url, { ...init, signal: ctl.signal });
    return [res, await res.text()];
  } catch (e) {
    if (ctl.signal.aborted) throw new IpushError(0, `timed out after ${timeoutMs} ms: ${url}`);
    throw new IpushError(0, `request failed: ${(e as Error).message}`);
  } finally {
    clearTimeout(timer);
  }
}

/** Calls JSON endpoints and unwraps `{"result": ...}`; throws IpushError otherwise. */
export async function callJson(
  doFetch: typeof fetch,
  url: string,
  init: RequestInit,
  timeoutMs: number,
): Promise<unknown> {
  const [res, text] = await fetchText(doFetch, url, init, timeoutMs);
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
  private readonly maxLines: number;
  private readonly maxBytes: number;

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
    this.maxLines = positiveInt('maxBatchLines', options.maxBatchLines ?? 10000);
    this.maxBytes = positiveInt('maxBatchBytes', options.maxBatchBytes ?? 16 << 20);
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

  /**
   * Publishes many messages with `POST /pub/batch`, in requests of at most `maxBatchLines`
   * messages and `maxBatchBytes` bytes, one after the other. Resolves to one result per item,
   * in item order. Items are checked as `publish` checks its arguments (a TypeError before
   * anything is sent). A request that fails as a whole (network, timeout, a non-200 answer)
   * gives its error to each of its items and to every later item, which is not sent (so the
   * order is kept).
   */
  async publishBatch(items: readonly BatchItem[]): Promise<BatchResult[]> {
    const lines = items.map(batchLine);
    const out: BatchResult[] = [];
    for (const chunk of chunks(lines, this.maxLines, this.maxBytes)) {
      try {
        out.push(...(await this.postBatch(chunk)));
      } catch (e) {
        const error = e as IpushError;
        while (out.length < lines.length) out.push({ ok: false, error });
        break;
      }
    }
    return out;
  }

  private async postBatch(lines: string[]): Promise<BatchResult[]> {
    const init = {
      method: 'POST',
      body: lines.join(''),
      headers: { 'content-type': 'application/x-ndjson' },
    };
    const [res, text] = await fetchText(
      this.doFetch,
      this.url('/pub/batch', {}),
      init,
      this.timeoutMs,
    );
    if (!res.ok) {
      let reason = text.trim() || res.statusText;
      try {
        const o = JSON.parse(text) as { error?: unknown };
        if (typeof o.error === 'string') reason = o.error;
      } catch {
        // not JSON: the text is the reason
      }
      throw new IpushError(res.status, reason);
    }
    const answers = text.split('\n').filter((l) => l.trim() !== '');
    if (answers.length !== lines.length) {
      throw new IpushError(
        res.status,
        `/pub/batch: ${answers.length} answers to ${lines.length} lines`,
      );
    }
    return answers.map(batchAnswer);
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

  /**
   * Ends the user's stream with `{"error":"disconnected"}` (404 if not connected); with
   * `location` (another node's origin, `http://HOST:PORT`), with the move signal instead: its
   * client reconnects there at once.
   */
  async disconnect(uid: string, location?: string): Promise<unknown> {
    return this.post('/disconnect', { uid, location });
  }
}

/** An item as its NDJSON line (with the newline), after `publish`'s checks. */
function batchLine(item: BatchItem, i: number): string {
  const { to, channel, from, body, ttl, idempotencyKey } = item;
  if ((to === undefined) === (channel === undefined)) {
    throw new TypeError(`publishBatch: item ${i} needs exactly one of to and channel`);
  }
  checkTtl(ttl);
  const line = { to, channel, from, ttl, b: String(body), idempotency_key: idempotencyKey };
  return JSON.stringify(line) + '\n';
}

/** Consecutive runs of lines, each at most `maxLines` long and `maxBytes` big (a bigger line
 * goes alone: the server answers it). */
function* chunks(lines: string[], maxLines: number, maxBytes: number): Generator<string[]> {
  let run: string[] = [];
  let bytes = 0;
  for (const line of lines) {
    const n = new TextEncoder().encode(line).length;
    if (run.length > 0 && (run.length === maxLines || bytes + n > maxBytes)) {
      yield run;
      run = [];
      bytes = 0;
    }
    run.push(line);
    bytes += n;
  }
  if (run.length > 0) yield run;
}

/** One `/pub/batch` answer line: `{"result":…,"status":200}` or `{"error":…,"status":N}`. */
function batchAnswer(line: string): BatchResult {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return { ok: false, error: new IpushError(200, `/pub/batch: answer is not JSON: ${line}`) };
  }
  const status = typeof o.status === 'number' ? o.status : 200;
  if (typeof o.error === 'string') return { ok: false, error: new IpushError(status, o.error) };
  if (!('result' in o)) {
    return { ok: false, error: new IpushError(status, `/pub/batch: no "result" in ${line}`) };
  }
  return { ok: true, result: o.result };
}

function positiveInt(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 1) throw new TypeError(`${name} must be a positive integer`);
  return v;
}

function checkTtl(ttl: number | undefined): void {
  if (ttl !== undefined && (!Number.isInteger(ttl) || ttl < 0)) {
    throw new TypeError(`ttl must be a non-negative integer of seconds, got ${ttl}`);
  }
}
