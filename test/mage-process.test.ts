// Issue #4 with every part its own process, as on a real network: `dragonfly serve`, `dragonfly apply`,
// `dragonfly mage` (hardware from a fixture tree, its disk a sparse 2 GiB file, workflow and token read
// from the fixture's /proc/cmdline as from a kernel booted by iPXE), and an image server that is killed
// mid-image and started again: Mage keeps retrying and the image completes with an HTTP Range request.
// The boot server is also restarted while the discovery Mage waits; Mage carries on.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, dragonfly, ROOT, tempDir } from './cli-helpers.js';
import { collect, exited, freePort, until } from './process-helpers.js';
import { tinyFleetYaml } from './tiny-fleet.js';

const MAC = '52:54:00:77:10:01';
const MiB = 2 ** 20;

// Serves one file with Range support, slowly enough to be killed mid-transfer; prints bytes sent so far.
const IMAGE_SERVER = `
const http = require('http'), fs = require('fs');
const [file, port] = process.argv.slice(1);
const body = fs.readFileSync(file);
http.createServer((req, res) => {
  const m = /^bytes=(\\d+)-$/.exec(req.headers.range || '');
  const from = m ? Number(m[1]) : 0;
  console.log('GET ' + (m ? 'range ' + from : 'full'));
  res.writeHead(m ? 206 : 200, { 'content-length': body.length - from, ...(m ? { 'content-range': 'bytes ' + from + '-' + (body.length - 1) + '/' + body.length } : {}) });
  let at = from;
  const pump = () => {
    if (at >= body.length) return res.end();
    const next = Math.min(at + 256 * 1024, body.length);
    res.write(body.subarray(at, next));
    at = next;
    console.log('sent ' + at);
    setTimeout(pump, 25);
  };
  pump();
}).listen(Number(port), '127.0.0.1', () => console.log('listening'));
`;

let work: string;
const children: ChildProcess[] = [];
afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
  if (work) fs.rmSync(work, { recursive: true, force: true });
});

function start(args: string[], env: Record<string, string> = {}): { child: ChildProcess; out: { text: () => string } } {
  const child = spawn(process.execPath, args, { cwd: ROOT, env: { ...process.env, NO_COLOR: '1', ...env } });
  children.push(child);
  return { child, out: collect(child) };
}

let imagePort: number;
const startImageServer = async () => {
  const s = start(['-e', IMAGE_SERVER, path.join(work, 'root.ext4.zst'), String(imagePort)]);
  await until('the image server', () => s.out.text().includes('listening'));
  return s;
};

beforeAll(() => {
  work = tempDir('dragonfly-mage-process-');
  // The OS image: an ext4 filesystem holding 24 MiB of random bytes, so the zstd image stays ~24 MiB
  // and takes seconds to serve at the image server's pace.
  const fsImg = path.join(work, 'root.ext4');
  execFileSync('truncate', ['-s', '48M', fsImg]);
  execFileSync('mkfs.ext4', ['-q', '-F', '-L', 'root', fsImg]);
  fs.writeFileSync(path.join(work, 'payload'), randomBytes(24 * MiB));
  execFileSync('debugfs', ['-w', '-R', `write ${path.join(work, 'payload')} /payload`, fsImg], { stdio: 'ignore' });
  execFileSync('zstd', ['-q', '-f', fsImg, '-o', `${fsImg}.zst`]);
});

