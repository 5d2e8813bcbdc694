// The piece server over real sockets on 127.0.0.1, with real clients: fetch, raw TCP (to send paths no URL
// parser would leave alone, and to read slowly), and curl.
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { buildManifest, pieceRange, verifyPiece, type Manifest } from './manifest.js';
import { startPieceServer, type PieceServer, type PieceServerOptions } from './piece-server.js';
import { FilePieceStore, RamWindowStore, type PieceStore } from './piece-store.js';
import { TokenBucket } from './rate.js';

const MiB = 2 ** 20;
const run = promisify(execFile);

/** A manifest the RAM window can size pieces by; the server never hashes, so the digests are placeholders. */
function shapeOnly(pieceLength: number, count: number, sha256 = 'ab'.repeat(32)): Manifest {
  return { version: 1, size: pieceLength * count, sha256, pieceLength, pieces: Array.from({ length: count }, () => '0'.repeat(64)) };
}

/** Buffer equality by memcmp: vitest's toEqual walks megabytes byte by byte, for seconds. */
function same(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b);
}

const servers: PieceServer[] = [];
const sockets: net.Socket[] = [];
const dirs: string[] = [];
afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await Promise.all(servers.splice(0).map((s) => s.close()));
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

async function start(opts: Omit<PieceServerOptions, 'host' | 'port'>): Promise<PieceServer> {
  const server = await startPieceServer({ host: '127.0.0.1', port: 0, ...opts });
  servers.push(server);
  return server;
}

const pieceUrl = (server: PieceServer, sha256: string, i: number | string) => `${server.url}/p2p/${sha256}/pieces/${i}`;

async function get(url: string, init?: RequestInit) {
  const res = await fetch(url, init);
  const body = Buffer.from(await res.arrayBuffer());
  return { status: res.status, headers: res.headers, body, json: () => JSON.parse(body.toString()) as { error: { code: string; message: string; hint: string } } };
}

/** Sends bytes exactly as given (no URL parser in between) and reads until the server closes. */
function raw(port: number, request: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    sockets.push(socket);
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', () => undefined); // a reset after the answer: what was read is the answer
    socket.on('close', () => {
      const text = Buffer.concat(chunks).toString('latin1');
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3}) /.exec(text)?.[1] ?? 0), text });
    });
    socket.write(request);
  });
}

const getRequest = (target: string) => `GET ${target} HTTP/1.1\r\nHost: peer\r\nConnection: close\r\n\r\n`;

/** A download that reads nothing: the server's writes fill the socket buffers and then wait. */
async function stalledDownload(port: number, target: string): Promise<net.Socket> {
  const socket = net.connect(port, '127.0.0.1');
  sockets.push(socket);
  socket.pause();
  socket.on('error', () => undefined);
  await once(socket, 'connect');
  socket.write(getRequest(target));
  return socket;
}

/** Lets a stalled download read on to the end; resolves with the bytes received (headers included). */
async function readToEnd(socket: net.Socket): Promise<number> {
  let bytes = 0;
  socket.on('data', (c: Buffer) => (bytes += c.length));
  socket.resume();
  await once(socket, 'close');
  return bytes;
}

