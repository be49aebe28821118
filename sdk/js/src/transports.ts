// One open stream to one node, per transport: WebSocket (two-way), Server-Sent Events and the
// chunked stream (both read through fetch; the client sends with POST /send). Each resolves
// once the stream is open and reports, once, how it ended.

import { decodeMultiStream } from '@msgpack/msgpack';
import { IpushError } from './admin.js';
import {
  decodeJson,
  decodeMsgpack,
  encodeJson,
  encodeMsgpack,
  JsonSplitter,
  ProtocolError,
  SseParser,
  toServerValue,
  type Codec,
  type Message,
  type ServerValue,
  type StreamError,
} from './protocol.js';

export type Transport = 'websocket' | 'sse' | 'chunked';

/**
 * The subset of the WHATWG WebSocket this client uses (the browser's, Node 22's, or `ws`). The
 * handlers take `any` so that each of those constructors is assignable without a cast.
 */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: any) => void) | null;
  onclose: ((ev: any) => void) | null;
  onerror: ((ev: any) => void) | null;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketConstructor = new (
  url: string,
  protocols?: string | string[],
) => WebSocketLike;

/** Why a stream ended. */
export type End =
  | { kind: 'moved'; location: string }
  | { kind: 'replaced' }
  | { kind: 'server-error'; reason: string }
  | { kind: 'malformed'; error: ProtocolError }
  | { kind: 'failed'; error: Error }
  | { kind: 'closed'; reason: string };

/** The uid's node is another one: connect to `location` instead. */
export class Redirect extends Error {
  readonly location: string;
  constructor(location: string) {
    super(`redirected to ${location}`);
    this.name = 'Redirect';
    this.location = location;
  }
}

export interface Link {
  readonly transport: Transport;
  /** False for SSE and chunked: the client sends through POST /send. */
  readonly twoWay: boolean;
  /** The node's base URL (http(s)://host:port) this stream is on. */
  readonly node: string;
  readonly ended: Promise<End>;
  send(m: Message): void;
  /** Ends the stream from this side; `ended` resolves with `end` unless it already ended. */
  close(end: End): void;
}

export interface OpenParams {
  /** Full http(s) URL of /connect with the query (uid, password, codec). */
  url: string;
  codec: Codec;
  timeoutMs: number;
  fetch: typeof fetch;
  onMessage(m: Message): void;
  onActivity(): void;
  /** Called once, synchronously, when the stream is open and before any message. */
  onOpen(link: Link): void;
}

export function endOf(e: StreamError): End {
  if (e.error === 'replaced') return { kind: 'replaced' };
  if (e.error === 'moved' && e.location) return { kind: 'moved', location: e.location };
  return { kind: 'server-error', reason: e.error };
}

function once<T>(): { promise: Promise<T>; settle(v: T): boolean; readonly done: boolean } {
  let resolve!: (v: T) => void;
  let done = false;
  const promise = new Promise<T>((r) => (resolve = r));
  return {
    promise,
    settle(v: T) {
      if (done) return false;
      done = true;
      resolve(v);
      return true;
    },
    get done() {
      return done;
    },
  };
}

function toBytes(data: unknown): Uint8Array | null {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data))
    return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (Array.isArray(data) && data.every((d) => d instanceof Uint8Array)) {
    // `ws` with binaryType "fragments"
    const n = data.reduce((a, d: Uint8Array) => a + d.length, 0);
    const o = new Uint8Array(n);
    let i = 0;
    for (const d of data as Uint8Array[]) {
      o.set(d, i);
      i += d.length;
    }
    return o;
  }
  return null;
}

function origin(url: string): string {
  const u = new URL(url);
  const proto = u.protocol === 'wss:' ? 'https:' : u.protocol === 'ws:' ? 'http:' : u.protocol;
  return `${proto}//${u.host}`;
}

/**
 * Where a failed WebSocket upgrade was sent, if anywhere (the server answers 303 before auth).
 * A browser hides a manual redirect's Location; then the HEAD is sent again, following it, and
 * the URL it ended at names the node (the nodes answer with CORS headers, `--client_allow_origin`).
 */
