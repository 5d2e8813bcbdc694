// bench/p2p [--peers N] [--size BYTES] [--peer-rate B/s] [--origin-rate B/s] [--direct-seconds S]
//
// Issue #13's benchmark: N `dragonfly peer get` processes fetch one image of F bytes through a real
// `dragonfly serve`, every peer's upload and download paced by token buckets (--upload-limit and
// --download-limit u = d), the origin's upload too (its own process, bench/p2p-origin.ts), and the seed's
// uploads (serve --p2p-upload-limit) at the origin's rate U0: the server side of the swarm is U0. The peers
// start once the seed has read the image (the preheat an apply does, before machines PXE boot); the origin's
// bytes are counted from the start. Against the bound T_min = max(F/U0, F/d, N·F/(U0 + Σu)) (Kumar & Ross,
// 2006) it prints the median and the last peer's completion ÷ T_min, origin bytes ÷ F, the time to the first
// piece, and the same N peers downloading directly from the origin in the same run. The direct downloads are
// bound by the origin (N·F/U0, many minutes), so they run for --direct-seconds and their completion is
// projected from the rate measured then (said so in the output). Last line: JSON with the figures.
//
// Completion is each peer's own downloadMs (from its fetch start to the whole image verified; a process's
// start, ~0.3 s, is not in it). The rates are low enough that this 2-core machine is not the bottleneck:
// at the defaults (N = 32, u = d = 4 MB/s, U0 = 10 MB/s) the swarm moves ~130 MB/s in all on loopback.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { freePort, until } from '../test/process-helpers.js';
import { lineReader, median, round } from './measure.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const BIN = path.join(HERE, '..', '..', 'bin', 'dragonfly.js'); // from dist/bench
const MiB = 2 ** 20;
const ADMIN = 'bench-admin-token';

interface PeerJson {
  downloadMs: number;
  firstPieceMs: number;
  bytesFromPeers: number;
  bytesFromSeed: number;
  bytesFromOrigin: number;
  sha256: string;
}

