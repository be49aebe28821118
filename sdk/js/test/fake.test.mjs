// Tiny fake servers in the test: malformed frames and chunks (the client reports an error and
// reconnects), the `moved` signal on every transport (reconnect to the location at once), and
// a silent connection (dead after 3x the heartbeat interval).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { encode } from '@msgpack/msgpack';
import { Client, AdminClient, ProtocolError } from '../dist/index.js';
import { Server, Recorder, uniq, waitFor } from './helpers.mjs';
import { rawServer, wsServer, chunk, CHUNKED_HEAD, SSE_HEAD } from './fakes.mjs';

let server; // a real one, the target of the moves
let admin;
before(async () => {
  server = await Server.start();
  admin = new AdminClient(server.admin);
});
after(async () => server?.destroy());

const GOOD = '{"y":3,"f":"fake","t":"u","b":"good","s":1}';

function fastClient(url, uid, opts) {
  return new Client(url, uid, 'pw', {
    WebSocket,
    backoff: { baseMs: 20, capMs: 100 },
    ...opts,
  });
}

/** Runs one malformed-input case: first connection bad, second good. */
async function malformed(fake, opts, errorPattern) {
  const c = fastClient(fake.url, 'u', opts);
  const rec = new Recorder(c);
  try {
    await c.connect();
    const [err] = await rec.wait('error');
    assert.match(err.message, errorPattern);
    const [d] = await rec.wait('disconnected');
    assert.equal(d.willReconnect, true);
    const [m] = await rec.wait('message', 1, 10000);
    assert.equal(m.body, 'good');
    assert.ok(fake.requests() >= 2, 'reconnected');
    assert.equal(rec.messages().length, 1, 'nothing from the bad frame reached the app');
  } finally {
    c.close();
    await fake.close();
  }
}

test('malformed: invalid JSON in a WebSocket text frame', async () => {
  const fake = await wsServer((ws, _req, n) => ws.send(n === 0 ? '{"y":3,"s":' : GOOD));
  await malformed(fake, { transport: 'websocket' }, /invalid JSON/);
});

test('malformed: a WebSocket message with an unknown type', async () => {
  const fake = await wsServer((ws, _req, n) => ws.send(n === 0 ? '{"y":9}' : GOOD));
  await malformed(fake, { transport: 'websocket' }, /message type/);
});

test('malformed: bad MessagePack in a binary frame', async () => {
  const fake = await wsServer((ws, _req, n) =>
    ws.send(n === 0 ? Buffer.from([0xc1, 0x00]) : encode(JSON.parse(GOOD))),
  );
  await malformed(fake, { transport: 'websocket', codec: 'msgpack' }, /MessagePack/);
});

test('malformed: a bad chunk size on the chunked stream', async () => {
  const fake = await rawServer((sock, _head, n) => {
    sock.write(CHUNKED_HEAD);
    sock.write(n === 0 ? 'zz\r\nhello\r\n' : chunk(GOOD));
  });
  await malformed(fake, { transport: 'chunked' }, /chunked stream failed/);
});

test('malformed: invalid JSON in a chunk', async () => {
  const fake = await rawServer((sock, _head, n) => {
    sock.write(CHUNKED_HEAD);
    sock.write(n === 0 ? chunk('{"y":3,"b":oops}') : chunk(GOOD));
  });
  await malformed(fake, { transport: 'chunked' }, /invalid JSON/);
});

test('malformed: invalid JSON in an SSE event', async () => {
  const fake = await rawServer((sock, _head, n) => {
    sock.write(SSE_HEAD);
    sock.write(n === 0 ? 'data: not json\n\n' : `id: 1\ndata: ${GOOD}\n\n`);
  });
  await malformed(fake, { transport: 'sse' }, /invalid JSON/);
});

test('malformed input is a ProtocolError', async () => {
  const fake = await wsServer((ws) => ws.send('[1,2]'));
  const c = fastClient(fake.url, 'u', { transport: 'websocket' });
  const rec = new Recorder(c);
  try {
    await c.connect();
    const [err] = await rec.wait('error');
    assert.ok(err instanceof ProtocolError);
  } finally {
    c.close();
    await fake.close();
  }
});