async function probeRedirect(
  doFetch: typeof fetch,
  httpUrl: string,
  timeoutMs: number,
): Promise<string | 'hidden' | null> {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), timeoutMs);
  try {
    const r = await doFetch(httpUrl, { method: 'HEAD', redirect: 'manual', signal: ctl.signal });
    if (r.type === 'opaqueredirect') {
      const followed = await doFetch(httpUrl, {
        method: 'HEAD',
        redirect: 'follow',
        signal: ctl.signal,
      }).catch(() => null);
      if (followed?.redirected && followed.url && origin(followed.url) !== origin(httpUrl)) {
        return followed.url;
      }
      return 'hidden';
    }
    if (r.status >= 300 && r.status < 400) return r.headers.get('location');
    return null;
  } catch {
    return null;
  } finally {
    clearTimeout(timer);
  }
}

export function openWebSocket(Ctor: WebSocketConstructor, p: OpenParams): Promise<Link> {
  const wsUrl = p.url.replace(/^http/, 'ws');
  return new Promise<Link>((resolve, reject) => {
    let ws: WebSocketLike;
    try {
      ws = new Ctor(wsUrl);
    } catch (e) {
      reject(e);
      return;
    }
    ws.binaryType = 'arraybuffer';
    const end = once<End>();
    let opened = false;
    const finish = (e: End) => {
      if (!end.settle(e)) return;
      clearTimeout(timer);
      try {
        ws.close(1000);
      } catch {
        /* already closing */
      }
    };
    const link: Link = {
      transport: 'websocket',
      twoWay: true,
      node: origin(wsUrl),
      ended: end.promise,
      send(m: Message) {
        if (end.done) throw new Error('the stream has ended');
        ws.send(p.codec === 'msgpack' ? encodeMsgpack(m) : encodeJson(m));
      },
      close: finish,
    };
    const timer = setTimeout(() => {
      if (opened) return;
      end.settle({ kind: 'closed', reason: 'timeout' });
      try {
        ws.close();
      } catch {
        /* ignore */
      }
      reject(new Error(`WebSocket did not open within ${p.timeoutMs} ms`));
    }, p.timeoutMs);
    ws.onopen = () => {
      if (end.done) return;
      opened = true;
      clearTimeout(timer);
      p.onOpen(link);
      resolve(link);
    };
    ws.onmessage = (ev: { data: unknown }) => {
      if (end.done) return;
      p.onActivity();
      let v: ServerValue;
      try {
        if (typeof ev.data === 'string') {
          v = decodeJson(ev.data);
        } else {
          const bytes = toBytes(ev.data);
          if (!bytes) throw new ProtocolError('unsupported WebSocket message data');
          v = decodeMsgpack(bytes);
        }
      } catch (e) {
        finish({ kind: 'malformed', error: e as ProtocolError });
        return;
      }
      if (v.kind === 'end') finish(endOf(v.end));
      else p.onMessage(v.message);
    };
    ws.onerror = () => {
      /* a close event follows */
    };
    ws.onclose = (ev: { code?: number; reason?: string }) => {
      const code = ev.code ?? 1006;
      const reason = ev.reason ?? '';
      if (!opened) {
        if (!end.settle({ kind: 'closed', reason: 'not opened' })) return;
        clearTimeout(timer);
        void probeRedirect(p.fetch, p.url, p.timeoutMs).then((loc) => {
          if (loc === 'hidden') {
            reject(
              new Error(
                'WebSocket upgrade refused: the uid belongs to another node and the browser hides the redirect',
              ),
            );
          } else if (loc) {
            reject(new Redirect(new URL(loc, p.url).href));
          } else {
            reject(
              new Error(`WebSocket upgrade failed (close ${code}${reason ? ': ' + reason : ''})`),
            );
          }
        });
        return;
      }
      if (code === 1012 && reason) {
        try {
          const v = toServerValue(JSON.parse(reason));
          if (v.kind === 'end' && v.end.location) {
            finish({ kind: 'moved', location: v.end.location });
            return;
          }
        } catch {
          /* not the moved JSON: a plain service restart */
        }
      }
      const why = `WebSocket closed (code ${code}${reason ? ', ' + reason : ''})`;
      if (code === 1000 || code === 1001 || code === 1005) finish({ kind: 'closed', reason: why });
      else finish({ kind: 'failed', error: new Error(why) });
    };
  });
}

