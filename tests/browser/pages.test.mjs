// Browser tests of ipush's two pages (web/demo.html at CLIENT/demo, built on the JS SDK's browser
// bundle web/ipush.js at CLIENT/ipush.js; web/dashboard.html at ADMIN/) in headless Debian
// Chromium driven by playwright-core. Run by tests/browser_pages.rs against a
// real server, or by hand:
//   CLIENT=http://127.0.0.1:PORT ADMIN=http://127.0.0.1:PORT node --test tests/browser/pages.test.mjs
// Env: CLIENT, ADMIN (base URLs, required); CHROMIUM (default /usr/bin/chromium);
// SCREENSHOT_DIR (default <repo>/perf/screenshots: demo-ws.png, demo-sse.png,
// demo-channel-sse.png, dashboard.png).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const CLIENT = (process.env.CLIENT || '').replace(/\/$/, '');
const ADMIN = (process.env.ADMIN || '').replace(/\/$/, '');
if (!CLIENT || !ADMIN) {
  throw new Error('set CLIENT and ADMIN to the server base URLs, e.g. CLIENT=http://127.0.0.1:8000 ADMIN=http://127.0.0.1:8001');
}
const HERE = path.dirname(fileURLToPath(import.meta.url));
const SHOTS = process.env.SCREENSHOT_DIR || path.resolve(HERE, '../../perf/screenshots');
const TIMEOUT = 60_000;
const RUN = Math.random().toString(36).slice(2, 8); // keeps uids/channels unique per run

let browser; // playwright gives it a fresh, empty --user-data-dir

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
});

after(async () => {
  if (browser) await browser.close();
});

// ---- helpers ------------------------------------------------------------------------------

/** A fresh page (own context, so its cookies/storage are its own) that records problems. */
async function newPage(width = 1100, height = 720) {
  const context = await browser.newContext({ viewport: { width, height } });
  const page = await context.newPage();
  page.problems = [];
  page.requests = [];
  page.on('pageerror', (e) => page.problems.push('pageerror: ' + e.message));
  page.on('console', (m) => { if (m.type() === 'error') page.problems.push('console: ' + m.text()); });
  page.on('request', (r) => page.requests.push(r.url()));
  page.close_all = () => context.close();
  return page;
}

/** Opens the demo page and connects as `uid` over `transport` ('ws' | 'sse' | 'chunked'). */
async function openDemo(uid, transport) {
  const page = await newPage();
  await page.goto(CLIENT + '/demo');
  await page.fill('#uid', uid);
  await page.fill('#password', 'pw');
  await page.selectOption('#transport', transport);
  await page.click('#connect');
  try {
    await page.waitForSelector('#status[data-state="open"]', { timeout: 10_000 });
  } catch (e) {
    const status = await page.textContent('#status');
    const log = await page.textContent('#log');
    throw new Error(`demo page (${transport}) did not connect: status "${status}", log: ${log}\n${page.problems.join('\n')}`);
  }
  return page;
}

async function adminPub(query, body) {
  const r = await fetch(ADMIN + '/pub?' + query, { method: 'POST', body });
  const text = await r.text();
  assert.equal(r.status, 200, `POST /pub?${query} → ${r.status} ${text}`);
  return JSON.parse(text);
}

/** The demo row showing `body`, waited for; returns its data-* fields. */
async function waitRow(page, body, timeout = 10_000) {
  const sel = `#messages tr.msg[data-body=${JSON.stringify(body)}]`;
  try {
    await page.waitForSelector(sel, { timeout });
  } catch (e) {
    const rows = await page.textContent('#messages');
    const log = await page.textContent('#log');
    throw new Error(`no row with body ${JSON.stringify(body)}; rows: ${rows}; log: ${log}`);
  }
  return page.$eval(sel, (tr) => ({
    seq: tr.dataset.seq, from: tr.dataset.from, channel: tr.dataset.channel, type: tr.dataset.type,
    cells: Array.from(tr.cells).map((c) => c.textContent),
  }));
}

async function pollUntil(what, fn, timeout = 10_000, every = 100) {
  const end = Date.now() + timeout;
  let last;
  while (Date.now() < end) {
    last = await fn();
    if (last) return last;
    await new Promise((r) => setTimeout(r, every));
  }
  throw new Error(`timed out after ${timeout} ms waiting for ${what} (last: ${JSON.stringify(last)})`);
}