async function until(condition: () => boolean, what: string, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('piece server with a file-backed store', () => {
  it('serves each piece once it is marked written, byte for byte its pieceRange slice (fetch and curl)', async () => {
    const image = randomBytes(2 * 4 * MiB + 4321);
    const sha256 = createHash('sha256').update(image).digest('hex');
    const manifest = await buildManifest([image], { expectedSha256: sha256, expectedSize: image.length });
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'df-piece-server-'));
    dirs.push(dir);
    const disk = path.join(dir, 'disk.img');
    fs.writeFileSync(disk, '');
    const store = new FilePieceStore({ path: disk, manifest });
    const server = await start({ sha256, store });
    expect(server.url).toBe(`http://127.0.0.1:${server.port}`);

    const fd = fs.openSync(disk, 'r+');
    for (const i of [1, 0, 2]) {
      const { offset, length } = pieceRange(manifest, i);
      const before = await get(pieceUrl(server, sha256, i));
      expect(before.status).toBe(404);
      expect(before.headers.get('content-type')).toBe('application/json');
      expect(before.json().error).toMatchObject({ code: 'DF_ERR_P2P_NO_PIECE', message: `piece ${i} is not held here` });

      fs.writeSync(fd, image, offset, length, offset);
      expect((await get(pieceUrl(server, sha256, i))).status).toBe(404); // written, not yet marked
      store.markWritten(i);

      const after = await get(pieceUrl(server, sha256, i));
      expect(after.status).toBe(200);
      expect(after.headers.get('content-type')).toBe('application/octet-stream');
      expect(after.headers.get('content-length')).toBe(String(length));
      expect(same(after.body, image.subarray(offset, offset + length))).toBe(true);
      expect(verifyPiece(manifest, i, after.body)).toBe(true);
    }
    fs.closeSync(fd);

    const head = await get(pieceUrl(server, sha256, 2), { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.get('content-length')).toBe(String(pieceRange(manifest, 2).length));
    expect(head.body.length).toBe(0);

    const out = path.join(dir, 'piece0');
    const curl = await run('curl', ['-sS', '-o', out, '-w', '%{http_code}', pieceUrl(server, sha256, 0)]);
    expect(curl.stdout).toBe('200');
    expect(verifyPiece(manifest, 0, fs.readFileSync(out))).toBe(true);
    // curl sends the dot segments as written only with --path-as-is.
    const dots = await run('curl', ['-sS', '--path-as-is', '-o', '/dev/null', '-w', '%{http_code}', `${server.url}/p2p/${sha256}/pieces/../pieces/0`]);
    expect(dots.stdout).toBe('404');

    expect(server.stats()).toEqual({ uploading: 0, piecesServed: 4, bytesServed: manifest.size + pieceRange(manifest, 0).length, refusedAtCap: 0, cut: 0 });
    await store.close();
  });

  it('a piece found changed on the disk is answered 404, not sent', async () => {
    const image = randomBytes(4 * MiB + 10);
    const sha256 = createHash('sha256').update(image).digest('hex');
    const manifest = await buildManifest([image], { expectedSha256: sha256, expectedSize: image.length });
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'df-piece-server-'));
    dirs.push(dir);
    const disk = path.join(dir, 'disk.img');
    const changed = Buffer.from(image);
    changed[5]! ^= 1;
    fs.writeFileSync(disk, changed);
    const onEvict = vi.fn();
    const store = new FilePieceStore({ path: disk, manifest, onEvict });
    store.markWritten(0);
    store.markWritten(1);
    const server = await start({ sha256, store });
    const res = await get(pieceUrl(server, sha256, 0));
    expect(res.status).toBe(404);
    expect(res.json().error).toMatchObject({ code: 'DF_ERR_P2P_NO_PIECE', message: 'piece 0 is no longer held here' });
    expect(onEvict).toHaveBeenCalledWith(0);
    expect((await get(pieceUrl(server, sha256, 1))).status).toBe(200);
    await store.close();
  });
});

describe('piece server with a RAM window', () => {
  it('answers 404 for a piece the window evicted, 200 for those it holds', async () => {
    const manifest = shapeOnly(4 * MiB, 4);
    const evicted: number[] = [];
    const store = new RamWindowStore({ manifest, maxBytes: 8 * MiB, onEvict: (i) => evicted.push(i) });
    const pieces = [0, 1, 2].map(() => randomBytes(4 * MiB));
    pieces.forEach((p, i) => store.put(i, p));
    expect(evicted).toEqual([0]);
    const server = await start({ sha256: manifest.sha256, store });
    expect((await get(pieceUrl(server, manifest.sha256, 0))).status).toBe(404);
    expect((await get(pieceUrl(server, manifest.sha256, 3))).status).toBe(404);
    for (const i of [1, 2]) {
      const res = await get(pieceUrl(server, manifest.sha256, i));
      expect(res.status).toBe(200);
      expect(same(res.body, pieces[i]!)).toBe(true);
    }
  });
});