export async function benchP2p(opts: { peers?: number; size?: number; peerRate?: number; originRate?: number; directSeconds?: number } = {}) {
  const N = opts.peers ?? 32;
  const F = opts.size ?? 256 * MiB;
  const u = opts.peerRate ?? 4e6;
  const d = u;
  const U0 = opts.originRate ?? 10e6;
  const directSeconds = opts.directSeconds ?? 30;
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dragonfly-bench-p2p-'));
  const children: ChildProcess[] = [];
  const kill = () => children.forEach((c) => c.exitCode === null && c.kill('SIGKILL'));
  try {
    process.stderr.write(`bench/p2p: ${N} peers, F = ${round(F / MiB)} MiB, u = d = ${u / 1e6} MB/s, U0 = ${U0 / 1e6} MB/s (origin and seed uplinks)…\n`);
    const imageFile = path.join(work, 'image.raw');
    const hash = createHash('sha256');
    const fd = fs.openSync(imageFile, 'w');
    for (let at = 0; at < F; at += 16 * MiB) {
      const chunk = randomBytes(Math.min(16 * MiB, F - at));
      hash.update(chunk);
      fs.writeSync(fd, chunk);
    }
    fs.closeSync(fd);
    const sha256 = hash.digest('hex');

    const origin = spawn(process.execPath, [path.join(HERE, 'p2p-origin.js'), imageFile, String(U0)], { stdio: ['pipe', 'pipe', 'inherit'] });
    children.push(origin);
    const originLines = lineReader(origin.stdout!);
    const originUrl = `http://127.0.0.1:${await originLines.next()}/image.raw`;

    const state = path.join(work, 'state');
    const port = await freePort();
    const server = `http://127.0.0.1:${port}`;
    const serve = spawn(process.execPath, [BIN, 'serve', '--state', state, '--http', `127.0.0.1:${port}`, '--tftp', 'off', '--no-mage-build', '--log-format', 'json', '--p2p-upload-limit', `${U0}B/s`], {
      stdio: ['ignore', 'ignore', 'inherit'],
      env: { ...process.env, DRAGONFLY_API_TOKEN: ADMIN, DRAGONFLY_STATE: '' },
    });
    children.push(serve);
    await until('serve to listen', async () => (await fetch(`${server}/healthz`).catch(() => undefined))?.ok === true, 30_000);

    // The preheat: the seed reads the image once, at the origin's rate.
    const t0 = performance.now();
    const pre = await fetch(`${server}/api/v1/p2p/preheat`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' }, body: JSON.stringify({ url: originUrl, sha256 }) });
    if (pre.status !== 202) throw new Error(`preheat: HTTP ${pre.status}`);
    await until('the seed to read the image', async () => (await fetch(`${server}/api/v1/p2p/images/${sha256}/manifest`, { headers: { authorization: `Bearer ${ADMIN}` } }).catch(() => undefined))?.status === 200, 30 * 60_000);
    const preheatS = (performance.now() - t0) / 1000;
    const token = await output(spawn(process.execPath, [BIN, 'p2p', 'token', '--sha256', sha256, '--state', state], { stdio: ['ignore', 'pipe', 'inherit'] }));

    // N peers at once.
    process.stderr.write(`bench/p2p: seed ready after ${round(preheatS)} s; ${N} peers start…\n`);
    const runs = Array.from({ length: N }, (_, i) => {
      const child = spawn(
        process.execPath,
        [BIN, 'peer', 'get', originUrl, '--sha256', sha256, '--server', server, '--out', path.join(work, `peer-${i}.raw`), '--upload-limit', `${u}B/s`, '--download-limit', `${d}B/s`, '--linger', '10m', '--json'],
        { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, DRAGONFLY_P2P_TOKEN: token.trim(), DRAGONFLY_STATE: '' } },
      );
      children.push(child);
      let err = '';
      child.stderr!.on('data', (b: Buffer) => (err = (err + b.toString()).slice(-4000)));
      return output(child).then(
        (text) => {
          fs.rmSync(path.join(work, `peer-${i}.raw`), { force: true });
          return JSON.parse(text) as PeerJson;
        },
        (e: Error) => {
          throw new Error(`peer ${i}: ${e.message}\n${err}`);
        },
      );
    });
    const results = await Promise.all(runs);
    for (const r of results) if (r.sha256 !== sha256) throw new Error('a peer got another image');

    // The same N downloading directly from the origin, for directSeconds; the completion is projected.
    origin.stdin!.write('reset\n');
    const originBytesP2p = (JSON.parse(await originLines.next()) as { sent: number }).sent;
    process.stderr.write(`bench/p2p: ${N} direct downloads from the origin for ${directSeconds} s…\n`);
    const direct = await directRate(originUrl, N, d, directSeconds);
    origin.stdin!.end();

    const done = results.map((r) => r.downloadMs / 1000);
    const first = results.map((r) => r.firstPieceMs / 1000);
    const Tmin = Math.max(F / U0, F / d, (N * F) / (U0 + N * u));
    const directLastS = (N * F) / direct.bytesPerSecond;
    const figures = {
      bench: 'p2p',
      peers: N,
      sizeBytes: F,
      peerRateBps: u,
      originRateBps: U0,
      tMinS: round(Tmin, 2),
      medianS: round(median(done), 2),
      lastS: round(Math.max(...done), 2),
      medianOverTmin: round(median(done) / Tmin, 3),
      lastOverTmin: round(Math.max(...done) / Tmin, 3),
      originBytesOverF: round(originBytesP2p / F, 4),
      firstPieceMedianS: round(median(first), 2),
      firstPieceMaxS: round(Math.max(...first), 2),
      bytesFromPeersOverF: round(results.reduce((a, r) => a + r.bytesFromPeers, 0) / F, 2),
      bytesFromSeedOverF: round(results.reduce((a, r) => a + r.bytesFromSeed, 0) / F, 2),
      bytesFromOriginOverF: round(results.reduce((a, r) => a + r.bytesFromOrigin, 0) / F, 2),
      preheatS: round(preheatS, 1),
      directMeasuredS: directSeconds,
      directBytesPerSecond: Math.round(direct.bytesPerSecond),
      directLastProjectedS: round(directLastS, 1),
      speedupOverDirect: round(directLastS / Math.max(...done), 1),
    };
    console.log(`bench/p2p: N = ${N}, F = ${round(F / MiB)} MiB, u = d = ${u / 1e6} MB/s, U0 = ${U0 / 1e6} MB/s: T_min = max(F/U0 ${round(F / U0)} s, F/d ${round(F / d)} s, N·F/(U0+Σu) ${round((N * F) / (U0 + N * u))} s) = ${round(Tmin)} s`);
    console.log(`  completion: median ${figures.medianS} s = ${figures.medianOverTmin} × T_min (target ≤ 1.2), last ${figures.lastS} s = ${figures.lastOverTmin} × T_min (target ≤ 1.5)`);
    console.log(`  origin sent ${figures.originBytesOverF} × F (target ≤ 1.02; the seed's one read); peers got ${figures.bytesFromPeersOverF} F from each other, ${figures.bytesFromSeedOverF} F from the seed, ${figures.bytesFromOriginOverF} F from the origin`);
    console.log(`  first piece: median ${figures.firstPieceMedianS} s, slowest ${figures.firstPieceMaxS} s (target ≤ 1 s)`);
    console.log(`  direct from the origin: ${round(direct.bytesPerSecond / 1e6, 2)} MB/s for all ${N} (measured ${directSeconds} s) → the last would finish after ${figures.directLastProjectedS} s (projected): P2P is ${figures.speedupOverDirect}× faster (target ≥ 10)`);
    console.log(JSON.stringify(figures));
    return figures;
  } finally {
    kill();
    fs.rmSync(work, { recursive: true, force: true });
  }
}

