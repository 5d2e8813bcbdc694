// Issue #4's whole flow over the real protocol: a boot server, and a Mage agent whose hardware is a
// fixture tree (a server with NVMe + 2 SATA disks) and whose "disk" is a sparse 2 GiB file.
// Discovery → declared in git and applied → told to reboot → "PXE boots" (the test fetches the imaging
// script as iPXE would and hands its workflow and token to Mage, as the kernel command line would) →
// partition, image2disk (zstd, sha256), writefile, kexec (dry run) → Ready, and the boot fate is local boot.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import type { AddressInfo } from 'node:net';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildServer } from '../boot/server.js';
import { runAgent, parseCmdline } from '../mage/agent.js';
import { collectInventory } from '../mage/inventory/index.js';
import { applyPlan } from '../reconciler/apply.js';
import { loadFleet } from '../reconciler/load.js';
import { readObserved } from '../reconciler/observed.js';
import { planFleet } from '../reconciler/plan.js';
import type { MachineRecord } from '../schemas/types.js';
import { machineKey } from '../store/keys.js';
import { LmdbStore } from '../store/lmdb.js';
import { ROOT } from './cli-helpers.js';
import { until } from './process-helpers.js';

const MAC = '52:54:00:77:00:01';
const FIXTURE = path.join(ROOT, 'mage/fixtures/server-nvme-sata');

let work: string;
let store: LmdbStore;
let app: FastifyInstance;
let images: http.Server;
let server: string;
let imageUrl: string;
let imageSha: string;
const KERNEL = Buffer.from('not really a kernel, but these bytes must come back out of the image\n'.repeat(100));

beforeAll(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'dragonfly-mage-flow-'));
  // The OS image: a 64 MiB ext4 filesystem holding /boot/vmlinuz and /boot/initrd.img, zstd-compressed.
  const fsImg = path.join(work, 'root.ext4');
  execFileSync('truncate', ['-s', '64M', fsImg]);
  execFileSync('mkfs.ext4', ['-q', '-F', '-L', 'root', fsImg]);
  fs.writeFileSync(path.join(work, 'vmlinuz'), KERNEL);
  fs.writeFileSync(path.join(work, 'initrd.img'), 'initrd\n');
  execFileSync('debugfs', ['-w', '-R', 'mkdir /boot', fsImg], { stdio: 'ignore' });
  execFileSync('debugfs', ['-w', '-R', `write ${path.join(work, 'vmlinuz')} /boot/vmlinuz`, fsImg], { stdio: 'ignore' });
  execFileSync('debugfs', ['-w', '-R', `write ${path.join(work, 'initrd.img')} /boot/initrd.img`, fsImg], { stdio: 'ignore' });
  execFileSync('zstd', ['-q', '-f', fsImg, '-o', `${fsImg}.zst`]);
  const zst = fs.readFileSync(`${fsImg}.zst`);
  imageSha = createHash('sha256').update(zst).digest('hex');
  images = http.createServer((_req, res) => res.writeHead(200, { 'content-length': zst.length }).end(zst));
  await new Promise<void>((r) => images.listen(0, '127.0.0.1', r));
  imageUrl = `http://127.0.0.1:${(images.address() as AddressInfo).port}/root.ext4.zst`;

  store = LmdbStore.open(path.join(work, 'state'));
  app = await buildServer({ store, secret: Buffer.alloc(32, 9), serverUrl: 'http://127.0.0.1:1' });
  const address = await app.listen({ host: '127.0.0.1', port: 0 });
  server = address;
}, 60_000);

afterAll(async () => {
  await app?.close();
  await store?.close();
  images?.close();
  fs.rmSync(work, { recursive: true, force: true });
});

