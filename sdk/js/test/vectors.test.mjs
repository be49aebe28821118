// The shared vectors (sdk/vectors/ of the repository): every message decodes to its value and
// the encoders give the same values (and the server's exact bytes); chunked streams, SSE
// streams, WebSocket frames and error answers, first through the pure parsers (fed split at
// every byte boundary), then as bytes a fake server writes to a real Client.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import WebSocket from 'ws';
import {
  ChunkDecoder,
  Client,
  SseParser,
  ProtocolError,
  IpushError,
  decode,
  encodeJson,
  encodeMsgpack,
} from '../dist/index.js';
import { Recorder, readVector, vectorsDir } from './helpers.mjs';
import { rawServer, rawWsServer, firstClientFrame, CHUNKED_HEAD, SSE_HEAD } from './fakes.mjs';

const present = existsSync(vectorsDir());
if (!present) {
  const why = `shared vectors not found at ${vectorsDir()}`;
  if (process.env.CI) throw new Error(`${why} (CI must have them)`);
  console.log(`vectors: skipped (${why})`);
}
const vtest = present ? test : test.skip;

const hex = (h) => Uint8Array.from(Buffer.from(h, 'hex'));
const toHex = (b) => Buffer.from(b).toString('hex');
const UNSAFE = (v) => typeof v.s === 'number' && v.s > Number.MAX_SAFE_INTEGER;

/** A decoded value as the vectors write it: the message, or the {error, location} object. */
function plain(v) {
  return v.kind === 'message' ? v.message : v.end;
}

vtest('messages.json: every message decodes to its value; encoders match', () => {
  const { messages } = readVector('messages.json');
  assert.ok(messages.length >= 20);
  for (const m of messages) {
    const v = m.value;
    if (UNSAFE(v)) {
      // Above 2^53-1 a JavaScript number cannot hold the seq: a clear error, never a wrong seq.
      for (const [input, codec] of [
        [m.json_text, 'json'],
        [hex(m.msgpack_hex), 'msgpack'],
      ]) {
        assert.throws(() => decode(input, codec), /above 2\^53-1/, m.name);
      }
      continue;
    }
    assert.deepEqual(plain(decode(m.json_text, 'json')), v, `${m.name} json`);
    assert.deepEqual(plain(decode(hex(m.msgpack_hex), 'msgpack')), v, `${m.name} msgpack`);
    assert.deepEqual(plain(decode(encodeJson(v), 'json')), v, `${m.name} encodeJson`);
    assert.deepEqual(plain(decode(encodeMsgpack(v), 'msgpack')), v, `${m.name} encodeMsgpack`);
    // Same key order and smallest encodings as the server: the exact bytes.
    assert.equal(toHex(encodeMsgpack(v)), m.msgpack_hex, `${m.name} msgpack bytes`);
    if (m.direction === 'server_to_client')
      assert.equal(encodeJson(v), m.json_text, `${m.name} json bytes`);
  }
});

/** Runs a ChunkDecoder over `bytes` split at `at` (and in one piece when at is undefined). */
function chunks(bytes, at) {
  const d = new ChunkDecoder();
  const out = [];
  const parts = at === undefined ? [bytes] : [bytes.subarray(0, at), bytes.subarray(at)];
  for (const p of parts) out.push(...d.push(p));
  return { out, ended: d.ended };
}

vtest('chunked.json: streams decode, split at every byte boundary', () => {
  const { streams } = readVector('chunked.json');
  for (const s of streams) {
    const bytes = hex(s.bytes_hex);
    const step = bytes.length > 2000 ? 97 : 1;
    for (let at = 0; at <= bytes.length; at += step) {
      const { out, ended } = chunks(bytes, at);
      assert.ok(ended, `${s.name}: ends with the last chunk`);
      const values = out.map((p) => plain(decode(p, s.codec)));
      assert.deepEqual(values, s.messages, `${s.name} split at ${at}`);
    }
    const last = s.messages[s.messages.length - 1];
    if (s.end === 'error') assert.equal(last.error, s.error, s.name);
    else assert.ok(!('error' in last), s.name);
  }
});

vtest('chunked.json: every malformed input is rejected', () => {
  const { malformed } = readVector('chunked.json');
  for (const m of malformed) {
    const bytes = hex(m.bytes_hex);
    assert.throws(
      () => {
        const d = new ChunkDecoder();
        for (const p of d.push(bytes)) decode(p, 'json');
        d.finish();
      },
      ProtocolError,
      `${m.name}: ${m.why}`,
    );
  }
});

