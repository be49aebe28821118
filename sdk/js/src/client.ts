// The push client: keeps one stream open to the uid's node (WebSocket, else SSE, else the
// chunked stream), follows 303 and `moved`, reconnects with backoff and full jitter, drops
// duplicates by seq, acks, heartbeats, and sends through the stream or POST /send.

import { callJson, IpushError } from './admin.js';
import { backoffDelay, MessageType, validId, type Codec, type Message } from './protocol.js';
import {
  openFetchStream,
  openWebSocket,
  Redirect,
  type End,
  type Link,
  type Transport,
  type WebSocketConstructor,
} from './transports.js';

/** A password, or a callback giving one (e.g. a fresh JWT) before every (re)connect. */
export type Credentials = string | (() => string | Promise<string>);

export interface ClientOptions {
  /** One transport or an ordered fallback list. Default `["websocket", "sse", "chunked"]`. */
  transport?: Transport | Transport[];
  /** `json` (default) or `msgpack` (not over SSE: SSE is skipped from the list). */
  codec?: Codec;
  /**
   * Batched automatic acks: ack the highest seq seen `delayMs` after a message arrives or
   * once `maxMessages` are unacked (defaults 200 ms, 50). `false`: call `ack(seq)` yourself.
   */
  autoAck?: false | { delayMs?: number; maxMessages?: number };
  /** Send `{"y":0}` after this much idle time; 3x of silence = dead (default 30000 ms). */
  heartbeatIntervalMs?: number;
  /** Reconnect delay: random(0, min(capMs, baseMs * 2^attempt)); defaults 500, 30000. */
  backoff?: { baseMs?: number; capMs?: number };
  /** The highest seq the application already has (messages at or below are dropped). */
  lastSeq?: number;
  /** Reconnect after `{"error":"replaced"}` instead of stopping (default false). */
  reconnectOnReplaced?: boolean;
  /**
   * Reconnect (with backoff) after the server ends the stream with another `{"error":...}`,
   * e.g. "disconnected" (admin POST /disconnect) or a bad-input reason (default true).
   */
  reconnectOnServerError?: boolean;
  /** Redirects and moves followed in a row before it counts as a failed attempt (default 5). */
  maxRedirects?: number;
  /** Time for a stream to open (default 10000 ms). */
  connectTimeoutMs?: number;
  /** A WebSocket constructor where there is no global one (Node 20: the `ws` package). */
  WebSocket?: WebSocketConstructor;
  /** A fetch to use instead of the global one. */
  fetch?: typeof fetch;
  /** Randomness for the jitter (tests). */
  random?: () => number;
}

/** A user or channel message delivered to the application. */
export interface PushMessage {
  type: 'user' | 'channel';
  /** Absent for messages published with ttl 0 (not stored, no seq). */
  seq?: number;
  from: string;
  to: string;
  channel?: string;
  body: string;
  raw: Message;
}

export interface ClientEvents {
  message: PushMessage;
  connected: { transport: Transport; node: string };
  /** `serverError` is the server's `{"error":...}` reason when it ended the stream with one. */
  disconnected: { reason: string; willReconnect: boolean; serverError?: string };
  /** An ack went out (on the socket or through POST /send). */
  ack: { seq: number };
  error: Error;
  moved: { location: string };
  replaced: Record<string, never>;
}
type Listener<K extends keyof ClientEvents> = (ev: ClientEvents[K]) => void;

export type ClientState = 'idle' | 'connecting' | 'open' | 'closed';

const ALL: Transport[] = ['websocket', 'sse', 'chunked'];

export class Client {
  readonly uid: string;
  private readonly base: string;
  private readonly credentials: () => Promise<string>;
  private readonly transports: Transport[];
  private readonly codec: Codec;
  private readonly ackDelay: number;
  private readonly ackMax: number;
  private readonly autoAck: boolean;
  private readonly hbMs: number;
  private readonly baseMs: number;
  private readonly capMs: number;
  private readonly reconnectOnReplaced: boolean;
  private readonly reconnectOnServerError: boolean;
  private readonly maxRedirects: number;
  private readonly timeoutMs: number;
  private readonly WS: WebSocketConstructor | undefined;
  private readonly doFetch: typeof fetch;
  private readonly random: () => number;

