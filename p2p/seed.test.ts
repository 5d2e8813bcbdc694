import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DragonflyError } from '../schemas/errors.js';
import { pieceLengthFor, pieceRange, type Manifest } from './manifest.js';
import { Seed, type SeedOptions } from './seed.js';

const MiB = 2 ** 20;
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** A real image server on 127.0.0.1: Range support (RFC 9110 §14), a byte count, and switches to misbehave. */
class Origin {
  readonly files = new Map<string, Buffer>();
  /** Body bytes written to sockets, and requests (with their Range header), since the last reset. */
  bytes = 0;
  requests: { path: string; range: string | undefined }[] = [];
  active = 0;
  maxActive = 0;
  corruptRanges = false;
  /** Content-Range names another total size, as when the file was replaced. */
  otherTotal = false;
  ignoreRange = false;
  noLength = false;
  status: number | undefined;
  /** Send this many body bytes, then destroy the socket. */
  cutAfter: number | undefined;
  /** 'headers': never answer; 'body': send the headers, then nothing. */
  stall: 'headers' | 'body' | undefined;
  delayMs = 0;
  readonly #server = http.createServer((req, res) => void this.#answer(req, res));
  url = '';

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.#server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise((resolve) => this.#server.close(resolve));
  }

  serve(name: string, data: Buffer): string {
    this.files.set(`/${name}`, data);
    return `${this.url}/${name}`;
  }

  reset(): void {
    this.bytes = 0;
    this.requests = [];
    this.maxActive = 0;
    this.corruptRanges = this.otherTotal = this.ignoreRange = this.noLength = false;
    this.status = this.cutAfter = this.stall = undefined;
    this.delayMs = 0;
  }

  async #answer(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    this.requests.push({ path: req.url ?? '', range: req.headers.range });
    this.active++;
    this.maxActive = Math.max(this.maxActive, this.active);
    // Done when the answer is handed over (the client cannot have read all of it before), or cut short.
    let done = false;
    const finish = () => {
      if (!done) this.active--;
      done = true;
    };
    res.on('close', finish);
    if (this.delayMs) await new Promise((r) => setTimeout(r, this.delayMs));
    if (this.stall === 'headers') return;
    const file = this.files.get(req.url ?? '');
    if (this.status !== undefined || !file) {
      res.writeHead(this.status ?? 404).end();
      return;
    }
    let body = file;
    let status = 200;
    const headers: Record<string, string | number> = { 'accept-ranges': 'bytes' };
    const range = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
    if (range && !this.ignoreRange) {
      const [from, to] = [Number(range[1]), Math.min(Number(range[2]), file.length - 1)];
      body = Buffer.from(file.subarray(from, to + 1));
      if (this.corruptRanges) body[body.length >> 1]! ^= 0xff;
      status = 206;
      headers['content-range'] = `bytes ${from}-${to}/${file.length + (this.otherTotal ? 1 : 0)}`;
    }
    if (!this.noLength) headers['content-length'] = body.length;
    res.writeHead(status, headers);
    if (this.stall === 'body') {
      res.flushHeaders();
      return;
    }
    if (this.cutAfter !== undefined) {
      const part = body.subarray(0, this.cutAfter);
      this.bytes += part.length;
      res.write(part, () => res.socket?.destroy());
      return;
    }
    this.bytes += body.length;
    finish();
    res.end(body);
  }
}

const origin = new Origin();
const dirs: string[] = [];
const seeds: Seed[] = [];
// ~9 MiB and ~13 MiB: 3 and 4 pieces of 4 MiB, the last one short.
const small = randomBytes(9 * MiB + 12345);
const large = randomBytes(13 * MiB - 777);
let smallUrl = '';
let largeUrl = '';

beforeAll(async () => {
  await origin.start();
  smallUrl = origin.serve('small.raw', small);
  largeUrl = origin.serve('large.raw', large);
});
afterAll(async () => {
  await origin.stop();
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});
afterEach(async () => {
  await Promise.all(seeds.splice(0).map((s) => s.close()));
  origin.reset();
});

function tempDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'df-seed-'));
  dirs.push(d);
  return d;
}

function newSeed(opts: Partial<SeedOptions> & { cacheDir?: string } = {}): Seed {
  const seed = new Seed({ cacheDir: opts.cacheDir ?? tempDir(), maxCacheBytes: 64 * MiB, ...opts });
  seeds.push(seed);
  return seed;
}