vtest('sse.json: events parse, split at every byte boundary', () => {
  const { streams } = readVector('sse.json');
  for (const s of streams) {
    for (let at = 0; at <= s.text.length; at++) {
      const p = new SseParser();
      const events = [...p.push(s.text.slice(0, at)), ...p.push(s.text.slice(at))];
      assert.deepEqual(events, s.events, `${s.name} split at ${at}`);
    }
    for (const ev of s.events) {
      const v = plain(decode(ev.data, 'json'));
      if (ev.event === 'moved') assert.equal(v.error, 'moved');
    }
  }
});

vtest('websocket.json: server payloads decode; close 1012 carries the moved JSON', () => {
  const { frames } = readVector('websocket.json');
  for (const f of frames) {
    if (f.direction === 'server_to_client' && f.fin && (f.opcode === 1 || f.opcode === 2)) {
      const v =
        f.opcode === 1 ? decode(f.payload_text, 'json') : decode(hex(f.payload_hex), 'msgpack');
      assert.ok(v.kind === 'message' || v.kind === 'end', f.name);
    }
    if (f.close_code === 1012) {
      const v = plain(decode(f.close_reason, 'json'));
      assert.equal(v.error, 'moved');
      assert.match(v.location, /^http:\/\/[^/]+\/connect\?/);
    }
  }
});

vtest('errors.json: every stream error decodes in both codecs', () => {
  const { stream } = readVector('errors.json');
  for (const e of stream) {
    const j = decode(e.json_text, 'json');
    const m = decode(hex(e.msgpack_hex), 'msgpack');
    assert.equal(j.kind, 'end', e.name);
    assert.deepEqual(m, j, e.name);
    assert.equal(j.end.error, JSON.parse(e.json_text).error);
  }
});

// ---- the same bytes from a fake server to a real Client -----------------------------------

function clientFor(url, opts = {}) {
  const c = new Client(url, 'user001', 'pw', {
    WebSocket,
    backoff: { baseMs: 2000, capMs: 2000 },
    random: () => 1,
    ...opts,
  });
  const rec = new Recorder(c);
  // The vectors' locations name a node that is not there: stop instead of following.
  c.on('moved', () => c.close());
  return { c, rec };
}

const delivered = (msgs) => msgs.filter((m) => m.y === 3 || m.y === 4).map((m) => ({ ...m }));

vtest('chunked.json streams through fetch to the Client', async () => {
  const { streams } = readVector('chunked.json');
  for (const s of streams) {
    const fake = await rawServer((sock) => {
      sock.write(CHUNKED_HEAD);
      sock.end(Buffer.from(s.bytes_hex, 'hex'));
    });
    const { c, rec } = clientFor(fake.url, { transport: 'chunked', codec: s.codec });
    try {
      await c.connect();
      const want = delivered(s.messages);
      const got = want.length ? await rec.wait('message', want.length) : [];
      assert.deepEqual(
        got.map((m) => m.raw),
        want,
        s.name,
      );
      if (s.error === 'replaced') await rec.wait('replaced');
      else if (s.error === 'moved') await rec.wait('moved');
      else if (s.error) {
        const [e] = await rec.wait('error');
        assert.equal(e.reason, s.error, s.name);
      } else await rec.wait('disconnected');
    } finally {
      c.close();
      await fake.close();
    }
  }
});

vtest('chunked.json malformed streams: an error, then a reconnect', async () => {
  const { malformed } = readVector('chunked.json');
  for (const m of malformed) {
    const fake = await rawServer((sock, _h, n) => {
      sock.write(CHUNKED_HEAD);
      if (n === 0) sock.end(Buffer.from(m.bytes_hex, 'hex'));
    });
    const { c, rec } = clientFor(fake.url, {
      transport: 'chunked',
      backoff: { baseMs: 10, capMs: 10 },
    });
    try {
      await c.connect();
      await rec.wait('error', 1, 5000);
      await rec.wait('connected', 2, 5000);
      assert.equal(rec.messages().length, 0, m.name);
    } catch (e) {
      throw new Error(`${m.name}: ${e.message}`);
    } finally {
      c.close();
      await fake.close();
    }
  }
});

vtest('sse.json streams through fetch to the Client', async () => {
  const { streams } = readVector('sse.json');
  for (const s of streams) {
    const fake = await rawServer((sock) => {
      sock.write(SSE_HEAD);
      sock.end(s.text);
    });
    const { c, rec } = clientFor(fake.url, { transport: 'sse' });
    try {
      await c.connect();
      const want = delivered(
        s.events.filter((e) => e.event !== 'moved').map((e) => plain(decode(e.data, 'json'))),
      );
      const got = want.length ? await rec.wait('message', want.length) : [];
      assert.deepEqual(
        got.map((m) => m.raw),
        want,
        s.name,
      );
      if (s.name === 'moved') await rec.wait('moved');
      else if (s.text.includes('"replaced"')) await rec.wait('replaced');
      else await rec.wait('disconnected');
    } finally {
      c.close();
      await fake.close();
    }
  }
});

