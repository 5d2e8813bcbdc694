// image2disk against a real HTTP server on loopback: raw and compressed images, sha256, Range resume.
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Image2DiskError, runImage2Disk, type Target } from './image2disk.js';

let dir: string;
let server: http.Server;
let base: string;
const images = new Map<string, Buffer>();
/** Paths whose first response is cut after this many bytes (to test resume). */
const cutOnce = new Map<string, number>();
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dragonfly-image2disk-'));
  // Compressible but not trivial: repeated random blocks.
  const block = randomBytes(64 * 1024);
  const raw = Buffer.concat(Array.from({ length: 96 }, (_, i) => (i % 3 === 0 ? randomBytes(64 * 1024) : block)));
  fs.writeFileSync(path.join(dir, 'os.raw'), raw);
  execFileSync('zstd', ['-q', '-f', '-3', path.join(dir, 'os.raw'), '-o', path.join(dir, 'os.raw.zst')]);
  execFileSync('xz', ['-k', '-f', '-1', path.join(dir, 'os.raw')]);
  images.set('/os.raw', raw);
  images.set('/os.raw.gz', gzipSync(raw));
  images.set('/os.raw.zst', fs.readFileSync(path.join(dir, 'os.raw.zst')));
  images.set('/os.raw.xz', fs.readFileSync(path.join(dir, 'os.raw.xz')));
  server = http.createServer((req, res) => {
    const body = images.get(req.url!);
    if (!body) return void res.writeHead(404).end();
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    const from = range ? Number(range[1]) : 0;
    const slice = body.subarray(from);
    res.writeHead(range ? 206 : 200, { 'content-length': slice.length, ...(range ? { 'content-range': `bytes ${from}-${body.length - 1}/${body.length}` } : {}) });
    const cut = cutOnce.get(req.url!);
    if (cut !== undefined && !range) {
      cutOnce.delete(req.url!);
      res.write(slice.subarray(0, cut), () => res.destroy());
      return;
    }
    res.end(slice);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => {
  server.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

function disk(size = 16 * 2 ** 20): Target {
  const p = path.join(dir, `disk-${randomBytes(4).toString('hex')}.img`);
  fs.writeFileSync(p, Buffer.alloc(0));
  fs.truncateSync(p, size);
  return { path: p, offset: 0, capacity: size };
}

describe('image2disk', () => {
  const raw = () => images.get('/os.raw')!;

  it.each(['/os.raw', '/os.raw.gz', '/os.raw.zst', '/os.raw.xz'])('writes %s byte-identical, checking the sha256 of what was served', async (url) => {
    const t = disk();
    const progress: number[] = [];
    const r = await runImage2Disk({ url: base + url, sha256: sha(images.get(url)!), size: raw().length }, t, { onProgress: (p) => progress.push(p.percent) });
    expect(r.bytes).toBe(raw().length);
    expect(fs.readFileSync(t.path).subarray(0, raw().length).equals(raw())).toBe(true);
    expect(progress.at(-1)).toBe(100);
  });

  it('writes at an offset (a partition of a disk image) and never past the target', async () => {
    const t = { ...disk(), offset: 2 ** 20, capacity: 8 * 2 ** 20 };
    await runImage2Disk({ url: `${base}/os.raw.zst`, sha256: sha(images.get('/os.raw.zst')!) }, t);
    const bytes = fs.readFileSync(t.path);
    expect(bytes.subarray(0, 2 ** 20).every((b) => b === 0)).toBe(true);
    expect(bytes.subarray(2 ** 20, 2 ** 20 + raw().length).equals(raw())).toBe(true);
  });

  it('fails on a sha256 mismatch, naming the expected and the actual digest', async () => {
    const wrong = 'ab'.repeat(32);
    const err = await runImage2Disk({ url: `${base}/os.raw.zst`, sha256: wrong }, disk()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Image2DiskError);
    expect((err as Error).message).toContain(`sha256 mismatch: expected ${wrong}, got ${sha(images.get('/os.raw.zst')!)}`);
  });

  it('resumes with a Range request after the connection drops mid-image', async () => {
    cutOnce.set('/os.raw.zst', 100_000);
    const logs: string[] = [];
    const t = disk();
    await runImage2Disk({ url: `${base}/os.raw.zst`, sha256: sha(images.get('/os.raw.zst')!) }, t, { onLog: (l) => logs.push(l) });
    expect(logs.some((l) => /retry 1: .*resuming at byte \d+/.test(l))).toBe(true);
    expect(fs.readFileSync(t.path).subarray(0, raw().length).equals(raw())).toBe(true);
  });

  it('refuses an image larger than the target before writing anything', async () => {
    const small = disk(2 ** 20);
    await expect(runImage2Disk({ url: `${base}/os.raw`, sha256: sha(raw()) }, small)).rejects.toThrow(/larger than the target .* nothing was written/);
    await expect(runImage2Disk({ url: `${base}/os.raw.zst`, sha256: sha(images.get('/os.raw.zst')!), size: raw().length }, small)).rejects.toThrow(/nothing was written/);
    expect(fs.readFileSync(small.path).every((b) => b === 0)).toBe(true);
  });

  it('refuses a zstd image whose frame header declares more than the target holds, before writing anything', async () => {
    const small = disk(2 ** 20);
    const err = await runImage2Disk({ url: `${base}/os.raw.zst`, sha256: sha(images.get('/os.raw.zst')!) }, small).catch((e: unknown) => e);
    expect((err as Error).message).toMatch(new RegExp(`the image \\(${raw().length} bytes\\) is larger than the target .* nothing was written`));
    expect(fs.readFileSync(small.path).every((b) => b === 0)).toBe(true);
  });

  it('stops at the end of the target when a compressed image that declares no size is too large (the next partition stays intact)', async () => {
    // zstd reading a pipe does not know the size, so the frame declares none; xz never declares one up front.
    images.set('/nosize.raw.zst', execFileSync('zstd', ['-q', '-c', '-3'], { input: raw(), maxBuffer: 64 * 2 ** 20 }));
    // At offset 0 the decoder writes the file itself (bounded by RLIMIT_FSIZE); at an offset dd does.
    for (const [url, offset] of [['/nosize.raw.zst', 0], ['/nosize.raw.zst', 2 ** 20], ['/os.raw.xz', 0], ['/os.raw.xz', 2 ** 20]] as const) {
      const t = { ...disk(3 * 2 ** 20), offset, capacity: 2 ** 20 };
      // The next partition, which must stay as it is.
      const fd = fs.openSync(t.path, 'r+');
      fs.writeSync(fd, Buffer.alloc(2 ** 20, 0xee), 0, 2 ** 20, offset + 2 ** 20);
      fs.closeSync(fd);
      const err = await runImage2Disk({ url: base + url, sha256: sha(images.get(url)!) }, t).catch((e: unknown) => e);
      expect((err as Error).message).toBe(`the image is larger than the target: more than ${2 ** 20} bytes`);
      const bytes = fs.readFileSync(t.path);
      expect(bytes.length).toBe(3 * 2 ** 20);
      expect(bytes.subarray(offset, offset + 2 ** 20).equals(raw().subarray(0, 2 ** 20))).toBe(true);
      expect(bytes.subarray(offset + 2 ** 20, offset + 2 * 2 ** 20).every((b) => b === 0xee)).toBe(true);
    }
  });

  it('writes the zeros of an image over old data (decoders never make the target sparse)', async () => {
    const holey = Buffer.concat([randomBytes(2 ** 20), Buffer.alloc(4 * 2 ** 20), randomBytes(2 ** 20)]);
    images.set('/holey.raw.zst', execFileSync('zstd', ['-q', '-c', '-3'], { input: holey, maxBuffer: 64 * 2 ** 20 }));
    images.set('/holey.raw.xz', execFileSync('xz', ['-c', '-1'], { input: holey, maxBuffer: 64 * 2 ** 20 }));
    for (const url of ['/holey.raw.zst', '/holey.raw.xz']) {
      const t = disk(8 * 2 ** 20);
      fs.writeFileSync(t.path, Buffer.alloc(8 * 2 ** 20, 0xff));
      await runImage2Disk({ url: base + url, sha256: sha(images.get(url)!) }, t);
      expect(fs.readFileSync(t.path).subarray(0, holey.length).equals(holey)).toBe(true);
    }
  });

  it('reports a corrupt compressed image as such', async () => {
    const bad = Buffer.from(images.get('/os.raw.zst')!);
    bad.fill(0x41, 100, 400);
    images.set('/bad.raw.zst', bad);
    await expect(runImage2Disk({ url: `${base}/bad.raw.zst`, sha256: sha(bad) }, disk())).rejects.toThrow(/zstd failed/);
  });
});
