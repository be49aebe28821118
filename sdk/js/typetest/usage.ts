// Compiled by `npm run lint` (never run): the public API type-checks as the README uses it,
// with the `ws` package and with the DOM's WebSocket, without casts.
import WS from 'ws';
import { AdminClient, Client, IpushError, type PushMessage } from '../src/index.js';

const withWs = new Client('http://127.0.0.1:9000', 'user001', 'pw', { WebSocket: WS });
const withDom = new Client('http://127.0.0.1:9000', 'user001', async () => 'jwt', {
  WebSocket: globalThis.WebSocket,
  transport: ['websocket', 'sse'],
  codec: 'msgpack',
  autoAck: false,
});
withWs.on('message', (m: PushMessage) => {
  const seq: number | undefined = m.seq;
  void seq;
});
withDom.on('disconnected', ({ reason, willReconnect, serverError }) => {
  const s: string = reason + String(willReconnect) + (serverError ?? '');
  void s;
});
const off = withDom.on('error', (e: Error) => e instanceof IpushError && e.status);
off();
const admin = new AdminClient('http://127.0.0.1:9001');
void admin.publish('u', 'op', 'b', { ttl: 0, idempotencyKey: 'k' }).then((r: unknown) => r);
void admin.msg('u').then((ms) => ms.map((m) => m.s));
const batch = new AdminClient('http://127.0.0.1:9001', { maxBatchLines: 100 });
void batch
  .publishBatch([
    { to: 'u', from: 'op', body: 'b', ttl: 60 },
    { channel: 'c', from: 'op', body: 'b', idempotencyKey: 'k' },
  ])
  .then((rs) => rs.map((r) => (r.ok ? r.result : r.error.status)));
// @ts-expect-error: an item names either a user or a channel
void batch.publishBatch([{ to: 'u', channel: 'c', from: 'op', body: 'b' }]);