vtest('websocket.json server frames through a raw socket to the Client', async () => {
  const { frames } = readVector('websocket.json');
  for (const f of frames.filter((x) => x.direction === 'server_to_client')) {
    const fake = await rawWsServer((sock) => sock.write(Buffer.from(f.hex, 'hex')));
    const { c, rec } = clientFor(fake.url, { transport: 'websocket' });
    try {
      await c.connect();
      if (f.opcode === 1 || f.opcode === 2) {
        const v =
          f.opcode === 1
            ? plain(decode(f.payload_text, 'json'))
            : plain(decode(hex(f.payload_hex), 'msgpack'));
        if (v.y === 3 || v.y === 4) {
          const [m] = await rec.wait('message');
          assert.deepEqual(m.raw, v, f.name);
        } else if (v.error === 'replaced') await rec.wait('replaced');
        else if (v.error) assert.equal((await rec.wait('error'))[0].reason, v.error, f.name);
      } else if (f.close_code === 1012) {
        const [mv] = await rec.wait('moved');
        assert.equal(mv.location, JSON.parse(f.close_reason).location);
      } else if (f.opcode === 8) {
        const [d] = await rec.wait('disconnected');
        assert.match(d.reason, new RegExp(`code ${f.close_code}`), f.name);
      } else {
        // pong: nothing for the application, the stream stays open
        await new Promise((r) => setTimeout(r, 50));
        assert.equal(rec.all('disconnected').length, 0, f.name);
      }
    } catch (e) {
      throw new Error(`${f.name}: ${e.message}`);
    } finally {
      c.close();
      await fake.close();
    }
  }
});

vtest(
  'websocket.json malformed server frames: the client closes with the expected code, reports an error and reconnects',
  async () => {
    const { malformed } = readVector('websocket.json');
    for (const m of malformed) {
      let closeCode = null;
      const fake = await rawWsServer((sock, n) => {
        if (n !== 0) return;
        firstClientFrame(sock)
          .then((fr) => {
            if (fr.opcode === 8 && fr.payload.length >= 2) closeCode = fr.payload.readUInt16BE(0);
          })
          .catch(() => {})
          .finally(() => sock.destroy());
        sock.write(Buffer.from(m.hex, 'hex'));
      });
      const { c, rec } = clientFor(fake.url, {
        transport: 'websocket',
        backoff: { baseMs: 10, capMs: 10 },
      });
      try {
        await c.connect();
        await rec.wait('error', 1, 5000);
        await rec.wait('connected', 2, 5000);
        assert.equal(closeCode, m.expect_close_code, `${m.name}: ${m.why}`);
        assert.equal(rec.messages().length, 0);
      } catch (e) {
        throw new Error(`${m.name}: ${e.message}`);
      } finally {
        c.close();
        await fake.close();
      }
    }
  },
);

vtest(
  'errors.json HTTP answers to /connect: typed errors, 400 stops, 303 is followed',
  async () => {
    const { http } = readVector('errors.json');
    const connects = http.filter((h) => h.request.startsWith('GET /connect') && h.status !== 200);
    assert.ok(connects.length >= 5);
    for (const h of connects) {
      let fakeUrl = '';
      const fake = await rawServer((sock, _head, n) => {
        if (h.status === 303 && n > 0) {
          sock.write(CHUNKED_HEAD); // where the redirect pointed: a stream
          return;
        }
        // The vector's Location names another node; here it points back at this fake.
        const extra =
          h.status === 303 ? `Location: ${fakeUrl}/connect?uid=user001&password=pw\r\n` : '';
        sock.end(
          `HTTP/1.1 ${h.status} X\r\n${extra}Content-Type: text/json\r\nContent-Length: ${Buffer.byteLength(h.body_text)}\r\nConnection: close\r\n\r\n${h.body_text}`,
        );
      });
      fakeUrl = fake.url;
      if (h.status === 303) assert.match(h.location, /^http:\/\/[^/]+\/connect\?/);
      const { c, rec } = clientFor(fake.url, { transport: 'chunked' });
      try {
        if (h.status === 303) {
          await c.connect();
          const [conn] = await rec.wait('connected');
          assert.equal(conn.node, fake.url);
          assert.equal(fake.requests(), 2, 'followed the Location');
          continue;
        }
        void c.connect();
        const [e] = await rec.wait('error');
        assert.ok(e instanceof IpushError, h.name);
        assert.equal(e.status, h.status, h.name);
        assert.equal(e.reason, JSON.parse(h.body_text).error, h.name);
        if (h.status === 400) {
          await rec.wait('disconnected');
          assert.equal(c.state, 'closed', `${h.name}: a 400 is not retried`);
        }
      } finally {
        c.close();
        await fake.close();
      }
    }
  },
);
