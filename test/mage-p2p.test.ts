// Issue #13's Mage side with every part its own process: `dragonfly serve` (its seed and scheduler), an image
// server that counts what it sends, `dragonfly apply`, and three `dragonfly mage` processes imaging at once
// (hardware from fixture trees, disks sparse files, workflow and token from each fixture's /proc/cmdline as
// iPXE would boot them). The image leaves its server once; the Mages take pieces from each other, write the
// raw image into partition 2 by offset, run writefile after it, serve the rest of the rollout and end in
// local boot. QEMU is not needed for this: the Mage processes are the same code as the initramfs runs.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, dragonfly, ROOT, tempDir } from './cli-helpers.js';
import { ImageOrigin, MiB, sha256Of } from './p2p-world.js';
import { collect, exited, freePort, until } from './process-helpers.js';
import { tinyFleetYaml } from './tiny-fleet.js';

const MACHINES = 3;
const macOf = (i: number) => `52:54:00:77:20:0${i + 1}`;

let work: string;
let origin: ImageOrigin;
const children: ChildProcess[] = [];
afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  await origin?.stop();
  if (work) fs.rmSync(work, { recursive: true, force: true });
});

function start(args: string[]): { child: ChildProcess; out: { text: () => string } } {
  const child = spawn(process.execPath, args, { cwd: ROOT, env: { ...process.env, NO_COLOR: '1' } });
  children.push(child);
  return { child, out: collect(child) };
}

let image: Buffer;
let payload: Buffer;

beforeAll(async () => {
  work = tempDir('dragonfly-mage-p2p-');
  // A raw ext4 image (48 MiB: 12 pieces of 4 MiB) holding 24 MiB of random bytes.
  const fsImg = path.join(work, 'root.ext4');
  execFileSync('truncate', ['-s', '48M', fsImg]);
  execFileSync('mkfs.ext4', ['-q', '-F', '-L', 'root', fsImg]);
  payload = randomBytes(24 * MiB);
  fs.writeFileSync(path.join(work, 'payload'), payload);
  execFileSync('debugfs', ['-w', '-R', `write ${path.join(work, 'payload')} /payload`, fsImg], { stdio: 'ignore' });
  image = fs.readFileSync(fsImg);
  origin = new ImageOrigin(image);
  await origin.start();
});

describe('three Mage processes image at once through the P2P swarm of serve', () => {
  it('the image leaves its server once; the Mages share pieces, write their disks and boot locally', async () => {
    const state = path.join(work, 'state');
    const httpPort = await freePort();
    const base = `http://127.0.0.1:${httpPort}`;
    const serve = start([BIN, 'serve', '--state', state, '--http', `127.0.0.1:${httpPort}`, '--tftp', 'off', '--no-mage-build', '--public-url', base]);
    await until('serve to listen', async () => (await fetch(`${base}/healthz`).catch(() => undefined))?.ok === true);

    const machines = Array.from({ length: MACHINES }, (_, i) => {
      const root = path.join(work, `machine-${i}`);
      fs.cpSync(path.join(ROOT, 'mage/fixtures/server-nvme-sata'), root, { recursive: true });
      fs.writeFileSync(path.join(root, 'proc/cmdline'), `console=ttyS0 dragonfly.url=${base} dragonfly.mac=${macOf(i)}\n`);
      const disk = path.join(work, `disk-${i}.img`);
      execFileSync('truncate', ['-s', '1G', disk]);
      return { root, disk, mage: () => start([BIN, 'mage', '--root', root, '--disk', disk, '--no-reboot']) };
    });

    // 1. Discovery: each machine reports its hardware and waits.
    const discovery = machines.map((m) => m.mage());
    for (const d of discovery) await until('a discovery report', () => d.out.text().includes('registered as'));

    // 2. The machines go into git; apply starts their workflows (and the seed reads the image: preheat).
    const fleet = path.join(work, 'fleet');
    fs.mkdirSync(fleet);
    fs.writeFileSync(
      path.join(fleet, 'fleet.yaml'),
      tinyFleetYaml(machines.map((_, i) => ({ name: `node-0${i + 1}`, mac: macOf(i) })), { url: origin.url, sha256: sha256Of(image), size: '48MiB' }),
    );
    const applied = dragonfly(['apply', '--fleet', fleet, '--state', state, '--auto-approve']);
    expect(applied.status, applied.stderr).toBe(0);

    // 3. Each discovery Mage is told to reboot; its imaging script's kernel line becomes its /proc/cmdline.
    for (const [i, d] of discovery.entries()) {
      expect(await exited(d.child)).toBe(0);
      const script = await (await fetch(`${base}/boot/${macOf(i)}`)).text();
      const kernel = script.split('\n').find((l) => l.startsWith('kernel '))!;
      fs.writeFileSync(path.join(machines[i]!.root, 'proc/cmdline'), kernel.replace(/^kernel \S+ /, '') + '\n');
    }

    // 4. Imaging, all three at once.
    const imaging = machines.map((m) => m.mage());
    const codes = await Promise.all(imaging.map((p) => exited(p.child)));
    const logs = imaging.map((p) => p.out.text());
    for (const [i, code] of codes.entries()) {
      expect(code, logs[i]).toBe(0);
      expect(logs[i]).toMatch(/^localboot$/m);
      expect(logs[i]).not.toMatch(/the P2P swarm failed/);
    }
    // The image left its server once: the seed's read, verified against the template's sha256.
    expect(origin.bytesSent).toBe(image.length);
    const fromPeers = logs.map((l) => Number(/over P2P: ([\d.]+) MiB from peers/.exec(l)?.[1] ?? NaN));
    expect(fromPeers.every((n) => Number.isFinite(n))).toBe(true);
    expect(fromPeers.reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
    console.log(`3 Mages over P2P: MiB from peers ${fromPeers.join(', ')}; origin sent ${origin.bytesSent / MiB} MiB for a ${image.length / MiB} MiB image`);

    // 5. Every disk holds the image (its payload intact) and its own hostname; the server says Ready.
    for (const [i, m] of machines.entries()) {
      const table = JSON.parse(execFileSync('sfdisk', ['--json', m.disk], { encoding: 'utf8' })).partitiontable;
      const rootfs = `${m.disk}?offset=${table.partitions[1].start * 512}`;
      expect(execFileSync('debugfs', ['-R', 'cat /payload', rootfs], { stdio: ['ignore', 'pipe', 'ignore'], maxBuffer: 64 * MiB }).equals(payload), `disk ${i}`).toBe(true);
      expect(execFileSync('debugfs', ['-R', 'cat /etc/hostname', rootfs], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })).toBe(`node-0${i + 1}\n`);
    }
    const rows = JSON.parse(dragonfly(['machines', '--state', state, '--json']).stdout) as { name?: string; phase: string; installed?: string }[];
    for (let i = 0; i < MACHINES; i++) expect(rows.find((r) => r.name === `node-0${i + 1}`)).toMatchObject({ phase: 'Ready', installed: 'tiny-12@1' });
    serve.child.kill('SIGTERM');
    expect(await exited(serve.child)).toBe(0);
  }, 180_000);
});
