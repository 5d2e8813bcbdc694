// image2disk: stream an OS image over HTTP(S) onto a disk, a partition, or a byte range of a disk image.
// The sha256 of the bytes as served is checked while streaming; a dropped connection resumes with an
// HTTP Range request from the last byte received; the target is fsynced before success is reported.
// Decompression runs in the distribution's own zstd / xz / bzip2 processes (native code, xz threaded);
// gzip uses node:zlib. Measuring them against the JavaScript libraries is still to do (bench/image2disk).
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import type { Readable, Writable } from 'node:stream';
import { createGunzip } from 'node:zlib';

export type Compression = 'none' | 'gzip' | 'zstd' | 'xz' | 'bzip2';

export interface Image2DiskParams {
  url: string;
  sha256: string;
  compression?: Compression;
  /** Uncompressed size in bytes, when the template says (checked against the target before writing). */
  size?: number;
}

export interface Target {
  /** A block device or a plain file (disk image). */
  path: string;
  /** Where the image starts, in bytes (a partition of a disk image); 0 for a whole disk or a partition device. */
  offset: number;
  /** How many bytes the target holds. */
  capacity: number;
}

export interface Progress {
  percent: number;
  bytes: number;
  rate: number;
  message: string;
}

export class Image2DiskError extends Error {
  constructor(message: string, readonly retryable = false) {
    super(message);
  }
}

export function compressionOf(url: string, declared?: Compression): Compression {
  if (declared) return declared;
  const path = new URL(url).pathname;
  if (path.endsWith('.gz')) return 'gzip';
  if (path.endsWith('.zst')) return 'zstd';
  if (path.endsWith('.xz')) return 'xz';
  if (path.endsWith('.bz2')) return 'bzip2';
  return 'none';
}

const DECOMPRESSORS: Record<Exclude<Compression, 'none' | 'gzip'>, string[]> = {
  zstd: ['zstd', '-dc', '-q'],
  xz: ['xz', '-dc', '-T0'],
  bzip2: ['bzip2', '-dc'],
};

/** Fetch `url` from byte `from`, retrying the connection with backoff; yields the body chunks. */
async function* download(
  url: string,
  opts: { retries: number; onRetry?: (attempt: number, error: string, from: number) => void; onLength?: (total: number) => void },
): AsyncGenerator<Uint8Array> {
  let received = 0;
  let total: number | undefined;
  for (let attempt = 0; ; attempt++) {
    try {
      const res = await fetch(url, { headers: received > 0 ? { range: `bytes=${received}-` } : {} });
      if (received > 0 && res.status !== 206) throw new Image2DiskError(`the image server does not support Range requests (HTTP ${res.status}), cannot resume at byte ${received}`);
      if (received === 0 && res.status !== 200) throw new Image2DiskError(`GET ${url}: HTTP ${res.status}`, res.status >= 500);
      if (received === 0) {
        const length = res.headers.get('content-length');
        total = length ? Number(length) : undefined;
        if (total !== undefined) opts.onLength?.(total);
      }
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        received += chunk.byteLength;
        yield chunk;
      }
      if (total !== undefined && received < total) throw new Image2DiskError(`connection closed at byte ${received} of ${total}`, true);
      return;
    } catch (e) {
      const retryable = !(e instanceof Image2DiskError) || e.retryable;
      if (!retryable || attempt >= opts.retries) throw e instanceof Image2DiskError ? e : new Image2DiskError(`download failed at byte ${received}: ${(e as Error).message}`);
      opts.onRetry?.(attempt + 1, (e as Error).message, received);
      await new Promise((r) => setTimeout(r, Math.min(200 * 2 ** attempt, 5000)));
    }
  }
}

/** Write a stream of bytes at `target.offset`, never past its capacity; fsync at the end. */
async function writeAll(source: AsyncIterable<Uint8Array>, target: Target, onBytes: (n: number) => void): Promise<number> {
  const fh = await fs.promises.open(target.path, 'r+');
  let written = 0;
  // Pipes deliver 64 KiB at a time; gather 4 MiB per write so syscalls do not bound the throughput.
  const buffer = Buffer.allocUnsafe(4 * 2 ** 20);
  let filled = 0;
  const flush = async () => {
    let done = 0;
    while (done < filled) {
      const { bytesWritten } = await fh.write(buffer, done, filled - done, target.offset + written + done);
      done += bytesWritten;
    }
    written += filled;
    filled = 0;
    onBytes(written);
  };
  try {
    for await (const chunk of source) {
      if (written + filled + chunk.byteLength > target.capacity) {
        throw new Image2DiskError(`the image is larger than the target: more than ${target.capacity} bytes`);
      }
      let taken = 0;
      while (taken < chunk.byteLength) {
        const n = Math.min(chunk.byteLength - taken, buffer.length - filled);
        buffer.set(chunk.subarray(taken, taken + n), filled);
        filled += n;
        taken += n;
        if (filled === buffer.length) await flush();
      }
    }
    await flush();
    await fh.sync();
    return written;
  } finally {
    await fh.close();
  }
}