/** U's offline messages via the admin API (messages with seq > last_ack). */
async function offline(uid) {
  const r = await fetch(ADMIN + '/msg?uid=' + encodeURIComponent(uid));
  return (await r.json()).result;
}

// ---- tests --------------------------------------------------------------------------------

test('both pages load offline: same-origin requests only, no script errors, documented ids present', { timeout: TIMEOUT }, async () => {
  const demo = await newPage();
  await demo.goto(CLIENT + '/demo');
  for (const id of ['uid', 'password', 'transport', 'connect', 'disconnect', 'status', 'messages',
    'msg_count', 'last_ack', 'channel', 'subscribe', 'unsubscribe', 'send_form', 'send_kind',
    'send_to', 'send_body', 'send', 'log']) {
    assert.ok(await demo.$('#' + id), `demo page has #${id}`);
  }
  assert.equal(await demo.getAttribute('#status', 'data-state'), 'idle');
  assert.deepEqual(await demo.$$eval('#transport option', (os) => os.map((o) => o.value)), ['ws', 'sse', 'chunked']);
  // The page runs on the SDK's bundle, served next to it.
  assert.ok(demo.requests.some((u) => u === CLIENT + '/ipush.js'), 'the page loads /ipush.js');
  assert.equal(await demo.evaluate(() => typeof window.ipushDemo.client), 'function');

  const dash = await newPage();
  await dash.goto(ADMIN + '/');
  await dash.waitForSelector('#poll_status[data-state="ok"]', { timeout: 10_000 });
  for (const id of ['user_number', 'max_user_number', 'connect', 'disconnect', 'reconnect',
    'send_total', 'recv_total', 'send_rate', 'recv_rate', 'max_send_rate', 'max_recv_rate',
    'uptime', 'cores', 'chart']) {
    assert.ok(await dash.$('#' + id), `dashboard has #${id}`);
  }
  assert.match(await dash.textContent('#user_number'), /^\d+$/);
  // One row per core from /metrics (the test server runs 2 cores).
  await pollUntil('per-core rows', async () => (await dash.$$('#cores tr.core')).length >= 1);
  for (const [page, base] of [[demo, CLIENT], [dash, ADMIN]]) {
    const origin = new URL(base).origin;
    const foreign = page.requests.filter((u) => !u.startsWith(origin));
    assert.deepEqual(foreign, [], 'no request leaves the server origin');
    assert.deepEqual(page.problems, [], 'no script errors');
  }
  await demo.close_all();
  await dash.close_all();
});

test('(a) demo over WebSocket shows and acks a message published by the admin API', { timeout: TIMEOUT }, async () => {
  const uid = `bws${RUN}`;
  const page = await openDemo(uid, 'ws');
  const body = `hello over websocket ${RUN}`;
  await adminPub(`to=${uid}&from=op`, body);
  const row = await waitRow(page, body);
  assert.equal(row.from, 'op');
  assert.equal(row.type, '3');
  assert.match(row.seq, /^\d+$/);
  assert.equal(row.cells[0], row.seq);
  assert.equal(row.cells[3], body);
  // Acked automatically: the page shows it and the server has no offline message left.
  await page.waitForFunction((s) => document.getElementById('last_ack').textContent === s, row.seq);
  await pollUntil('the ack to reach the server', async () => (await offline(uid)).length === 0);
  await page.screenshot({ path: path.join(SHOTS, 'demo-ws.png'), fullPage: true });
  assert.deepEqual(page.problems, []);
  // The server ending the stream (admin POST /disconnect) shows as closed.
  const r = await fetch(ADMIN + '/disconnect?uid=' + uid, { method: 'POST' });
  assert.equal(r.status, 200, 'POST /disconnect');
  await page.waitForSelector('#status[data-state="closed"]', { timeout: 10_000 });
  assert.match(await page.textContent('#status'), /closed/);
  assert.ok(await page.isEnabled('#connect'), 'can connect again');
  await page.close_all();
});

