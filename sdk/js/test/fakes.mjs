// Tiny fake servers for the tests: raw HTTP (exact bytes after the head), a `ws` server, and a
// raw WebSocket server that writes frame bytes as given.
import { createHash } from 'node:crypto';
import net from 'node:net';
import { WebSocketServer } from 'ws';

/** A raw HTTP server: `handler(socket, head, n)` for the n-th request (0-based). */
export async function rawServer(handler) {
  let n = 0;
  const sockets = new Set();
  const srv = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => {});
    let buf = '';
    const onData = (d) => {
      buf += d.toString('latin1');
      const i = buf.indexOf('\r\n\r\n');
      if (i < 0) return;
      sock.off('data', onData);
      const head = buf.slice(0, i);
      if (head.startsWith('HEAD ')) {
        // The client's redirect probe after a failed WebSocket upgrade: no redirect here.
        sock.end(
          'HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n',
        );
        return;
      }
      if (head.startsWith('POST /send')) {
        const body = '{"result":"ok"}';
        sock.end(
          `HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
        );
        return;
      }
      handler(sock, head, n++);
    };
    sock.on('data', onData);
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${srv.address().port}`,
    requests: () => n,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((r) => srv.close(r));
    },
  };
}

export const CHUNKED_HEAD =
  'HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nTransfer-Encoding: chunked\r\n\r\n';
export const SSE_HEAD = 'HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n';
export const chunk = (s) => {
  const b = Buffer.from(s);
  return Buffer.concat([Buffer.from(b.length.toString(16) + '\r\n'), b, Buffer.from('\r\n')]);
};

export async function wsServer(onConn) {
  let n = 0;
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await new Promise((r) => wss.on('listening', r));
  wss.on('connection', (ws, req) => onConn(ws, req, n++));
  return {
    url: `http://127.0.0.1:${wss.address().port}`,
    requests: () => n,
    clients: () => [...wss.clients],
    close: () => {
      for (const c of wss.clients) c.terminate();
      return new Promise((r) => wss.close(r));
    },
  };
}

/**
 * A WebSocket server speaking raw frames: after the handshake, `onConn(sock, n)` writes what it
 * likes; `frames(sock)` gives an async iterator of the client's (masked) frames.
 */
export async function rawWsServer(onConn) {
  return rawServer((sock, head, n) => {
    const key = /sec-websocket-key:\s*(\S+)/i.exec(head)?.[1] ?? '';
    const accept = createHash('sha1')
      .update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11')
      .digest('base64');
    sock.write(
      'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        `Sec-WebSocket-Accept: ${accept}\r\n\r\n`,
    );
    onConn(sock, n, head);
  });
}

/** Reads the first frame a client sends (unmasked): { opcode, payload }. */
export function firstClientFrame(sock, timeoutMs = 5000) {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const t = setTimeout(() => reject(new Error('no frame from the client')), timeoutMs);
    const onData = (d) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length < 2) return;
      let len = buf[1] & 0x7f;
      let off = 2;
      if (len === 126) {
        if (buf.length < 4) return;
        len = buf.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (buf.length < 10) return;
        len = Number(buf.readBigUInt64BE(2));
        off = 10;
      }
      const masked = (buf[1] & 0x80) !== 0;
      const mask = masked ? buf.subarray(off, off + 4) : null;
      if (masked) off += 4;
      if (buf.length < off + len) return;
      const payload = Buffer.from(buf.subarray(off, off + len));
      if (mask) for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i % 4];
      clearTimeout(t);
      sock.off('data', onData);
      resolve({ opcode: buf[0] & 0x0f, payload });
    };
    sock.on('data', onData);
  });
}