export async function runImage2Disk(
  params: Image2DiskParams,
  target: Target,
  opts: { retries?: number; onProgress?: (p: Progress) => void; onLog?: (line: string) => void } = {},
): Promise<{ bytes: number; sha256: string }> {
  const compression = compressionOf(params.url, params.compression);
  // Fail before writing anything when the image cannot fit.
  if (params.size !== undefined && params.size > target.capacity) {
    throw new Image2DiskError(`the image (${params.size} bytes) is larger than the target ${target.path} (${target.capacity} bytes); nothing was written`);
  }
  const hash = createHash('sha256');
  let downloaded = 0;
  const started = Date.now();
  let lastReport = 0;
  const report = (written: number, force = false) => {
    const now = Date.now();
    if (!force && now - lastReport < 500) return;
    lastReport = now;
    const rate = written / Math.max((now - started) / 1000, 0.001);
    const percent = params.size ? Math.min(100, (written / params.size) * 100) : 0;
    opts.onProgress?.({ percent, bytes: written, rate, message: `${(written / 2 ** 20).toFixed(0)} MiB written` });
  };

  const compressed = (async function* () {
    const onLength = (total: number) => {
      // A raw image's length is its size on disk: refuse it before the first byte is written.
      if (compression === 'none' && total > target.capacity) {
        throw new Image2DiskError(`the image (${total} bytes) is larger than the target ${target.path} (${target.capacity} bytes); nothing was written`);
      }
    };
    const retry = (n: number, err: string, from: number) => opts.onLog?.(`retry ${n}: ${err}; resuming at byte ${from}`);
    for await (const chunk of download(params.url, { retries: opts.retries ?? 8, onRetry: retry, onLength })) {
      hash.update(chunk);
      downloaded += chunk.byteLength;
      yield chunk;
    }
  })();

  let plain: AsyncIterable<Uint8Array>;
  let child: ChildProcessWithoutNullStreams | undefined;
  let childDone: Promise<void> = Promise.resolve();
  let feedDone: Promise<void> = Promise.resolve();
  if (compression === 'none') plain = compressed;
  else {
    let decoder: { input: Writable; output: Readable };
    if (compression === 'gzip') {
      const gunzip = createGunzip();
      decoder = { input: gunzip, output: gunzip };
    } else {
      const [cmd, ...args] = DECOMPRESSORS[compression];
      child = spawn(cmd!, args, { stdio: ['pipe', 'pipe', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d));
      const c = child;
      childDone = new Promise((resolve, reject) => {
        c.once('error', (e) => reject(new Image2DiskError(`${cmd} could not start: ${e.message}`)));
        c.once('close', (code) => (code === 0 ? resolve() : reject(new Image2DiskError(`${cmd} failed (exit ${code}): ${stderr.trim() || 'corrupt or truncated image'}`))));
      });
      decoder = { input: child.stdin, output: child.stdout };
    }
    feedDone = (async () => {
      try {
        for await (const chunk of compressed) {
          if (!decoder.input.write(chunk)) await new Promise((r) => decoder.input.once('drain', r));
        }
        decoder.input.end();
      } catch (e) {
        decoder.output.destroy(e as Error);
        throw e;
      }
    })();
    plain = decoder.output;
  }

  try {
    const [written] = await Promise.all([writeAll(plain, target, (n) => report(n)), feedDone, childDone]);
    const digest = hash.digest('hex');
    if (digest !== params.sha256.toLowerCase()) {
      throw new Image2DiskError(`sha256 mismatch: expected ${params.sha256.toLowerCase()}, got ${digest} (${downloaded} bytes from ${params.url})`);
    }
    report(written, true);
    return { bytes: written, sha256: digest };
  } catch (e) {
    child?.kill('SIGKILL');
    throw e;
  }
}
