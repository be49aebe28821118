// Pure parts: the JSON stream splitter (fed at every split point, multibyte UTF-8 included),
// the SSE parser's line endings, backoff with full jitter, uid validation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  JsonSplitter,
  SseParser,
  ChunkDecoder,
  ProtocolError,
  backoffDelay,
  validId,
} from '../dist/index.js';

test('JsonSplitter: objects back to back, split at every byte', () => {
  const objs = ['{"y":3,"b":"a}b{c\\"}","s":1}', '{"y":0}', '{"y":4,"c":"é😀","b":"[]","s":2}'];
  const bytes = Buffer.from(objs.join('') + '\n');
  for (let at = 0; at <= bytes.length; at++) {
    const s = new JsonSplitter();
    const out = [...s.pushBytes(bytes.subarray(0, at)), ...s.pushBytes(bytes.subarray(at))];
    assert.deepEqual(out, objs, `split at ${at}`);
  }
  assert.throws(() => new JsonSplitter().push('[1]'), ProtocolError);
  assert.throws(() => new JsonSplitter().push('{"y":0}}'), ProtocolError);
  assert.throws(() => new JsonSplitter().pushBytes(Uint8Array.of(0x7b, 0xff)), ProtocolError);
});

test('SseParser: CRLF, CR and LF line endings; comments; multi-line data; id persists', () => {
  const text = ': hi\r\nid: 7\r\ndata: a\r\ndata: b\r\n\r\nevent: moved\rdata: x\r\rdata: y\n\n';
  for (let at = 0; at <= text.length; at++) {
    const p = new SseParser();
    const ev = [...p.push(text.slice(0, at)), ...p.push(text.slice(at))];
    assert.deepEqual(
      ev,
      [
        { id: '7', event: null, data: 'a\nb' },
        { id: null, event: 'moved', data: 'x' },
        { id: null, event: null, data: 'y' },
      ],
      `split at ${at}`,
    );
    assert.equal(p.lastEventId, '7');
  }
});

test('ChunkDecoder: a stream split at every byte; bytes after the end are an error', () => {
  const bytes = Buffer.from('7\r\n{"y":0}\r\n2;ext=1\r\n{}\r\n0\r\n\r\n');
  for (let at = 0; at <= bytes.length; at++) {
    const d = new ChunkDecoder();
    const out = [...d.push(bytes.subarray(0, at)), ...d.push(bytes.subarray(at))];
    assert.deepEqual(
      out.map((b) => Buffer.from(b).toString()),
      ['{"y":0}', '{}'],
    );
    assert.ok(d.ended);
    d.finish();
  }
  const d = new ChunkDecoder();
  d.push(Buffer.from('0\r\n\r\n'));
  assert.throws(() => d.push(Buffer.from('x')), ProtocolError);
  assert.throws(() => new ChunkDecoder().push(Buffer.from('g')), ProtocolError);
});

test('backoff: full jitter within [0, min(cap, base*2^attempt))', () => {
  assert.equal(
    backoffDelay(0, 500, 30000, () => 0),
    0,
  );
  assert.equal(backoffDelay(0, 500, 30000, () => 0.999999) < 500, true);
  assert.equal(
    backoffDelay(3, 500, 30000, () => 0.5),
    2000,
  );
  assert.equal(
    backoffDelay(20, 500, 30000, () => 0.5),
    15000,
  );
  for (let a = 0; a < 12; a++) {
    for (let i = 0; i < 50; i++) {
      const d = backoffDelay(a, 500, 30000);
      assert.ok(d >= 0 && d < Math.min(30000, 500 * 2 ** a));
    }
  }
});

test('validId follows the server rule', () => {
  assert.ok(validId('user001'));
  assert.ok(validId('é'.repeat(64)));
  assert.ok(!validId('é'.repeat(65)));
  assert.ok(!validId(''));
  assert.ok(!validId('a b'));
  assert.ok(!validId('a\u0001'));
});
