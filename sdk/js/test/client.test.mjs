// The client against a real ipush_server: receive on each transport, codecs, ack, send,
// subscribe, replaced.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { Client, AdminClient } from '../dist/index.js';
import { Server, Recorder, waitFor, uniq } from './helpers.mjs';

let server;
let admin;
const clients = [];

before(async () => {
  server = await Server.start();
  admin = new AdminClient(server.admin);
});

after(async () => {
  for (const c of clients) c.close();
  await server?.destroy();
});

function client(uid, opts = {}) {
  const c = new Client(server.client, uid, 'pw', {
    WebSocket,
    backoff: { baseMs: 50, capMs: 500 },
    ...opts,
  });
  clients.push(c);
  return { c, rec: new Recorder(c) };
}

for (const [transport, codec] of [
  ['websocket', 'json'],
  ['websocket', 'msgpack'],
  ['sse', 'json'],
  ['chunked', 'json'],
  ['chunked', 'msgpack'],
]) {
  test(`receive over ${transport} (${codec}): offline then live, in order, acked`, async () => {
    const uid = uniq(`r${transport}${codec}`);
    const bodies = ['offline "quoted" \\ é 🎉', '', 'x'.repeat(300)];
    for (const b of bodies) await admin.publish(uid, 'op', b);
    const { c, rec } = client(uid, { transport, codec, autoAck: { delayMs: 20 } });
    await c.connect();
    const [conn] = await rec.wait('connected');
    assert.equal(conn.transport, transport);
    assert.equal(conn.node, server.client);
    await rec.wait('message', 3);
    await admin.publish(uid, 'op2', 'live one');
    await admin.publish(uid, 'op2', 'not stored', { ttl: 0 });
    const msgs = await rec.wait('message', 5);
    assert.deepEqual(
      msgs.map((m) => m.body),
      [...bodies, 'live one', 'not stored'],
    );
    assert.deepEqual(
      msgs.map((m) => m.seq),
      [1, 2, 3, 4, undefined],
    );
    assert.equal(msgs[3].from, 'op2');
    assert.equal(msgs[3].to, uid);
    assert.equal(msgs[3].type, 'user');
    // Batched auto-ack: /msg ends up empty.
    await waitFor('acks to reach the server', async () => (await admin.msg(uid)).length === 0);
    assert.equal(c.lastAck, 4);
    assert.equal(c.lastSeq, 4);
    assert.deepEqual(rec.all('error'), []);
    c.close();
    const [d] = await rec.wait('disconnected');
    assert.equal(d.willReconnect, false);
  });
}

test('manual ack: only what is acked leaves /msg', async () => {
  const uid = uniq('ack');
  const { c, rec } = client(uid, { transport: 'websocket', autoAck: false });
  await c.connect();
  for (let i = 1; i <= 4; i++) await admin.publish(uid, 'op', `m${i}`);
  await rec.wait('message', 4);
  assert.equal((await admin.msg(uid)).length, 4);
  await c.ack(2);
  await waitFor('ack 2', async () => (await admin.msg(uid)).map((m) => m.s).join() === '3,4');
  await c.ack(4);
  await waitFor('ack 4', async () => (await admin.msg(uid)).length === 0);
  await assert.rejects(c.ack(-1), TypeError);
});