  private listeners: { [K in keyof ClientEvents]?: Set<Listener<K>> } = {};
  private _state: ClientState = 'idle';
  private link: Link | null = null;
  private password = '';
  private node: string;
  private highest: number;
  private acked = 0;
  private unacked = 0;
  private ackTimer: ReturnType<typeof setTimeout> | null = null;
  private hbTimer: ReturnType<typeof setInterval> | null = null;
  private lastSent = 0;
  private attempt = 0;
  private reacked = false;
  private lastRecv = 0;
  private wake: (() => void) | null = null;
  private firstOpen: Promise<void> | null = null;
  private firstOpenDone: { resolve(): void; reject(e: Error): void } | null = null;

  constructor(baseUrl: string, uid: string, credentials: Credentials, options: ClientOptions = {}) {
    let u: URL;
    try {
      u = new URL(baseUrl);
    } catch {
      throw new TypeError(`Client: invalid base URL ${JSON.stringify(baseUrl)}`);
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') {
      throw new TypeError(`Client: base URL must be http(s)://host:port, got ${baseUrl}`);
    }
    if (!validId(uid)) {
      throw new TypeError(
        `Client: invalid uid ${JSON.stringify(uid)} (1..128 bytes, no whitespace or control characters)`,
      );
    }
    if (typeof credentials === 'string') {
      if (!credentials) throw new TypeError('Client: empty password');
      const pw = credentials;
      this.credentials = async () => pw;
    } else if (typeof credentials === 'function') {
      const cb = credentials;
      this.credentials = async () => String(await cb());
    } else {
      throw new TypeError('Client: credentials must be a password string or a callback');
    }
    this.base = u.origin;
    this.node = this.base;
    this.uid = uid;
    this.codec = options.codec ?? 'json';
    if (this.codec !== 'json' && this.codec !== 'msgpack') {
      throw new TypeError(`Client: codec must be "json" or "msgpack", got ${String(this.codec)}`);
    }
    const wanted =
      options.transport === undefined
        ? ALL
        : Array.isArray(options.transport)
          ? options.transport
          : [options.transport];
    for (const t of wanted) {
      if (!ALL.includes(t)) throw new TypeError(`Client: unknown transport ${String(t)}`);
    }
    this.WS =
      options.WebSocket ??
      ((globalThis as { WebSocket?: WebSocketConstructor }).WebSocket || undefined);
    this.transports = wanted.filter(
      (t) => !(t === 'sse' && this.codec === 'msgpack') && !(t === 'websocket' && !this.WS),
    );
    if (this.transports.length === 0) {
      throw new TypeError(
        `Client: no usable transport in ${JSON.stringify(wanted)}` +
          (this.codec === 'msgpack' ? ' (msgpack is not available over SSE)' : '') +
          (this.WS ? '' : ' (no WebSocket here: pass options.WebSocket)'),
      );
    }
    const f = options.fetch ?? globalThis.fetch;
    if (typeof f !== 'function') throw new TypeError('Client: no fetch available');
    this.doFetch = f.bind(globalThis);
    this.autoAck = options.autoAck !== false;
    const aa = options.autoAck || {};
    this.ackDelay = aa.delayMs ?? 200;
    this.ackMax = Math.max(1, aa.maxMessages ?? 50);
    this.hbMs = options.heartbeatIntervalMs ?? 30000;
    if (!(this.hbMs > 0)) throw new TypeError('Client: heartbeatIntervalMs must be > 0');
    this.baseMs = options.backoff?.baseMs ?? 500;
    this.capMs = options.backoff?.capMs ?? 30000;
    this.reconnectOnReplaced = options.reconnectOnReplaced ?? false;
    this.reconnectOnServerError = options.reconnectOnServerError ?? true;
    this.maxRedirects = options.maxRedirects ?? 5;
    this.timeoutMs = options.connectTimeoutMs ?? 10000;
    this.random = options.random ?? Math.random;
    const ls = options.lastSeq ?? 0;
    if (!Number.isSafeInteger(ls) || ls < 0) throw new TypeError('Client: bad lastSeq');
    this.highest = ls;
  }

