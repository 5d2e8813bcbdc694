// The P2P scheduler's HTTP API (routes-p2p.ts) in a real boot server and store. The seed here is a small
// in-memory one built on the real manifest code (the real seed, p2p/seed.ts, reads an HTTP origin; its own
// tests cover that): these tests are about who may call, what is checked, and the long poll.
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Bitfield } from '../p2p/bitfield.js';
import { TokenBucket } from '../p2p/rate.js';
import { buildManifest, pieceRange, type Manifest } from '../p2p/manifest.js';
import type { Workflow } from '../schemas/types.js';
import { workflowKey } from '../store/keys.js';
import { LmdbStore } from '../store/lmdb.js';
import type { P2pSeed } from './p2p-hub.js';
import { buildServer } from './server.js';
import { p2pToken, workflowToken } from './tokens.js';

const SECRET = Buffer.alloc(32, 9);
const IMAGE = randomBytes(9 * 1024 * 1024 + 123); // three pieces of 4 MiB, the last one short
const SHA = createHash('sha256').update(IMAGE).digest('hex');
const TOKEN = p2pToken(SECRET, SHA);
const PIECES = 3;

/** An in-memory seed: prepares on first ask (after a turn, as a real origin read would), serves slices. */
function memorySeed(): P2pSeed & { prepared: number; urls: string[] } {
  const manifests = new Map<string, Manifest>();
  const seed = {
    prepared: 0,
    urls: [] as string[],
    async prepare(image: { url: string; sha256: string }) {
      seed.urls.push(image.url);
      await new Promise((r) => setTimeout(r, 20));
      seed.prepared++;
      const m = await buildManifest((async function* () { yield IMAGE; })(), { expectedSha256: image.sha256, size: IMAGE.length });
      manifests.set(image.sha256, m);
      return m;
    },
    manifest: (sha: string) => manifests.get(sha),
    async piece(sha: string, i: number) {
      const { offset, length } = pieceRange(manifests.get(sha)!, i);
      return IMAGE.subarray(offset, offset + length);
    },
  };
  return seed;
}

let dir: string;
let store: LmdbStore;
let app: FastifyInstance;
let seed: ReturnType<typeof memorySeed>;

const auth = (token = TOKEN) => ({ authorization: `Bearer ${token}` });
const base = `/api/v1/p2p/images/${SHA}`;
const join = (peerId: string, ip: string, have = new Bitfield(PIECES)) =>
  app.inject({ method: 'POST', url: `${base}/peers`, headers: auth(), remoteAddress: ip, payload: { peerId, url: `http://${ip}:7000`, have: have.toBase64() } });

