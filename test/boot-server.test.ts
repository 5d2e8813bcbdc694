// The boot server's HTTP side against a real store, driven the way machines drive it: iPXE fetches
// scripts, Mage registers and reports. Fleet changes come through the real plan/apply.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { buildServer } from '../boot/server.js';
import { workflowToken } from '../boot/tokens.js';
import { expireWorkflows } from '../boot/timeouts.js';
import { applyPlan } from '../reconciler/apply.js';
import { loadFleet } from '../reconciler/load.js';
import { readObserved } from '../reconciler/observed.js';
import { planFleet } from '../reconciler/plan.js';
import type { MachineRecord, Workflow } from '../schemas/types.js';
import { machineKey } from '../store/keys.js';
import { LmdbStore } from '../store/lmdb.js';

const MAC = '52:54:00:ab:cd:01';
const SECRET = Buffer.alloc(32, 7);
const HARDWARE = {
  cpu: { model: 'QEMU Virtual CPU', cores: 2, threads: 2 },
  memoryBytes: 2 ** 30,
  disks: [{ name: 'vda', path: '/dev/vda', sizeBytes: 2 ** 31, rotational: false, removable: false, partitions: [] }],
  nics: [{ name: 'eth0', mac: MAC, link: true }],
};
const FLEET = `apiVersion: dragonfly.computer/v1
kind: Machine
metadata: {name: web-01, labels: {role: web}}
spec: {mac: 52:54:00:ab:cd:01}
---
apiVersion: dragonfly.computer/v1
kind: Template
metadata: {name: tiny}
spec:
  image: {url: "\${server.url}/images/tiny.raw", sha256: "${'cd'.repeat(32)}"}
  actions:
    - image2disk: {disk: \${disk}}
    - writefile: {partition: 1, path: /etc/hostname, content: "\${machine.name}\\n"}
---
apiVersion: dragonfly.computer/v1
kind: Assignment
metadata: {name: web}
spec: {template: tiny, selector: {role: web}}
`;

