// bench/image2disk: a 1 GiB image over loopback HTTP to a file, sha256 on: raw against `curl URL > file`,
// zstd against `curl URL | zstd -dc > file`, in the same run. Targets: ≥ 0.9× each.
// image2disk fsyncs before it reports success (the data must be on the disk when the machine reboots);
// curl does not, so each baseline is also measured followed by `sync FILE` ("durable"), which is the
// fair comparison when the disk is slower than the decompressor.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runImage2Disk } from '../mage/actions/image2disk.js';
import { osLikeImage } from './decompress.js';
import { median, round } from './measure.js';

const SERVER = `
const http = require('http'), fs = require('fs'), path = require('path');
const root = process.argv[1];
const s = http.createServer((req, res) => {
  const f = path.join(root, path.basename(req.url));
  const size = fs.statSync(f).size;
  res.writeHead(200, { 'content-length': size });
  fs.createReadStream(f, { highWaterMark: 1 << 20 }).pipe(res);
});
s.listen(0, '127.0.0.1', () => console.log(s.address().port));
`;

async function time(fn: () => Promise<unknown> | unknown): Promise<number> {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

export async function benchImage2Disk(opts: { sizeMiB?: number; runs?: number } = {}) {
  const sizeMiB = opts.sizeMiB ?? 1024;
  const runs = opts.runs ?? 3;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dragonfly-bench-image-'));
  const server = spawn(process.execPath, ['-e', SERVER, dir], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    // An OS-like image: a quarter random, a quarter text, half zeros (zstd -3 compresses it ~4:1).
    process.stderr.write(`bench/image2disk: writing a ${sizeMiB} MiB image…\n`);
    const raw = path.join(dir, 'os.raw');
    fs.writeFileSync(raw, osLikeImage(sizeMiB));
    execFileSync('zstd', ['-q', '-f', '-3', '-T0', raw, '-o', `${raw}.zst`]);
    const sha = (f: string) => execFileSync('sha256sum', [f], { encoding: 'utf8' }).split(' ')[0]!;
    const shaRaw = sha(raw);
    const shaZst = sha(`${raw}.zst`);
    const port = await new Promise<number>((r) => server.stdout!.once('data', (d: Buffer) => r(Number(String(d).trim()))));
    const url = (f: string) => `http://127.0.0.1:${port}/${f}`;
    const out = path.join(dir, 'disk.img');
    const fresh = () => {
      fs.rmSync(out, { force: true });
      fs.writeFileSync(out, '');
      fs.truncateSync(out, (sizeMiB + 16) * 2 ** 20);
    };
    const target = () => ({ path: out, offset: 0, capacity: (sizeMiB + 16) * 2 ** 20 });
    // curl with sha256 too, for a fair comparison: tee through sha256sum.
    const curlRaw = () => spawnSync('sh', ['-c', `curl -sS ${url('os.raw')} | tee ${out} | sha256sum >/dev/null`]);
    const curlZst = () => spawnSync('bash', ['-c', `curl -sS ${url('os.raw.zst')} | tee >(sha256sum >/dev/null) | zstd -dc -q > ${out}`]);
    const durable = (run: () => unknown) => () => {
      run();
      spawnSync('sync', [out]);
    };

    const rounds = { curlRaw: [] as number[], curlRawSync: [] as number[], oursRaw: [] as number[], curlZst: [] as number[], curlZstSync: [] as number[], oursZst: [] as number[] };
    for (let i = 0; i < runs; i++) {
      fresh();
      rounds.curlRaw.push(await time(curlRaw));
      fresh();
      rounds.curlRawSync.push(await time(durable(curlRaw)));
      fresh();
      rounds.oursRaw.push(await time(() => runImage2Disk({ url: url('os.raw'), sha256: shaRaw }, target())));
      fresh();
      rounds.curlZst.push(await time(curlZst));
      fresh();
      rounds.curlZstSync.push(await time(durable(curlZst)));
      fresh();
      rounds.oursZst.push(await time(() => runImage2Disk({ url: url('os.raw.zst'), sha256: shaZst }, target())));
    }
    const m = {
      curlRaw: median(rounds.curlRaw),
      curlRawSync: median(rounds.curlRawSync),
      oursRaw: median(rounds.oursRaw),
      curlZst: median(rounds.curlZst),
      curlZstSync: median(rounds.curlZstSync),
      oursZst: median(rounds.oursZst),
    };
    const mbps = (ms: number) => round(sizeMiB / (ms / 1000));
    const figures = {
      bench: 'image2disk',
      sizeMiB,
      runs,
      curlRawMiBps: mbps(m.curlRaw),
      oursRawMiBps: mbps(m.oursRaw),
      rawRatio: round(m.curlRaw / m.oursRaw, 2),
      curlZstdMiBps: mbps(m.curlZst),
      oursZstdMiBps: mbps(m.oursZst),
      zstdRatio: round(m.curlZst / m.oursZst, 2),
      durableRawRatio: round(m.curlRawSync / m.oursRaw, 2),
      durableZstdRatio: round(m.curlZstSync / m.oursZst, 2),
      targets: { rawRatio: 0.9, zstdRatio: 0.9 },
      met: { raw: m.curlRaw / m.oursRaw >= 0.9, zstd: m.curlZst / m.oursZst >= 0.9 },
    };
    console.log(`raw:  curl > file ${figures.curlRawMiBps} MiB/s, image2disk ${figures.oursRawMiBps} MiB/s (${figures.rawRatio}×; target ≥ 0.9×)`);
    console.log(`zstd: curl | zstd -dc ${figures.curlZstdMiBps} MiB/s, image2disk ${figures.oursZstdMiBps} MiB/s (${figures.zstdRatio}×; target ≥ 0.9×)`);
    console.log(`durable (baseline followed by sync, as image2disk fsyncs): raw ${figures.durableRawRatio}×, zstd ${figures.durableZstdRatio}×`);
    console.log(JSON.stringify(figures));
    return figures;
  } finally {
    server.kill();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await benchImage2Disk({ sizeMiB: Number(process.env.BENCH_IMAGE_MIB ?? 1024) });
  process.exit(0);
}
