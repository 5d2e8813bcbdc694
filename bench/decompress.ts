// bench/decompress: the native zstd and xz processes image2disk uses, against the well-kept JavaScript
// decoders that would avoid them (fzstd, pure JS; xz-decompress, WebAssembly), on the same OS-like image.
// The native decoder writes to /dev/null (image2disk lets it write the disk itself); the libraries hand
// their output to JS, which only counts it. Ratio > 1: native is faster.
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Decompress } from 'fzstd';
import xzDecompress from 'xz-decompress';
import { median, round } from './measure.js';

/** An OS-like image: a quarter random (binaries), a quarter text, half zeros (free space). */
export function osLikeImage(sizeMiB: number): Buffer {
  const mib = 2 ** 20;
  const text = Buffer.from(createHash('sha512').update('dragonfly').digest('base64').repeat(mib / 64 + 1).slice(0, mib));
  return Buffer.concat(
    Array.from({ length: sizeMiB }, (_, i) => {
      if (i % 4 === 0) return randomBytes(mib);
      if (i % 4 === 1) return Buffer.from(text.map((b, j) => (j % 97 === i % 97 ? 0x0a : b)));
      return Buffer.alloc(mib);
    }),
  );
}

async function nativeDecode(cmd: string, args: string[], input: Buffer): Promise<number> {
  const t0 = process.hrtime.bigint();
  const out = fs.openSync('/dev/null', 'w');
  const child = spawn(cmd, args, { stdio: ['pipe', out, 'inherit'] });
  fs.closeSync(out);
  const stdin = child.stdin!;
  const exited = new Promise<number | null>((r) => child.once('close', r));
  for (let at = 0; at < input.length; at += 2 ** 20) {
    if (!stdin.write(input.subarray(at, at + 2 ** 20))) await new Promise((r) => stdin.once('drain', r));
  }
  stdin.end();
  if ((await exited) !== 0) throw new Error(`${cmd} failed`);
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

function fzstdDecode(input: Buffer, expected: number): number {
  const t0 = process.hrtime.bigint();
  let bytes = 0;
  const d = new Decompress((chunk) => (bytes += chunk.byteLength));
  for (let at = 0; at < input.length; at += 2 ** 20) d.push(input.subarray(at, at + 2 ** 20), at + 2 ** 20 >= input.length);
  if (bytes !== expected) throw new Error(`fzstd produced ${bytes} bytes, expected ${expected}`);
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

async function xzWasmDecode(input: Buffer, expected: number): Promise<number> {
  const t0 = process.hrtime.bigint();
  let bytes = 0;
  const stream = new xzDecompress.XzReadableStream(new Blob([new Uint8Array(input)]).stream());
  const reader = stream.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    bytes += value.byteLength;
  }
  if (bytes !== expected) throw new Error(`xz-decompress produced ${bytes} bytes, expected ${expected}`);
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

export async function benchDecompress(opts: { sizeMiB?: number; runs?: number } = {}) {
  const sizeMiB = opts.sizeMiB ?? 256;
  const runs = opts.runs ?? 3;
  const raw = osLikeImage(sizeMiB);
  const zst = execFileSync('zstd', ['-q', '-c', '-3', '-T0'], { input: raw, maxBuffer: 2 ** 31 });
  const xz = execFileSync('xz', ['-c', '-1', '-T0'], { input: raw, maxBuffer: 2 ** 31 });
  const r = { zstdNative: [] as number[], fzstd: [] as number[], xzNative: [] as number[], xzWasm: [] as number[] };
  for (let i = 0; i < runs; i++) {
    r.zstdNative.push(await nativeDecode('zstd', ['-dc', '-q'], zst));
    r.fzstd.push(fzstdDecode(zst, raw.length));
    r.xzNative.push(await nativeDecode('xz', ['-dc', '-T0'], xz));
    r.xzWasm.push(await xzWasmDecode(xz, raw.length));
  }
  const m = { zstdNative: median(r.zstdNative), fzstd: median(r.fzstd), xzNative: median(r.xzNative), xzWasm: median(r.xzWasm) };
  const mbps = (ms: number) => round(sizeMiB / (ms / 1000));
  const figures = {
    bench: 'decompress',
    sizeMiB,
    runs,
    zstdRatio: round(raw.length / zst.length, 2),
    xzRatio: round(raw.length / xz.length, 2),
    zstdNativeMiBps: mbps(m.zstdNative),
    fzstdMiBps: mbps(m.fzstd),
    zstdNativeVsLibrary: round(m.fzstd / m.zstdNative, 2),
    xzNativeMiBps: mbps(m.xzNative),
    xzWasmMiBps: mbps(m.xzWasm),
    xzNativeVsLibrary: round(m.xzWasm / m.xzNative, 2),
    kept: { zstd: m.zstdNative <= m.fzstd ? 'native' : 'fzstd', xz: m.xzNative <= m.xzWasm ? 'native' : 'xz-decompress' },
  };
  console.log(`zstd: native ${figures.zstdNativeMiBps} MiB/s, fzstd ${figures.fzstdMiBps} MiB/s (native ${figures.zstdNativeVsLibrary}× faster)`);
  console.log(`xz:   native ${figures.xzNativeMiBps} MiB/s, xz-decompress ${figures.xzWasmMiBps} MiB/s (native ${figures.xzNativeVsLibrary}× faster)`);
  console.log(JSON.stringify(figures));
  return figures;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await benchDecompress({ sizeMiB: Number(process.env.BENCH_DECOMPRESS_MIB ?? 256) });
  process.exit(0);
}