function pieceOf(data: Buffer, m: Manifest, i: number): Buffer {
  const { offset, length } = pieceRange(m, i);
  return data.subarray(offset, offset + length);
}

function filesIn(dir: string): string[] {
  return fs.existsSync(dir) ? fs.readdirSync(dir).sort() : [];
}

async function codeOf(p: Promise<unknown>): Promise<{ code: string; data: Record<string, unknown> }> {
  try {
    await p;
  } catch (e) {
    if (e instanceof DragonflyError) return { code: e.code, data: e.data };
    throw e;
  }
  throw new Error('expected a refusal');
}

describe('Seed.prepare', () => {
  it('reads the image once, builds its manifest, and caches every piece under its sha256', async () => {
    const dir = tempDir();
    const seed = newSeed({ cacheDir: dir });
    expect(seed.status(sha(large))).toEqual({ state: 'unknown' });
    const pending = seed.prepare({ url: largeUrl, sha256: sha(large).toUpperCase() });
    expect(seed.status(sha(large)).state).toBe('preparing');
    const m = await pending;

    expect(m.size).toBe(large.length);
    expect(m.pieceLength).toBe(pieceLengthFor(large.length));
    expect(m.pieces).toHaveLength(4);
    m.pieces.forEach((p, i) => expect(p).toBe(sha(pieceOf(large, m, i))));
    expect(origin.requests).toEqual([{ path: '/large.raw', range: undefined }]);
    expect(origin.bytes).toBe(large.length);
    expect(seed.stats()).toEqual({ originBytes: large.length, originRequests: 1, cacheBytes: large.length, cacheHits: 0, evictions: 0 });
    expect(seed.status(sha(large))).toEqual({ state: 'ready', manifest: m });
    expect(seed.manifest(sha(large))).toEqual(m);
    expect(filesIn(path.join(dir, 'pieces'))).toEqual([...m.pieces].sort());
    expect(JSON.parse(fs.readFileSync(path.join(dir, 'manifests', `${m.sha256}.json`), 'utf8'))).toEqual(m);

    // Every piece from the cache, the origin untouched.
    for (let i = 0; i < m.pieces.length; i++) expect((await seed.piece(m.sha256, i)).equals(pieceOf(large, m, i))).toBe(true);
    expect(origin.requests).toHaveLength(1);
    expect(seed.stats()).toMatchObject({ originBytes: large.length, originRequests: 1, cacheHits: 4 });
    // Prepared: another prepare answers from memory.
    expect(await seed.prepare({ url: largeUrl, sha256: m.sha256 })).toEqual(m);
    expect(origin.requests).toHaveLength(1);
  });

  it('shares one read among concurrent prepares of the same image', async () => {
    const seed = newSeed();
    const all = await Promise.all([1, 2, 3].map(() => seed.prepare({ url: smallUrl, sha256: sha(small), size: small.length })));
    expect(all[1]).toBe(all[0]);
    expect(all[2]).toBe(all[0]);
    expect(origin.requests).toHaveLength(1);
    expect(origin.bytes).toBe(small.length);
  });

  it('refuses an image that is not the template sha256 and leaves nothing behind', async () => {
    const dir = tempDir();
    const seed = newSeed({ cacheDir: dir });
    const wrong = sha(Buffer.from('another image'));
    expect((await codeOf(seed.prepare({ url: smallUrl, sha256: wrong }))).code).toBe('DF_ERR_IMAGE_SHA256');
    const status = seed.status(wrong);
    expect(status.state).toBe('failed');
    expect(status.state === 'failed' && status.error.code).toBe('DF_ERR_IMAGE_SHA256');
    expect(seed.manifest(wrong)).toBeUndefined();
    expect(filesIn(path.join(dir, 'pieces'))).toEqual([]);
    expect(filesIn(path.join(dir, 'manifests'))).toEqual([]);
    expect(seed.stats().cacheBytes).toBe(0);
    expect((await codeOf(seed.piece(wrong, 0))).code).toBe('DF_ERR_P2P_NOT_PREPARED');
  });

  it('refuses sizes that disagree: the given size against Content-Length, and a ready image against a new size', async () => {
    const seed = newSeed();
    expect(await codeOf(seed.prepare({ url: smallUrl, sha256: sha(small), size: small.length + 1 }))).toMatchObject({ code: 'DF_ERR_IMAGE_SHA256', data: { announced: small.length } });
    const m = await seed.prepare({ url: smallUrl, sha256: sha(small) });
    expect((await codeOf(seed.prepare({ url: smallUrl, sha256: m.sha256, size: 5 }))).code).toBe('DF_ERR_IMAGE_SHA256');
  });

  it('without Content-Length: refused unless the size is given, and then the bytes must be exactly that many', async () => {
    origin.noLength = true;
    const seed = newSeed();
    expect(await codeOf(seed.prepare({ url: smallUrl, sha256: sha(small) }))).toMatchObject({ code: 'DF_ERR_P2P_ORIGIN', data: { reason: 'no-length' } });
    // The origin sends more bytes than the size given: refused as the wrong image.
    const head = small.subarray(0, 5 * MiB);
    expect((await codeOf(seed.prepare({ url: smallUrl, sha256: sha(head), size: head.length }))).code).toBe('DF_ERR_IMAGE_SHA256');
    expect(seed.manifest(sha(head))).toBeUndefined();
    const m = await seed.prepare({ url: smallUrl, sha256: sha(small), size: small.length });
    expect(m.size).toBe(small.length);
  });

  it('fails cleanly when the connection is cut mid-image, and a retry works', async () => {
    const dir = tempDir();
    const seed = newSeed({ cacheDir: dir });
    origin.cutAfter = 6 * MiB;
    expect(await codeOf(seed.prepare({ url: largeUrl, sha256: sha(large) }))).toMatchObject({ code: 'DF_ERR_P2P_ORIGIN', data: { reason: 'cut' } });
    expect(seed.status(sha(large)).state).toBe('failed');
    expect(filesIn(path.join(dir, 'pieces'))).toEqual([]); // no piece, no temp file
    expect(filesIn(path.join(dir, 'manifests'))).toEqual([]);
    expect(seed.stats().cacheBytes).toBe(0);

    origin.cutAfter = undefined;
    const m = await seed.prepare({ url: largeUrl, sha256: sha(large) });
    expect(seed.status(sha(large)).state).toBe('ready');
    expect(filesIn(path.join(dir, 'pieces'))).toHaveLength(m.pieces.length);
  });

  it('answers 404 and 500 with typed errors that carry the status', async () => {
    const seed = newSeed();
    expect(await codeOf(seed.prepare({ url: `${origin.url}/missing.raw`, sha256: sha(small) }))).toMatchObject({ code: 'DF_ERR_P2P_ORIGIN', data: { reason: 'status', status: 404 } });
    origin.status = 500;
    expect(await codeOf(seed.prepare({ url: smallUrl, sha256: sha(small) }))).toMatchObject({ code: 'DF_ERR_P2P_ORIGIN', data: { reason: 'status', status: 500 } });
  });

  it('gives up on an origin that stalls, before its headers or mid-body', async () => {
    const seed = newSeed({ timeouts: { connectMs: 150, readMs: 150 } });
    origin.stall = 'headers';
    expect(await codeOf(seed.prepare({ url: smallUrl, sha256: sha(small) }))).toMatchObject({ code: 'DF_ERR_P2P_ORIGIN', data: { reason: 'timeout', timeoutMs: 150 } });
    origin.stall = 'body';
    expect(await codeOf(seed.prepare({ url: smallUrl, sha256: sha(small) }))).toMatchObject({ code: 'DF_ERR_P2P_ORIGIN', data: { reason: 'timeout', timeoutMs: 150 } });
    origin.stall = undefined;
    await seed.prepare({ url: smallUrl, sha256: sha(small) });
  });

  it('close() aborts a read in flight', async () => {
    const dir = tempDir();
    const seed = newSeed({ cacheDir: dir });
    origin.stall = 'body';
    const pending = seed.prepare({ url: smallUrl, sha256: sha(small) });
    while (origin.requests.length === 0) await new Promise((r) => setTimeout(r, 5));
    await seed.close();
    expect(await codeOf(pending)).toMatchObject({ code: 'DF_ERR_P2P_ORIGIN', data: { reason: 'closed' } });
    expect(filesIn(path.join(dir, 'pieces'))).toEqual([]);
    expect((await codeOf(seed.prepare({ url: smallUrl, sha256: sha(small) }))).data.reason).toBe('closed');
  });
});