describe('serve, apply and Mage as separate processes', () => {
  it('discovery across a server restart, then imaging across an image-server crash, to Ready and local boot', async () => {
    const state = path.join(work, 'state');
    const httpPort = await freePort();
    imagePort = await freePort();
    const base = `http://127.0.0.1:${httpPort}`;
    const serveArgs = [BIN, 'serve', '--state', state, '--http', `127.0.0.1:${httpPort}`, '--tftp', 'off', '--no-mage-build', '--public-url', base];
    let serve = start(serveArgs);
    await until('serve to listen', async () => (await fetch(`${base}/healthz`).catch(() => undefined))?.ok === true);

    // The machine: a copy of a fixture tree, whose /proc/cmdline says what iPXE booted it with.
    const root = path.join(work, 'machine');
    fs.cpSync(path.join(ROOT, 'mage/fixtures/server-nvme-sata'), root, { recursive: true });
    fs.writeFileSync(path.join(root, 'proc/cmdline'), `console=ttyS0 dragonfly.url=${base} dragonfly.mac=${MAC}\n`);
    const disk = path.join(work, 'disk.img');
    execFileSync('truncate', ['-s', '2G', disk]);
    // --no-p2p: this test is about Mage's own resume over HTTP; its P2P path is test/mage-p2p.test.ts's.
    const mage = () => start([BIN, 'mage', '--root', root, '--disk', disk, '--no-reboot', '--no-p2p']);

    // 1. Discovery. The boot server restarts while Mage waits; Mage keeps polling and carries on.
    const discovery = mage();
    await until('the discovery report', () => discovery.out.text().includes('registered as'));
    serve.child.kill('SIGTERM');
    expect(await exited(serve.child)).toBe(0);
    serve = start(serveArgs);
    await until('serve to listen again', async () => (await fetch(`${base}/healthz`).catch(() => undefined))?.ok === true);

    // 2. The machine goes into git; `dragonfly apply` (its own process, the same state) starts its workflow.
    const sha = createHash('sha256').update(fs.readFileSync(path.join(work, 'root.ext4.zst'))).digest('hex');
    const fleet = path.join(work, 'fleet');
    fs.mkdirSync(fleet);
    fs.writeFileSync(
      path.join(fleet, 'fleet.yaml'),
      tinyFleetYaml([{ name: 'node-01', mac: MAC }], { url: `http://127.0.0.1:${imagePort}/root.ext4.zst`, sha256: sha, size: '48MiB' }),
    );
    const applied = dragonfly(['apply', '--fleet', fleet, '--state', state, '--auto-approve']);
    expect(applied.status, applied.stderr).toBe(0);
    expect(applied.stdout).toMatch(/Apply complete/);

    // 3. The discovery Mage is told to reboot; "iPXE" fetches the imaging script, whose kernel line
    //    becomes the machine's /proc/cmdline.
    expect(await exited(discovery.child)).toBe(0);
    expect(discovery.out.text()).toMatch(/^reboot$/m);
    const script = await (await fetch(`${base}/boot/${MAC}`)).text();
    const kernel = script.split('\n').find((l) => l.startsWith('kernel '))!;
    expect(kernel).toMatch(/dragonfly\.workflow=\S+ .*dragonfly\.token=\S+/);
    fs.writeFileSync(path.join(root, 'proc/cmdline'), kernel.replace(/^kernel \S+ /, '') + '\n');

    // 4. Imaging, with the image server killed a third of the way in and started again 1.5 s later.
    let images = await startImageServer();
    const imaging = mage();
    await until('a third of the image sent', () => Number(/sent (\d+)\n(?![\s\S]*sent)/.exec(images.out.text())?.[1] ?? 0) > 8 * MiB, 60_000);
    images.child.kill('SIGKILL');
    await exited(images.child);
    await new Promise((r) => setTimeout(r, 1500));
    images = await startImageServer();
    const code = await exited(imaging.child);
    expect(code, imaging.out.text()).toBe(0);
    expect(imaging.out.text()).toMatch(/retry \d+: .*resuming at byte \d+/);
    expect(images.out.text()).toMatch(/GET range [1-9]\d*/);
    expect(imaging.out.text()).toMatch(/^localboot$/m);

    // 5. What is on the disk, and what the server says now.
    const table = JSON.parse(execFileSync('sfdisk', ['--json', disk], { encoding: 'utf8' })).partitiontable;
    const start2 = table.partitions[1].start * 512;
    // writefile changed some blocks after the image was written: compare the 24 MiB payload file in it.
    const rootfs = `${disk}?offset=${start2}`;
    expect(execFileSync('debugfs', ['-R', 'cat /payload', rootfs], { stdio: ['ignore', 'pipe', 'ignore'], maxBuffer: 64 * MiB }).equals(fs.readFileSync(path.join(work, 'payload')))).toBe(true);
    expect(execFileSync('debugfs', ['-R', 'cat /etc/hostname', rootfs], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })).toBe('node-01\n');
    expect(await (await fetch(`${base}/boot/${MAC}`)).text()).toContain('local boot');
    const machines = dragonfly(['machines', '--state', state, '--json']);
    const rows = JSON.parse(machines.stdout) as { name?: string; phase: string; installed?: string }[];
    expect(rows.find((m) => m.name === 'node-01')).toMatchObject({ phase: 'Ready', installed: 'tiny-12@1' });
    serve.child.kill('SIGTERM');
    expect(await exited(serve.child)).toBe(0);
  }, 180_000);
});
