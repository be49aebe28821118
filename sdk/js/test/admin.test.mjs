// The admin client: every call against a real server, and the typed error.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { AdminClient, IpushError } from '../dist/index.js';
import { Server, uniq } from './helpers.mjs';

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
