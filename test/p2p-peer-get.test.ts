// `dragonfly peer get` as real processes against a real `dragonfly serve`: the image on a real image server
// (counting what it sends), preheated through the server's API, the peer token from `dragonfly p2p token`,
// and four peers started together. Each must exit 0 with the image; the origin must serve it once.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, dragonfly, ROOT, tempDir } from './cli-helpers.js';
import { ImageOrigin, MiB, sha256Of } from './p2p-world.js';
import { collect, exited, freePort, until } from './process-helpers.js';
import { randomBytes } from 'node:crypto';
import { workflowKey } from '../store/keys.js';
import { LmdbStore } from '../store/lmdb.js';

const SIZE = 22 * MiB + 999; // 6 pieces of 4 MiB, the last one short
const IMAGE = randomBytes(SIZE);
const SHA = sha256Of(IMAGE);
const PEERS = 4;

let work: string;
let server: string;
let origin: ImageOrigin;
let token: string;
const children: ChildProcess[] = [];

beforeAll(async () => {
  work = tempDir('dragonfly-peer-get-');
  origin = new ImageOrigin(IMAGE);
  await origin.start();
  const http = await freePort();
  const serve = spawn(process.execPath, [BIN, 'serve', '--state', path.join(work, 'state'), '--http', `127.0.0.1:${http}`, '--tftp', 'off', '--no-mage-build'], {
    cwd: ROOT,
    env: { ...process.env, DRAGONFLY_API_TOKEN: 'admin-token', DRAGONFLY_STATE: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(serve);
  collect(serve);
  server = `http://127.0.0.1:${http}`;
  await until('serve to listen', async () => (await fetch(`${server}/healthz`).catch(() => undefined))?.ok === true, 20_000);
  // An admin preheats the image (no workflow names it here); the peers will find it still being read (202).
  const preheat = await fetch(`${server}/api/v1/p2p/preheat`, {
    method: 'POST',
    headers: { authorization: 'Bearer admin-token', 'content-type': 'application/json' },
    body: JSON.stringify({ url: origin.url, sha256: SHA }),
  });
  expect(preheat.status).toBe(202);
  const t = dragonfly(['p2p', 'token', '--sha256', SHA, '--state', path.join(work, 'state')]);
  expect(t.status, t.stderr).toBe(0);
  token = t.stdout.trim();
}, 60_000);

afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  await origin.stop();
  fs.rmSync(work, { recursive: true, force: true });
});

function peerGet(args: string[], env: Record<string, string> = {}): { child: ChildProcess; output: () => string; errors: () => string } {
  const child = spawn(process.execPath, [BIN, 'peer', 'get', origin.url, '--sha256', SHA, '--server', server, ...args], {
    cwd: ROOT,
    env: { ...process.env, NO_COLOR: '1', DRAGONFLY_STATE: '', DRAGONFLY_P2P_TOKEN: token, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let stdout = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d));
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d));
  return { child, output: () => stdout, errors: () => stderr };
}

/** Midway: until the swarm holds half the image's pieces, by the server's own figures. */
function halfHeld(server: string): Promise<void> {
  return until(
    'the swarm to hold half the image',
    async () => {
      const res = await fetch(`${server}/api/v1/p2p/images`, { headers: { authorization: 'Bearer admin-token' } });
      const { images } = (await res.json()) as { images: Array<{ sha256: string; stats?: { piecesHeld: number; pieces: number } }> };
      const s = images.find((i) => i.sha256 === SHA)?.stats;
      return s !== undefined && s.piecesHeld * 2 >= s.pieces;
    },
    20_000,
    20,
  );
}

const figure = (line: string, words: string) => Number(new RegExp(`(\\d+) bytes ${words}`).exec(line)?.[1] ?? NaN);

