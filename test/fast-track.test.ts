// Mage's fast track (mage/fast-track.ts) against the scripts the boot server really renders and a real boot
// server: the discovery Mage may go on in its own boot only when the imaging script boots this very Mage.
// The whole path in a VM (discovery → apply → fast track → image → disk boot) is test/lifecycle.test.ts.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bootScriptFor } from '../boot/ipxe.js';
import { buildServer } from '../boot/server.js';
import { workflowToken } from '../boot/tokens.js';
import { differsFrom, fastTrack, parseImagingScript, type RunningBoot } from '../mage/fast-track.js';
import { applyPlan } from '../reconciler/apply.js';
import { loadFleet } from '../reconciler/load.js';
import { readObserved } from '../reconciler/observed.js';
import { planFleet } from '../reconciler/plan.js';
import { LmdbStore } from '../store/lmdb.js';

const MAC = '52:54:00:fa:57:01';
const SERVER = 'http://10.0.0.1:8080';
const TOKEN = 'ab'.repeat(32);
const BUNDLE = 'cd'.repeat(32);
const kernelArgs = (script: string) => script.split('\n').find((l) => l.startsWith('kernel '))!.replace(/ \|\|.*$/, '').split(' ').slice(2).join(' ');

describe('parseImagingScript and differsFrom, on the rendered scripts', () => {
  const discovery = bootScriptFor({ kind: 'discovery', reason: 'unknown MAC' }, { serverUrl: SERVER, mac: MAC });
  const imaging = bootScriptFor({ kind: 'imaging', workflow: 'wf-web-01-g1-abc' } as never, { serverUrl: SERVER, mac: MAC, token: TOKEN, name: 'web-01' });
  const running: RunningBoot = { server: SERVER, cmdline: `${kernelArgs(discovery)}\n`, bundleSha256: BUNDLE, kernelRelease: '6.1.0-56-amd64' };
  const served = { bundle: { sha256: BUNDLE }, kernel: { release: '6.1.0-56-amd64' } };

  it('reads the workflow and token of an imaging script; other scripts are not one', () => {
    expect(parseImagingScript(imaging)).toEqual({ kernelUrl: `${SERVER}/mage/vmlinuz`, args: kernelArgs(discovery).split(' '), workflow: 'wf-web-01-g1-abc', token: TOKEN });
    expect(parseImagingScript(discovery)).toBeUndefined();
    expect(parseImagingScript(bootScriptFor({ kind: 'localboot', reason: 'provisioned' } as never, { serverUrl: SERVER, mac: MAC }))).toBeUndefined();
    expect(parseImagingScript('<html>kernel x dragonfly.workflow=wf-a dragonfly.token=' + TOKEN)).toBeUndefined();
  });

  it('goes on only when the script boots the same kernel, arguments and Mage build', () => {
    const script = parseImagingScript(imaging)!;
    expect(differsFrom(script, running, served)).toBeUndefined();
    expect(differsFrom(script, { ...running, server: 'http://10.0.0.2:8080' }, served)).toMatch(/boots http:\/\/10\.0\.0\.1:8080\/mage\/vmlinuz/);
    expect(differsFrom(script, { ...running, cmdline: running.cmdline + ' nomodeset' }, served)).toMatch(/other kernel arguments/);
    const withArgs = parseImagingScript(bootScriptFor({ kind: 'imaging', workflow: 'wf-web-01-g1-abc' } as never, { serverUrl: SERVER, mac: MAC, token: TOKEN, kernelArgs: 'nomodeset' }))!;
    expect(differsFrom(withArgs, running, served)).toMatch(/other kernel arguments/);
    expect(differsFrom(script, running, { ...served, kernel: { release: '6.1.0-57-amd64' } })).toMatch(/kernel is 6\.1\.0-57-amd64/);
    expect(differsFrom(script, running, { ...served, bundle: { sha256: 'ef'.repeat(32) } })).toMatch(/another build/);
    expect(differsFrom(script, running, {})).toMatch(/kernel is unknown/);
  });
});

