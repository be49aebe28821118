// Resume across a server restart (SIGTERM, embedded store): messages delivered before, published
// while the client is away, and after it is back reach the application exactly once, in order.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { Client, AdminClient } from '../dist/index.js';
import { Server, Recorder, waitFor, uniq } from './helpers.mjs';

for (const transport of ['websocket', 'sse', 'chunked']) {
  test(`resume over ${transport} after the server restarts`, async () => {
    const server = await Server.start({ args: ['--storage=embedded'] });
    let c;
    try {
      const admin = new AdminClient(server.admin);
      const uid = uniq(`res${transport}`);
      // The credentials callback runs before every connect: the test holds it shut while the
      // server is down so that messages are published while the client is surely away.
      let gate = null;
      c = new Client(
        server.client,
        uid,
        async () => {
          if (gate) await gate.promise;
          return 'pw';
        },
        {
          WebSocket,
          transport,
          autoAck: false,
          backoff: { baseMs: 50, capMs: 200 },
        },
      );
      const rec = new Recorder(c);
      await c.connect();
      for (let i = 1; i <= 3; i++) await admin.publish(uid, 'op', `m${i}`);
      await rec.wait('message', 3);
      for (let i = 4; i <= 5; i++) await admin.publish(uid, 'op', `m${i}`);
      let open;
      gate = { promise: new Promise((r) => (open = r)) };
      await server.restart();
      await rec.wait('disconnected');
      for (let i = 6; i <= 8; i++) await admin.publish(uid, 'op', `m${i}`);
      assert.equal(rec.all('connected').length, 1, 'still away while 6..8 were published');
      gate = null;
      open();
      await rec.wait('connected', 2, 15000);
      for (let i = 9; i <= 10; i++) await admin.publish(uid, 'op', `m${i}`);
      const msgs = await rec.wait('message', 10, 15000);
      await new Promise((r) => setTimeout(r, 200)); // room for a wrongly repeated delivery
      assert.deepEqual(
        rec.messages().map((m) => m.body),
        Array.from({ length: 10 }, (_, i) => `m${i + 1}`),
      );
      assert.deepEqual(
        msgs.map((m) => m.seq),
        [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
      );
      await c.ack(c.lastSeq);
      await waitFor('/msg empty after the ack', async () => (await admin.msg(uid)).length === 0);
    } finally {
      c?.close();
      await server.destroy();
    }
  });
}
