// The admin client: every call against a real server, and the typed error.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { AdminClient, Client, IpushError } from '../dist/index.js';
import { Server, Recorder, uniq } from './helpers.mjs';

let server;
let admin;
before(async () => {
  server = await Server.start();
  admin = new AdminClient(server.admin);
});
after(async () => server?.destroy());

test('publish, publishChannel, sub, unsub, msg, shard, stats, health, disconnect', async () => {
  const uid = uniq('adm');
  const cid = uniq('ch');
  assert.equal(await admin.publish(uid, 'op', 'one', { ttl: 3600, idempotencyKey: 'k1' }), 'ok');
  assert.equal(await admin.sub(uid, cid), 'ok');
  assert.equal(await admin.publishChannel(cid, 'op', 'two', { idempotencyKey: 'k2' }), 'ok');
  assert.equal(await admin.unsub(uid, cid), 'ok');
  assert.equal(await admin.publishChannel(cid, 'op', 'three'), 'ok');
  assert.equal(await admin.publish(uid, 'op', 'gone', { ttl: 0 }), 'ok');
  const msgs = await admin.msg(uid);
  assert.deepEqual(msgs, [
    { y: 3, f: 'op', t: uid, b: 'one', s: 1 },
    { y: 4, f: 'op', t: uid, c: cid, b: 'two', s: 2 },
  ]);
  assert.equal(await admin.shard(uid), `127.0.0.1:${server.ports.client}`);
  const stats = await admin.stats();
  assert.ok(stats.request.Pub >= 4, JSON.stringify(stats.request));
  assert.ok('throughput' in stats && 'user' in stats);
  const health = await admin.health();
  assert.equal(health.status, 'ok');
  assert.equal(health.cores, 2);
  await assert.rejects(admin.disconnect(uid), (e) => e instanceof IpushError && e.status === 404);
});

test('errors carry status and reason', async () => {
  await assert.rejects(admin.publish('bad uid', 'op', 'x'), (e) => {
    assert.ok(e instanceof IpushError);
    assert.equal(e.status, 400);
    assert.equal(e.reason, 'invalid to');
    return true;
  });
  await assert.rejects(admin.msg(''), (e) => e instanceof IpushError && e.status === 400);
  await assert.rejects(admin.publish('u', 'op', 'x', { ttl: -1 }), TypeError);
  assert.throws(() => new AdminClient('not a url'), TypeError);
  // Nothing listening: a status-0 IpushError, not a hang.
  const dead = new AdminClient('http://127.0.0.1:1', { timeoutMs: 2000 });
  await assert.rejects(dead.health(), (e) => e instanceof IpushError && e.status === 0);
});

// Connects `uid` over WebSocket; resolves to its Recorder once the stream is open.
async function listen(uid, clients) {
  const c = new Client(server.client, uid, 'pw', { WebSocket });
  clients.push(c);
  const rec = new Recorder(c);
  await c.connect();
  return rec;
}

test('publishBatch: users, a channel and a bad item answer in order and arrive in order', async () => {
  const clients = [];
  try {
    const [a, b, cid] = [uniq('ba'), uniq('bb'), uniq('bc')];
    assert.equal(await admin.sub(a, cid), 'ok');
    const recA = await listen(a, clients);
    const recB = await listen(b, clients);
    const results = await admin.publishBatch([
      { to: a, from: 'op', body: 'one' },
      { to: b, from: 'op', body: 'for b', ttl: 60 },
      { channel: cid, from: 'op', body: 'two' },
      { to: 'bad uid', from: 'op', body: 'x' },
      { to: a, from: 'op', body: 'three', idempotencyKey: 'batch:1' },
    ]);
    assert.equal(results.length, 5);
    assert.deepEqual(
      results.map((r) => r.ok),
      [true, true, true, false, true],
    );
    assert.equal(results[0].result, 'ok');
    assert.ok(results[3].error instanceof IpushError);
    assert.deepEqual([results[3].error.status, results[3].error.reason], [400, 'invalid to']);
    const got = await recA.wait('message', 3);
    assert.deepEqual(
      got.map((m) => [m.body, m.type, m.seq]),
      [
        ['one', 'user', 1],
        ['two', 'channel', 2],
        ['three', 'user', 3],
      ],
    );
    assert.deepEqual(
      (await recB.wait('message', 1)).map((m) => m.body),
      ['for b'],
    );
  } finally {
    for (const c of clients) c.close();
  }
});

test('publishBatch splits a long list into requests of maxBatchLines, in order', async () => {
  const requests = [];
  const counting = (url, init) => {
    if (String(url).includes('/pub/batch')) requests.push(init.body.split('\n').length - 1);
    return fetch(url, init);
  };
  const small = new AdminClient(server.admin, { fetch: counting, maxBatchLines: 3 });
  const uid = uniq('bs');
  const clients = [];
  try {
    const rec = await listen(uid, clients);
    const bodies = Array.from({ length: 8 }, (_, i) => `m${i}`);
    const results = await small.publishBatch(bodies.map((body) => ({ to: uid, from: 'op', body })));
    assert.deepEqual(requests, [3, 3, 2]);
    assert.deepEqual(
      results.map((r) => r.ok && r.result),
      bodies.map(() => 'ok'),
    );
    const got = await rec.wait('message', 8);
    assert.deepEqual(
      got.map((m) => [m.body, m.seq]),
      bodies.map((b, i) => [b, i + 1]),
    );
  } finally {
    for (const c of clients) c.close();
  }
  assert.deepEqual(await small.publishBatch([]), []);
  assert.equal(requests.length, 3, 'an empty list makes no request');
  // A byte limit splits as well: each line is about 40 bytes, so 2 + 2 + 1 lines.
  requests.length = 0;
  const bytes = new AdminClient(server.admin, { fetch: counting, maxBatchBytes: 100 });
  const five = Array.from({ length: 5 }, (_, i) => ({ to: uniq('bb'), from: 'op', body: `b${i}` }));
  assert.ok((await bytes.publishBatch(five)).every((r) => r.ok));
  assert.deepEqual(requests, [2, 2, 1]);
});

test('publishBatch passes idempotency_key and checks items before sending', async () => {
  const uid = uniq('bk');
  const results = await admin.publishBatch([
    { to: uid, from: 'op', body: 'keyed', idempotencyKey: 'order-17:a' },
    // The server checks the key it is given (1-128 of A-Z a-z 0-9 _ . : -): proof it is sent.
    { to: uid, from: 'op', body: 'bad key', idempotencyKey: 'not a key' },
  ]);
  assert.deepEqual(results[0], { ok: true, result: 'ok' });
  assert.equal(results[1].ok, false);
  assert.equal(results[1].error.status, 400);
  assert.match(results[1].error.reason, /^invalid idempotency_key/);
  await assert.rejects(
    admin.publishBatch([
      { to: uid, from: 'op', body: 'never sent' },
      { to: uid, from: 'op', body: 'x', ttl: -1 },
    ]),
    TypeError,
  );
  await assert.rejects(admin.publishBatch([{ from: 'op', body: 'x' }]), TypeError);
  assert.deepEqual(
    (await admin.msg(uid)).map((m) => m.b),
    ['keyed'],
  );
  // A request that fails as a whole: each item gets its error.
  const dead = new AdminClient('http://127.0.0.1:1', { timeoutMs: 2000, maxBatchLines: 1 });
  const down = await dead.publishBatch([
    { to: uid, from: 'op', body: 'a' },
    { to: uid, from: 'op', body: 'b' },
  ]);
  assert.deepEqual(
    down.map((r) => !r.ok && r.error.status),
    [0, 0],
  );
});
