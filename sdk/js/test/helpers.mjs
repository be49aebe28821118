// Test helpers: a real ipush_server on free ports with its own temp data dir (killed at the
// end even on failure), bounded waits, and an event recorder for a Client.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync, readFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(HERE, '../../..');
export const SERVER = process.env.IPUSH_SERVER || path.join(REPO, 'target/debug/ipush_server');

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export async function waitFor(what, fn, timeoutMs = 10000, everyMs = 25) {
  const end = Date.now() + timeoutMs;
  let last;
  while (Date.now() < end) {
    last = await fn();
    if (last) return last;
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(
    `timed out after ${timeoutMs} ms waiting for ${what} (last: ${JSON.stringify(last)})`,
  );
}

async function healthy(adminPort) {
  try {
    const r = await fetch(`http://127.0.0.1:${adminPort}/health`);
    return r.ok;
  } catch {
    return false;
  }
}

const started = new Set();
process.on('exit', () => {
  for (const s of started) s.kill('SIGKILL');
});

/**
 * A server process. `ports` may be given (a restart on the same ports, cluster members);
 * otherwise free ones are picked, and the start is retried if a port was taken meanwhile.
 */
export class Server {
  static async start({ args = [], dataDir, ports, nodeArgs } = {}) {
    if (!existsSync(SERVER)) {
      throw new Error(
        `ipush_server not found at ${SERVER}: build it (cargo build) or set IPUSH_SERVER`,
      );
    }
    let lastErr;
    for (let tries = 0; tries < 5; tries++) {
      const p = ports ?? {
        client: await freePort(),
        admin: await freePort(),
        bus: await freePort(),
      };
      const s = new Server(
        p,
        dataDir ?? mkdtempSync(path.join(os.tmpdir(), 'ipush-js-')),
        args,
        nodeArgs,
      );
      s.ownDir = !dataDir;
      try {
        await s.spawn();
        return s;
      } catch (e) {
        lastErr = e;
        await s.stop('SIGKILL');
        if (ports) await new Promise((r) => setTimeout(r, 200));
      }
    }
    throw lastErr;
  }

  constructor(ports, dataDir, args, nodeArgs) {
    this.ports = ports;
    this.dataDir = dataDir;
    this.args = args;
    this.nodeArgs = nodeArgs;
    this.client = `http://127.0.0.1:${ports.client}`;
    this.admin = `http://127.0.0.1:${ports.admin}`;
  }

  async spawn() {
    const argv = [
      ...(this.nodeArgs
        ? this.nodeArgs
        : [
            `--client_port=${this.ports.client}`,
            `--admin_port=${this.ports.admin}`,
            `--bus_port=${this.ports.bus}`,
          ]),
      '--client_host=127.0.0.1',
      '--cores=2',
      `--data_dir=${path.join(this.dataDir, 'data')}`,
      `--pid_file=${path.join(this.dataDir, 'ipush.pid')}`,
      '--log_level=warn',
      ...this.args,
    ];
    if (!this.args.some((a) => a.startsWith('--storage='))) argv.push('--storage=memory');
    this.log = '';
    const proc = spawn(SERVER, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc = proc;
    started.add(proc);
    proc.stdout.on('data', (d) => (this.log += d));
    proc.stderr.on('data', (d) => (this.log += d));
    this.exited = new Promise((r) => proc.on('exit', (code, sig) => r({ code, sig })));
    this.exited.then(() => started.delete(proc));
    let dead = false;
    this.exited.then(() => (dead = true));
    await waitFor(
      `ipush_server on ${this.admin}`,
      async () => dead || (await healthy(this.ports.admin)),
      15000,
      50,
    );
    if (dead) throw new Error(`ipush_server exited at start:\n${this.log}`);
  }

  /** SIGTERM (graceful) by default; resolves when the process has exited. */
  async stop(signal = 'SIGTERM') {
    if (!this.proc || this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.kill(signal);
    const t = setTimeout(() => this.proc.kill('SIGKILL'), 8000);
    await this.exited;
    clearTimeout(t);
  }

  async restart() {
    await this.stop('SIGTERM');
    for (let tries = 0; ; tries++) {
      try {
        await this.spawn();
        return;
      } catch (e) {
        if (tries >= 10) throw e;
        await new Promise((r) => setTimeout(r, 300));
      }
    }
  }

  async destroy() {
    await this.stop('SIGKILL');
    if (this.ownDir) rmSync(this.dataDir, { recursive: true, force: true });
  }
}

/** Records a client's events; `await rec.next('message', pred)` waits for one. */
export class Recorder {
  constructor(client) {
    this.events = [];
    this.waiters = [];
    for (const name of [
      'message',
      'connected',
      'disconnected',
      'error',
      'moved',
      'replaced',
      'ack',
    ]) {
      client.on(name, (ev) => {
        this.events.push({ name, ev });
        for (const w of [...this.waiters]) w();
      });
    }
  }

  all(name) {
    return this.events.filter((e) => e.name === name).map((e) => e.ev);
  }

  messages() {
    return this.all('message');
  }

  /** Waits until `count` events named `name` (matching `pred`) were recorded. */
  wait(name, count = 1, timeoutMs = 10000, pred = () => true) {
    return new Promise((resolve, reject) => {
      const check = () => {
        const got = this.all(name).filter(pred);
        if (got.length >= count) {
          cleanup();
          resolve(got);
        }
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(
          new Error(
            `timed out waiting for ${count} "${name}" events; got: ${JSON.stringify(
              this.events.map((e) => [e.name, e.ev instanceof Error ? e.ev.message : e.ev]),
            ).slice(0, 2000)}`,
          ),
        );
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.waiters = this.waiters.filter((w) => w !== check);
      };
      this.waiters.push(check);
      check();
    });
  }
}

export function vectorsDir() {
  return path.resolve(HERE, '../../vectors');
}

export function readVector(name) {
  return JSON.parse(readFileSync(path.join(vectorsDir(), name), 'utf8'));
}

export const uniq = (p) => `${p}${Math.random().toString(36).slice(2, 9)}`;
