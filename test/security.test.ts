// The boot network is hostile: anyone on it can name any MAC, read any boot script, and send anything.
// Each test here performs one attack of docs/security.md against the real boot server and store, and
// shows that it no longer achieves what it did.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { recordSeen } from '../boot/observe.js';
import { buildServer, type BootServerDeps } from '../boot/server.js';
import { workflowToken } from '../boot/tokens.js';
import { applyPlan } from '../reconciler/apply.js';
import { loadFleet } from '../reconciler/load.js';
import { readObserved } from '../reconciler/observed.js';
import { planFleet } from '../reconciler/plan.js';
import { oneMachineFleetYaml } from '../reconciler/test-builders.js';
import type { HardwareReport, MachineRecord, Workflow } from '../schemas/types.js';
import { machineKey } from '../store/keys.js';
import { LmdbStore } from '../store/lmdb.js';

const MAC = '52:54:00:ab:cd:01';
const SECRET = Buffer.alloc(32, 7);
const ADMIN = { authorization: 'Bearer admin-secret' };
const MAGE_IP = '10.0.0.21';
const ATTACKER_IP = '10.0.0.66';
const MAGE_SECRET = 'a1'.repeat(32);

const disk = (name: string, sizeBytes: number, serial: string) => ({ name, path: `/dev/${name}`, sizeBytes, serial, rotational: false, removable: false, table: 'none' as const });
/** The real machine: a small NVMe boot disk and a 4 TB data disk (rotational, so never chosen). */
const REAL: HardwareReport = {
  disks: [disk('nvme0n1', 500e9, 'BOOT-1'), { ...disk('sda', 4000e9, 'DATA-1'), rotational: true, table: 'gpt', partitions: [{ name: 'sda1', fstype: 'xfs', label: 'data' }] }],
  nics: [{ name: 'eth0', mac: MAC, link: true }],
};
/** The forgery: only the data disk, presented as a blank SSD, so the rule would pick it. */
const FORGED: HardwareReport = { disks: [{ ...disk('sda', 4000e9, 'DATA-1'), rotational: false }], nics: [{ name: 'eth0', mac: MAC, link: true }] };

const FLEET = oneMachineFleetYaml('db-01', MAC);

let dir: string;
let store: LmdbStore;
let app: FastifyInstance;

