// The committed browser bundle web/ipush.js is exactly what `npm run build:web` makes now.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));

test('web/ipush.js equals a fresh build (run `npm run build:web` in sdk/js after changing src)', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ipush-bundle-'));
  try {
    const out = path.join(dir, 'ipush.js');
    execFileSync(process.execPath, [path.join(HERE, '../scripts/build-web.mjs'), '--out', out]);
    const fresh = readFileSync(out, 'utf8');
    const committed = readFileSync(path.join(HERE, '../../../web/ipush.js'), 'utf8');
    assert.ok(committed === fresh, 'web/ipush.js is stale: run `npm run build:web` in sdk/js');
    // It is a working ES module exporting the SDK.
    const mod = await import(out);
    for (const name of ['Client', 'AdminClient', 'IpushError', 'encodeJson', 'SseParser']) {
      assert.equal(typeof mod[name], 'function', name);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
