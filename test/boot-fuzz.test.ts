// Hostile input: 10,000 random and malformed requests against /boot/:mac and the agent API. No crash,
// no 5xx, and every script served holds only values the renderer validated.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { buildServer } from '../boot/server.js';
import { LmdbStore } from '../store/lmdb.js';
import { prng } from './prng.js';

let dir: string;
let store: LmdbStore;
let app: FastifyInstance;

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dragonfly-fuzz-'));
  store = LmdbStore.open(dir);
  app = await buildServer({ store, secret: Buffer.alloc(32, 1), serverUrl: 'http://10.0.0.1:8080', discoveryPerMinute: 1_000_000, registrationsPerMinute: 1_000_000 });
});
afterAll(async () => {
  await app.close();
  await store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});


const NASTY = ['%0a', '%0d', '%00', '${', '}', ';', '||', '&&', '#', ' ', '%20', "'", '"', '\\', '../', '%2e%2e%2f', ':', '-', 'ff', 'FF', '52:54:00:ab:cd:01', 'shell', 'chain http://evil/', '\u202e', '%ff%fe'];

function randomText(r: () => number, max: number): string {
  let out = '';
  const n = Math.floor(r() * max);
  for (let i = 0; i < n; i++) {
    const x = r();
    out += x < 0.4 ? NASTY[Math.floor(r() * NASTY.length)] : x < 0.7 ? Math.floor(r() * 256).toString(16).padStart(2, '0') : String.fromCharCode(32 + Math.floor(r() * 95));
  }
  return out;
}

function randomJson(r: () => number, depth = 0): unknown {
  const x = r();
  if (depth > 3 || x < 0.3) return [null, true, 1e308, -1, 'x'.repeat(Math.floor(r() * 50)), randomText(r, 20)][Math.floor(r() * 6)];
  if (x < 0.6) return Array.from({ length: Math.floor(r() * 4) }, () => randomJson(r, depth + 1));
  const keys = ['mac', 'hardware', 'disks', 'nics', 'name', 'sizeBytes', 'workflow', 'state', 'percent', '__proto__', 'constructor', randomText(r, 8)];
  return Object.fromEntries(Array.from({ length: Math.floor(r() * 5) }, () => [keys[Math.floor(r() * keys.length)]!, randomJson(r, depth + 1)]));
}

const SAFE_SCRIPT_LINE = /^[A-Za-z0-9 #!:/?=&%@+,~._;()'${}|-]*$/;

describe('hostile input', () => {
  it('10,000 random requests: no 5xx, no crash, scripts only ever carry validated values', async () => {
    const r = prng(20261122);
    const statuses = new Map<number, number>();
    for (let i = 0; i < 10_000; i++) {
      const kind = r();
      let res;
      if (kind < 0.5) {
        // A third are well-formed MACs in any spelling, so valid requests carry hostile query strings too.
        const mac = r() < 0.33
          ? Array.from({ length: 6 }, () => Math.floor(r() * 256).toString(16).padStart(2, '0')).join(r() < 0.5 ? ':' : '-')
          : randomText(r, 24);
        const spelled = r() < 0.5 ? mac.toUpperCase() : mac;
        res = await app.inject({ url: `/boot/${spelled}?arch=${randomText(r, 10)}&platform=${randomText(r, 10)}&uuid=${randomText(r, 40)}` });
        if (res.statusCode === 200) {
          // Whatever was asked, the script names the MAC only in its normalised form.
          for (const line of res.body.split('\n')) expect(line, `request ${i}`).toMatch(SAFE_SCRIPT_LINE);
          expect(res.body).toMatch(/^#!ipxe\n# Dragonfly: discovery for ([0-9a-f]{2}:){5}[0-9a-f]{2}( \([A-Za-z0-9-]+\))?\n/);
        }
      } else if (kind < 0.8) {
        const body = r() < 0.5 ? JSON.stringify(randomJson(r)) : randomText(r, 200);
        res = await app.inject({ method: 'POST', url: '/api/v1/agent/register', payload: body, headers: { 'content-type': r() < 0.8 ? 'application/json' : randomText(r, 20) || 'x/y' } });
      } else {
        const id = r() < 0.5 ? `wf-${randomText(r, 10)}` : randomText(r, 30);
        const method = r() < 0.5 ? 'GET' : 'POST';
        const tail = ['', '/finish', `/actions/${randomText(r, 4)}`][Math.floor(r() * 3)];
        res = await app.inject({ method, url: `/api/v1/agent/workflows/${encodeURIComponent(id)}${tail}`, payload: method === 'POST' ? JSON.stringify(randomJson(r)) : undefined, headers: { authorization: `Bearer ${randomText(r, 70)}`, 'content-type': 'application/json' } });
      }
      statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1);
      expect(res.statusCode, `request ${i}: ${res.body.slice(0, 200)}`).toBeLessThan(500);
    }
    // Both outcomes happened: some requests were valid, many were refused.
    expect(statuses.get(200) ?? 0).toBeGreaterThan(100);
    expect(statuses.get(400) ?? 0).toBeGreaterThan(1000);
    // And the server still answers normally.
    expect((await app.inject({ url: '/healthz' })).statusCode).toBe(200);
  });
});