describe('Seed.piece', () => {
  it('evicts the least recently used piece for room, and re-reads an evicted piece with one ranged GET', async () => {
    const dir = tempDir();
    // Room for two pieces of 4 MiB: prepare keeps pieces 0 and 1; the short piece 2 does not fit.
    const seed = newSeed({ cacheDir: dir, maxCacheBytes: 8 * MiB });
    const m = await seed.prepare({ url: smallUrl, sha256: sha(small) });
    expect(m.pieces).toHaveLength(3);
    expect(filesIn(path.join(dir, 'pieces'))).toEqual([m.pieces[0], m.pieces[1]].sort());
    expect(seed.stats()).toMatchObject({ cacheBytes: 8 * MiB, evictions: 0 });

    await seed.piece(m.sha256, 0); // a read refreshes piece 0: piece 1 is now the least recently used
    const served = origin.bytes;
    const third = pieceRange(m, 2);
    expect((await seed.piece(m.sha256, 2)).equals(pieceOf(small, m, 2))).toBe(true);
    expect(origin.requests.at(-1)).toEqual({ path: '/small.raw', range: `bytes=${third.offset}-${third.offset + third.length - 1}` });
    expect(origin.bytes - served).toBe(third.length);
    expect(filesIn(path.join(dir, 'pieces'))).toEqual([m.pieces[0], m.pieces[2]].sort());
    expect(seed.stats()).toMatchObject({ cacheBytes: 4 * MiB + third.length, evictions: 1 });

    // Piece 0 is still cached; piece 1 comes back from the origin, exactly its length.
    await seed.piece(m.sha256, 0);
    expect(origin.bytes - served).toBe(third.length);
    expect((await seed.piece(m.sha256, 1)).equals(pieceOf(small, m, 1))).toBe(true);
    expect(origin.bytes - served).toBe(third.length + 4 * MiB);
    expect(seed.stats().cacheBytes).toBeLessThanOrEqual(8 * MiB);
  });

  it('shares one origin read among concurrent requests for a piece, and reads at most originConcurrency at once', async () => {
    const seed = newSeed({ maxCacheBytes: 0, originConcurrency: 2 });
    const m = await seed.prepare({ url: largeUrl, sha256: sha(large) });
    expect(seed.stats().cacheBytes).toBe(0);
    origin.reset();
    origin.delayMs = 50;

    const same = await Promise.all([1, 2, 3, 4, 5].map(() => seed.piece(m.sha256, 1)));
    for (const b of same) expect(b.equals(pieceOf(large, m, 1))).toBe(true);
    expect(origin.requests).toHaveLength(1);

    origin.reset();
    origin.delayMs = 50;
    const all = await Promise.all(m.pieces.map((_, i) => seed.piece(m.sha256, i)));
    all.forEach((b, i) => expect(b.equals(pieceOf(large, m, i))).toBe(true));
    expect(origin.requests).toHaveLength(4);
    expect(origin.maxActive).toBeLessThanOrEqual(2);
    expect(origin.bytes).toBe(large.length);
  });

  it('refuses a corrupt range from the origin: a typed error, nothing cached; a good read later works', async () => {
    const dir = tempDir();
    const seed = newSeed({ cacheDir: dir, maxCacheBytes: 4 * MiB });
    const m = await seed.prepare({ url: largeUrl, sha256: sha(large) });
    origin.corruptRanges = true;
    expect(await codeOf(seed.piece(m.sha256, 2))).toMatchObject({ code: 'DF_ERR_P2P_PIECE_SHA256', data: { piece: 2 } });
    expect(filesIn(path.join(dir, 'pieces'))).toEqual([m.pieces[0]]);
    origin.corruptRanges = false;
    expect((await seed.piece(m.sha256, 2)).equals(pieceOf(large, m, 2))).toBe(true);
  });

  it('refuses a 206 whose Content-Range names another image size', async () => {
    const seed = newSeed({ maxCacheBytes: 0 });
    const m = await seed.prepare({ url: smallUrl, sha256: sha(small) });
    origin.otherTotal = true;
    expect(await codeOf(seed.piece(m.sha256, 1))).toMatchObject({ code: 'DF_ERR_P2P_ORIGIN', data: { reason: 'content-range' } });
  });

  it('refuses an origin that ignores Range without reading its body', async () => {
    const seed = newSeed({ maxCacheBytes: 0 });
    const m = await seed.prepare({ url: smallUrl, sha256: sha(small) });
    origin.ignoreRange = true;
    const before = seed.stats().originBytes;
    expect(await codeOf(seed.piece(m.sha256, 1))).toMatchObject({ code: 'DF_ERR_P2P_ORIGIN', data: { reason: 'range-ignored' } });
    expect(seed.stats().originBytes).toBe(before);
  });

  it('deletes a corrupt cache file and fetches the piece again', async () => {
    const dir = tempDir();
    const seed = newSeed({ cacheDir: dir });
    const m = await seed.prepare({ url: largeUrl, sha256: sha(large) });
    const file = path.join(dir, 'pieces', m.pieces[1]!);
    const damaged = fs.readFileSync(file);
    damaged[1000]! ^= 1;
    fs.writeFileSync(file, damaged);
    const served = origin.bytes;
    expect((await seed.piece(m.sha256, 1)).equals(pieceOf(large, m, 1))).toBe(true);
    expect(origin.bytes - served).toBe(pieceRange(m, 1).length);
    expect(sha(fs.readFileSync(file))).toBe(m.pieces[1]);
    expect(seed.stats().cacheBytes).toBe(large.length);
  });
});