/** A moved signal from a fake node sends the client to the real server at once. */
async function moved(fake, transport, uid) {
  const c = new Client(fake.url, uid, 'pw', {
    WebSocket,
    transport,
    // Any backoff would be >= 3 s: the move must not wait for one.
    backoff: { baseMs: 3000, capMs: 3000 },
    random: () => 1,
  });
  const rec = new Recorder(c);
  try {
    await c.connect();
    const [mv] = await rec.wait('moved');
    const t0 = Date.now();
    assert.equal(new URL(mv.location).origin, server.client);
    const conns = await rec.wait('connected', 2, 5000);
    assert.ok(Date.now() - t0 < 2000, `reconnected without backoff (${Date.now() - t0} ms)`);
    assert.equal(conns[1].node, server.client);
    assert.equal(conns[1].transport, transport);
    assert.equal(c.nodeUrl, server.client);
    await admin.publish(uid, 'op', 'after the move');
    const [m] = await rec.wait('message');
    assert.equal(m.body, 'after the move');
    assert.deepEqual(rec.all('error'), []);
  } finally {
    c.close();
    await fake.close();
  }
}

const movedJson = (uid) =>
  JSON.stringify({ error: 'moved', location: `${server.client}/connect?uid=${uid}&password=old` });

test('moved: final chunk of the chunked stream', async () => {
  const uid = uniq('mvc');
  const fake = await rawServer((sock) => {
    sock.write(CHUNKED_HEAD);
    sock.end(Buffer.concat([chunk(movedJson(uid)), Buffer.from('0\r\n\r\n')]));
  });
  await moved(fake, 'chunked', uid);
});

test('moved: WebSocket close 1012 with the JSON as the reason', async () => {
  const uid = uniq('mvw');
  const fake = await wsServer((ws) => ws.close(1012, movedJson(uid)));
  await moved(fake, 'websocket', uid);
});

test('moved: SSE event "moved"', async () => {
  const uid = uniq('mvs');
  const fake = await rawServer((sock) => {
    sock.write(SSE_HEAD);
    sock.end(`event: moved\ndata: ${movedJson(uid)}\n\n`);
  });
  await moved(fake, 'sse', uid);
});

test('a silent connection is dead after 3x the heartbeat interval and is reconnected', async () => {
  const fake = await rawServer((sock) => sock.write(CHUNKED_HEAD)); // then never a byte
  const c = fastClient(fake.url, 'u', { transport: 'chunked', heartbeatIntervalMs: 100 });
  const rec = new Recorder(c);
  try {
    await c.connect();
    const t0 = Date.now();
    const [d] = await rec.wait('disconnected', 1, 5000);
    assert.match(d.reason, /dead/);
    assert.ok(Date.now() - t0 >= 250, 'not before 3x the interval');
    await rec.wait('connected', 2, 5000);
  } finally {
    c.close();
    await fake.close();
  }
});

test('a replay after a lost ack: duplicates are dropped and the ack is sent again', async () => {
  const acks = [[], []];
  const msg = (s) => JSON.stringify({ y: 3, f: 'op', t: 'u', b: `m${s}`, s });
  const fake = await wsServer((ws, _req, n) => {
    ws.on('message', (d) => {
      const m = JSON.parse(String(d));
      if (m.y === 5 && n < 2) acks[n].push(m.s);
    });
    if (n === 0) {
      for (const s of [1, 2, 3]) ws.send(msg(s));
    } else if (n === 1) {
      // As if the first connection's ack never arrived: replay 1..3.
      for (const s of [1, 2, 3]) ws.send(msg(s));
    }
  });
  const c = fastClient(fake.url, 'u', { transport: 'websocket', autoAck: { delayMs: 10 } });
  const rec = new Recorder(c);
  try {
    await c.connect();
    await rec.wait('message', 3);
    await waitFor('the first ack', () => acks[0].includes(3));
    for (const ws of fake.clients()) ws.close(1001);
    await rec.wait('connected', 2);
    await waitFor('the ack again on the second connection', () => acks[1].includes(3));
    assert.deepEqual(
      rec.messages().map((m) => m.seq),
      [1, 2, 3],
    );
  } finally {
    c.close();
    await fake.close();
  }
});