test('(b) demo over Server-Sent Events shows and acks a message published by the admin API', { timeout: TIMEOUT }, async () => {
  const uid = `bsse${RUN}`;
  const page = await openDemo(uid, 'sse');
  const body = `hello over sse ${RUN}`;
  await adminPub(`to=${uid}&from=op`, body);
  const row = await waitRow(page, body);
  assert.equal(row.from, 'op');
  assert.equal(row.type, '3');
  assert.match(row.seq, /^\d+$/);
  await page.waitForFunction((s) => document.getElementById('last_ack').textContent === s, row.seq);
  await pollUntil('the ack (POST /send) to reach the server', async () => (await offline(uid)).length === 0);
  // A second message arrives on the same stream.
  const body2 = `second over sse ${RUN}`;
  await adminPub(`to=${uid}&from=op`, body2);
  const row2 = await waitRow(page, body2);
  assert.ok(Number(row2.seq) > Number(row.seq), 'seq grows');
  await page.screenshot({ path: path.join(SHOTS, 'demo-sse.png'), fullPage: true });
  assert.deepEqual(page.problems, []);
  // The Disconnect button shows closed.
  await page.click('#disconnect');
  assert.equal(await page.getAttribute('#status', 'data-state'), 'closed');
  // Connect again: nothing is replayed (both were acked); then the server ends the stream
  // (admin POST /disconnect): the page shows closed and does not let EventSource reconnect.
  await page.click('#connect');
  await page.waitForSelector('#status[data-state="open"]', { timeout: 10_000 });
  const r = await fetch(ADMIN + '/disconnect?uid=' + uid, { method: 'POST' });
  assert.equal(r.status, 200, 'POST /disconnect');
  await page.waitForSelector('#status[data-state="closed"]', { timeout: 10_000 });
  await page.waitForTimeout(1000);
  assert.equal(await page.getAttribute('#status', 'data-state'), 'closed', 'stays closed');
  assert.equal(await page.textContent('#msg_count'), '2', 'no replay of acked messages');
  await page.close_all();
});

test('(c) a channel message sent from the form on a WebSocket page reaches an SSE page', { timeout: TIMEOUT }, async () => {
  const channel = `room${RUN}`;
  const ua = `chanws${RUN}`, ub = `chansse${RUN}`;
  const a = await openDemo(ua, 'ws');
  const b = await openDemo(ub, 'sse');
  // Subscribe both (B's subscribe is a POST /send; its log line appears once the server said ok).
  for (const p of [b, a]) {
    await p.fill('#channel', channel);
    await p.click('#subscribe');
    await p.waitForSelector(`#log li:has-text('"y":1'):has-text(${JSON.stringify(channel)})`, { timeout: 10_000 });
  }
  // A's subscribe went on its socket, so A's send below (same socket) is ordered after it.
  await a.selectOption('#send_kind', 'channel');
  await a.fill('#send_to', channel);
  const body = `to the channel from ws ${RUN}`;
  await a.fill('#send_body', body);
  await a.click('#send');
  const rb = await waitRow(b, body);
  assert.equal(rb.from, ua);
  assert.equal(rb.channel, channel);
  assert.equal(rb.type, '4');
  const ra = await waitRow(a, body); // the sender is a member too
  assert.equal(ra.from, ua);
  assert.equal(ra.channel, channel);
  // And the other way: B (SSE) sends through POST /send, A receives.
  await b.selectOption('#send_kind', 'channel');
  await b.fill('#send_to', channel);
  const body2 = `to the channel from sse ${RUN}`;
  await b.fill('#send_body', body2);
  await b.click('#send');
  assert.equal((await waitRow(a, body2)).from, ub);
  assert.equal((await waitRow(b, body2)).from, ub);
  await b.screenshot({ path: path.join(SHOTS, 'demo-channel-sse.png'), fullPage: true });
  assert.deepEqual(a.problems, []);
  assert.deepEqual(b.problems, []);
  await a.close_all();
  await b.close_all();
});