  // ---- events --------------------------------------------------------------------------

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof ClientEvents>(event: K, fn: Listener<K>): () => void {
    let set = this.listeners[event] as Set<Listener<K>> | undefined;
    if (!set) {
      set = new Set();
      (this.listeners as Record<string, unknown>)[event] = set;
    }
    set.add(fn);
    return () => this.off(event, fn);
  }

  off<K extends keyof ClientEvents>(event: K, fn: Listener<K>): void {
    (this.listeners[event] as Set<Listener<K>> | undefined)?.delete(fn);
  }

  private emit<K extends keyof ClientEvents>(event: K, ev: ClientEvents[K]): void {
    const set = this.listeners[event] as Set<Listener<K>> | undefined;
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(ev);
      } catch (e) {
        // A throwing listener must not break the client.
        if (event !== 'error') this.emit('error', e as Error);
      }
    }
  }

  // ---- state ---------------------------------------------------------------------------

  get state(): ClientState {
    return this._state;
  }

  /** The highest seq delivered to the application. */
  get lastSeq(): number {
    return this.highest;
  }

  /** The highest seq acked so far. */
  get lastAck(): number {
    return this.acked;
  }

  /** The transport of the open stream, or null. */
  get transport(): Transport | null {
    return this.link?.transport ?? null;
  }

  /** The node base URL the client is (or will next be) connected to. */
  get nodeUrl(): string {
    return this.node;
  }

  /** Starts connecting; resolves once the first stream is open (it keeps retrying meanwhile). */
  connect(): Promise<void> {
    if (this._state === 'closed') return Promise.reject(new Error('Client: closed'));
    if (!this.firstOpen) {
      this.firstOpen = new Promise<void>((resolve, reject) => {
        this.firstOpenDone = { resolve, reject };
      });
      this.firstOpen.catch(() => {});
      this._state = 'connecting';
      this.hbTimer = setInterval(() => this.tick(), Math.max(20, Math.min(1000, this.hbMs / 4)));
      void this.run();
    }
    return this.firstOpen;
  }

  /** Closes the stream and stops reconnecting. */
  close(): void {
    if (this._state === 'closed') return;
    this.flushAck();
    this._state = 'closed';
    if (this.hbTimer) clearInterval(this.hbTimer);
    if (this.ackTimer) clearTimeout(this.ackTimer);
    this.hbTimer = null;
    this.ackTimer = null;
    this.link?.close({ kind: 'closed', reason: 'closed by the application' });
    this.wake?.();
    this.firstOpenDone?.reject(new Error('Client: closed before connecting'));
    this.firstOpenDone = null;
  }

  // ---- sending -------------------------------------------------------------------------

  subscribe(cid: string): Promise<void> {
    checkId('channel', cid);
    return this.sendMessage({ y: MessageType.Subscribe, c: cid });
  }

  unsubscribe(cid: string): Promise<void> {
    checkId('channel', cid);
    return this.sendMessage({ y: MessageType.Unsubscribe, c: cid });
  }

  sendToUser(to: string, body: string): Promise<void> {
    checkId('uid', to);
    return this.sendMessage({ y: MessageType.User, t: to, b: String(body) });
  }

  sendToChannel(cid: string, body: string): Promise<void> {
    checkId('channel', cid);
    return this.sendMessage({ y: MessageType.Channel, c: cid, b: String(body) });
  }

  /** Acks every message up to `seq` (the server keeps the maximum). */
  ack(seq: number): Promise<void> {
    if (!Number.isSafeInteger(seq) || seq < 0) {
      return Promise.reject(new TypeError(`ack: bad seq ${seq}`));
    }
    if (seq <= this.acked) return Promise.resolve();
    const before = this.acked;
    this.acked = seq;
    return this.sendMessage({ y: MessageType.Ack, s: seq }).then(
      () => this.emit('ack', { seq }),
      (e) => {
        if (this.acked === seq) this.acked = before;
        throw e;
      },
    );
  }

  /** Sends on the WebSocket when one is open, else through POST /send. */
  private async sendMessage(m: Message): Promise<void> {
    if (this._state === 'closed') throw new Error('Client: closed');
    const msg: Message = { ...m, f: this.uid };
    const link = this.link;
    if (link && link.twoWay && this._state === 'open') {
      try {
        link.send(msg);
        this.lastSent = Date.now();
        return;
      } catch {
        /* the socket just went away: use /send */
      }
    }
    await this.post(msg);
  }

  private async post(m: Message): Promise<void> {
    this.lastSent = Date.now();
    const attempt = async (password: string) => {
      const q = new URLSearchParams({ uid: this.uid, password });
      return callJson(
        this.doFetch,
        `${this.node}/send?${q.toString()}`,
        {
          method: 'POST',
          body: JSON.stringify(m),
          headers: { 'content-type': 'application/json' },
        },
        this.timeoutMs,
      );
    };
    if (!this.password) this.password = await this.credentials();
    try {
      await attempt(this.password);
    } catch (e) {
      if (!(e instanceof IpushError) || e.status !== 401) throw e;
      // The token may have expired: refresh it once.
      this.password = await this.credentials();
      await attempt(this.password);
    }
  }

  // ---- receiving -----------------------------------------------------------------------

  private onMessage(m: Message): void {
    if (m.y !== MessageType.User && m.y !== MessageType.Channel) return; // heartbeat etc.
    if (m.s !== undefined) {
      if (m.s <= this.highest) {
        // A duplicate (replayed after a resume): drop it. The server replays only above its
        // last_ack, so an ack we sent for it was lost: with auto-ack, send it again.
        if (!this.reacked && m.s <= this.acked) {
          this.acked = m.s - 1;
          this.reacked = true; // once per stream
        }
        if (this.autoAck) this.scheduleAck(true);
        return;
      }
      this.highest = m.s;
    }
    const pm: PushMessage = {
      type: m.y === MessageType.User ? 'user' : 'channel',
      from: m.f ?? '',
      to: m.t ?? this.uid,
      body: m.b ?? '',
      raw: m,
    };
    if (m.s !== undefined) pm.seq = m.s;
    if (m.c !== undefined) pm.channel = m.c;
    this.emit('message', pm);
    if (this.autoAck && m.s !== undefined) this.scheduleAck(false);
  }

  private scheduleAck(now: boolean): void {
    this.unacked++;
    if (now || this.unacked >= this.ackMax) {
      this.flushAck();
      return;
    }
    if (!this.ackTimer) {
      this.ackTimer = setTimeout(() => {
        this.ackTimer = null;
        this.flushAck();
      }, this.ackDelay);
    }
  }

  private flushAck(): void {
    if (this.ackTimer) clearTimeout(this.ackTimer);
    this.ackTimer = null;
    this.unacked = 0;
    if (this.highest > this.acked && this._state !== 'closed') {
      this.ack(this.highest).catch((e: Error) => this.emit('error', e));
    }
  }

  private tick(): void {
    const link = this.link;
    if (!link || this._state !== 'open') return;
    const now = Date.now();
    if (now - this.lastRecv > 3 * this.hbMs) {
      link.close({ kind: 'closed', reason: `no data for ${3 * this.hbMs} ms (dead connection)` });
      return;
    }
    if (now - this.lastSent >= this.hbMs) {
      this.sendMessage({ y: MessageType.Heartbeat }).catch((e: Error) => this.emit('error', e));
    }
  }

  /** A stream just opened (called by the transport before it delivers anything). */
  private activate(link: Link): void {
    if (this.isClosed()) {
      link.close({ kind: 'closed', reason: 'closed by the application' });
      return;
    }
    this.link = link;
    this.node = link.node;
    this._state = 'open';
    this.attempt = 0;
    this.reacked = false;
    this.lastRecv = Date.now();
    this.lastSent = Date.now();
    this.emit('connected', { transport: link.transport, node: link.node });
    this.firstOpenDone?.resolve();
    this.firstOpenDone = null;
    if (this.acked < this.highest && this.autoAck) this.flushAck();
  }

  private isClosed(): boolean {
    return this._state === 'closed';
  }

  // ---- the connection loop -------------------------------------------------------------

  private sleep(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const t = setTimeout(done, ms);
      function done() {
        clearTimeout(t);
        resolve();
      }
      this.wake = done;
    }).then(() => {
      this.wake = null;
    });
  }

  private connectUrl(node: string, password: string): string {
    const q = new URLSearchParams({ uid: this.uid, password });
    if (this.codec === 'msgpack') q.set('codec', 'msgpack');
    return `${node}/connect?${q.toString()}`;
  }

  /** Opens a stream on `node` (following redirects), trying each transport in turn. */
  private async open(): Promise<Link> {
    this.password = await this.credentials();
    let lastError: Error = new Error('no transport');
    let hops = 0;
    for (let i = 0; i < this.transports.length; i++) {
      const transport = this.transports[i]!;
      const params = {
        url: this.connectUrl(this.node, this.password),
        codec: this.codec,
        timeoutMs: this.timeoutMs,
        fetch: this.doFetch,
        onMessage: (m: Message) => this.onMessage(m),
        onActivity: () => {
          this.lastRecv = Date.now();
        },
        onOpen: (link: Link) => this.activate(link),
      };
      try {
        return transport === 'websocket'
          ? await openWebSocket(this.WS!, params)
          : await openFetchStream(transport, params, this.highest);
      } catch (e) {
        if (this.isClosed()) throw e;
        if (e instanceof Redirect) {
          if (++hops > this.maxRedirects) {
            throw new Error(`too many redirects (last to ${e.location})`);
          }
          this.node = new URL(e.location).origin;
          i--; // same transport, other node
          continue;
        }
        lastError = e as Error;
        if (e instanceof IpushError && e.status === 400) throw e; // our request is wrong
        if (i + 1 < this.transports.length) {
          this.emit(
            'error',
            new Error(`${transport} failed (${lastError.message}); trying the next`),
          );
        }
      }
    }
    throw lastError;
  }

  private async run(): Promise<void> {
    let moves = 0;
    while (!this.isClosed()) {
      this._state = 'connecting';
      let link: Link;
      try {
        link = await this.open();
      } catch (e) {
        if (this.isClosed()) break;
        const err = e as Error;
        this.emit('error', err);
        if (err instanceof IpushError && err.status === 400) {
          this.emit('disconnected', { reason: err.message, willReconnect: false });
          this.close();
          break;
        }
        if (this.node !== this.base) this.node = this.base; // ask the first node again
        await this.sleep(backoffDelay(this.attempt++, this.baseMs, this.capMs, this.random));
        continue;
      }
      if (this.isClosed()) {
        link.close({ kind: 'closed', reason: 'closed by the application' });
        break;
      }
      const end: End = await link.ended;
      this.link = null;
      if (this.isClosed()) {
        this.emit('disconnected', { reason: 'closed by the application', willReconnect: false });
        break;
      }
      this._state = 'connecting';
      if (end.kind === 'moved') {
        const to = new URL(end.location, this.node);
        this.emit('moved', { location: to.href });
        this.emit('disconnected', { reason: `moved to ${to.origin}`, willReconnect: true });
        this.node = to.origin;
        if (++moves <= this.maxRedirects) continue; // at once, no backoff
        await this.sleep(backoffDelay(this.attempt++, this.baseMs, this.capMs, this.random));
        continue;
      }
      moves = 0;
      if (end.kind === 'replaced') {
        this.emit('replaced', {});
        this.emit('disconnected', {
          reason: 'replaced by another connection of this uid',
          willReconnect: this.reconnectOnReplaced,
          serverError: 'replaced',
        });
        if (!this.reconnectOnReplaced) {
          this.close();
          break;
        }
      } else if (end.kind === 'malformed') {
        this.emit('error', end.error);
        this.emit('disconnected', { reason: end.error.message, willReconnect: true });
      } else if (end.kind === 'failed') {
        this.emit('error', end.error);
        this.emit('disconnected', { reason: end.error.message, willReconnect: true });
      } else if (end.kind === 'server-error') {
        this.emit('error', new IpushError(0, end.reason));
        this.emit('disconnected', {
          reason: `server: ${end.reason}`,
          willReconnect: this.reconnectOnServerError,
          serverError: end.reason,
        });
        if (!this.reconnectOnServerError) {
          this.close();
          break;
        }
      } else {
        this.emit('disconnected', { reason: end.reason, willReconnect: true });
      }
      await this.sleep(backoffDelay(this.attempt++, this.baseMs, this.capMs, this.random));
    }
    if (this.hbTimer) clearInterval(this.hbTimer);
    this.hbTimer = null;
  }
}

function checkId(what: string, id: string): void {
  if (!validId(id)) throw new TypeError(`invalid ${what} ${JSON.stringify(id)}`);
}
