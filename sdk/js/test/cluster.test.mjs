// A 2-node static cluster: a client given node n1 for a uid owned by n2 follows the 303.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { Client, AdminClient } from '../dist/index.js';
import { Server, Recorder, freePort, uniq, waitFor } from './helpers.mjs';

let n1;
let n2;

before(async () => {
  for (let tries = 0; ; tries++) {
    const p = [];
    for (let i = 0; i < 6; i++) p.push(await freePort());
    const nodes = `n1=127.0.0.1:${p[0]}:${p[1]}:${p[2]},n2=127.0.0.1:${p[3]}:${p[4]}:${p[5]}`;
    try {
      n1 = await Server.start({
        ports: { client: p[0], admin: p[1], bus: p[2] },
        nodeArgs: ['--node=n1', `--nodes=${nodes}`],
      });
      n2 = await Server.start({
        ports: { client: p[3], admin: p[4], bus: p[5] },
        nodeArgs: ['--node=n2', `--nodes=${nodes}`],
      });
      // Both see each other on the bus before the tests route through it.
      for (const [n, peer] of [
        [n1, 'n2'],
        [n2, 'n1'],
      ]) {
        const a = new AdminClient(n.admin);
        await waitFor(
          `${peer} up`,
          async () => {
            const peers = (await a.health()).peers ?? {};
            return JSON.stringify(peers[peer] ?? '').includes('up');
          },
          15000,
          50,
        );
      }
      return;
    } catch (e) {
      await n1?.destroy();
      await n2?.destroy();
      if (tries >= 3) throw e;
    }
  }
});

after(async () => {
  await n1?.destroy();
  await n2?.destroy();
});

async function uidOwnedByN2(admin) {
  const want = `127.0.0.1:${n2.ports.client}`;
  for (let i = 0; i < 200; i++) {
    const uid = uniq('own');
    if ((await admin.shard(uid)) === want) return uid;
  }
  throw new Error('no uid owned by n2 in 200 tries');
}

for (const [transport, codec] of [
  ['websocket', 'json'],
  ['websocket', 'msgpack'],
  ['sse', 'json'],
  ['chunked', 'msgpack'],
]) {
  test(`follows 303 from n1 to n2 over ${transport} (${codec})`, async () => {
    const admin = new AdminClient(n1.admin);
    const uid = await uidOwnedByN2(admin);
    const c = new Client(n1.client, uid, 'pw', { WebSocket, transport, codec });
    const rec = new Recorder(c);
    try {
      await c.connect();
      const [conn] = await rec.wait('connected');
      assert.equal(conn.node, n2.client, 'connected to the owner');
      assert.equal(conn.transport, transport);
      assert.equal(c.nodeUrl, n2.client);
      await admin.publish(uid, 'op', `through n1 ${transport}`);
      const [m] = await rec.wait('message');
      assert.equal(m.body, `through n1 ${transport}`);
      // Sending from the client works too (on the socket, or POST /send to n2).
      await c.sendToUser(uid, 'to myself');
      await rec.wait('message', 2);
    } finally {
      c.close();
    }
  });
}

for (const [transport, codec] of [
  ['websocket', 'json'],
  ['websocket', 'msgpack'],
  ['sse', 'json'],
  ['chunked', 'msgpack'],
]) {
  test(`moved over ${transport} (${codec}): reconnects to the location at once, resumes once`, async () => {
    const admin = new AdminClient(n1.admin);
    const uid = await uidOwnedByN2(admin);
    // A long backoff: only the move's immediate reconnect can make this test pass in time.
    const c = new Client(n1.client, uid, 'pw', {
      WebSocket,
      transport,
      codec,
      backoff: { baseMs: 60000, capMs: 60000 },
    });
    const rec = new Recorder(c);
    try {
      await c.connect();
      await admin.publish(uid, 'op', 'before the move');
      await rec.wait('message');
      // n2 (asked through n1) tells the stream to go to n1, which sends it back to n2 (its
      // owner): the client follows the location, then the 303, and resumes from its last ack.
      await admin.disconnect(uid, n1.client);
      await admin.publish(uid, 'op', 'after the move');
      const [moved] = await rec.wait('moved');
      assert.equal(moved.location, `${n1.client}/connect?uid=${uid}`);
      await rec.wait('message', 2);
      await rec.wait('connected', 2);
      await admin.publish(uid, 'op', 'live again');
      await rec.wait('message', 3);
      const bodies = rec.messages().map((m) => m.body);
      assert.deepEqual(bodies, ['before the move', 'after the move', 'live again']);
      const seqs = rec.messages().map((m) => m.seq);
      assert.deepEqual(seqs, [1, 2, 3], 'no gap, no duplicate');
      const conns = rec.all('connected');
      assert.equal(conns[1].node, n2.client, 'back on the owner');
      assert.equal(conns[1].transport, transport);
    } finally {
      c.close();
    }
  });
}