test('(e) demo over the chunked stream receives, acks, and sends through POST /send', { timeout: TIMEOUT }, async () => {
  const uid = `bchk${RUN}`;
  const page = await openDemo(uid, 'chunked');
  assert.match(await page.textContent('#status'), /chunked stream/);
  const body = `hello over chunked ${RUN}`;
  await adminPub(`to=${uid}&from=op`, body);
  const row = await waitRow(page, body);
  assert.equal(row.from, 'op');
  await page.waitForFunction((s) => document.getElementById('last_ack').textContent === s, row.seq);
  await pollUntil('the ack to reach the server', async () => (await offline(uid)).length === 0);
  // A message to itself from the form goes up by POST /send and comes back on the stream.
  await page.selectOption('#send_kind', 'user');
  await page.fill('#send_to', uid);
  await page.fill('#send_body', `self ${RUN}`);
  await page.click('#send');
  assert.equal((await waitRow(page, `self ${RUN}`)).from, uid);
  assert.deepEqual(page.problems, []);
  await page.click('#disconnect');
  assert.equal(await page.getAttribute('#status', 'data-state'), 'closed');
  await page.close_all();
});

test('(d) the dashboard shows the connection count going up as pages connect', { timeout: TIMEOUT }, async () => {
  const dash = await newPage(1200, 760);
  await dash.goto(ADMIN + '/');
  await dash.waitForSelector('#poll_status[data-state="ok"]', { timeout: 10_000 });
  const readInt = async (id) => Number(await dash.textContent('#' + id));
  const a = await openDemo(`dashws${RUN}`, 'ws');
  const b = await openDemo(`dashsse${RUN}`, 'sse');
  const shown = await pollUntil('#user_number >= 2', async () => {
    const n = await readInt('user_number');
    return n >= 2 ? n : false;
  }, 10_000, 200);
  assert.ok(shown >= 2);
  assert.ok(await readInt('connect') >= 2, '#connect counts the connects');
  // The per-core table adds up to the same number of streams.
  await pollUntil('per-core streams to add up', async () => {
    const users = await dash.$$eval('#cores tr.core td.users', (tds) => tds.reduce((s, td) => s + Number(td.firstChild.textContent), 0));
    return users >= 2;
  }, 5_000, 200);
  // Steady traffic (~25 messages/s, sent and acked) so the rates and the chart have something
  // to show: the per-second rate computed from successive /stats polls goes above zero.
  let pumping = true;
  const pump = (async () => {
    for (let i = 0; pumping; i++) {
      await adminPub(`to=dashws${RUN}&from=op`, `tick ${i}`);
      await new Promise((r) => setTimeout(r, 40));
    }
  })();
  try {
    await pollUntil('#send_total to count the deliveries', async () => (await readInt('send_total')) >= 20, 10_000, 200);
    await pollUntil('a non-zero #send_rate and #recv_rate (acks)', async () =>
      Number(await dash.textContent('#send_rate')) > 0 && Number(await dash.textContent('#recv_rate')) > 0, 10_000, 200);
    await pollUntil('a few seconds of history', () => dash.evaluate(() => window.ipushDashboard.history.filter((p) => p.msgs > 0).length >= 3), 10_000, 200);
    // The chart is drawn: some pixels in the plot area are the series colours.
    const coloured = await dash.evaluate(() => {
      const c = document.getElementById('chart');
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      let blue = 0, green = 0;
      for (let i = 0; i < d.length; i += 4) {
        if (d[i + 3] > 200 && d[i + 2] > 180 && d[i] < 80) blue++;
        if (d[i + 3] > 200 && d[i + 1] > 120 && d[i] < 60 && d[i + 2] < 120) green++;
      }
      return { blue, green };
    });
    assert.ok(coloured.blue > 20 && coloured.green > 20, `chart has both series: ${JSON.stringify(coloured)}`);
    await dash.screenshot({ path: path.join(SHOTS, 'dashboard.png'), fullPage: true });
  } finally {
    pumping = false;
    await pump;
  }
  // And it goes down again when they leave.
  await a.close_all();
  await b.close_all();
  await pollUntil('#user_number to go down again', async () => (await readInt('user_number')) < shown, 10_000, 200);
  assert.deepEqual(dash.problems, []);
  await dash.close_all();
});

