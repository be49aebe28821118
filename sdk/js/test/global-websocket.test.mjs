// With a global WebSocket (browsers; Node 22+; Node 20 with --experimental-websocket) the
// client needs no injected constructor: a child node process with that flag receives over it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Server, uniq } from './helpers.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const DIST = pathToFileURL(path.join(HERE, '../dist/index.js')).href;
let server;
before(async () => (server = await Server.start()));
after(async () => server?.destroy());

const CHILD = `
import { Client, AdminClient } from ${JSON.stringify(DIST)};
const { CLIENT, ADMIN, UID, CODEC } = process.env;
if (typeof WebSocket !== 'function') throw new Error('no global WebSocket');
const c = new Client(CLIENT, UID, 'pw', { transport: 'websocket', codec: CODEC });
const got = new Promise((resolve) => c.on('message', resolve));
const conn = new Promise((resolve) => c.on('connected', resolve));
await c.connect();
await new AdminClient(ADMIN).publish(UID, 'op', 'über global');
const m = await got;
console.log(JSON.stringify({ transport: (await conn).transport, body: m.body, seq: m.seq }));
c.close();
`;

for (const codec of ['json', 'msgpack']) {
  test(`the global WebSocket of node --experimental-websocket (${codec})`, async () => {
    const uid = uniq('glob');
    const out = await new Promise((resolve, reject) => {
      execFile(
        process.execPath,
        ['--experimental-websocket', '--no-warnings', '--input-type=module', '-e', CHILD],
        {
          env: {
            ...process.env,
            CLIENT: server.client,
            ADMIN: server.admin,
            UID: uid,
            CODEC: codec,
          },
          timeout: 20000,
        },
        (err, stdout, stderr) =>
          err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout),
      );
    });
    assert.deepEqual(JSON.parse(out.trim()), {
      transport: 'websocket',
      body: 'über global',
      seq: 1,
    });
  });
}
