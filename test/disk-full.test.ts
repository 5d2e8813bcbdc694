// A full disk under the state directory (Medium 9): before, serve died with SIGBUS at start, and while
// running answered 500 with a stack trace per request while /healthz said ok. A real small tmpfs (the test
// runs as root, as the suite does) is filled for real.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildServer } from '../boot/server.js';
import { LmdbStore } from '../store/lmdb.js';

const ROOT = path.join(import.meta.dirname, '..');
const BIN = path.join(ROOT, 'bin', 'dragonfly.js');
const MiB = 1024 * 1024;
let mount: string;

beforeAll(() => {
  mount = fs.mkdtempSync(path.join(os.tmpdir(), 'dragonfly-full-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=48m', 'tmpfs', mount]);
});
afterAll(() => {
  spawnSync('umount', [mount]);
  fs.rmSync(mount, { recursive: true, force: true });
});

/** Fill the filesystem until `leave` bytes are free; returns the filler's path. */
function fill(name: string, leave: number): string {
  const file = path.join(mount, name);
  const s = fs.statfsSync(mount);
  const free = s.bavail * s.bsize;
  fs.writeFileSync(file, Buffer.alloc(Math.max(0, free - leave)));
  return file;
}

describe('a full disk under the state directory', () => {
  it('serve refuses to start with a clear error instead of dying with SIGBUS', () => {
    const filler = fill('filler-start', 4 * MiB);
    const r = spawnSync(process.execPath, [BIN, 'serve', '--state', path.join(mount, 'new-state'), '--http', '127.0.0.1:0', '--tftp', 'off'], { encoding: 'utf8', timeout: 30_000 });
    fs.rmSync(filler);
    expect(r.signal).toBeNull();
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('DF_ERR_STORE_FULL');
    expect(r.stderr).toMatch(/bytes free; the state store needs at least/);
  });

  it('while running: writes answer 503 DF_ERR_STORE_FULL, /healthz says so, a new MAC still boots, one log line; freeing space heals it', async () => {
    const store = LmdbStore.open(path.join(mount, 'state'));
    const lines: string[] = [];
    const log = pino({ level: 'info' }, new Writable({ write: (chunk, _enc, done) => (lines.push(String(chunk)), done()) }));
    const app = await buildServer({ store, secret: Buffer.alloc(32, 3), serverUrl: 'http://10.0.0.1:8080', logger: log });
    await app.ready();
    try {
      expect((await app.inject({ url: '/healthz' })).statusCode).toBe(200);
      const filler = fill('filler-run', 4 * MiB);

      const health = await app.inject({ url: '/healthz' });
      expect(health.statusCode).toBe(503);
      expect(health.json()).toEqual({ ok: false, revision: expect.any(Number), store: 'not writable', reason: 'disk full' }); // no path, no figures: /healthz is open
      for (let i = 0; i < 50; i++) {
        const mac = `52:54:00:00:10:${i.toString(16).padStart(2, '0')}`;
        // A new MAC cannot be recorded, but it still gets its discovery script.
        const boot = await app.inject({ url: `/boot/${mac}` });
        expect(boot.statusCode).toBe(200);
        expect(boot.body).toContain('# Dragonfly: discovery');
        const reg = await app.inject({ method: 'POST', url: '/api/v1/agent/register', remoteAddress: `10.0.1.${i}`, payload: { mac, hardware: { disks: [], nics: [] } } });
        expect(reg.statusCode).toBe(503);
        expect(reg.json().error.code).toBe('DF_ERR_STORE_FULL');
        expect(reg.body).not.toContain('    at ');
      }
      // One line for a hundred refused writes, not a stack trace each.
      const full = lines.filter((l) => l.includes('DF_ERR_STORE_FULL'));
      expect(full).toHaveLength(1);
      expect(lines.join('')).not.toContain('    at ');

      fs.rmSync(filler);
      expect((await app.inject({ url: '/healthz' })).statusCode).toBe(200);
      const reg = await app.inject({ method: 'POST', url: '/api/v1/agent/register', payload: { mac: '52:54:00:00:10:01', hardware: { disks: [], nics: [] } } });
      expect(reg.statusCode).toBe(200);
      expect(await store.read((s) => s.get('machines/52:54:00:00:10:01')?.value)).toMatchObject({ phase: 'Discovered' });
    } finally {
      await app.close();
      await store.close();
    }
  });
});