// ---- a 2-node cluster: the SDK in a page of node A, for a user of node B ------------------
// Env CLUSTER_A, CLUSTER_B (client base URLs) and CLUSTER_ADMIN_A; without them these tests
// are skipped (tests/browser_pages.rs always sets them).
const CLUSTER_A = (process.env.CLUSTER_A || '').replace(/\/$/, '');
const CLUSTER_B = (process.env.CLUSTER_B || '').replace(/\/$/, '');
const CLUSTER_ADMIN_A = (process.env.CLUSTER_ADMIN_A || '').replace(/\/$/, '');
const cluster = { skip: !(CLUSTER_A && CLUSTER_B && CLUSTER_ADMIN_A) && 'set CLUSTER_A, CLUSTER_B, CLUSTER_ADMIN_A' };

/** A uid that node B owns, as node A's admin port says. */
async function uidOfB(prefix) {
  const want = new URL(CLUSTER_B).host;
  for (let i = 0; i < 500; i++) {
    const uid = `${prefix}${RUN}${i}`;
    const r = await fetch(`${CLUSTER_ADMIN_A}/shard?uid=${uid}`);
    if ((await r.json()).result === want) return uid;
  }
  throw new Error('no uid of node B');
}

async function clusterPub(uid, body) {
  const r = await fetch(`${CLUSTER_ADMIN_A}/pub?to=${uid}&from=op`, { method: 'POST', body });
  assert.equal(r.status, 200, await r.text());
}

for (const transport of ['websocket', 'sse', 'chunked']) {
  test(`SDK on node A's page follows the 303 to node B cross-origin (${transport}), then a move`, { ...cluster, timeout: TIMEOUT }, async () => {
    const uid = await uidOfB(`x${transport.slice(0, 2)}`);
    const page = await newPage();
    await page.goto(CLUSTER_A + '/demo');
    const connected = await page.evaluate(async ({ A, uid, transport }) => {
      const { Client } = await import('/ipush.js');
      const got = [];
      const events = [];
      const c = new Client(A, uid, 'pw', { transport, backoff: { baseMs: 50, capMs: 200 } });
      c.on('message', (m) => got.push(m.body));
      c.on('connected', (e) => events.push({ kind: 'connected', transport: e.transport, node: e.node }));
      c.on('moved', (e) => events.push({ kind: 'moved', location: e.location }));
      c.on('error', (e) => events.push({ kind: 'error', message: e.message }));
      Object.assign(window, { xc: c, xgot: got, xevents: events });
      const late = new Promise((_, reject) => setTimeout(() => reject(new Error(
        `not connected within 15 s: ${JSON.stringify(events)}`)), 15_000));
      await Promise.race([c.connect(), late]);
      return events.filter((e) => e.kind === 'connected');
    }, { A: CLUSTER_A, uid, transport });
    assert.deepEqual(connected, [{ kind: 'connected', transport, node: CLUSTER_B }],
      `connected to node B over ${transport}: ${JSON.stringify(await page.evaluate(() => window.xevents))}`);

    await clusterPub(uid, 'one');
    await pollUntil('"one" in the page', () => page.evaluate(() => window.xgot.includes('one')));

    // Node B tells the stream to move to node A (which sends it back: B owns the user): the
    // SDK goes to the location at once and resumes, nothing lost, nothing twice.
    const r = await fetch(`${CLUSTER_ADMIN_A}/disconnect?uid=${uid}&location=${encodeURIComponent(CLUSTER_A)}`, { method: 'POST' });
    assert.equal(r.status, 200, await r.text());
    await clusterPub(uid, 'two');
    await pollUntil('"two" in the page', () => page.evaluate(() => window.xgot.includes('two')));
    const { got, events } = await page.evaluate(() => ({ got: window.xgot, events: window.xevents }));
    assert.deepEqual(got, ['one', 'two'], JSON.stringify(events));
    const moved = events.find((e) => e.kind === 'moved');
    assert.ok(moved && moved.location.startsWith(CLUSTER_A + '/connect?uid='), JSON.stringify(events));
    const reconnects = events.filter((e) => e.kind === 'connected');
    assert.equal(reconnects.length, 2, JSON.stringify(events));
    assert.equal(reconnects[1].node, CLUSTER_B, 'back on node B through A\'s 303');
    await page.evaluate(() => window.xc.close());
    await page.close_all();
  });
}
