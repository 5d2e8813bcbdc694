// image2disk: stream an OS image over HTTP(S) onto a disk, a partition, or a byte range of a disk image.
// The sha256 of the bytes as served is checked while streaming; a dropped connection resumes with an
// HTTP Range request from the last byte received; the target is fsynced before success is reported.
// zstd / xz / bzip2 images are decoded by the distribution's own processes and written by dd
// (decode-to-disk.ts), so Node carries only the compressed stream; gzip uses node:zlib. bench/image2disk
// measures the native decoders against the JavaScript libraries (fzstd, xz-decompress): native won.
import { createHash, type Hash } from 'node:crypto';
import fs from 'node:fs';
import { createGunzip } from 'node:zlib';
import { decodeToDisk, type DecodeToDisk } from './decode-to-disk.js';
import type { PeerProgress } from '../../p2p/peer.js';
import { swarmStream, swarmToTarget, type P2pSource, type SwarmRun } from './p2p-source.js';
import { Image2DiskError, type Target } from './target.js';
import { zstdContentSize } from './zstd-header.js';

export { Image2DiskError, type P2pSource, type Target };

export type Compression = 'none' | 'gzip' | 'zstd' | 'xz' | 'bzip2';

export interface Image2DiskParams {
  url: string;
  sha256: string;
  compression?: Compression;
  /** Uncompressed size in bytes, when the template says (checked against the target before writing). */
  size?: number;
}