/** SSE or the chunked stream, read through fetch. */
export async function openFetchStream(
  transport: 'sse' | 'chunked',
  p: OpenParams,
  lastEventId: number,
): Promise<Link> {
  const headers: Record<string, string> = {};
  if (transport === 'sse') {
    headers.accept = 'text/event-stream';
    if (lastEventId > 0) headers['last-event-id'] = String(lastEventId);
  }
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), p.timeoutMs);
  let res: Response;
  try {
    const init: RequestInit = {
      headers,
      redirect: 'manual',
      signal: ctl.signal,
      cache: 'no-store',
    };
    res = await p.fetch(p.url, init);
    if (res.type === 'opaqueredirect') {
      // A browser hides the Location of a manual redirect: let it follow (works same-origin
      // or where the other node allows CORS).
      res = await p.fetch(p.url, { ...init, redirect: 'follow' });
    }
  } catch (e) {
    clearTimeout(timer);
    if (ctl.signal.aborted) throw new Error(`no response within ${p.timeoutMs} ms`);
    throw e;
  }
  clearTimeout(timer);
  if (res.status >= 300 && res.status < 400) {
    const loc = res.headers.get('location');
    void res.body?.cancel().catch(() => {});
    if (!loc) throw new IpushError(res.status, 'redirect without a Location');
    throw new Redirect(new URL(loc, p.url).href);
  }
  if (!res.ok || !res.body) {
    const text = await res.text().catch(() => '');
    let reason = text.trim() || res.statusText;
    try {
      const o = JSON.parse(text) as { error?: unknown };
      if (typeof o.error === 'string') reason = o.error;
    } catch {
      /* not JSON */
    }
    throw new IpushError(res.status, reason || 'no body');
  }
  const node = origin(res.redirected && res.url ? res.url : p.url);
  const end = once<End>();
  const finish = (e: End) => {
    if (end.settle(e)) ctl.abort();
  };
  const reader = res.body.getReader();
  const link: Link = {
    transport,
    twoWay: false,
    node,
    ended: end.promise,
    send() {
      throw new Error(`${transport} is one-way: send with POST /send`);
    },
    close: finish,
  };
  const deliver = (v: ServerValue): boolean => {
    if (end.done) return false;
    if (v.kind === 'end') {
      finish(endOf(v.end));
      return false;
    }
    p.onMessage(v.message);
    return true;
  };
  const streamEnded = () => finish({ kind: 'closed', reason: 'the server ended the stream' });
  const readFailed = (e: unknown) => {
    const cause = (e as { cause?: { message?: string } })?.cause?.message;
    const msg = `${transport} stream failed: ${(e as Error)?.message ?? String(e)}`;
    finish({ kind: 'failed', error: new Error(cause ? `${msg} (${cause})` : msg) });
  };

  p.onOpen(link);
  if (transport === 'chunked' && p.codec === 'msgpack') {
    let readError: unknown = null;
    async function* bytes(): AsyncGenerator<Uint8Array> {
      for (;;) {
        let r: ReadableStreamReadResult<Uint8Array>;
        try {
          r = await reader.read();
        } catch (e) {
          readError = e;
          return;
        }
        if (r.done) return;
        p.onActivity();
        yield r.value;
      }
    }
    void (async () => {
      try {
        for await (const v of decodeMultiStream(bytes())) {
          let sv: ServerValue;
          try {
            sv = toServerValue(v);
          } catch (e) {
            finish({ kind: 'malformed', error: e as ProtocolError });
            return;
          }
          if (!deliver(sv)) return;
        }
        if (readError) readFailed(readError);
        else streamEnded();
      } catch (e) {
        if (readError || end.done) readFailed(readError ?? e);
        else
          finish({
            kind: 'malformed',
            error: new ProtocolError(`invalid MessagePack: ${(e as Error).message}`),
          });
      }
    })();
    return link;
  }

  const sse = transport === 'sse' ? new SseParser() : null;
  const split = transport === 'chunked' ? new JsonSplitter() : null;
  void (async () => {
    for (;;) {
      let r: ReadableStreamReadResult<Uint8Array>;
      try {
        r = await reader.read();
      } catch (e) {
        readFailed(e);
        return;
      }
      if (end.done) return;
      if (r.done) {
        streamEnded();
        return;
      }
      p.onActivity();
      try {
        if (sse) {
          for (const ev of sse.pushBytes(r.value)) {
            if (ev.event === 'moved') {
              const v = decodeJson(ev.data);
              const loc = v.kind === 'end' ? v.end.location : undefined;
              if (!loc) throw new ProtocolError('a moved event without a location');
              finish({ kind: 'moved', location: loc });
              return;
            }
            if (!deliver(decodeJson(ev.data))) return;
          }
        } else {
          for (const text of split!.pushBytes(r.value)) {
            if (!deliver(decodeJson(text))) return;
          }
        }
      } catch (e) {
        if (e instanceof ProtocolError) finish({ kind: 'malformed', error: e });
        else finish({ kind: 'failed', error: e as Error });
        return;
      }
    }
  })();
  return link;
}
