// `dragonfly p2p` against a real `dragonfly serve`, with the image on a real HTTP server (Python's
// http.server) as a template names it: preheat makes the seed read it, status shows it, token signs for it.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { p2pToken, readSecret } from '../boot/tokens.js';
import { BIN, dragonfly, ROOT, tempDir } from './cli-helpers.js';
import { collect, freePort, until } from './process-helpers.js';

const IMAGE = randomBytes(9 * 1024 * 1024 + 7); // three pieces
const SHA = createHash('sha256').update(IMAGE).digest('hex');

let work: string;
let base: string;
const children: ChildProcess[] = [];

beforeAll(async () => {
  work = tempDir('dragonfly-p2p-cli-');
  fs.mkdirSync(path.join(work, 'images'));
  fs.writeFileSync(path.join(work, 'images', 'os.raw'), IMAGE);
  const [originPort, http] = [await freePort(), await freePort()];
  const origin = spawn('/usr/bin/python3', ['-m', 'http.server', '--bind', '127.0.0.1', '--directory', path.join(work, 'images'), String(originPort)], { stdio: 'ignore' });
  children.push(origin);
  fs.mkdirSync(path.join(work, 'fleet'));
  fs.writeFileSync(
    path.join(work, 'fleet', 'template.yaml'),
    `apiVersion: dragonfly.computer/v1
kind: Template
metadata: {name: tiny}
spec:
  image: {url: "http://127.0.0.1:${originPort}/os.raw", sha256: "${SHA}"}
  actions:
    - image2disk: {disk: \${disk}}
`,
  );
  const serve = spawn(process.execPath, [BIN, 'serve', '--state', path.join(work, 'state'), '--http', `127.0.0.1:${http}`, '--tftp', 'off', '--no-mage-build'], {
    cwd: ROOT,
    env: { ...process.env, DRAGONFLY_API_TOKEN: 'admin-token', DRAGONFLY_READ_TOKEN: 'read-token', DRAGONFLY_STATE: '' },
  });
  children.push(serve);
  const out = collect(serve);
  base = `http://127.0.0.1:${http}`;
  await until('serve to listen', async () => (await fetch(`${base}/healthz`).catch(() => undefined))?.ok === true, 20_000);
  await until('the origin to listen', async () => (await fetch(`http://127.0.0.1:${originPort}/os.raw`, { method: 'HEAD' }).catch(() => undefined))?.ok === true, 20_000);
  void out;
}, 60_000);

afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
  fs.rmSync(work, { recursive: true, force: true });
});

describe('dragonfly p2p', () => {
  it('preheats a template\'s image, shows it in status, and prints the token its peers need', async () => {
    const env = { DRAGONFLY_API_TOKEN: '', DRAGONFLY_READ_TOKEN: '' };
    const empty = dragonfly(['p2p', 'status', '--server', base], { env: { ...env, DRAGONFLY_READ_TOKEN: 'read-token' } });
    expect(empty.stdout).toBe('No images are being distributed.\n');

    // The admin token is needed to make the server read an image.
    const refused = dragonfly(['p2p', 'preheat', '--template', 'tiny', '--fleet', path.join(work, 'fleet'), '--server', base], { env: { ...env, DRAGONFLY_API_TOKEN: 'read-token' } });
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(/DF_ERR_UNAUTHORIZED/);

    const preheat = dragonfly(['p2p', 'preheat', '--template', 'tiny', '--fleet', path.join(work, 'fleet'), '--server', base], { env: { ...env, DRAGONFLY_API_TOKEN: 'admin-token' } });
    expect(preheat.stderr).toBe('');
    expect(preheat.stdout).toBe(`preheat: tiny ${SHA} preparing\n`);

    await until('the image ready', () => {
      const s = dragonfly(['p2p', 'status', '--server', base, '--json'], { env: { ...env, DRAGONFLY_READ_TOKEN: 'read-token' } });
      const images = JSON.parse(s.stdout) as { sha256: string; state: string; stats?: { pieces: number } }[];
      return images.some((i) => i.sha256 === SHA && i.state === 'ready' && i.stats?.pieces === 3);
    });
    const table = dragonfly(['p2p', 'status', '--server', base], { env: { ...env, DRAGONFLY_READ_TOKEN: 'read-token' } });
    expect(table.stdout).toMatch(new RegExp(`^${SHA.slice(0, 12)}\\s+ready\\s+0\\s+0/3\\s+0\\s+0$`, 'm'));

    // The token from the state directory opens the image's swarm: its manifest says what was read.
    const token = dragonfly(['p2p', 'token', '--sha256', SHA.toUpperCase(), '--state', path.join(work, 'state')]);
    expect(token.stdout.trim()).toBe(p2pToken(readSecret(path.join(work, 'state')), SHA));
    const manifest = await fetch(`${base}/api/v1/p2p/images/${SHA}/manifest`, { headers: { authorization: `Bearer ${token.stdout.trim()}` } });
    expect(manifest.status).toBe(200);
    expect(await manifest.json()).toMatchObject({ size: IMAGE.length, sha256: SHA, pieceLength: 4 * 1024 * 1024 });
    const piece = await fetch(`${base}/p2p/${SHA}/pieces/2`, { headers: { authorization: `Bearer ${token.stdout.trim()}` } });
    expect(Buffer.from(await piece.arrayBuffer()).equals(IMAGE.subarray(8 * 1024 * 1024))).toBe(true);
  }, 60_000);
});
