// --auth=jwt: the credentials callback runs before every connect, so an expired token is
// replaced by a fresh one on the next attempt (and POST /send refreshes once on a 401).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import WebSocket from 'ws';
import { Client, AdminClient, IpushError } from '../dist/index.js';
import { Server, Recorder, uniq } from './helpers.mjs';

const SECRET = 'sdk-js-test-secret';
let server;
before(
  async () => (server = await Server.start({ args: ['--auth=jwt', `--auth_secret=${SECRET}`] })),
);
after(async () => server?.destroy());

const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
function jwt(sub, expInSeconds) {
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, exp: Math.floor(Date.now() / 1000) + expInSeconds })}`;
  return `${body}.${createHmac('sha256', SECRET).update(body).digest('base64url')}`;
}

for (const transport of ['websocket', 'sse']) {
  test(`an expired token is refreshed through the callback (${transport})`, async () => {
    const uid = uniq('jwt');
    let calls = 0;
    const c = new Client(
      server.client,
      uid,
      () => (++calls === 1 ? jwt(uid, -60) : jwt(uid, 600)),
      {
        WebSocket,
        transport,
        backoff: { baseMs: 20, capMs: 100 },
      },
    );
    const rec = new Recorder(c);
    try {
      await c.connect();
      assert.ok(calls >= 2, `callback called ${calls} times`);
      if (transport === 'sse') {
        const [e] = await rec.wait('error');
        assert.ok(e instanceof IpushError && e.status === 401, String(e));
      }
      await new AdminClient(server.admin).publish(uid, 'op', 'with a fresh token');
      const [m] = await rec.wait('message');
      assert.equal(m.body, 'with a fresh token');
      await c.sendToUser(uid, 'sent with the token');
      await rec.wait('message', 2);
    } finally {
      c.close();
    }
  });
}
