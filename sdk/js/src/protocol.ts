// The ipush client protocol without I/O: the message model, its JSON and MessagePack codecs,
// and incremental parsers for the three stream formats (chunked framing, a stream of
// concatenated JSON values, Server-Sent Events). Every parser takes input in arbitrary pieces.

import { decode as mpDecode, encode as mpEncode } from '@msgpack/msgpack';

/** Message types (key `y`). */
export const MessageType = {
  Heartbeat: 0,
  Subscribe: 1,
  Unsubscribe: 2,
  User: 3,
  Channel: 4,
  Ack: 5,
} as const;
export type MessageTypeCode = (typeof MessageType)[keyof typeof MessageType];

/** A protocol message, keys as on the wire: f from, t to, s seq, y type, u user, c channel, b body. */
export interface Message {
  y: MessageTypeCode;
  f?: string;
  t?: string;
  s?: number;
  u?: string;
  c?: string;
  b?: string;
}

/** The last word of a stream: `{"error":"replaced"}`, `{"error":"moved","location":...}`, ... */
export interface StreamError {
  error: string;
  location?: string;
}

/** What one server frame/chunk/event decodes to. */
export type ServerValue = { kind: 'message'; message: Message } | { kind: 'end'; end: StreamError };

export type Codec = 'json' | 'msgpack';

/** Input the client cannot accept from the server (bad framing, bad JSON or MessagePack, bad fields). */
export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProtocolError';
  }
}

const KEYS = ['f', 't', 'u', 'c', 'b'] as const;
const utf8 = new TextDecoder('utf-8', { fatal: true });
const utf8enc = new TextEncoder();

/** Checks a decoded JSON/MessagePack value and gives the message or the stream's final error. */
export function toServerValue(v: unknown): ServerValue {
  if (typeof v !== 'object' || v === null || Array.isArray(v) || v instanceof Uint8Array) {
    throw new ProtocolError(`a message must be an object, got ${describe(v)}`);
  }
  const o = v as Record<string, unknown>;
  if ('error' in o) {
    if (typeof o.error !== 'string') throw new ProtocolError('"error" must be a string');
    const end: StreamError = { error: o.error };
    if (o.location !== undefined) {
      if (typeof o.location !== 'string') throw new ProtocolError('"location" must be a string');
      end.location = o.location;
    }
    return { kind: 'end', end };
  }
  const y = o.y;
  if (typeof y !== 'number' || !Number.isInteger(y) || y < 0 || y > 5) {
    throw new ProtocolError(`"y" must be a message type 0..5, got ${describe(y)}`);
  }
  const m: Message = { y: y as MessageTypeCode };
  for (const k of KEYS) {
    const x = o[k];
    if (x === undefined) continue;
    if (x instanceof Uint8Array) {
      try {
        m[k] = utf8.decode(x);
      } catch {
        throw new ProtocolError(`"${k}" is not valid UTF-8`);
      }
    } else if (typeof x === 'string') {
      m[k] = x;
    } else {
      throw new ProtocolError(`"${k}" must be a string, got ${describe(x)}`);
    }
  }
  if (o.s !== undefined) {
    const s = typeof o.s === 'bigint' ? Number(o.s) : o.s;
    if (typeof s === 'number' && Number.isInteger(s) && s > Number.MAX_SAFE_INTEGER) {
      throw new ProtocolError(
        `seq ${String(o.s)} is above 2^53-1, the largest a JavaScript number holds exactly`,
      );
    }
    if (typeof s !== 'number' || !Number.isSafeInteger(s) || s < 0) {
      throw new ProtocolError(`"s" must be a non-negative integer, got ${describe(o.s)}`);
    }
    m.s = s;
  }
  return { kind: 'message', message: m };
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (v instanceof Uint8Array) return 'bytes';
  const t = typeof v;
  return t === 'string' ? JSON.stringify((v as string).slice(0, 40)) : t;
}

/** Decodes one JSON message (text or UTF-8 bytes). */
export function decodeJson(input: string | Uint8Array): ServerValue {
  let text: string;
  if (typeof input === 'string') {
    text = input;
  } else {
    try {
      text = utf8.decode(input);
    } catch {
      throw new ProtocolError('payload is not valid UTF-8');
    }
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new ProtocolError(`invalid JSON: ${JSON.stringify(text.slice(0, 60))}`);
  }
  return toServerValue(v);
}

/** Decodes one MessagePack message. */
export function decodeMsgpack(input: Uint8Array): ServerValue {
  let v: unknown;
  try {
    v = mpDecode(input, { useBigInt64: false });
  } catch (e) {
    throw new ProtocolError(`invalid MessagePack: ${(e as Error).message}`);
  }
  return toServerValue(v);
}

export function decode(input: string | Uint8Array, codec: Codec): ServerValue {
  if (codec === 'json') return decodeJson(input);
  return decodeMsgpack(typeof input === 'string' ? utf8enc.encode(input) : input);
}