describe('Mage against the boot server', () => {
  it('discovers, images a 2 GiB disk image, and leaves the machine Ready for local boot', async () => {
    const disk = path.join(work, 'disk.img');
    execFileSync('truncate', ['-s', '2G', disk]);
    const log: string[] = [];
    const agent = (extra: { workflow?: string; token?: string } = {}) =>
      // No pollMs: the waiting discovery Mage long-polls, as the boot image's does; the apply wakes it.
      runAgent({ server, mac: MAC, inventory: () => collectInventory(FIXTURE), disk, dryRunKexec: true, maxAttempts: 3, log: (l) => log.push(l), ...extra });

    // 1. Discovery: Mage reports and waits; meanwhile the machine is declared in git and applied.
    const discovery = agent();
    await until('the hardware report', async () => (await store.read((s) => s.get<MachineRecord>(machineKey(MAC))))?.value.hardware !== undefined);
    const rec = (await store.read((s) => s.get<MachineRecord>(machineKey(MAC))))!.value;
    expect(rec).toMatchObject({ phase: 'Discovered', memorableName: 'CensusAbilitySwingAbility' });
    expect(rec.hardware!.disks.map((d) => d.name)).toEqual(['nvme0n1', 'sda', 'sdb']);

    const fleetText = `apiVersion: dragonfly.computer/v1
kind: Machine
metadata: {name: node-01, labels: {role: db}}
spec: {mac: ${MAC}}
---
apiVersion: dragonfly.computer/v1
kind: Template
metadata: {name: tiny-12}
spec:
  image: {url: "${imageUrl}", sha256: "${imageSha}", size: 64MiB}
  actions:
    - partition: {disk: \${disk}, table: gpt, partitions: [{name: efi, size: 64MiB, type: efi, format: vfat}, {name: root, size: rest, type: linux}]}
    - image2disk: {partition: 2}
    - writefile: {partition: 2, path: /etc/hostname, content: "\${machine.name}\\n", mode: "0644"}
    - kexec: {partition: 2, kernel: /boot/vmlinuz, initrd: /boot/initrd.img, cmdline: "root=LABEL=root ro"}
---
apiVersion: dragonfly.computer/v1
kind: Assignment
metadata: {name: db}
spec: {template: tiny-12, selector: {role: db}}
`;
    const { fleet } = loadFleet([{ path: 'fleet.yaml', text: fleetText }]);
    const plan = planFleet(fleet!, await readObserved(store));
    // The install disk follows the rule: the NVMe, and its existing partitions make this a reimage.
    expect(plan.changes.map((c) => c.action)).toEqual(['register', 'reimage']);
    expect(plan.changes[1]!.workflow!.disk).toBe('/dev/nvme0n1');
    const { workflows } = await applyPlan(store, plan, fleet!, { user: 'test', source: 'cli' });

    // 2. The discovery Mage is told to reboot; the machine PXE boots and iPXE fetches its script.
    expect(await discovery).toMatchObject({ instruction: 'reboot' });
    const script = await (await fetch(`${server}/boot/${MAC}`)).text();
    const kernelLine = script.split('\n').find((l) => l.startsWith('kernel '))!;
    const cmdline = parseCmdline(kernelLine);
    expect(cmdline.workflow).toBe(workflows[0]);

    // 3. Mage booted for the workflow runs it, then is told the machine is provisioned.
    const imaging = await agent({ workflow: cmdline.workflow!, token: cmdline.token! });
    expect(imaging.outcome).toMatchObject({ ok: true });
    expect(imaging.instruction).toBe('localboot');

    // What is on the disk image: the GPT, the image, the hostname, and the kexec it would have run.
    const table = JSON.parse(execFileSync('sfdisk', ['--json', disk], { encoding: 'utf8' })).partitiontable;
    expect(table.label).toBe('gpt');
    expect(table.partitions.map((p: { start: number; name: string }) => [p.start, p.name])).toEqual([[2048, 'efi'], [133120, 'root']]);
    const root = `${disk}?offset=${133120 * 512}`;
    expect(execFileSync('debugfs', ['-R', 'cat /etc/hostname', root], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })).toBe('node-01\n');
    expect(execFileSync('debugfs', ['-R', 'cat /boot/vmlinuz', root], { stdio: ['ignore', 'pipe', 'ignore'] }).equals(KERNEL)).toBe(true);
    expect(log.some((l) => /kexec \(dry run\): kexec -l \S+vmlinuz --initrd=\S+initrd --command-line=root=LABEL=root ro && kexec -e/.test(l))).toBe(true);

    const done = (await store.read((s) => s.get<MachineRecord>(machineKey(MAC))))!.value;
    expect(done).toMatchObject({ phase: 'Ready', installed: { template: 'tiny-12', generation: 1, imageSha256: imageSha } });
    expect(await (await fetch(`${server}/boot/${MAC}`)).text()).toContain('local boot');
  }, 120_000);
});


describe('Mage failure paths', () => {
  it('a sha256 mismatch fails the workflow; the machine goes to Error with both digests named', async () => {
    const mac = '52:54:00:77:00:02';
    const disk = path.join(work, 'disk2.img');
    execFileSync('truncate', ['-s', '2G', disk]);
    const wrong = 'ee'.repeat(32);
    const stop = new AbortController();
    const agent = (extra: { workflow?: string; token?: string } = {}) =>
      runAgent({ server, mac, inventory: () => collectInventory(FIXTURE), disk, dryRunKexec: true, pollMs: 100, maxAttempts: 3, signal: stop.signal, ...extra });
    const discovery = agent();
    await until('the hardware report', async () => (await store.read((s) => s.get<MachineRecord>(machineKey(mac))))?.value.hardware !== undefined);
    const { fleet } = loadFleet([{ path: 'fleet.yaml', text: `apiVersion: dragonfly.computer/v1
kind: Machine
metadata: {name: node-02, labels: {role: bad}}
spec: {mac: ${mac}}
---
apiVersion: dragonfly.computer/v1
kind: Template
metadata: {name: wrong-sum}
spec:
  image: {url: "${imageUrl}", sha256: "${wrong}"}
  actions:
    - image2disk: {disk: \${disk}}
---
apiVersion: dragonfly.computer/v1
kind: Assignment
metadata: {name: bad}
spec: {template: wrong-sum, selector: {role: bad}}
` }]);
    const plan = planFleet(fleet!, await readObserved(store));
    const { workflows } = await applyPlan(store, plan, fleet!, { user: 'test', source: 'cli' });
    expect(await discovery).toMatchObject({ instruction: 'reboot' });
    const cmdline = parseCmdline((await (await fetch(`${server}/boot/${mac}`)).text()).split('\n').find((l) => l.startsWith('kernel '))!);
    setTimeout(() => stop.abort(), 1500);
    const imaging = await agent({ workflow: cmdline.workflow!, token: cmdline.token! });
    expect(imaging.outcome).toMatchObject({ ok: false });
    const message = `image2disk (action 1 of 1) failed: sha256 mismatch: expected ${wrong}, got ${imageSha}`;
    expect((imaging.outcome as { error: string }).error).toContain(message);
    const wf = await store.read((s) => s.get<{ state: string; error: string }>(`workflows/${workflows[0]}`)!.value);
    expect(wf).toMatchObject({ state: 'failed' });
    expect(wf.error).toContain(message);
    expect((await store.read((s) => s.get<MachineRecord>(machineKey(mac))))!.value).toMatchObject({ phase: 'Error' });
    // An Error machine stays in Mage (discovery), never boots a half-written disk.
    expect(await (await fetch(`${server}/boot/${mac}`)).text()).toContain('# Dragonfly: discovery');
  }, 60_000);
});