let dir: string;
let store: LmdbStore;
let app: FastifyInstance;
let mageDir: string;

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dragonfly-boot-'));
  mageDir = path.join(dir, 'mage');
  fs.mkdirSync(mageDir);
  fs.writeFileSync(path.join(mageDir, 'vmlinuz'), Buffer.from(Array.from({ length: 4096 }, (_, i) => i % 251)));
  store = LmdbStore.open(path.join(dir, 'state'));
  app = await buildServer({ store, secret: SECRET, serverUrl: 'http://10.0.0.1:8080/', mageDir, apiToken: 'admin-secret', discoveryPerMinute: 5 });
});
afterEach(async () => {
  await app.close();
  await store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

async function applyFleet(text = FLEET): Promise<string[]> {
  const { fleet, diagnostics } = loadFleet([{ path: 'fleet.yaml', text }]);
  expect(diagnostics).toEqual([]);
  const plan = planFleet(fleet!, await readObserved(store));
  return (await applyPlan(store, plan, fleet!, { user: 'test', source: 'cli' })).workflows;
}

const record = () => store.read((s) => s.get<MachineRecord>(machineKey(MAC))?.value);
const READ = { authorization: 'Bearer admin-secret' };
/** What Mage does with the token from its boot script: claim the workflow with a secret of its own. */
const MAGE_SECRET = 'a1'.repeat(32);
async function claim(wfId: string, secret = MAGE_SECRET) {
  const r = await app.inject({ method: 'POST', url: `/api/v1/agent/workflows/${wfId}/claim`, headers: { authorization: `Bearer ${workflowToken(SECRET, wfId)}` }, payload: { secret } });
  return { response: r, auth: { authorization: `Bearer ${secret}` } };
}

describe('boot scripts', () => {
  it('records an unknown MAC as Discovered at once and serves discovery', async () => {
    const r = await app.inject({ url: `/boot/52-54-00-AB-CD-01?arch=x86_64&platform=pcbios&uuid=${'1'.repeat(32)}` });
    expect(r.statusCode).toBe(200);
    expect(r.body).toContain('# Dragonfly: discovery for 52:54:00:ab:cd:01');
    expect(r.body).toContain('dragonfly.url=http://10.0.0.1:8080 dragonfly.mac=52:54:00:ab:cd:01');
    expect(await record()).toEqual({ mac: MAC, memorableName: 'CensusAbleQualityParent', phase: 'Discovered', source: 'pxe' });
    const machines = (await app.inject({ url: '/api/v1/machines', headers: READ })).json().items;
    expect(machines[0]).toMatchObject({ mac: MAC, phase: 'Discovered', lastSeen: expect.any(String) });
  });

  it('serves /boot.ipxe and refuses what is not a MAC without echoing it', async () => {
    const entry = await app.inject({ url: '/boot.ipxe' });
    expect(entry.body).toContain('chain --autofree http://10.0.0.1:8080/boot/${netX/mac:hexhyp}');
    for (const bad of ['nope', '52:54:00:ab:cd', '52%3A54%3A00%3Aab%3Acd%3A0g', '%0Ashell', '..%2F..%2Fetc']) {
      const r = await app.inject({ url: `/boot/${bad}` });
      expect(r.statusCode, bad).toBe(400);
      expect(r.body).not.toContain('shell');
      expect(r.json().error.code).toBe('DF_ERR_BAD_MAC');
    }
  });

  it('follows the lifecycle: discovery → imaging with the token → local boot', async () => {
    // Mage reports the hardware; the machine is not in git yet: it waits, untrusted.
    const reg = await app.inject({ method: 'POST', url: '/api/v1/agent/register', payload: { mac: MAC, hardware: HARDWARE } });
    expect(reg.json()).toMatchObject({ name: 'CensusAbleQualityParent', instruction: 'wait', trusted: false });

    const [wfId] = await applyFleet();
    expect(wfId).toMatch(/^wf-web-01-g1-/);
    const token = workflowToken(SECRET, wfId!);

    // Mage in discovery mode is told to reboot into the imaging script; registration never hands out tokens.
    const again = await app.inject({ method: 'POST', url: '/api/v1/agent/register', payload: { mac: MAC, hardware: HARDWARE } });
    expect(again.json()).toMatchObject({ name: 'web-01', instruction: 'reboot', trusted: true });
    expect(again.body).not.toContain(token);

    const imaging = await app.inject({ url: '/boot/52:54:00:ab:cd:01?platform=efi' });
    expect(imaging.body).toContain(`dragonfly.workflow=${wfId} dragonfly.token=${token}`);

    // Booted for the workflow, with its token: run it, claiming it with a secret of Mage's own.
    const run = await app.inject({ method: 'POST', url: '/api/v1/agent/register', headers: { authorization: `Bearer ${token}` }, payload: { mac: MAC, hardware: HARDWARE, workflow: wfId } });
    expect(run.json()).toMatchObject({ instruction: 'run', workflow: wfId });
    const { response, auth } = await claim(wfId!);
    const wf = response.json() as Workflow;
    expect(wf.state).toBe('running');
    expect(wf.claim).toEqual({ at: expect.any(String), ip: '127.0.0.1' }); // never the secret's hash
    // After the claim the boot script carries no token, and the token alone opens nothing.
    expect((await app.inject({ url: '/boot/52:54:00:ab:cd:01' })).body).not.toContain('dragonfly.token=');
    expect((await app.inject({ url: `/api/v1/agent/workflows/${wfId}`, headers: { authorization: `Bearer ${token}` } })).json().error.code).toBe('DF_ERR_WORKFLOW_CLAIMED');
    expect((await app.inject({ url: `/api/v1/agent/workflows/${wfId}`, headers: auth })).json()).toMatchObject({ id: wfId, state: 'running' });
    expect(wf.image!.url).toBe('http://10.0.0.1:8080/images/tiny.raw'); // ${server.url} filled in by the server
    expect(wf.actions.map((a) => a.params)).toEqual([{ disk: '/dev/vda' }, { partition: 1, path: '/etc/hostname', content: 'web-01\n' }]);

    for (const [i] of wf.actions.entries()) {
      const p = await app.inject({ method: 'POST', url: `/api/v1/agent/workflows/${wfId}/actions/${i}`, headers: auth, payload: { state: 'running', percent: 50, bytes: 1024, log: ['half way'] } });
      expect(p.statusCode).toBe(200);
      const d = await app.inject({ method: 'POST', url: `/api/v1/agent/workflows/${wfId}/actions/${i}`, headers: auth, payload: { state: 'succeeded', percent: 100 } });
      expect(d.statusCode).toBe(200);
    }
    const fin = await app.inject({ method: 'POST', url: `/api/v1/agent/workflows/${wfId}/finish`, headers: auth, payload: { state: 'succeeded' } });
    expect(fin.json()).toEqual({ ok: true, state: 'succeeded' });
    expect(await record()).toMatchObject({ phase: 'Ready', installed: { template: 'tiny', generation: 1, imageSha256: 'cd'.repeat(32) } });

    const local = await app.inject({ url: '/boot/52:54:00:ab:cd:01' });
    expect(local.body).toBe('#!ipxe\n# Dragonfly: local boot for 52:54:00:ab:cd:01 (web-01): provisioned\nexit\n');

    // A late report does not resurrect the workflow.
    const late = await app.inject({ method: 'POST', url: `/api/v1/agent/workflows/${wfId}/finish`, headers: auth, payload: { state: 'failed', error: 'late' } });
    expect(late.statusCode).toBe(409);
    expect(late.json().error.code).toBe('DF_ERR_WORKFLOW_ENDED');
    // And the plan has nothing left to do.
    const { fleet } = loadFleet([{ path: 'fleet.yaml', text: FLEET }]);
    expect(planFleet(fleet!, await readObserved(store)).changes).toEqual([]);
  });

  it('a failed workflow puts the machine in Error; it stays in Mage, never boots a half-written disk', async () => {
    await app.inject({ method: 'POST', url: '/api/v1/agent/register', payload: { mac: MAC, hardware: HARDWARE } });
    const [wfId] = await applyFleet();
    const { auth } = await claim(wfId!);
    const fin = await app.inject({ method: 'POST', url: `/api/v1/agent/workflows/${wfId}/finish`, headers: auth, payload: { state: 'failed', error: 'refusing to write /dev/vda: its serial is B', code: 'DF_ERR_DISK_MISMATCH' } });
    expect(fin.statusCode).toBe(200);
    // The code travels with the message, for tools that switch on codes.
    expect(await record()).toMatchObject({ phase: 'Error', error: 'refusing to write /dev/vda: its serial is B', errorCode: 'DF_ERR_DISK_MISMATCH' });
    expect(await store.read((s) => s.get<Workflow>(`workflows/${wfId}`)!.value)).toMatchObject({ state: 'failed', errorCode: 'DF_ERR_DISK_MISMATCH' });
    expect((await app.inject({ url: '/boot/52:54:00:ab:cd:01' })).body).toContain('# Dragonfly: discovery');
  });
});

describe('long-polled registration', () => {
  const register = (waitSeconds: number) => app.inject({ method: 'POST', url: '/api/v1/agent/register', payload: { mac: MAC, hardware: HARDWARE, waitSeconds } });

  it('holds a waiting machine\'s answer until an apply decides its fate, then answers at once', async () => {
    expect((await register(0)).json()).toMatchObject({ instruction: 'wait', pollSeconds: 10 });
    // 60 s allowed, far beyond this test's own timeout: the answer can only come from the apply's wake-up.
    const held = register(60);
    let answered = false;
    void held.then(() => (answered = true));
    await new Promise((r) => setTimeout(r, 300));
    expect(answered).toBe(false);
    await applyFleet();
    const r = await held;
    expect(r.json()).toMatchObject({ name: 'web-01', instruction: 'reboot', trusted: true, pollSeconds: 0 });
  }, 20_000);

  it('answers wait when the time runs out with nothing decided; rejects waits over 60 s', async () => {
    expect((await register(1)).json()).toMatchObject({ instruction: 'wait', pollSeconds: 0 });
    const tooLong = await register(61);
    expect(tooLong.statusCode).toBe(400);
    expect(tooLong.json().error.message).toContain('/waitSeconds');
  });

  it('releases held registrations when the server closes', async () => {
    await register(0);
    const held = register(60);
    await new Promise((r) => setTimeout(r, 300));
    await app.close();
    expect((await held).json()).toMatchObject({ instruction: 'wait' });
  }, 20_000);
});

describe('workflow timeouts', () => {
  it('a running workflow past its timeout is timed out, the machine goes to Error, and a late report is refused', async () => {
    await app.inject({ method: 'POST', url: '/api/v1/agent/register', payload: { mac: MAC, hardware: HARDWARE } });
    const [wfId] = await applyFleet(FLEET.replace('  actions:', '  timeout: 90s\n  actions:'));
    // Pending workflows do not time out: the machine has not started installing.
    expect(await expireWorkflows(store, new Date(Date.now() + 3_600_000))).toEqual([]);
    const { response, auth } = await claim(wfId!);
    const started = response.json() as Workflow;
    expect(started.timeoutSeconds).toBe(90);
    const startedAt = Date.parse(started.startedAt!);
    expect(await expireWorkflows(store, new Date(startedAt + 89_000))).toEqual([]);
    expect(await expireWorkflows(store, new Date(startedAt + 90_000))).toEqual([wfId]);

    const wf = await store.read((s) => s.get<Workflow>(`workflows/${wfId}`)!.value);
    expect(wf).toMatchObject({ state: 'timed-out', error: 'timed out: still running 90s after Mage started it' });
    expect(await record()).toMatchObject({ phase: 'Error', error: 'timed out: still running 90s after Mage started it' });
    const late = await app.inject({ method: 'POST', url: `/api/v1/agent/workflows/${wfId}/actions/0`, headers: auth, payload: { state: 'succeeded' } });
    expect(late.statusCode).toBe(409);
    const lateFinish = await app.inject({ method: 'POST', url: `/api/v1/agent/workflows/${wfId}/finish`, headers: auth, payload: { state: 'succeeded' } });
    expect(lateFinish.statusCode).toBe(409);
    expect((await store.read((s) => s.get<Workflow>(`workflows/${wfId}`)!.value)).state).toBe('timed-out');
    // Sweeping again changes nothing.
    expect(await expireWorkflows(store, new Date(startedAt + 999_000))).toEqual([]);
  });
});

describe('security', () => {
  it('a claim needs that workflow\'s token; every other call needs the claimant\'s secret', async () => {
    await app.inject({ method: 'POST', url: '/api/v1/agent/register', payload: { mac: MAC, hardware: HARDWARE } });
    const [wfId] = await applyFleet();
    const token = { authorization: `Bearer ${workflowToken(SECRET, wfId!)}` };
    for (const headers of [{}, { authorization: 'Bearer ' + 'ab'.repeat(32) }, { authorization: `Bearer ${workflowToken(Buffer.alloc(32, 8), wfId!)}` }, { authorization: `Bearer ${workflowToken(SECRET, 'wf-other')}` }, token]) {
      // The real token may claim (below), but it is no claimant: it opens nothing else.
      if (headers !== token) expect((await app.inject({ method: 'POST', url: `/api/v1/agent/workflows/${wfId}/claim`, headers, payload: { secret: MAGE_SECRET } })).statusCode).toBe(401);
      const r = await app.inject({ url: `/api/v1/agent/workflows/${wfId}`, headers });
      expect(r.statusCode).toBe(401);
      expect(r.json().error.code).toBe('DF_ERR_UNAUTHORIZED');
      const p = await app.inject({ method: 'POST', url: `/api/v1/agent/workflows/${wfId}/finish`, headers, payload: { state: 'succeeded' } });
      expect(p.statusCode).toBe(401);
    }
    const wf = await store.read((s) => s.list<Workflow>('workflows/')[0]!.value);
    expect(wf.state).toBe('pending');
  });

  it('admin calls need the API token; a server without one refuses them all', async () => {
    await app.inject({ method: 'POST', url: '/api/v1/agent/register', payload: { mac: MAC, hardware: HARDWARE } });
    const [wfId] = await applyFleet();
    expect((await app.inject({ method: 'POST', url: `/api/v1/workflows/${wfId}/cancel` })).statusCode).toBe(401);
    expect((await app.inject({ method: 'POST', url: `/api/v1/workflows/${wfId}/cancel`, headers: { authorization: 'Bearer admin-secreT' } })).statusCode).toBe(401);
    const ok = await app.inject({ method: 'POST', url: `/api/v1/workflows/${wfId}/cancel`, headers: { authorization: 'Bearer admin-secret' } });
    expect(ok.json()).toEqual({ ok: true, state: 'failed' });

    const open = await buildServer({ store, secret: SECRET, serverUrl: 'http://10.0.0.1:8080' });
    expect((await open.inject({ method: 'POST', url: `/api/v1/workflows/${wfId}/cancel`, headers: { authorization: 'Bearer ' } })).statusCode).toBe(401);
    await open.close();
  });

  it('hardware reports are validated and size-limited', async () => {
    const bad = [
      { mac: 'zz', hardware: HARDWARE },
      { mac: MAC, hardware: { ...HARDWARE, disks: [{ name: 'sda; reboot', sizeBytes: 1 }] } },
      { mac: MAC, hardware: { ...HARDWARE, extra: 1 } },
      { mac: MAC },
      'not json',
    ];
    for (const payload of bad) {
      const r = await app.inject({ method: 'POST', url: '/api/v1/agent/register', payload, headers: { 'content-type': 'application/json' } });
      expect(r.statusCode).toBe(400);
      expect(r.json().error.code).toBe('DF_ERR_BAD_REQUEST');
    }
    const huge = await app.inject({ method: 'POST', url: '/api/v1/agent/register', payload: { mac: MAC, hardware: { ...HARDWARE, dmi: { vendor: 'x'.repeat(300_000) } } } });
    expect(huge.statusCode).toBe(413);
    expect(await record()).toBeUndefined();
  });

  it('a flood of made-up MACs from one source is served but not recorded beyond its budget', async () => {
    for (let i = 0; i < 20; i++) {
      const r = await app.inject({ url: `/boot/02:00:00:00:00:${i.toString(16).padStart(2, '0')}` });
      expect(r.statusCode).toBe(200);
    }
    const n = await store.read((s) => s.list('machines/').length);
    expect(n).toBe(5);
    // Nor is anything else committed for them: their sightings stay in memory.
    expect(await store.read((s) => s.list('seen/').length)).toBe(5);
  });
});

describe('files, metrics, events', () => {
  it('serves Mage files with HTTP Range', async () => {
    const full = await app.inject({ url: '/mage/vmlinuz' });
    expect(full.rawPayload.length).toBe(4096);
    const part = await app.inject({ url: '/mage/vmlinuz', headers: { range: 'bytes=100-199' } });
    expect(part.statusCode).toBe(206);
    expect(part.headers['content-range']).toBe('bytes 100-199/4096');
    expect([...part.rawPayload]).toEqual(Array.from({ length: 100 }, (_, i) => (100 + i) % 251));
    for (const evil of ['/mage/..%2f..%2fstate%2fserver.secret', '/mage/../state/server.secret', '/mage/%2e%2e/state/server.secret']) {
      const r = await app.inject({ url: evil });
      expect([403, 404], evil).toContain(r.statusCode);
      expect(r.body).not.toMatch(/^[0-9a-f]{64}$/m);
    }
  });

  it('exposes Prometheus metrics: requests, boot fates, workflows by state', async () => {
    await app.inject({ url: '/boot/52:54:00:ab:cd:01' });
    expect((await app.inject({ url: '/metrics' })).statusCode).toBe(401);
    const m = (await app.inject({ url: '/metrics', headers: READ })).body;
    expect(m).toMatch(/dragonfly_boot_scripts_total\{fate="discovery"\} 1/);
    expect(m).toMatch(/dragonfly_http_requests_total\{route="\/boot\/:mac",status="200"\} 1/);
    expect(m).toMatch(/dragonfly_workflows\{state="pending"\} 0/);
  });

  it('streams machine, workflow and event changes over SSE, resumable by revision', async () => {
    const address = await app.listen({ port: 0, host: '127.0.0.1' });
    const controller = new AbortController();
    const res = await fetch(`${address}/api/v1/events?since=0`, { signal: controller.signal, headers: READ });
    expect(res.headers.get('content-type')).toContain('text/event-stream');
    const reader = res.body!.getReader();
    await fetch(`${address}/boot/52:54:00:ab:cd:01`);
    let text = '';
    while (!text.includes('event: machine') || !text.includes('machine.discovered')) {
      const { value, done } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
    }
    controller.abort();
    // The machine and its discovery event are one commit: the commit's id comes with its last event.
    expect(text).toMatch(/\nevent: machine\ndata: \{"key":"machines\/52:54:00:ab:cd:01","type":"put"/);
    expect(text).toMatch(/id: \d+\nevent: event\ndata: \{"key":"events\/[^"]+","type":"put","revision":\d+,"value":\{"at":"[^"]+","type":"machine.discovered"/);
    expect(text).toContain('"type":"machine.discovered"');
  });
});