describe('upload cap and slow clients', () => {
  // 24 MiB pieces: more than loopback's socket buffers take from a client that reads nothing.
  const manifest = shapeOnly(24 * MiB, 6);
  const piece = randomBytes(24 * MiB);
  function fullStore(): RamWindowStore {
    const store = new RamWindowStore({ manifest, maxBytes: manifest.size });
    for (let i = 0; i < manifest.pieces.length; i++) store.put(i, piece); // one buffer, six indices
    return store;
  }

  it('at maxUploads slow downloads, the next request gets 503 with Retry-After; once one finishes, 200', async () => {
    const server = await start({ sha256: manifest.sha256, store: fullStore() });
    const slow = await Promise.all([0, 1, 2, 3].map((i) => stalledDownload(server.port, `/p2p/${manifest.sha256}/pieces/${i}`)));
    await until(() => server.stats().uploading === 4, 'four uploads in progress');

    const refused = await get(pieceUrl(server, manifest.sha256, 4));
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).toBe('1');
    expect(refused.json().error.code).toBe('DF_ERR_P2P_BUSY');
    expect(server.stats().refusedAtCap).toBe(1);
    // Not held beats busy: the answer that sends the client elsewhere for good.
    expect((await get(`${server.url}/p2p/${manifest.sha256}/pieces/6`)).status).toBe(404);

    expect(await readToEnd(slow[0]!)).toBeGreaterThan(piece.length);
    await until(() => server.stats().uploading === 3, 'the finished upload to free its slot');
    const next = await get(pieceUrl(server, manifest.sha256, 5));
    expect(next.status).toBe(200);
    expect(same(next.body, piece)).toBe(true);
    expect(server.stats()).toMatchObject({ uploading: 3, piecesServed: 2, refusedAtCap: 1, cut: 0 });
  });

  it('a client that disconnects mid-piece frees its slot at once', async () => {
    const server = await start({ sha256: manifest.sha256, store: fullStore(), maxUploads: 1 });
    const slow = await stalledDownload(server.port, `/p2p/${manifest.sha256}/pieces/0`);
    await until(() => server.stats().uploading === 1 && server.stats().bytesServed > 0, 'the upload to start');
    expect((await get(pieceUrl(server, manifest.sha256, 1))).status).toBe(503);

    slow.destroy();
    await until(() => server.stats().uploading === 0, 'the slot to be freed');
    expect(server.stats().cut).toBe(1);
    expect(server.stats().bytesServed).toBeLessThan(piece.length);
    const res = await get(pieceUrl(server, manifest.sha256, 1));
    expect(res.status).toBe(200);
    expect(res.body.length).toBe(piece.length);
  });

  it('an upload whose client stops reading is cut after stallTimeoutMs', async () => {
    const log = { warn: vi.fn() };
    const server = await start({ sha256: manifest.sha256, store: fullStore(), stallTimeoutMs: 300, log });
    await stalledDownload(server.port, `/p2p/${manifest.sha256}/pieces/0`);
    await until(() => server.stats().cut === 1, 'the stalled upload to be cut');
    expect(server.stats().uploading).toBe(0);
    expect(log.warn).toHaveBeenCalledWith(expect.objectContaining({ piece: 0, stallTimeoutMs: 300 }), expect.stringContaining('stopped reading'));
  });

  it('close() cuts uploads in flight and resolves once the port is closed', async () => {
    const server = await startPieceServer({ host: '127.0.0.1', port: 0, sha256: manifest.sha256, store: fullStore() });
    await stalledDownload(server.port, `/p2p/${manifest.sha256}/pieces/0`);
    await until(() => server.stats().uploading === 1, 'the upload to start');
    await server.close();
    expect(server.stats()).toMatchObject({ uploading: 0, cut: 1 });
    await expect(fetch(pieceUrl(server, manifest.sha256, 0))).rejects.toThrow();
    await server.close(); // twice is fine
  });
});

describe('upload rate', () => {
  it('paces all uploads of a peer through one token bucket (lower bound only: the machine is shared)', async () => {
    const manifest = shapeOnly(MiB, 2);
    const store = new RamWindowStore({ manifest });
    const pieces = [randomBytes(MiB), randomBytes(MiB)];
    pieces.forEach((p, i) => store.put(i, p));
    const uploadRate = new TokenBucket({ rate: MiB, burst: 64 * 1024 });
    const server = await start({ sha256: manifest.sha256, store, uploadRate });

    const t0 = performance.now();
    const both = await Promise.all([0, 1].map((i) => get(pieceUrl(server, manifest.sha256, i))));
    const seconds = (performance.now() - t0) / 1000;
    both.forEach((res, i) => expect(same(res.body, pieces[i]!)).toBe(true));
    // 2 MiB at 1 MiB/s with a 64 KiB burst: at least 1.94 s.
    expect(seconds).toBeGreaterThanOrEqual(1.8);
    expect(server.stats()).toMatchObject({ piecesServed: 2, bytesServed: 2 * MiB });
  });
});