/** Keys in the order the server writes them. */
const ORDER = ['y', 'f', 't', 'c', 'u', 'b', 's'] as const;

function ordered(m: Message): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  for (const k of ORDER) if (m[k] !== undefined) o[k] = m[k];
  return o;
}

const SHORT_ESCAPES: Record<string, string> = {
  b: '\\u0008',
  f: '\\u000c',
  n: '\\u000a',
  r: '\\u000d',
  t: '\\u0009',
};

/** JSON as the server writes it: keys `y f t c u b s`, control characters as `\u00XX`. */
export function encodeJson(m: Message): string {
  return JSON.stringify(ordered(m)).replace(
    /\\(u[0-9a-fA-F]{4}|.)/g,
    (all: string, e: string) => SHORT_ESCAPES[e] ?? all,
  );
}

export function encodeMsgpack(m: Message): Uint8Array {
  return mpEncode(ordered(m));
}

// ---- chunked framing ---------------------------------------------------------------------

const MAX_CHUNK = 16 * 1024 * 1024;

/**
 * Decodes chunked transfer coding as the raw `/connect` stream carries it after the response
 * head: `<hex len>\r\n<payload>\r\n` per message, `0\r\n\r\n` at the end. (Over `fetch` the
 * runtime strips this framing itself; this decoder serves raw sockets and the test vectors.)
 */
export class ChunkDecoder {
  private buf: Uint8Array = new Uint8Array(0);
  private done = false;

  /** True once the terminating `0\r\n\r\n` was read. */
  get ended(): boolean {
    return this.done;
  }

  /** Feeds bytes; returns every complete chunk payload. Throws ProtocolError on bad framing. */
  push(bytes: Uint8Array): Uint8Array[] {
    if (this.done) {
      if (bytes.length > 0) throw new ProtocolError('bytes after the last chunk');
      return [];
    }
    this.buf = concat(this.buf, bytes);
    const out: Uint8Array[] = [];
    for (;;) {
      const lf = indexOfCrlf(this.buf, 0);
      if (lf < 0) {
        if (this.buf.length > 64) throw new ProtocolError('chunk size line too long');
        if (this.buf.length > 0 && !isSizeLinePrefix(this.buf)) {
          throw new ProtocolError('bad chunk size');
        }
        return out;
      }
      const line = latin1(this.buf.subarray(0, lf));
      const sizeText = line.split(';', 1)[0]!.trim();
      if (!/^[0-9a-fA-F]{1,8}$/.test(sizeText)) {
        throw new ProtocolError(`bad chunk size ${JSON.stringify(line.slice(0, 20))}`);
      }
      const size = parseInt(sizeText, 16);
      if (size > MAX_CHUNK) throw new ProtocolError(`chunk of ${size} bytes is too large`);
      const start = lf + 2;
      if (size === 0) {
        // The last chunk; then (no) trailers and the final CRLF.
        if (this.buf.length < start + 2) return out;
        if (this.buf[start] !== 13 || this.buf[start + 1] !== 10) {
          throw new ProtocolError('missing CRLF after the last chunk');
        }
        this.done = true;
        if (this.buf.length > start + 2) throw new ProtocolError('bytes after the last chunk');
        this.buf = new Uint8Array(0);
        return out;
      }
      if (this.buf.length < start + size + 2) return out;
      if (this.buf[start + size] !== 13 || this.buf[start + size + 1] !== 10) {
        throw new ProtocolError('missing CRLF after a chunk');
      }
      out.push(this.buf.slice(start, start + size));
      this.buf = this.buf.subarray(start + size + 2);
    }
  }

  /** Call at the end of the input: throws unless the stream ended with its last chunk. */
  finish(): void {
    if (this.done) return;
    throw new ProtocolError(
      this.buf.length > 0
        ? 'the stream ended inside a chunk'
        : 'the stream ended without its last chunk',
    );
  }
}

function isSizeLinePrefix(b: Uint8Array): boolean {
  // Hex digits, then optionally an extension, then a possible lone CR at the end.
  let i = 0;
  while (i < b.length && isHex(b[i]!)) i++;
  if (i === b.length) return true;
  if (b[i] === 59 /* ; */ || b[i] === 32 || b[i] === 9) return i > 0;
  return b[i] === 13 && i === b.length - 1 && i > 0;
}

function isHex(c: number): boolean {
  return (c >= 48 && c <= 57) || (c >= 65 && c <= 70) || (c >= 97 && c <= 102);
}

function indexOfCrlf(b: Uint8Array, from: number): number {
  for (let i = from; i + 1 < b.length; i++) if (b[i] === 13 && b[i + 1] === 10) return i;
  return -1;
}

function latin1(b: Uint8Array): string {
  let s = '';
  for (const c of b) s += String.fromCharCode(c);
  return s;
}

export function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.length === 0) return b;
  if (b.length === 0) return a;
  const o = new Uint8Array(a.length + b.length);
  o.set(a, 0);
  o.set(b, a.length);
  return o;
}