async function start(extra: Partial<BootServerDeps> = {}): Promise<void> {
  app = await buildServer({ store, secret: SECRET, serverUrl: 'http://10.0.0.1:8080', apiToken: 'admin-secret', readToken: 'read-only', ...extra });
  await app.ready();
}

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dragonfly-security-'));
  store = LmdbStore.open(path.join(dir, 'state'));
});
afterEach(async () => {
  await app?.close();
  await store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const record = () => store.read((s) => s.get<MachineRecord>(machineKey(MAC))?.value);
const register = (hardware: HardwareReport, opts: { ip?: string; auth?: string; workflow?: string } = {}) =>
  app.inject({
    method: 'POST',
    url: '/api/v1/agent/register',
    remoteAddress: opts.ip ?? MAGE_IP,
    ...(opts.auth ? { headers: { authorization: `Bearer ${opts.auth}` } } : {}),
    payload: { mac: MAC, hardware, ...(opts.workflow ? { workflow: opts.workflow } : {}) },
  });

async function applyFleet(): Promise<string> {
  const { fleet } = loadFleet([{ path: 'fleet.yaml', text: FLEET }]);
  const plan = planFleet(fleet!, await readObserved(store));
  const { workflows } = await applyPlan(store, plan, fleet!, { user: 'test', source: 'cli' });
  return workflows[0]!;
}

/** The token as the boot script hands it out (the only place it appears). */
async function tokenFromScript(ip: string): Promise<string | undefined> {
  const script = (await app.inject({ url: `/boot/${MAC}`, remoteAddress: ip })).body;
  return /dragonfly\.token=([0-9a-f]{64})/.exec(script)?.[1];
}

describe('workflow takeover (High 1)', () => {
  it('after the claim, the token from the boot script opens nothing: no Ready, no Error, no fake progress', async () => {
    await start();
    await register(REAL);
    const wf = await applyFleet();
    // Before the claim the script carries the token (PXE has no stronger identity)…
    const token = await tokenFromScript(MAGE_IP);
    expect(token).toBe(workflowToken(SECRET, wf));
    // …and the machine's own Mage claims with it, binding the workflow to its secret and address.
    const claim = await app.inject({ method: 'POST', url: `/api/v1/agent/workflows/${wf}/claim`, remoteAddress: MAGE_IP, headers: { authorization: `Bearer ${token}` }, payload: { secret: MAGE_SECRET } });
    expect(claim.statusCode).toBe(200);

    // The attacker names the MAC: the script no longer carries a token.
    expect(await tokenFromScript(ATTACKER_IP)).toBeUndefined();
    // With the token read earlier: finish, progress, re-claim and read are all refused.
    const asAttacker = (url: string, payload?: object, auth = token!) =>
      app.inject({ method: payload ? 'POST' : 'GET', url, remoteAddress: ATTACKER_IP, headers: { authorization: `Bearer ${auth}` }, ...(payload ? { payload } : {}) });
    for (const [url, payload] of [
      [`/api/v1/agent/workflows/${wf}/finish`, { state: 'succeeded' }],
      [`/api/v1/agent/workflows/${wf}/actions/0`, { state: 'succeeded', percent: 100 }],
      [`/api/v1/agent/workflows/${wf}/claim`, { secret: 'ff'.repeat(32) }],
      [`/api/v1/agent/workflows/${wf}`, undefined],
    ] as const) {
      const r = await asAttacker(url, payload);
      expect(r.statusCode, url).toBe(409);
      expect(r.json().error.code).toBe('DF_ERR_WORKFLOW_CLAIMED');
    }
    // Even the claimant's secret, from another address, is refused.
    expect((await asAttacker(`/api/v1/agent/workflows/${wf}/finish`, { state: 'succeeded' }, MAGE_SECRET)).statusCode).toBe(401);
    // A registration with the token does not make the attacker's Mage run it either: it waits.
    expect((await register(REAL, { ip: ATTACKER_IP, auth: token!, workflow: wf })).json()).toMatchObject({ instruction: 'wait' });

    const stored = await store.read((s) => s.get<Workflow>(`workflows/${wf}`)!.value);
    expect(stored.state).toBe('running');
    expect(stored.actions[0]!.state).toBe('pending');
    expect((await record())!.phase).not.toBe('Ready');
    // The claim is an event an operator sees, with the address.
    const events = await store.read((s) => s.list<{ type: string; ip?: string }>('events/').map((e) => e.value));
    expect(events).toContainEqual(expect.objectContaining({ type: 'workflow.claimed', ip: MAGE_IP }));

    // The claimant finishes it.
    const fin = await app.inject({ method: 'POST', url: `/api/v1/agent/workflows/${wf}/finish`, remoteAddress: MAGE_IP, headers: { authorization: `Bearer ${MAGE_SECRET}` }, payload: { state: 'succeeded' } });
    expect(fin.json()).toEqual({ ok: true, state: 'succeeded' });
  });

  it('the read API does not hand out MACs: it needs a token, and a read token cannot cancel', async () => {
    await start();
    await register(REAL);
    const wf = await applyFleet();
    for (const url of ['/api/v1/machines', '/api/v1/workflows', '/api/v1/events', '/metrics']) {
      const r = await app.inject({ url, remoteAddress: ATTACKER_IP });
      expect(r.statusCode, url).toBe(401);
      expect(r.body).not.toContain(MAC);
    }
    // RFC 7235: the scheme is case-insensitive.
    const list = await app.inject({ url: '/api/v1/machines', headers: { authorization: 'bearer read-only' } });
    expect(list.json().items.map((m: MachineRecord) => m.mac)).toEqual([MAC]);
    const cancel = await app.inject({ method: 'POST', url: `/api/v1/workflows/${wf}/cancel`, headers: { authorization: 'Bearer read-only' } });
    expect(cancel.statusCode).toBe(403);
    expect(cancel.json().error.code).toBe('DF_ERR_FORBIDDEN');
    // The workflow list never shows a claim's secret hash.
    await app.inject({ method: 'POST', url: `/api/v1/agent/workflows/${wf}/claim`, remoteAddress: MAGE_IP, headers: { authorization: `Bearer ${workflowToken(SECRET, wf)}` }, payload: { secret: MAGE_SECRET } });
    const wfs = await app.inject({ url: '/api/v1/workflows', headers: ADMIN });
    expect(wfs.body).not.toContain('secretSha256');
    expect(wfs.json().items[0].claim).toEqual({ at: expect.any(String), ip: MAGE_IP });
  });
});

describe('a forged hardware report picks the disk to wipe (High 2)', () => {
  it('an unauthenticated report after the first is kept apart: the plan still installs on the boot disk', async () => {
    await start();
    await register(REAL);
    expect((await record())!.hardware).toEqual(REAL);
    // The attack: a report naming only the data disk, sent by anyone.
    expect((await register(FORGED, { ip: ATTACKER_IP })).statusCode).toBe(200);
    const rec = (await record())!;
    expect(rec.hardware).toEqual(REAL);
    expect(rec.unverifiedHardware).toMatchObject({ hardware: FORGED, ip: ATTACKER_IP });

    const { fleet } = loadFleet([{ path: 'fleet.yaml', text: FLEET }]);
    const plan = planFleet(fleet!, await readObserved(store));
    const change = plan.changes.find((c) => c.workflow)!;
    expect(change.workflow!.disk).toBe('/dev/nvme0n1');
    expect(change.workflow!.diskIdentity).toEqual({ sizeBytes: 500e9, serial: 'BOOT-1', wwn: null });
    expect(plan.notes.some((n) => n.kind === 'drift' && n.message.includes(`unverified hardware report (1 disks, from ${ATTACKER_IP}`))).toBe(true);
  });

  it('only the finish of a claimed workflow replaces the stored hardware; registrations never do, not even the claimant\'s', async () => {
    await start();
    await register(REAL);
    const wf = await applyFleet();
    await register(FORGED, { ip: ATTACKER_IP });
    const token = await tokenFromScript(MAGE_IP);
    const claim = () => app.inject({ method: 'POST', url: `/api/v1/agent/workflows/${wf}/claim`, remoteAddress: MAGE_IP, headers: { authorization: `Bearer ${token}` }, payload: { secret: MAGE_SECRET } });
    expect((await claim()).statusCode).toBe(200);
    // The same Mage claiming again (its first answer lost) is answered, not taken for an attacker.
    expect((await claim()).json()).toMatchObject({ id: wf, state: 'running' });
    // The claimant's registration is no verified report: a claim-race winner must not rewrite what plans use.
    await register(FORGED, { auth: MAGE_SECRET });
    expect((await record())!.hardware).toEqual(REAL);
    const after: HardwareReport = { ...REAL, disks: [{ ...REAL.disks[0]!, table: 'gpt', partitions: [{ name: 'nvme0n1p1', fstype: 'ext4' }] }, REAL.disks[1]!] };
    const fin = await app.inject({ method: 'POST', url: `/api/v1/agent/workflows/${wf}/finish`, remoteAddress: MAGE_IP, headers: { authorization: `Bearer ${MAGE_SECRET}` }, payload: { state: 'succeeded', hardware: after } });
    expect(fin.statusCode).toBe(200);
    const rec = (await record())!;
    expect(rec.hardware).toEqual(after);
    expect(rec.hardwareVerified).toBe(true);
    expect(rec.unverifiedHardware).toBeUndefined();
    // After the finish, the claimant's secret opens nothing that changes hardware.
    await register(FORGED, { auth: MAGE_SECRET });
    expect((await record())!.hardware).toEqual(after);
    expect((await record())!.unverifiedHardware).toMatchObject({ hardware: FORGED });
  });

  it('alternating forged reports make one event per machine per ten minutes, not one per report', async () => {
    await start();
    await register(REAL);
    for (let i = 0; i < 20; i++) await register(i % 2 ? FORGED : { ...FORGED, disks: [] }, { ip: ATTACKER_IP });
    const events = await store.read((s) => s.list<{ type: string }>('events/').map((e) => e.value.type));
    expect(events.filter((t) => t === 'machine.hardware-unverified')).toHaveLength(1);
  });

  it('disk paths are device names under /dev, nothing else', async () => {
    await start();
    for (const p of ['/etc/passwd', '/dev/../etc/passwd', 'sda', '/dev/sda; reboot', '/dev/sd a', '/dev/']) {
      const r = await register({ ...REAL, disks: [{ ...REAL.disks[0]!, path: p }] });
      expect(r.statusCode, p).toBe(400);
      expect(r.json().error.message).toContain('/hardware/disks/0/path');
    }
    expect(await record()).toBeUndefined();
  });
});

describe('unbounded growth from unauthenticated traffic (Medium 5)', () => {
  it('a chatty (or hostile) action cannot put more than 16 KiB of log lines into one event', async () => {
    await start();
    await register(REAL);
    const wf = await applyFleet();
    await app.inject({ method: 'POST', url: `/api/v1/agent/workflows/${wf}/claim`, remoteAddress: MAGE_IP, headers: { authorization: `Bearer ${workflowToken(SECRET, wf)}` }, payload: { secret: MAGE_SECRET } });
    const log = Array.from({ length: 120 }, (_, i) => `${String(i).padStart(4, '0')} ${'x'.repeat(2000)}`); // 240 KiB: just under the body limit
    const r = await app.inject({ method: 'POST', url: `/api/v1/agent/workflows/${wf}/actions/0`, remoteAddress: MAGE_IP, headers: { authorization: `Bearer ${MAGE_SECRET}` }, payload: { state: 'running', log } });
    expect(r.statusCode).toBe(200);
    const event = await store.read((s) => s.list<{ type: string; log?: string[] }>('events/').map((e) => e.value).find((e) => e.log));
    expect(JSON.stringify(event!.log).length).toBeLessThan(17 * 1024);
    expect(event!.log![0]).toMatch(/^… \d+ earlier lines not kept$/);
    expect(event!.log!.at(-1)).toMatch(/^0119 /);
  });

  it('registrations of made-up MACs take from the discovery budget; over it nothing is committed', async () => {
    await start({ discoveryPerMinute: 5 });
    const before = await store.read((s) => s.revision);
    const codes: number[] = [];
    for (let i = 0; i < 30; i++) {
      const mac = `02:00:00:00:01:${i.toString(16).padStart(2, '0')}`;
      const r = await app.inject({ method: 'POST', url: '/api/v1/agent/register', remoteAddress: ATTACKER_IP, payload: { mac, hardware: { disks: [], nics: [] } } });
      codes.push(r.statusCode);
      if (r.statusCode === 429) expect(r.json().error.code).toBe('DF_ERR_RATE_LIMITED');
    }
    expect(codes.filter((c) => c === 200)).toHaveLength(5);
    expect(await store.read((s) => s.list('machines/').length)).toBe(5);
    // PXE requests for more made-up MACs from the same source: served, not committed (no seen record either).
    const mid = await store.read((s) => s.revision);
    for (let i = 0; i < 30; i++) expect((await app.inject({ url: `/boot/02:00:00:00:02:${i.toString(16).padStart(2, '0')}`, remoteAddress: ATTACKER_IP })).statusCode).toBe(200);
    expect(await store.read((s) => s.revision)).toBe(mid);
    expect(mid).toBeGreaterThan(before);
    const metrics = (await app.inject({ url: '/metrics', headers: ADMIN })).body;
    expect(metrics).toMatch(/dragonfly_discovery_refused_macs 55/);
  });

  it('a global cap on Discovered machines holds across many source addresses', async () => {
    await start({ maxDiscovered: 3 });
    for (let i = 0; i < 10; i++) {
      await app.inject({ url: `/boot/02:00:00:00:03:${i.toString(16).padStart(2, '0')}`, remoteAddress: `10.1.0.${i + 1}` });
    }
    expect(await store.read((s) => s.list('machines/').length)).toBe(3);
    const r = await app.inject({ method: 'POST', url: '/api/v1/agent/register', remoteAddress: '10.1.1.1', payload: { mac: '02:00:00:00:04:01', hardware: { disks: [], nics: [] } } });
    expect(r.statusCode).toBe(503);
    expect(r.json().error.code).toBe('DF_ERR_DISCOVERY_FULL');
  });

  it('broadcast, zero and multicast MACs are never machines', async () => {
    await start();
    for (const mac of ['ff:ff:ff:ff:ff:ff', '00:00:00:00:00:00', '01:00:5e:00:00:01']) {
      expect((await app.inject({ url: `/boot/${mac}` })).statusCode, mac).toBe(400);
      const r = await app.inject({ method: 'POST', url: '/api/v1/agent/register', payload: { mac, hardware: { disks: [], nics: [] } } });
      expect(r.json().error.code, mac).toBe('DF_ERR_BAD_MAC');
    }
    expect(await store.read((s) => s.list('machines/').length)).toBe(0);
  });

  it('memorable-name collisions are found without a scan; the read API pages', async () => {
    await start();
    // Two MACs that differ only in the top 4 bits share the words; the later one gets the suffix.
    await recordSeen(store, '12:54:00:ab:cd:01', { source: 'pxe' });
    await recordSeen(store, '52:54:00:ab:cd:01', { source: 'pxe' });
    const names = await store.read((s) => s.list<MachineRecord>('machines/').map((r) => r.value.memorableName));
    expect(names).toEqual(['CensusAbleQualityParent', 'CensusAbleQualityParent5']);
    for (let i = 0; i < 7; i++) await recordSeen(store, `52:54:00:00:00:0${i}`, { source: 'pxe' });
    const seen: string[] = [];
    let after: string | undefined;
    for (;;) {
      const page = (await app.inject({ url: `/api/v1/machines?limit=4${after ? `&after=${after}` : ''}`, headers: ADMIN })).json() as { items: MachineRecord[]; next?: string; revision: number };
      expect(page.items.length).toBeLessThanOrEqual(4);
      seen.push(...page.items.map((m) => m.mac));
      if (!page.next) break;
      after = page.next;
    }
    expect(seen).toEqual([...seen].sort());
    expect(new Set(seen).size).toBe(9);
    expect((await app.inject({ url: '/api/v1/machines?limit=999999', headers: ADMIN })).statusCode).toBe(400);
  });
});

describe('event stream exhaustion (High 4)', () => {
  /** An SSE client on a raw socket: it reads (or not) as the test says. */
  async function rawStream(address: string, query = '', headers = 'Authorization: Bearer read-only\r\n'): Promise<net.Socket> {
    const { port } = new URL(address);
    const socket = net.connect(Number(port), '127.0.0.1');
    await new Promise((r) => socket.once('connect', r));
    socket.write(`GET /api/v1/events${query} HTTP/1.1\r\nHost: x\r\n${headers}\r\n`);
    return socket;
  }

  it('clients that never read are closed once they fall behind; they never hold the history', async () => {
    await start({ events: { maxEvents: 200, maxBytes: 256 * 1024 } });
    const address = await app.listen({ host: '127.0.0.1', port: 0 });
    const sockets = await Promise.all(Array.from({ length: 10 }, () => rawStream(address, '?since=0')));
    // Each reads the response head (the stream is open), then never reads again: the kernel buffers fill,
    // then the server's writes push back.
    await Promise.all(sockets.map((s) => new Promise((r) => s.once('data', r))));
    for (const s of sockets) s.pause();
    const closed = sockets.map((s) => new Promise<void>((r) => s.once('close', () => r())));
    for (const s of sockets) s.on('error', () => {});
    // A burst of large changes: far more than the socket buffers and the ring hold.
    const big = 'x'.repeat(64 * 1024);
    for (let i = 0; i < 600; i++) await store.commit({ put: [{ key: `events/burst-${String(i).padStart(4, '0')}`, value: { type: 'burst', message: big } }] });
    await Promise.all(closed);
    expect(app.server.listening).toBe(true);
    const metrics = (await app.inject({ url: '/metrics', headers: ADMIN })).body;
    expect(Number(/dragonfly_event_streams_dropped (\d+)/.exec(metrics)![1])).toBe(10);
    // A reader resuming from before the ring is told to re-list, not replayed a partial history.
    const stale = await app.inject({ url: '/api/v1/events?since=1', headers: ADMIN });
    expect(stale.statusCode).toBe(410);
    expect(stale.json().error).toMatchObject({ code: 'DF_ERR_STORE_COMPACTED', oldest: expect.any(Number) });
  });

  it('streams are capped per address and in total', async () => {
    await start({ events: { maxStreams: 4, maxStreamsPerAddress: 2 } });
    const address = await app.listen({ host: '127.0.0.1', port: 0 });
    const open = [await rawStream(address), await rawStream(address)];
    // Both streams are open (their heads arrived) before the third asks.
    await Promise.all(open.map((s) => new Promise((r) => s.once('data', r))));
    const third = await rawStream(address);
    const answer = await new Promise<string>((r) => third.once('data', (d) => r(String(d))));
    expect(answer).toMatch(/^HTTP\/1.1 503/);
    expect(answer).toContain('DF_ERR_TOO_MANY_STREAMS');
    for (const s of [...open, third]) s.destroy();
  });

  it('a replay pairs each id with the value of that revision, never a newer one', async () => {
    await start();
    await recordSeen(store, MAC, { source: 'pxe' }); // machine created at some revision R
    const created = await store.read((s) => s.get(machineKey(MAC))!.modRevision);
    await register(REAL); // the record changes again at a later revision
    const current = await store.read((s) => s.get(machineKey(MAC))!.modRevision);
    expect(current).toBeGreaterThan(created);
    const address = await app.listen({ host: '127.0.0.1', port: 0 });
    const socket = await rawStream(address, '?since=0');
    let text = '';
    socket.on('data', (d) => (text += String(d)));
    while (!text.includes(`"revision":${current}`)) await new Promise((r) => setTimeout(r, 20));
    socket.destroy();
    const frames = text.split('\n\n').filter((f) => f.includes('event: machine'));
    const data = frames.map((f) => JSON.parse(/^data: (.*)$/m.exec(f)![1]!) as { revision: number; value: MachineRecord });
    // Every value comes with the revision that produced it: the creation (if sent at all) without hardware,
    // the report's value only with the report's revision.
    for (const d of data.filter((x) => x.revision === created)) expect(d.value.hardware).toBeUndefined();
    expect(data.filter((d) => d.value.hardware)).toEqual([expect.objectContaining({ revision: current })]);
  });

  it('only the last event of a commit carries its id: a client cut off inside a commit resumes before it', async () => {
    await start();
    const address = await app.listen({ host: '127.0.0.1', port: 0 });
    const socket = await rawStream(address);
    let text = await new Promise<string>((r) => socket.once('data', (d) => r(String(d)))); // the stream is open
    socket.on('data', (d) => (text += String(d)));
    const r = await store.commit({ put: ['a', 'b', 'c'].map((k) => ({ key: `events/000-${k}`, value: { type: 'x', message: k } })) });
    while ((text.match(/event: event/g) ?? []).length < 3) await new Promise((res) => setTimeout(res, 20));
    socket.destroy();
    const frames = text.split('\n\n').filter((f) => f.includes('event: event'));
    expect(frames.map((f) => f.includes(`id: ${r.revision}\n`))).toEqual([false, false, true]);
  });
});

describe('file descriptors (Medium 7)', () => {
  it('half-open connections from one address are capped at accept; another address is still served', async () => {
    await start({ connections: { maxConnectionsPerAddress: 5, headersTimeoutMs: 60_000, requestTimeoutMs: 60_000 } });
    const address = await app.listen({ host: '127.0.0.1', port: 0 });
    const port = Number(new URL(address).port);
    const idle = await Promise.all(
      Array.from({ length: 12 }, async () => {
        const s = net.connect(port, '127.0.0.1');
        s.on('error', () => {});
        await new Promise((r) => s.once('connect', r));
        return { s, closed: new Promise<boolean>((r) => s.once('close', () => r(true))) };
      }),
    );
    // Seven of twelve are closed by the server without a byte sent; five stay open (half-open, as an attacker holds them).
    const settled = await Promise.all(idle.slice(5).map((c) => c.closed));
    expect(settled).toEqual(Array(7).fill(true));
    expect(idle.slice(0, 5).every((c) => !c.s.destroyed)).toBe(true);
    const other = await new Promise<number>((resolve, reject) => {
      const s = net.connect({ port, host: '127.0.0.1', localAddress: '127.0.0.2' });
      s.on('error', reject);
      s.once('connect', () => s.write('GET /boot.ipxe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'));
      s.once('data', (d) => resolve(Number(/^HTTP\/1.1 (\d+)/.exec(String(d))![1])));
    });
    expect(other).toBe(200);
    const metrics = (await app.inject({ url: '/metrics', headers: ADMIN })).body;
    expect(metrics).toMatch(/dragonfly_http_connections_refused 7/);
    for (const c of idle) c.s.destroy();
  });
});

describe('framework errors and files (Low 10, Medium 8)', () => {
  it('bad URL encoding and over-long paths are answered in our format, never echoed', async () => {
    await start();
    for (const url of ['/boot/%E0%A4%A<script>', `/boot/${'a'.repeat(5000)}<script>`]) {
      const r = await app.inject({ url });
      expect(r.statusCode, url).toBeGreaterThanOrEqual(400);
      expect(r.statusCode, url).toBeLessThan(500);
      expect(r.body).not.toContain('<script>');
      expect(r.json().error.code).toMatch(/^DF_ERR_(BAD_REQUEST|BAD_MAC|NOT_FOUND)$/);
      expect(r.json().error.hint).not.toContain('agent.schema.json');
    }
  });

  it('HTTP serves the links a static root held at start, never one made later, never a traversal', async () => {
    const root = path.join(dir, 'ipxe');
    fs.mkdirSync(root);
    const outside = path.join(dir, 'outside.efi');
    fs.writeFileSync(outside, 'EFI binary');
    fs.symlinkSync(outside, path.join(root, 'ipxe.efi')); // as Debian's ipxe package does
    fs.writeFileSync(path.join(dir, 'secret'), 'do not serve');
    await start({ ipxeDir: root });
    expect((await app.inject({ url: '/ipxe/ipxe.efi' })).body).toBe('EFI binary');
    fs.symlinkSync(path.join(dir, 'secret'), path.join(root, 'late.efi'));
    for (const url of ['/ipxe/late.efi', '/ipxe/..%2fsecret', '/ipxe/%2e%2e/secret']) {
      const r = await app.inject({ url });
      expect(r.statusCode, url).toBe(404);
      expect(r.body).not.toContain('do not serve');
      expect(r.json().error.hint).not.toContain('agent.schema.json');
    }
  });
});