describe('dragonfly peer get', () => {
  it(`${PEERS} processes fetch one image together: all exit 0 with the image, the origin serves it once`, async () => {
    const tokenFile = path.join(work, 'p2p.token');
    fs.writeFileSync(tokenFile, `${token}\n`);
    const peers = Array.from({ length: PEERS }, (_, i) =>
      peerGet([
        '--out',
        path.join(work, `out-${i}.raw`),
        '--linger',
        '3s',
        // One peer takes its token from a file, one is rate-limited both ways: the options parse and apply.
        ...(i === 0 ? ['--token-file', tokenFile] : []),
        ...(i === 1 ? ['--upload-limit', '400MB/s', '--download-limit', '1Gbit/s'] : []),
      ], i === 0 ? { DRAGONFLY_P2P_TOKEN: '' } : {}),
    );
    const codes = await Promise.all(peers.map((p) => exited(p.child)));
    expect(codes).toEqual(Array(PEERS).fill(0));
    let fromPeers = 0;
    let fromSeed = 0;
    for (let i = 0; i < PEERS; i++) {
      const out = path.join(work, `out-${i}.raw`);
      expect(sha256Of(fs.readFileSync(out)), `peer ${i}`).toBe(SHA);
      expect(fs.existsSync(`${out}.part`)).toBe(false);
      const line = peers[i]!.output();
      expect(line).toMatch(new RegExp(`^peer: got ${out.replace(/[.]/g, '\\.')} \\(${SIZE} bytes, sha256 verified\\) in [0-9.]+ s: \\d+ bytes from peers, \\d+ bytes from the seed, 0 bytes from the origin; served \\d+ pieces \\(\\d+ bytes\\) to peers\\n$`));
      expect(figure(line, 'from peers') + figure(line, 'from the seed')).toBe(SIZE);
      fromPeers += figure(line, 'from peers');
      fromSeed += figure(line, 'from the seed');
    }
    console.log(`peer get: origin ${(origin.bytesSent / SIZE).toFixed(3)}x the image; peers got ${(fromPeers / SIZE).toFixed(2)} images from each other, ${(fromSeed / SIZE).toFixed(2)} from the seed`);
    expect(origin.bytesSent).toBeLessThanOrEqual(1.02 * SIZE);
    expect(fromPeers).toBeGreaterThan(0);
  }, 30_000);

  it('peers killed midway (one by SIGINT, one by SIGKILL): the survivors finish; the interrupted one leaves nothing', async () => {
    const out = (i: number) => path.join(work, `kill-${i}.raw`);
    // A peer killed outright never says so: whoever waits for a piece granted to it reports it after a piece timeout.
    const peers = Array.from({ length: 5 }, (_, i) => peerGet(['--out', out(i), '--linger', '3s', '--download-limit', '30MB/s', '--piece-timeout', '4s']));
    await halfHeld(server);
    peers[0]!.child.kill('SIGINT');
    peers[1]!.child.kill('SIGKILL');
    // A survivor that has not exited in 50 s fails the test with what every peer said (its warnings).
    const codes = await Promise.race([
      Promise.all(peers.map((p) => exited(p.child))),
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error(peers.map((p, i) => `peer ${i} (exit ${p.child.exitCode ?? p.child.signalCode ?? 'none yet'}):\n${p.errors()}`).join('\n'))), 50_000).unref()),
    ]);
    expect(codes[0]).toBe(1);
    expect(peers[0]!.errors()).toContain('DF_ERR_P2P_INTERRUPTED');
    expect(fs.existsSync(out(0))).toBe(false);
    expect(fs.existsSync(`${out(0)}.part`)).toBe(false);
    expect(fs.existsSync(out(1))).toBe(false); // killed outright: a .part may stay, the file never appears
    for (let i = 2; i < 5; i++) {
      expect(codes[i], `peer ${i}`).toBe(0);
      expect(sha256Of(fs.readFileSync(out(i))), `peer ${i}`).toBe(SHA);
    }
  }, 60_000);

  it('the seed killed halfway (serve, SIGKILL) with 1 of 5 peers: serve comes back and every survivor finishes', async () => {
    // Its own serve on its own state, where a workflow names the image (as after an apply), so the restarted
    // server knows the image again without an operator; the seed lives in serve, so killing it kills both.
    const state = path.join(work, 'state-seed-kill');
    const store = LmdbStore.open(state);
    const wf = { id: 'wf-seed-kill', mac: '52:54:00:00:00:09', machine: 'm', assignment: 'a', template: 't', generation: 1, state: 'pending', reimage: false, createdAt: new Date(0).toISOString(), actions: [], image: { url: origin.url, sha256: SHA } };
    await store.commit({ put: [{ key: workflowKey(wf.id), value: wf }] });
    await store.close();
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const startServe = async () => {
      const child = spawn(process.execPath, [BIN, 'serve', '--state', state, '--http', `127.0.0.1:${port}`, '--tftp', 'off', '--no-mage-build'], {
        cwd: ROOT,
        env: { ...process.env, DRAGONFLY_API_TOKEN: 'admin-token', DRAGONFLY_STATE: '' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      children.push(child);
      collect(child);
      await until('serve to listen', async () => (await fetch(`${url}/healthz`).catch(() => undefined))?.ok === true, 20_000);
      return child;
    };
    let serve = await startServe();
    const t = dragonfly(['p2p', 'token', '--sha256', SHA, '--state', state]);
    expect(t.status, t.stderr).toBe(0);
    const out = (i: number) => path.join(work, `seed-kill-${i}.raw`);
    const peers = Array.from({ length: 5 }, (_, i) =>
      peerGet(['--out', out(i), '--linger', '3s', '--download-limit', '30MB/s', '--piece-timeout', '4s', '--server', url], { DRAGONFLY_P2P_TOKEN: t.stdout.trim() }),
    );
    const stderr = peers.map((p) => {
      let text = '';
      p.child.stderr!.on('data', (d: Buffer) => (text += d));
      return () => text;
    });
    await halfHeld(url);
    serve.kill('SIGKILL');
    peers[0]!.child.kill('SIGKILL');
    await exited(serve);
    // Down for a moment, as under systemd's Restart=on-failure; the peers keep going with the parents they know.
    await new Promise((r) => setTimeout(r, 1_000));
    serve = await startServe();
    const codes = await Promise.all(peers.map((p) => exited(p.child)));
    for (let i = 1; i < 5; i++) {
      expect(codes[i], `peer ${i}: ${stderr[i]!()}`).toBe(0);
      expect(sha256Of(fs.readFileSync(out(i))), `peer ${i}`).toBe(SHA);
    }
    expect(fs.existsSync(out(0))).toBe(false);
    serve.kill('SIGTERM');
    await exited(serve);
  }, 90_000);

  it('refuses a wrong token with a code and exit 1, leaving no file behind', async () => {
    const out = path.join(work, 'refused.raw');
    const p = peerGet(['--out', out, '--linger', '0s'], { DRAGONFLY_P2P_TOKEN: 'ab'.repeat(32) });
    let stderr = '';
    p.child.stderr!.on('data', (d: Buffer) => (stderr += d));
    expect(await exited(p.child)).toBe(1);
    expect(stderr).toContain('DF_ERR_UNAUTHORIZED');
    expect(fs.existsSync(out)).toBe(false);
    expect(fs.existsSync(`${out}.part`)).toBe(false);
  }, 30_000);

  it('usage errors exit 1 with a code, before any network', () => {
    expect(dragonfly(['peer', 'get', 'http://x/i', '--server', 'http://127.0.0.1:1', '--out', '/tmp/x']).stderr).toContain('DF_ERR_USAGE');
    expect(dragonfly(['peer', 'get', 'http://x/i', '--sha256', SHA, '--server', 'http://127.0.0.1:1', '--out', '/tmp/x', '--upload-limit', '20Mb/s'], { env: { DRAGONFLY_P2P_TOKEN: 't' } }).stderr).toContain('DF_ERR_RATE');
    expect(dragonfly(['peer', 'get', 'http://x/i', '--sha256', SHA, '--server', 'http://127.0.0.1:1', '--out', '/tmp/x', '--linger', 'soon'], { env: { DRAGONFLY_P2P_TOKEN: 't' } }).stderr).toContain('DF_ERR_DURATION');
    const r = dragonfly(['peer', 'fetch']);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('DF_ERR_USAGE');
  });
});