describe('fastTrack against a boot server', () => {
  const secret = Buffer.alloc(32, 9);
  let dir: string;
  let store: LmdbStore;
  let app: FastifyInstance;
  let server: string;
  let running: RunningBoot;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dragonfly-fast-track-'));
    const mageDir = path.join(dir, 'mage');
    fs.mkdirSync(mageDir);
    const bundle = path.join(dir, 'mage.mjs');
    fs.writeFileSync(bundle, '// a Mage bundle\n');
    const sha = createHash('sha256').update(fs.readFileSync(bundle)).digest('hex');
    fs.writeFileSync(path.join(mageDir, 'manifest.json'), JSON.stringify({ bundle: { sha256: sha }, kernel: { release: os.release() } }));
    store = LmdbStore.open(path.join(dir, 'state'));
    app = await buildServer({ store, secret, serverUrl: 'http://127.0.0.1:1', mageDir });
    await app.listen({ host: '127.0.0.1', port: 0 });
    server = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
    // The scripts name the URL the server was configured with; a second server at the right URL is simpler
    // than predicting the port, so rebuild with it.
    await app.close();
    app = await buildServer({ store, secret, serverUrl: server, mageDir });
    await app.listen({ host: '127.0.0.1', port: Number(new URL(server).port) });
    const discovery = await (await fetch(`${server}/boot/${MAC}`)).text();
    expect(discovery).toContain('# Dragonfly: discovery');
    running = { server, cmdline: kernelArgs(discovery), bundleSha256: sha, kernelRelease: os.release() };
  });

  afterAll(async () => {
    await app?.close();
    await store?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('refuses while the machine only has a discovery script; after the apply, hands over the pending workflow and its token', async () => {
    expect(await fastTrack(running, MAC)).toEqual({ reason: 'the server does not answer this machine with an imaging script' });
    const { fleet, diagnostics } = loadFleet([
      {
        path: 'fleet.yaml',
        text: `apiVersion: dragonfly.computer/v1
kind: Machine
metadata: {name: web-01, labels: {role: web}}
spec: {mac: "${MAC}"}
---
apiVersion: dragonfly.computer/v1
kind: Template
metadata: {name: tiny}
spec:
  image: {url: "http://10.0.0.9/tiny.raw", sha256: "${'cd'.repeat(32)}"}
  actions:
    - image2disk: {disk: /dev/vda}
---
apiVersion: dragonfly.computer/v1
kind: Assignment
metadata: {name: web}
spec: {template: tiny, selector: {role: web}}
`,
      },
    ]);
    expect(diagnostics).toEqual([]);
    // The machine must have reported hardware (discovered) for the plan to provision it.
    const hardware = { cpu: { model: 'x', cores: 1, threads: 1 }, memoryBytes: 2 ** 30, disks: [{ name: 'vda', path: '/dev/vda', sizeBytes: 2 ** 31, rotational: false, removable: false, partitions: [] }], nics: [{ name: 'eth0', mac: MAC, link: true }] };
    expect((await fetch(`${server}/api/v1/agent/register`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ mac: MAC, hardware }) })).ok).toBe(true);
    const { workflows } = await applyPlan(store, planFleet(fleet!, await readObserved(store)), fleet!, { user: 'test', source: 'cli' });
    expect(workflows).toHaveLength(1);
    expect(await fastTrack(running, MAC)).toEqual({ workflow: workflows[0], token: workflowToken(secret, workflows[0]!) });
    // Another Mage build on the server, or another boot: reboot instead.
    expect(await fastTrack({ ...running, bundleSha256: 'ef'.repeat(32) }, MAC)).toEqual({ reason: "the server's Mage is another build than this one" });
    expect(await fastTrack({ ...running, cmdline: `${running.cmdline} dragonfly.debug` }, MAC)).toEqual({ reason: 'the imaging script has other kernel arguments than this boot' });
    // A server that cannot be reached: a reason, never a throw.
    expect((await fastTrack({ ...running, server: 'http://127.0.0.1:9' }, MAC)) as { reason: string }).toHaveProperty('reason');
  });
});