describe('Seed restart', () => {
  it('reloads manifests and the cache from disk and serves with no origin traffic; temp files are dropped', async () => {
    const dir = tempDir();
    const first = newSeed({ cacheDir: dir });
    const m = await first.prepare({ url: largeUrl, sha256: sha(large) });
    await first.close();
    fs.writeFileSync(path.join(dir, 'pieces', '.tmp-123-abc'), 'half a piece');
    fs.writeFileSync(path.join(dir, 'manifests', `${m.sha256}.json.abc.tmp`), '{');
    origin.reset();

    const second = newSeed({ cacheDir: dir });
    expect(second.status(m.sha256)).toEqual({ state: 'ready', manifest: m });
    expect(await second.prepare({ url: largeUrl, sha256: m.sha256 })).toEqual(m);
    for (let i = 0; i < m.pieces.length; i++) expect((await second.piece(m.sha256, i)).equals(pieceOf(large, m, i))).toBe(true);
    expect(origin.requests).toEqual([]);
    expect(second.stats()).toEqual({ originBytes: 0, originRequests: 0, cacheBytes: large.length, cacheHits: 4, evictions: 0 });
    expect(filesIn(path.join(dir, 'pieces'))).toEqual([...m.pieces].sort());
    expect(filesIn(path.join(dir, 'manifests'))).toEqual([`${m.sha256}.json`, `${m.sha256}.url`]);
  });

  it('rebuilds the LRU from mtimes: a smaller cache drops the least recently used first; a pruned piece is re-read from the saved URL', async () => {
    const dir = tempDir();
    const first = newSeed({ cacheDir: dir });
    const m = await first.prepare({ url: largeUrl, sha256: sha(large) });
    await first.close();
    // Recency by hand: piece 2 oldest, then 0, 3, 1.
    [2, 0, 3, 1].forEach((i, age) => {
      const t = new Date(Date.now() - (10 - age) * 60_000);
      fs.utimesSync(path.join(dir, 'pieces', m.pieces[i]!), t, t);
    });
    origin.reset();

    const second = newSeed({ cacheDir: dir, maxCacheBytes: 6 * MiB });
    expect(filesIn(path.join(dir, 'pieces'))).toEqual([m.pieces[3], m.pieces[1]].sort());
    expect(second.stats()).toMatchObject({ evictions: 2, cacheBytes: pieceRange(m, 3).length + 4 * MiB });
    expect((await second.piece(m.sha256, 2)).equals(pieceOf(large, m, 2))).toBe(true);
    expect(origin.bytes).toBe(4 * MiB);
  });

  it('drops a saved manifest that fails its checks', async () => {
    const dir = tempDir();
    fs.mkdirSync(path.join(dir, 'manifests'), { recursive: true });
    const bogus = sha(Buffer.from('x'));
    fs.writeFileSync(path.join(dir, 'manifests', `${bogus}.json`), JSON.stringify({ version: 1, size: 10, sha256: bogus, pieceLength: 1, pieces: [] }));
    const seed = newSeed({ cacheDir: dir });
    expect(seed.status(bogus)).toEqual({ state: 'unknown' });
    expect(filesIn(path.join(dir, 'manifests'))).toEqual([]);
  });
});