/** N fetches of the image from the origin, each at most `d` B/s, for `seconds`; the aggregate rate after a 2 s warm-up. */
async function directRate(url: string, n: number, d: number, seconds: number): Promise<{ bytesPerSecond: number }> {
  const stop = new AbortController();
  let bytes = 0;
  let counting = false;
  const one = async () => {
    try {
      const res = await fetch(url, { signal: stop.signal });
      const started = performance.now();
      let mine = 0;
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        mine += chunk.byteLength;
        if (counting) bytes += chunk.byteLength;
        const ahead = mine / d - (performance.now() - started) / 1000;
        if (ahead > 0) await new Promise((r) => setTimeout(r, ahead * 1000));
      }
    } catch {
      // aborted at the end of the window
    }
  };
  const all = Array.from({ length: n }, one);
  await new Promise((r) => setTimeout(r, 2000));
  counting = true;
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, Math.max(1, seconds - 2) * 1000));
  const elapsed = (performance.now() - t0) / 1000;
  const counted = bytes;
  stop.abort();
  await Promise.all(all);
  return { bytesPerSecond: counted / elapsed };
}

function output(child: ChildProcess): Promise<string> {
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  // 'close', not 'exit': the output may still be in the pipe when the process has exited.
  return new Promise((resolve, reject) => child.once('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`exit ${code}`)))));
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const { values: v } = parseArgs({ options: { peers: { type: 'string' }, size: { type: 'string' }, 'peer-rate': { type: 'string' }, 'origin-rate': { type: 'string' }, 'direct-seconds': { type: 'string' } } });
  await benchP2p({
    ...(v.peers ? { peers: Number(v.peers) } : {}),
    ...(v.size ? { size: Number(v.size) } : {}),
    ...(v['peer-rate'] ? { peerRate: Number(v['peer-rate']) } : {}),
    ...(v['origin-rate'] ? { originRate: Number(v['origin-rate']) } : {}),
    ...(v['direct-seconds'] ? { directSeconds: Number(v['direct-seconds']) } : {}),
  });
  process.exit(0);
}