test('subscribe, send to a channel and to a user, unsubscribe (ws and sse through /send)', async () => {
  const cid = uniq('room');
  const a = client(uniq('cha'), { transport: 'websocket' });
  const b = client(uniq('chb'), { transport: 'sse' });
  await a.c.connect();
  await b.c.connect();
  await a.c.subscribe(cid);
  await b.c.subscribe(cid);
  // a's subscribe went on its socket: wait until the server has it before b publishes.
  await waitFor('a subscribed', async () => {
    await admin.publishChannel(cid, 'probe', 'probe', { ttl: 0 });
    return a.rec.messages().some((m) => m.body === 'probe');
  });
  await b.c.sendToChannel(cid, 'hello room');
  const [ma] = await a.rec.wait('message', 1, 10000, (m) => m.body === 'hello room');
  assert.equal(ma.type, 'channel');
  assert.equal(ma.channel, cid);
  assert.equal(ma.from, b.c.uid);
  await b.rec.wait('message', 1, 10000, (m) => m.body === 'hello room');
  await a.c.sendToUser(b.c.uid, 'direct');
  const [mb] = await b.rec.wait('message', 1, 10000, (m) => m.body === 'direct');
  assert.equal(mb.from, a.c.uid);
  assert.equal(mb.type, 'user');
  await b.c.unsubscribe(cid);
  await a.c.sendToChannel(cid, 'after unsub');
  await a.rec.wait('message', 1, 10000, (m) => m.body === 'after unsub');
  await b.c.sendToUser(b.c.uid, 'marker');
  await b.rec.wait('message', 1, 10000, (m) => m.body === 'marker');
  assert.ok(!b.rec.messages().some((m) => m.body === 'after unsub'), 'b left the channel');
  assert.throws(() => a.c.subscribe('bad id'), TypeError);
});

test('heartbeats keep an idle stream open and are answered', async () => {
  const uid = uniq('hb');
  const { c, rec } = client(uid, { transport: 'websocket', heartbeatIntervalMs: 300 });
  await c.connect();
  await new Promise((r) => setTimeout(r, 1500)); // several heartbeat periods, none dead
  assert.equal(rec.all('disconnected').length, 0, JSON.stringify(rec.events));
  await admin.publish(uid, 'op', 'still here');
  await rec.wait('message');
});

test('replaced: a second connection of the uid ends the first, which does not fight back', async () => {
  const uid = uniq('rep');
  const first = client(uid, { transport: 'chunked' });
  await first.c.connect();
  const second = client(uid, { transport: 'websocket' });
  await second.c.connect();
  await first.rec.wait('replaced');
  const [d] = await first.rec.wait('disconnected');
  assert.equal(d.willReconnect, false);
  assert.equal(first.c.state, 'closed');
  await admin.publish(uid, 'op', 'to the second');
  await second.rec.wait('message');
  assert.equal(second.rec.all('replaced').length, 0);
});

test('a JWT-style credentials callback is called before every connect', async () => {
  const uid = uniq('cb');
  let calls = 0;
  const { c, rec } = client(uid, { transport: 'websocket' });
  c.close();
  const c2 = new Client(server.client, uid, async () => `token${++calls}`, {
    WebSocket,
    backoff: { baseMs: 20, capMs: 100 },
  });
  clients.push(c2);
  const rec2 = new Recorder(c2);
  await c2.connect();
  assert.equal(calls, 1);
  await admin.disconnect(uid);
  await rec2.wait('connected', 2);
  assert.ok(calls >= 2, `called ${calls} times`);
  assert.equal(rec.all('message').length, 0);
});

test('bad options are clear errors', () => {
  assert.throws(() => new Client('ftp://x', 'u', 'p'), /http/);
  assert.throws(() => new Client(server.client, 'has space', 'p'), /invalid uid/);
  assert.throws(() => new Client(server.client, 'u', ''), /empty password/);
  assert.throws(
    () => new Client(server.client, 'u', 'p', { transport: 'sse', codec: 'msgpack' }),
    /msgpack is not available over SSE/,
  );
  assert.throws(
    () => new Client(server.client, 'u', 'p', { transport: 'websocket' }),
    /no WebSocket here/,
  );
  assert.throws(
    () => new Client(server.client, 'u', 'p', { transport: 'carrier-pigeon' }),
    /unknown/,
  );
});

test('falls back from WebSocket to SSE when the upgrade fails', async () => {
  const uid = uniq('fb');
  // A WebSocket that can never open (connection refused on port 1).
  class Broken extends WebSocket {
    constructor() {
      super('ws://127.0.0.1:1/');
    }
  }
  const { c, rec } = client(uid, { WebSocket: Broken, transport: ['websocket', 'sse', 'chunked'] });
  await c.connect();
  const [conn] = await rec.wait('connected');
  assert.equal(conn.transport, 'sse');
  await admin.publish(uid, 'op', 'via sse');
  await rec.wait('message');
});