async function manifestReady(): Promise<Manifest> {
  for (let i = 0; i < 100; i++) {
    const r = await app.inject({ url: `${base}/manifest`, headers: auth() });
    if (r.statusCode === 200) return r.json() as Manifest;
    expect(r.statusCode).toBe(202);
    expect(r.headers['retry-after']).toBe('2');
    await new Promise((res) => setTimeout(res, 10));
  }
  throw new Error('the manifest never became ready');
}

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dragonfly-p2p-routes-'));
  store = LmdbStore.open(dir);
  // The server prepares only images a workflow names.
  const wf = { id: 'wf-p2p', mac: '52:54:00:00:00:01', machine: 'm', assignment: 'a', template: 't', generation: 1, state: 'pending', reimage: false, createdAt: new Date(0).toISOString(), actions: [], image: { url: 'http://images.example/os.raw', sha256: SHA } } as unknown as Workflow;
  await store.commit({ put: [{ key: workflowKey(wf.id), value: wf }] });
  seed = memorySeed();
  app = await buildServer({ store, secret: SECRET, serverUrl: 'http://10.0.0.1:8080', apiToken: 'admin-token', p2pSeed: seed });
  await app.ready(); // as listen() would: the hub follows the store from here
});
afterEach(async () => {
  await app.close();
  await store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('P2P API', () => {
  it('is closed to anyone without the image\'s token (a random one, another image\'s, another server\'s, none)', async () => {
    for (const headers of [{}, auth('ab'.repeat(32)), auth(p2pToken(SECRET, 'cd'.repeat(32))), auth(p2pToken(Buffer.alloc(32, 1), SHA))]) {
      const r = await app.inject({ url: `${base}/manifest`, headers });
      expect(r.statusCode).toBe(401);
      expect(r.json().error.code).toBe('DF_ERR_UNAUTHORIZED');
    }
    expect((await app.inject({ url: `${base}/manifest`, headers: auth('admin-token') })).statusCode).not.toBe(401);
    expect(seed.prepared).toBe(0);
  });

  it('prepares only images a workflow names; 202 while the seed reads it, then the manifest', async () => {
    const other = 'ef'.repeat(32);
    const r = await app.inject({ url: `/api/v1/p2p/images/${other}/manifest`, headers: auth(p2pToken(SECRET, other)) });
    expect(r.statusCode).toBe(404);
    const m = await manifestReady();
    expect(m).toMatchObject({ version: 1, size: IMAGE.length, sha256: SHA, pieceLength: 4 * 1024 * 1024 });
    expect(m.pieces).toHaveLength(PIECES);
    expect(seed.prepared).toBe(1);
    // Malformed image names are not found, never echoed.
    expect((await app.inject({ url: '/api/v1/p2p/images/..%2f..%2fetc/manifest', headers: auth() })).statusCode).toBe(404);
  });

  it('refuses a peer whose piece server is not on its own address, and a malformed bitfield', async () => {
    await manifestReady();
    const lying = await app.inject({ method: 'POST', url: `${base}/peers`, headers: auth(), remoteAddress: '10.0.0.5', payload: { peerId: 'peer-aaaa', url: 'http://10.0.0.99:7000', have: new Bitfield(PIECES).toBase64() } });
    expect(lying.statusCode).toBe(400);
    expect(lying.json().error.message).toMatch(/address this request comes from/);
    const badBits = await app.inject({ method: 'POST', url: `${base}/peers`, headers: auth(), remoteAddress: '10.0.0.5', payload: { peerId: 'peer-aaaa', url: 'http://10.0.0.5:7000', have: '////' } });
    expect(badBits.statusCode).toBe(400);
    expect(badBits.json().error.code).toBe('DF_ERR_P2P_BITFIELD');
    const hostName = await app.inject({ method: 'POST', url: `${base}/peers`, headers: auth(), remoteAddress: '10.0.0.5', payload: { peerId: 'peer-aaaa', url: 'http://evil.example:7000', have: new Bitfield(PIECES).toBase64() } });
    expect(hostName.statusCode).toBe(400);
  });

  it('long-polls parents: held until another peer holds a piece, then names it', async () => {
    await manifestReady();
    expect((await join('peer-aaaa', '10.0.0.5')).statusCode).toBe(200);
    const joined = await join('peer-bbbb', '10.0.0.6');
    const { revision } = joined.json() as { revision: number };
    let answered = false;
    const held = app.inject({ url: `${base}/peers/peer-bbbb/parents?since=${revision}&wait=20`, headers: auth(), remoteAddress: '10.0.0.6' }).then((r) => {
      answered = true;
      return r;
    });
    await new Promise((r) => setTimeout(r, 150));
    expect(answered).toBe(false);
    const have = await app.inject({ method: 'POST', url: `${base}/peers/peer-aaaa/have`, headers: auth(), remoteAddress: '10.0.0.5', payload: { pieces: [0, 1] } });
    expect(have.statusCode).toBe(204);
    const r = await held;
    expect(r.statusCode).toBe(200);
    const body = r.json() as { revision: number; parents: { peerId: string; url: string; have: string }[] };
    expect(body.revision).toBeGreaterThan(revision);
    const a = body.parents.find((p) => p.peerId === 'peer-aaaa')!;
    expect(a.url).toBe('http://10.0.0.5:7000');
    const bits = Bitfield.fromBase64(a.have, PIECES);
    expect([bits.has(0), bits.has(1), bits.has(2)]).toEqual([true, true, false]);
  });

  it('grants a piece of the origin to one peer at a time, and drops a parent reported bad', async () => {
    await manifestReady();
    await join('peer-aaaa', '10.0.0.5');
    await join('peer-bbbb', '10.0.0.6');
    const first = await app.inject({ method: 'POST', url: `${base}/peers/peer-aaaa/origin`, headers: auth(), payload: { pieces: [0] } });
    expect(first.json()).toMatchObject({ kind: 'granted', piece: 0, url: 'http://10.0.0.1:8080' });
    const second = await app.inject({ method: 'POST', url: `${base}/peers/peer-bbbb/origin`, headers: auth(), payload: { pieces: [0] } });
    expect(second.json()).toMatchObject({ kind: 'wait', piece: 0, holder: 'peer-aaaa' });

    await app.inject({ method: 'POST', url: `${base}/peers/peer-aaaa/have`, headers: auth(), payload: { pieces: [0] } });
    const report = await app.inject({ method: 'POST', url: `${base}/peers/peer-bbbb/report`, headers: auth(), payload: { parent: 'peer-aaaa', piece: 0, kind: 'bad' } });
    expect(report.json()).toEqual({ kind: 'dropped' });
    const again = await join('peer-aaaa', '10.0.0.5');
    expect(again.statusCode).toBe(403);
  });

  it('a peer whose long poll closes unanswered (killed) loses its grant and its place within the grace; one that polls again keeps both', async () => {
    await manifestReady();
    await app.listen({ host: '127.0.0.1', port: 0 });
    const url = `http://127.0.0.1:${(app.server.address() as { port: number }).port}${base}`;
    const call = (method: string, p: string, payload?: unknown, signal?: AbortSignal) =>
      fetch(`${url}${p}`, { method, headers: { ...auth(), ...(payload ? { 'content-type': 'application/json' } : {}) }, body: payload ? JSON.stringify(payload) : undefined, signal });
    const joinHere = async (peerId: string, port: number) => {
      const r = await call('POST', '/peers', { peerId, url: `http://127.0.0.1:${port}`, have: new Bitfield(PIECES).toBase64() });
      expect(r.status).toBe(200);
      return ((await r.json()) as { revision: number }).revision;
    };
    /** Opens a long poll, lets the server hold it, then closes the connection as a killed process would. */
    const pollAndVanish = async (peerId: string, since: number) => {
      const gone = new AbortController();
      const poll = call('GET', `/peers/${peerId}/parents?since=${since}&wait=20`, undefined, gone.signal).catch(() => undefined);
      await new Promise((r) => setTimeout(r, 100));
      gone.abort();
      await poll;
    };
    await joinHere('peer-dead', 7001);
    await joinHere('peer-back', 7002);
    await joinHere('peer-wait', 7003);
    expect(await (await call('POST', '/peers/peer-dead/origin', { pieces: [0] })).json()).toMatchObject({ kind: 'granted', piece: 0 });
    expect(await (await call('POST', '/peers/peer-back/origin', { pieces: [1] })).json()).toMatchObject({ kind: 'granted', piece: 1 });
    expect((await call('POST', '/peers/peer-dead/have', { pieces: [2] })).status).toBe(204);
    const rev = ((await (await call('GET', `/peers/peer-wait/parents?wait=0`)).json()) as { revision: number }).revision;
    // The survivor waits for news; the dead peer's poll closes; the other reconnects at once.
    const news = call('GET', `/peers/peer-wait/parents?since=${rev}&wait=20`).then(async (r) => (await r.json()) as { revision: number; parents: { peerId: string }[] });
    await pollAndVanish('peer-dead', rev);
    await pollAndVanish('peer-back', rev);
    const back = call('GET', `/peers/peer-back/parents?since=${rev}&wait=20`);
    const { revision, parents } = await news;
    // Woken by the dead peer's departure (after the 3 s grace, long before the 30 s liveness timeout), not by
    // the poll's own 20 s: the image's state moved.
    expect(revision).toBeGreaterThan(rev);
    expect(parents.map((p) => p.peerId)).not.toContain('peer-dead');
    expect(await (await call('POST', '/peers/peer-wait/origin', { pieces: [0] })).json()).toMatchObject({ kind: 'granted', piece: 0 });
    expect(await (await call('POST', '/peers/peer-wait/origin', { pieces: [1] })).json()).toMatchObject({ kind: 'wait', piece: 1, holder: 'peer-back' });
    expect((await call('POST', '/peers/peer-dead/have', { pieces: [0] })).status).toBe(404); // forgotten: it must join again
    await app.close(); // answers the held poll
    await back.catch(() => undefined);
  });

  it("hands the image's P2P token to the workflow's claimant only: in the claim's answer and its later reads", async () => {
    const claimToken = workflowToken(SECRET, 'wf-p2p');
    const secret = 'cd'.repeat(32);
    // Before the claim, naming the MAC gets nobody a P2P token: the workflow's own calls need the claim.
    const early = await app.inject({ url: '/api/v1/agent/workflows/wf-p2p', headers: { authorization: `Bearer ${claimToken}` }, remoteAddress: '10.0.0.7' });
    expect(early.json()).not.toHaveProperty('p2p');
    const claim = await app.inject({ method: 'POST', url: '/api/v1/agent/workflows/wf-p2p/claim', headers: { authorization: `Bearer ${claimToken}` }, remoteAddress: '10.0.0.7', payload: { secret } });
    expect(claim.statusCode).toBe(200);
    expect(claim.json()).toMatchObject({ id: 'wf-p2p', p2p: { token: TOKEN } });
    const again = await app.inject({ url: '/api/v1/agent/workflows/wf-p2p', headers: { authorization: `Bearer ${secret}` }, remoteAddress: '10.0.0.7' });
    expect(again.json()).toMatchObject({ p2p: { token: TOKEN } });
    const other = await app.inject({ url: '/api/v1/agent/workflows/wf-p2p', headers: { authorization: `Bearer ${secret}` }, remoteAddress: '10.0.0.8' });
    expect(other.statusCode).toBe(401);
    expect(other.body).not.toContain(TOKEN);
    // Nothing of it is stored: the workflow in the store has no p2p field.
    const stored = await store.read((s) => s.get<Record<string, unknown>>(workflowKey('wf-p2p'))?.value);
    expect(stored).not.toHaveProperty('p2p');
  });

  it('serves the seed\'s pieces to token holders only, by index', async () => {
    const m = await manifestReady();
    const r = await app.inject({ url: `/p2p/${SHA}/pieces/2`, headers: auth() });
    expect(r.statusCode).toBe(200);
    const { offset, length } = pieceRange(m, 2);
    expect(r.rawPayload.equals(IMAGE.subarray(offset, offset + length))).toBe(true);
    expect((await app.inject({ url: `/p2p/${SHA}/pieces/2` })).statusCode).toBe(401);
    expect((await app.inject({ url: `/p2p/${SHA}/pieces/3`, headers: auth() })).statusCode).toBe(404);
    expect((await app.inject({ url: `/p2p/${SHA}/pieces/-1`, headers: auth() })).statusCode).toBe(404);
  });

  it("paces the seed's uploads through the server's P2P uplink bucket (--p2p-upload-limit), bytes intact", async () => {
    await app.close();
    // A bucket that counts what passes through it; its rate is high so the test does not wait.
    const taken: number[] = [];
    const rate = new (class extends TokenBucket {
      override async take(bytes: number, signal?: AbortSignal) {
        taken.push(bytes);
        return super.take(bytes, signal);
      }
    })({ rate: 1e9, burst: 1e9 });
    app = await buildServer({ store, secret: SECRET, serverUrl: 'http://10.0.0.1:8080', apiToken: 'admin-token', p2pSeed: seed, p2pUploadRate: rate });
    await app.ready();
    const m = await manifestReady();
    const r = await app.inject({ url: `/p2p/${SHA}/pieces/0`, headers: auth() });
    expect(r.statusCode).toBe(200);
    const { length } = pieceRange(m, 0);
    expect(r.headers['content-length']).toBe(String(length));
    expect(r.rawPayload.equals(IMAGE.subarray(0, length))).toBe(true);
    expect(taken.length).toBeGreaterThan(1); // a slice at a time, not the piece at once
    expect(taken.reduce((a, b) => a + b, 0)).toBe(length);
  });

  it('preheats: a new pending workflow naming the image starts the seed before any machine asks', async () => {
    expect(seed.prepared).toBe(0);
    // An image the server itself serves: ${server.url} is filled in as it is for Mage.
    const wf = { id: 'wf-p2p-2', mac: '52:54:00:00:00:02', machine: 'm2', assignment: 'a', template: 't', generation: 1, state: 'pending', reimage: false, createdAt: new Date(0).toISOString(), actions: [], image: { url: '${server.url}/images/os.raw', sha256: SHA.toUpperCase() } } as unknown as Workflow;
    await store.commit({ put: [{ key: workflowKey(wf.id), value: wf }] });
    for (let i = 0; i < 200 && seed.prepared === 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(seed.prepared).toBe(1);
    expect(seed.urls).toEqual(['http://10.0.0.1:8080/images/os.raw']);
    const list = await app.inject({ url: '/api/v1/p2p/images', headers: auth('admin-token') });
    expect(list.json()).toMatchObject({ images: [{ sha256: SHA, state: 'ready', stats: { pieces: PIECES, peers: 0 } }] });
    // Asked again, the image is not read again.
    await manifestReady();
    expect(seed.prepared).toBe(1);
  });

  it('preheats by hand for the admin only; the image list needs a token too', async () => {
    const body = { url: 'http://images.example/other.raw', sha256: SHA };
    expect((await app.inject({ method: 'POST', url: '/api/v1/p2p/preheat', payload: body })).statusCode).toBe(401);
    expect((await app.inject({ method: 'POST', url: '/api/v1/p2p/preheat', headers: auth(), payload: body })).statusCode).toBe(401);
    expect((await app.inject({ method: 'POST', url: '/api/v1/p2p/preheat', headers: auth('admin-token'), payload: { ...body, url: 'file:///etc/passwd' } })).statusCode).toBe(400);
    const r = await app.inject({ method: 'POST', url: '/api/v1/p2p/preheat', headers: auth('admin-token'), payload: body });
    expect(r.statusCode).toBe(202);
    for (let i = 0; i < 200 && seed.prepared === 0; i++) await new Promise((res) => setTimeout(res, 10));
    expect(seed.prepared).toBe(1);
    expect((await app.inject({ url: '/api/v1/p2p/images' })).statusCode).toBe(401);
  });
});
