// A real P2P world on 127.0.0.1 for peer tests: an image server (the origin: Range support, a byte count), a
// real LMDB store holding one workflow that names the image (the server distributes only such images), the
// real seed (p2p/seed.ts) reading that origin, and the real boot server (buildServer) listening on a port.
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { buildServer } from '../boot/server.js';
import { p2pToken } from '../boot/tokens.js';
import { Seed } from '../p2p/seed.js';
import type { Workflow } from '../schemas/types.js';
import { workflowKey } from '../store/keys.js';
import { LmdbStore } from '../store/lmdb.js';
import { freePort } from './process-helpers.js';

export const MiB = 2 ** 20;

export function sha256Of(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** A static image server: GET with or without `Range: bytes=A-B` (RFC 9110 §14), counting body bytes sent. */
export class ImageOrigin {
  bytesSent = 0;
  url = '';
  readonly #server: http.Server;

  constructor(readonly image: Buffer) {
    this.#server = http.createServer((req, res) => {
      const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
      let body = image;
      if (m) {
        const from = Number(m[1]);
        const to = Math.min(Number(m[2]), image.length - 1);
        body = image.subarray(from, to + 1);
        res.writeHead(206, { 'content-length': body.length, 'content-range': `bytes ${from}-${to}/${image.length}`, 'accept-ranges': 'bytes' });
      } else res.writeHead(200, { 'content-length': body.length, 'accept-ranges': 'bytes' });
      this.bytesSent += body.length;
      res.end(body);
    });
  }

  async start(): Promise<string> {
    await new Promise<void>((resolve) => this.#server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}/image.raw`;
    return this.url;
  }

  async stop(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise((resolve) => this.#server.close(resolve));
  }
}

export interface P2pWorld {
  dir: string;
  image: Buffer;
  sha256: string;
  /** The image's P2P token, as the server gives it to the image's peers. */
  token: string;
  serverUrl: string;
  origin: ImageOrigin;
  seed: Seed;
  app: FastifyInstance;
  /** Stops the server (every connection cut) and starts a new one on the same port, state and secret, as a restart of serve. */
  restart(): Promise<void>;
  close(): Promise<void>;
}

/**
 * Starts the world; the image is `size` random bytes, or the bytes given. The seed has read the image before this returns, so peers
 * get the manifest at once instead of a 202 and a 2 s Retry-After (test/p2p-peer-get.test.ts takes that path).
 */
export async function startP2pWorld(sizeOrImage: number | Buffer): Promise<P2pWorld> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dragonfly-p2p-world-'));
  const image = typeof sizeOrImage === 'number' ? randomBytes(sizeOrImage) : sizeOrImage;
  const size = image.length;
  const sha256 = sha256Of(image);
  const origin = new ImageOrigin(image);
  const imageUrl = await origin.start();
  const store = LmdbStore.open(path.join(dir, 'state'));
  const wf = {
    id: 'wf-p2p-peer',
    mac: '52:54:00:00:00:01',
    machine: 'm',
    assignment: 'a',
    template: 't',
    generation: 1,
    state: 'pending',
    reimage: false,
    createdAt: new Date(0).toISOString(),
    actions: [],
    image: { url: imageUrl, sha256 },
  } as unknown as Workflow;
  await store.commit({ put: [{ key: workflowKey(wf.id), value: wf }] });
  const secret = randomBytes(32);
  const port = await freePort();
  const serverUrl = `http://127.0.0.1:${port}`;
  const start = async () => {
    const seed = new Seed({ cacheDir: path.join(dir, 'p2p'), maxCacheBytes: 4 * size });
    const app = await buildServer({ store, secret, serverUrl, apiToken: 'admin-token', p2pSeed: seed });
    await app.listen({ host: '127.0.0.1', port });
    return { seed, app };
  };
  const stop = async (running: { seed: Seed; app: FastifyInstance }) => {
    // Keep-alive connections of peers that left would hold close() for seconds.
    const closing = running.app.close();
    running.app.server.closeAllConnections();
    await closing;
    await running.seed.close();
  };
  let running = await start();
  const manifest = `${serverUrl}/api/v1/p2p/images/${sha256}/manifest`;
  for (let status = 0; status !== 200; ) {
    status = (await fetch(manifest, { headers: { authorization: 'Bearer admin-token' } })).status;
    if (status !== 200 && status !== 202) throw new Error(`the seed did not prepare the image: HTTP ${status}`);
    if (status === 202) await new Promise((r) => setTimeout(r, 50));
  }
  return {
    dir,
    image,
    sha256,
    token: p2pToken(secret, sha256),
    serverUrl,
    origin,
    get seed() {
      return running.seed;
    },
    get app() {
      return running.app;
    },
    async restart() {
      await stop(running);
      running = await start();
    },
    async close() {
      await stop(running);
      await store.close();
      await origin.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