describe('hostile requests', () => {
  const manifest = shapeOnly(4 * MiB, 3, 'cd'.repeat(32));
  const sha = manifest.sha256;
  async function startFull(extra: Partial<PieceServerOptions> = {}): Promise<PieceServer> {
    const store = new RamWindowStore({ manifest });
    for (let i = 0; i < 3; i++) store.put(i, Buffer.alloc(4 * MiB, i));
    return start({ sha256: sha, store, ...extra });
  }

  it.each([
    ['dot segments', `/p2p/${sha}/pieces/..`],
    ['dot segments before the index', `/p2p/${sha}/pieces/../pieces/0`],
    ['encoded dots', `/p2p/${sha}/pieces/%2e%2e`],
    ['encoded dots for the image', `/p2p/%2e%2e/pieces/0`],
    ['an encoded index', `/p2p/${sha}/pieces/%30`],
    ['an encoded slash', `/p2p/${sha}%2Fpieces/0`],
    ['a huge index', `/p2p/${sha}/pieces/99999999999999999999999999`],
    ['an index past the last piece', `/p2p/${sha}/pieces/3`],
    ['a negative index', `/p2p/${sha}/pieces/-1`],
    ['a leading zero', `/p2p/${sha}/pieces/01`],
    ['a plus sign', `/p2p/${sha}/pieces/+1`],
    ['a fraction', `/p2p/${sha}/pieces/1.0`],
    ['an exponent', `/p2p/${sha}/pieces/1e0`],
    ['hex', `/p2p/${sha}/pieces/0x1`],
    ['an empty index', `/p2p/${sha}/pieces/`],
    ['a trailing slash', `/p2p/${sha}/pieces/0/`],
    ['a query', `/p2p/${sha}/pieces/0?x=1`],
    ['another image', `/p2p/${'ef'.repeat(32)}/pieces/0`],
    ['the image in upper case', `/p2p/${sha.toUpperCase()}/pieces/0`],
    ['a short sha256', `/p2p/${sha.slice(1)}/pieces/0`],
    ['a double slash', `//p2p/${sha}/pieces/0`],
    ['an absolute URL', `http://127.0.0.1/p2p/${sha}/pieces/0`],
    ['the root', '/'],
    ['a file path', '/etc/passwd'],
  ])('%s: 404, and the server still serves', async (_what, target) => {
    const server = await startFull();
    const res = await raw(server.port, getRequest(target));
    expect(res.status).toBe(404);
    expect(res.text).toMatch(/"code":"DF_ERR_(P2P_NO_PIECE|NOT_FOUND)"/);
    expect((await raw(server.port, getRequest(`/p2p/${sha}/pieces/2`))).status).toBe(200);
  });

  it('other methods 405 with Allow; a body 400; junk, huge headers and bad framing get 4xx; none crash it', async () => {
    const server = await startFull();
    const post = await raw(server.port, `POST /p2p/${sha}/pieces/0 HTTP/1.1\r\nHost: p\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
    expect(post.status).toBe(405);
    expect(post.text).toMatch(/\r\nAllow: GET, HEAD\r\n/i);
    expect((await raw(server.port, `DELETE /p2p/${sha}/pieces/0 HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n`)).status).toBe(405);
    expect((await raw(server.port, `POST /upload HTTP/1.1\r\nHost: p\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`)).status).toBe(404);
    expect((await raw(server.port, `GET /p2p/${sha}/pieces/0 HTTP/1.1\r\nHost: p\r\nContent-Length: 5\r\n\r\nhello`)).status).toBe(400);
    expect((await raw(server.port, 'NONSENSE\r\n\r\n')).status).toBe(400);
    expect((await raw(server.port, `GET /p2p/${sha}/pieces/0 HTTP/1.1\r\nHost: p\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`)).status).toBe(431);
    expect((await raw(server.port, `GET /p2p/${sha}/pieces/0 HTTP/1.1\r\nHost: p\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n`)).status).toBe(400);
    expect((await raw(server.port, getRequest(`/p2p/${sha}/pieces/1`))).status).toBe(200);
    expect(server.stats()).toMatchObject({ uploading: 0, piecesServed: 1 });
  });

  it('a store that fails to read answers 500 and is logged; one that lost the piece answers 404', async () => {
    const log = { warn: vi.fn() };
    const store: PieceStore = {
      has: () => true,
      read: async (i) => {
        if (i === 0) throw Object.assign(new Error('EIO: i/o error, read'), { code: 'EIO' });
        return undefined;
      },
      held: () => new RamWindowStore({ manifest }).held(),
    };
    const server = await start({ sha256: sha, store, log });
    const failed = await get(pieceUrl(server, sha, 0));
    expect(failed.status).toBe(500);
    expect(failed.json().error.code).toBe('DF_ERR_P2P_PIECE_READ');
    expect(log.warn).toHaveBeenCalledWith(expect.objectContaining({ piece: 0, err: 'EIO: i/o error, read' }), expect.any(String));
    expect((await get(pieceUrl(server, sha, 1))).status).toBe(404);
    expect(server.stats().uploading).toBe(0);
  });

  it.each([
    ['answers nothing', undefined],
    ['answers the piece', Buffer.alloc(4 * MiB)],
  ])('a client that leaves while the store reads: the store %s late, the slot is freed, nothing throws', async (_what, late) => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const store: PieceStore = {
      has: () => true,
      read: async () => {
        await gate;
        return late;
      },
      held: () => new RamWindowStore({ manifest }).held(),
    };
    const server = await start({ sha256: sha, store });
    const client = await stalledDownload(server.port, `/p2p/${sha}/pieces/0`);
    await until(() => server.stats().uploading === 1, 'the read to start');
    client.destroy();
    await new Promise((r) => setTimeout(r, 50));
    release();
    await until(() => server.stats().uploading === 0, 'the slot to be freed');
    expect(server.stats()).toMatchObject({ piecesServed: 0, bytesServed: 0 });
  });

  it('closes a connection that sends no request within headersTimeoutMs, and drops connections past maxConnections', async () => {
    const server = await startFull({ headersTimeoutMs: 1000, maxConnections: 2 });
    const silent = net.connect(server.port, '127.0.0.1');
    sockets.push(silent);
    silent.on('error', () => undefined);
    const trickle = net.connect(server.port, '127.0.0.1');
    sockets.push(trickle);
    trickle.on('error', () => undefined);
    await Promise.all([once(silent, 'connect'), once(trickle, 'connect')]);
    trickle.write('GET /p2p/');
    const timer = setInterval(() => trickle.write('a'), 100);
    try {
      // Over the cap: accepted by the kernel, then closed by the server at once.
      const third = net.connect(server.port, '127.0.0.1');
      sockets.push(third);
      third.on('error', () => undefined);
      // events.once would reject on the reset ('error') that may come before 'close': wait for 'close' alone.
      const closed = (s: net.Socket) => new Promise((r) => s.once('close', r));
      await closed(third);
      expect(silent.readyState).toBe('open'); // the third was dropped for the cap, not timed out
      await Promise.all([closed(silent), closed(trickle)]);
    } finally {
      clearInterval(timer);
    }
    expect((await raw(server.port, getRequest(`/p2p/${sha}/pieces/0`))).status).toBe(200);
  });

  it("with a token, serves only requests that carry it (the image's P2P token, as the seed's route)", async () => {
    const token = 'f0'.repeat(32);
    const server = await startFull({ token });
    const url = pieceUrl(server, sha, 0);
    for (const authorization of [undefined, 'Bearer ' + 'f0'.repeat(31), `Bearer ${token}x`, `Basic ${token}`, token]) {
      const res = await get(url, { headers: authorization === undefined ? {} : { authorization } });
      expect(res.status, authorization).toBe(401);
      expect(res.headers.get('www-authenticate')).toBe('Bearer');
      expect(res.json().error.code).toBe('DF_ERR_UNAUTHORIZED');
    }
    const ok = await get(url, { headers: { authorization: `bearer ${token}` } });
    expect(ok.status).toBe(200);
    expect(ok.headers.get('cache-control')).toBe('no-store');
    expect(server.stats()).toMatchObject({ piecesServed: 1, uploading: 0 });
  });

  it('refuses a bad sha256 and a port in use with codes', async () => {
    const store = new RamWindowStore({ manifest });
    await expect(startPieceServer({ host: '127.0.0.1', port: 0, sha256: 'nope', store })).rejects.toMatchObject({ code: 'DF_ERR_SHA256' });
    await expect(startPieceServer({ host: '127.0.0.1', port: 0, sha256: sha, store, maxUploads: 0 })).rejects.toThrow(RangeError);
    const server = await start({ sha256: sha.toUpperCase(), store });
    await expect(startPieceServer({ host: '127.0.0.1', port: server.port, sha256: sha, store })).rejects.toMatchObject({ code: 'DF_ERR_SERVE_CONFIG' });
  });
});