export interface Progress {
  percent: number;
  bytes: number;
  rate: number;
  message: string;
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
  zstd: ['zstd', '-dc', '-q', '--no-sparse'],
  // Never sparse: skipping runs of zeros would leave a disk's old bytes where the image has zeros.
  xz: ['xz', '-dc', '-T0', '--no-sparse'],
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

function tooLarge(size: number, target: Target): Image2DiskError {
  return new Image2DiskError(`the image (${size} bytes) is larger than the target ${target.path} (${target.capacity} bytes); nothing was written`);
}

/** Feed a stream into a decoder's stdin, stopping early when the decoder can take no more. */
async function feed(source: AsyncIterable<Uint8Array>, sink: DecodeToDisk): Promise<void> {
  const input = sink.input;
  for await (const chunk of source) {
    if (sink.closed()) break;
    if (!input.write(chunk)) {
      await new Promise<void>((resolve) => {
        const done = () => {
          input.off('drain', done);
          input.off('close', done);
          resolve();
        };
        input.on('drain', done);
        input.on('close', done);
      });
    }
  }
  if (!sink.closed()) input.end();
}

export interface Image2DiskOptions {
  retries?: number;
  onProgress?: (p: Progress) => void;
  onLog?: (line: string) => void;
  /** Fetch through the server's P2P swarm first (the claimant's workflow carries the token); the URL is the fallback. */
  p2p?: P2pSource;
}

export interface Image2DiskResult {
  bytes: number;
  sha256: string;
  /** Where the image's bytes came from, when the swarm delivered it. */
  p2p?: { fromPeers: number; fromSeed: number; fromOrigin: number };
  /** The peer still serving the rollout after the image was written: settles once it left the swarm. */
  lingering?: Promise<unknown>;
  /** Ends that linger now (before a reboot). */
  stopLingering?: () => void;
}

/** Errors of the image itself: the URL would give the same bytes, so falling back to it is pointless. */
const IMAGE_IS_WRONG = new Set(['DF_ERR_IMAGE_SHA256', 'DF_ERR_SHA256']);

export async function runImage2Disk(params: Image2DiskParams, target: Target, opts: Image2DiskOptions = {}): Promise<Image2DiskResult> {
  const compression = compressionOf(params.url, params.compression);
  // Fail before writing anything when the image cannot fit.
  if (params.size !== undefined && params.size > target.capacity) throw tooLarge(params.size, target);
  if (opts.p2p) {
    try {
      return await viaSwarm(params, compression, target, opts.p2p, opts);
    } catch (e) {
      if (e instanceof Image2DiskError || IMAGE_IS_WRONG.has(codeOf(e) ?? '')) throw e;
      opts.onLog?.(`image2disk: the P2P swarm failed (${codeOf(e) ?? 'error'}: ${(e as Error).message}); fetching ${params.url} directly`);
    }
  }
  return viaUrl(params, compression, target, opts);
}

function codeOf(e: unknown): string | undefined {
  const code = (e as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' ? code : undefined;
}

/** Progress as written bytes, at most every 500 ms; `extra` adds to the message (the swarm's share). */
function reporter(params: Image2DiskParams, onProgress: Image2DiskOptions['onProgress'], extra: () => string = () => '') {
  const started = Date.now();
  let lastReport = 0;
  return (written: number, force = false) => {
    const now = Date.now();
    if (!force && now - lastReport < 500) return;
    lastReport = now;
    const rate = written / Math.max((now - started) / 1000, 0.001);
    const percent = params.size ? Math.min(100, (written / params.size) * 100) : 0;
    onProgress?.({ percent, bytes: written, rate, message: `${(written / 2 ** 20).toFixed(0)} MiB written${extra()}` });
  };
}

/** The image's bytes as they arrive, hashed and counted; a zstd frame's declared size is checked first. */
function checked(source: AsyncIterable<Uint8Array>, compression: Compression, target: Target, seen: { hash: Hash; bytes: number }): AsyncGenerator<Uint8Array> {
  return (async function* () {
    for await (const chunk of source) {
      if (seen.bytes === 0 && compression === 'zstd') {
        // A zstd frame usually declares its decompressed size: refuse before writing when it cannot fit.
        const declared = zstdContentSize(chunk);
        if (declared !== undefined && declared > target.capacity) throw tooLarge(declared, target);
      }
      seen.hash.update(chunk);
      seen.bytes += chunk.byteLength;
      yield chunk;
    }
  })();
}

/** Decodes (or not) and writes the image's bytes to the target; returns the bytes written. */
async function writeImage(compressed: AsyncIterable<Uint8Array>, compression: Compression, target: Target, report: (n: number) => void): Promise<number> {
  if (compression === 'none' || compression === 'gzip') {
    let plain: AsyncIterable<Uint8Array> = compressed;
    if (compression === 'gzip') {
      const gunzip = createGunzip();
      const fed = (async () => {
        try {
          for await (const chunk of compressed) if (!gunzip.write(chunk)) await new Promise((r) => gunzip.once('drain', r));
          gunzip.end();
        } catch (e) {
          gunzip.destroy(e as Error);
        }
      })();
      plain = gunzip;
      void fed;
    }
    return writeAll(plain, target, report);
  }
  const sink = decodeToDisk(DECOMPRESSORS[compression], target, report);
  try {
    // A download failure is the cause to report; the decoder then only saw a truncated stream.
    await feed(compressed, sink);
  } catch (e) {
    sink.kill();
    await sink.done.catch(() => {});
    throw e;
  }
  return sink.done;
}

function verify(seen: { hash: Hash; bytes: number }, params: Image2DiskParams, from: string): string {
  const digest = seen.hash.digest('hex');
  if (digest !== params.sha256.toLowerCase()) {
    throw new Image2DiskError(`sha256 mismatch: expected ${params.sha256.toLowerCase()}, got ${digest} (${seen.bytes} bytes from ${from})`);
  }
  return digest;
}

async function viaUrl(params: Image2DiskParams, compression: Compression, target: Target, opts: Image2DiskOptions): Promise<Image2DiskResult> {
  const report = reporter(params, opts.onProgress);
  const seen = { hash: createHash('sha256'), bytes: 0 };
  const onLength = (total: number) => {
    // A raw image's length is its size on disk: refuse it before the first byte is written.
    if (compression === 'none' && total > target.capacity) throw tooLarge(total, target);
  };
  const retry = (n: number, err: string, from: number) => opts.onLog?.(`retry ${n}: ${err}; resuming at byte ${from}`);
  const source = download(params.url, { retries: opts.retries ?? 8, onRetry: retry, onLength });
  const written = await writeImage(checked(source, compression, target, seen), compression, target, (n) => report(n));
  const sha256 = verify(seen, params, params.url);
  report(written, true);
  return { bytes: written, sha256 };
}

async function viaSwarm(params: Image2DiskParams, compression: Compression, target: Target, p2p: P2pSource, opts: Image2DiskOptions): Promise<Image2DiskResult> {
  let peer: PeerProgress | undefined;
  const share = () => (peer ? `; ${(peer.bytesFromPeers / 2 ** 20).toFixed(0)} of ${(peer.bytesDone / 2 ** 20).toFixed(0)} MiB fetched from peers` : '');
  const report = reporter(params, opts.onProgress, share);
  const onLog = opts.onLog ?? (() => undefined);
  const sha256 = params.sha256.toLowerCase();
  if (compression === 'none') {
    // A raw image goes onto the target piece by piece, by offset, and is served back from there.
    const run = swarmToTarget(p2p, target, {
      sha256,
      ...(params.size !== undefined ? { size: params.size } : {}),
      onManifest: (m) => {
        if (m.size > target.capacity) throw tooLarge(m.size, target);
      },
      onProgress: (p) => ((peer = p), report(p.bytesDone)),
      onLog,
    });
    try {
      peer = await run.whole;
    } catch (e) {
      run.stop(e);
      throw e;
    }
    report(peer.size, true);
    return swarmResult(peer.size, sha256, peer, run);
  }
  const run = swarmStream(p2p, { sha256, onProgress: (p) => (peer = p), onLog });
  const seen = { hash: createHash('sha256'), bytes: 0 };
  let written: number;
  try {
    written = await writeImage(checked(run.chunks, compression, target, seen), compression, target, (n) => report(n));
    peer = await run.whole;
  } catch (e) {
    run.stop(e);
    throw e;
  }
  verify(seen, params, `the P2P swarm of ${p2p.server}`);
  report(written, true);
  return swarmResult(written, sha256, peer, run);
}

function swarmResult(bytes: number, sha256: string, peer: PeerProgress, run: SwarmRun): Image2DiskResult {
  return {
    bytes,
    sha256,
    p2p: { fromPeers: peer.bytesFromPeers, fromSeed: peer.bytesFromSeed, fromOrigin: peer.bytesFromOrigin },
    lingering: run.lingering,
    stopLingering: () => run.stop(),
  };
}