// ---- a stream of concatenated JSON objects -----------------------------------------------

/**
 * Splits text holding JSON objects back to back (the chunked stream's payloads once `fetch`
 * has removed the chunk framing) into one string per object. Whitespace between objects is
 * skipped; anything else there is a ProtocolError.
 */
export class JsonSplitter {
  private pending = '';
  private depth = 0;
  private inString = false;
  private escaped = false;
  private readonly decoder = new TextDecoder('utf-8', { fatal: true });
  private readonly maxBytes: number;

  constructor(maxBytes = MAX_CHUNK) {
    this.maxBytes = maxBytes;
  }

  pushBytes(bytes: Uint8Array): string[] {
    let text: string;
    try {
      text = this.decoder.decode(bytes, { stream: true });
    } catch {
      throw new ProtocolError('stream is not valid UTF-8');
    }
    return this.push(text);
  }

  push(text: string): string[] {
    const out: string[] = [];
    let start = 0;
    for (let i = 0; i < text.length; i++) {
      const ch = text.charCodeAt(i);
      if (this.depth === 0 && this.pending.length === 0 && i === start) {
        if (ch === 32 || ch === 10 || ch === 13 || ch === 9) {
          start = i + 1;
          continue;
        }
        if (ch !== 123 /* { */) {
          throw new ProtocolError(
            `expected a JSON object, got ${JSON.stringify(text.slice(i, i + 20))}`,
          );
        }
      }
      if (this.inString) {
        if (this.escaped) this.escaped = false;
        else if (ch === 92 /* \ */) this.escaped = true;
        else if (ch === 34 /* " */) this.inString = false;
        continue;
      }
      if (ch === 34) this.inString = true;
      else if (ch === 123 || ch === 91) this.depth++;
      else if (ch === 125 || ch === 93) {
        this.depth--;
        if (this.depth < 0) throw new ProtocolError('unbalanced JSON');
        if (this.depth === 0) {
          out.push(this.pending + text.slice(start, i + 1));
          this.pending = '';
          start = i + 1;
        }
      }
    }
    if (start < text.length) {
      this.pending += text.slice(start);
      if (this.pending.length > this.maxBytes) throw new ProtocolError('message too large');
    }
    return out;
  }
}

// ---- Server-Sent Events ------------------------------------------------------------------

export interface SseEvent {
  /** The `id:` field of this event, or null when it had none. */
  id: string | null;
  /** The `event:` field, or null for the default "message". */
  event: string | null;
  data: string;
}

/** The text/event-stream format (HTML Living Standard §9.2.6), fed in pieces. */
export class SseParser {
  private buf = '';
  private data: string[] = [];
  private id: string | null = null;
  private event: string | null = null;
  private sawData = false;
  /** The last event ID seen on the stream (persists across events, as EventSource's does). */
  lastEventId = '';
  private readonly decoder = new TextDecoder('utf-8');

  pushBytes(bytes: Uint8Array): SseEvent[] {
    return this.push(this.decoder.decode(bytes, { stream: true }));
  }

  push(text: string): SseEvent[] {
    this.buf += text;
    const out: SseEvent[] = [];
    for (;;) {
      const m = /\r\n|\r|\n/.exec(this.buf);
      if (!m) break;
      // A lone CR at the very end may be the first half of a CRLF: wait for more.
      if (m[0] === '\r' && m.index === this.buf.length - 1) break;
      const line = this.buf.slice(0, m.index);
      this.buf = this.buf.slice(m.index + m[0].length);
      this.line(line, out);
    }
    if (this.buf.length > MAX_CHUNK) throw new ProtocolError('event stream line too long');
    return out;
  }

  private line(line: string, out: SseEvent[]): void {
    if (line === '') {
      if (this.sawData) {
        out.push({ id: this.id, event: this.event, data: this.data.join('\n') });
      }
      this.data = [];
      this.id = null;
      this.event = null;
      this.sawData = false;
      return;
    }
    if (line.startsWith(':')) return;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    switch (field) {
      case 'data':
        this.data.push(value);
        this.sawData = true;
        break;
      case 'event':
        this.event = value;
        break;
      case 'id':
        if (!value.includes('\0')) {
          this.id = value;
          this.lastEventId = value;
        }
        break;
      default:
        break; // `retry` and unknown fields: ignored
    }
  }
}

/** Backoff with full jitter: a random delay in [0, min(cap, base * 2^attempt)). */
export function backoffDelay(
  attempt: number,
  baseMs: number,
  capMs: number,
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(capMs, baseMs * Math.pow(2, Math.max(0, attempt)));
  return random() * ceiling;
}

/** The server's uid rule: 1..128 bytes, no whitespace or control characters. */
export function validId(id: string): boolean {
  if (typeof id !== 'string' || id.length === 0) return false;
  if (utf8enc.encode(id).length > 128) return false;
  return !/[\s\u0000-\u001f\u007f]/.test(id);
}
