// Issue #6's acceptance, one system test with no stand-ins: the real Mage boot image (`dragonfly mage
// build`), a real installed-OS image (a raw disk whose MBR is test/fixtures/lifecycle/marker-mbr.asm and
// whose first partition is ext4), a fleet in git served over smart HTTP, `dragonfly serve --repo` and
// `dragonfly watch` as processes, and a QEMU VM (TCG, iPXE NIC ROM, slirp bootfile=) that is started again
// by the test every time it reboots (-no-reboot makes a reboot end the QEMU process):
//   1. unknown MAC → discovery: Mage boots and reports; the machine is Discovered with its memorable name;
//   2. a commit adds the Machine and an Assignment; the controller applies it; the waiting Mage is told to
//      reboot;
//   3. the VM PXE boots again → imaging: Mage writes the image and /etc/hostname, the machine is Ready, and
//      Mage reboots;
//   4. the VM PXE boots again → local boot: iPXE exits, SeaBIOS boots the disk (-boot order=nc), the marker
//      MBR prints on COM1 and powers off;
//   5. the CLI shows Ready with template@generation and the apply with its commit author; then a generation
//      bump reimages the VM (3–4 again).
// The Mage image is built into a temp dir (~15 s with zstd -3), or taken from DRAGONFLY_LIFECYCLE_MAGE_DIR.
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { memorableName } from '../schemas/memorable-name.js';
import { BIN, ROOT } from './cli-helpers.js';
import { createRepo, startGitHttp, tempDir, type GitHttpServer, type TestRepo } from './git-http.js';
import { collect, freePort, until } from './process-helpers.js';

const MAC = '52:54:00:6c:63:01';
const NAME = 'lab-01';
const DEB_CACHE = process.env.DRAGONFLY_DEB_CACHE ?? '/var/tmp/dragonfly-debs';
const MiB = 2 ** 20;
const PAYLOAD_BYTES = 16 * MiB;
const PART1_OFFSET = 1 * MiB; // the image's only partition starts at sector 2048
const MARKER = 'DRAGONFLY-DISK-BOOT-OK';
const GRACE = { name: 'Grace Hopper', email: 'grace@example.com' };
const ALAN = { name: 'Alan Turing', email: 'alan@example.com' };

// Serves one file with HTTP Range support (image2disk resumes with Range after a broken connection).
const IMAGE_SERVER = `
const http = require('http'), fs = require('fs');
const [file, port] = process.argv.slice(1);
const body = fs.readFileSync(file);
http.createServer((req, res) => {
  const m = /^bytes=(\\d+)-(\\d*)$/.exec(req.headers.range || '');
  const from = m ? Number(m[1]) : 0;
  const to = m && m[2] ? Math.min(Number(m[2]), body.length - 1) : body.length - 1;
  console.log(req.method + ' ' + req.url + (m ? ' range ' + from + '-' + to : ''));
  res.writeHead(m ? 206 : 200, { 'content-type': 'application/octet-stream', 'accept-ranges': 'bytes', 'content-length': to - from + 1, ...(m ? { 'content-range': 'bytes ' + from + '-' + to + '/' + body.length } : {}) });
  res.end(req.method === 'HEAD' ? undefined : body.subarray(from, to + 1));
}).listen(Number(port), '127.0.0.1', () => console.log('listening'));
`;

const exec = promisify(execFile);
const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

let tmp: { dir: string; cleanup: () => void };
let work: string;
let git: GitHttpServer | undefined;
let repo: TestRepo;
const children: ChildProcess[] = [];
let qemu: ChildProcess | undefined;
let boots = 0;

/** The CLI without blocking the event loop (the git server lives in this process). */
async function cli(args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  try {
    const r = await exec(process.execPath, [BIN, ...args], { cwd: ROOT, env: { ...process.env, NO_COLOR: '1', DRAGONFLY_STATE: '' }, timeout: 60_000, maxBuffer: 16 * MiB });
    return { status: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string };
    return { status: typeof err.code === 'number' ? err.code : -1, stdout: err.stdout ?? '', stderr: err.stderr ?? '' };
  }
}

function start(args: string[], log: string): { child: ChildProcess; out: { text: () => string } } {
  const child = spawn(process.execPath, args, { cwd: ROOT, env: { ...process.env, NO_COLOR: '1', DRAGONFLY_STATE: '' } });
  children.push(child);
  const out = collect(child);
  const file = fs.createWriteStream(path.join(work, log));
  child.stdout?.pipe(file);
  child.stderr?.pipe(file);
  return { child, out };
}

/** Every boot's serial console so far (one file per QEMU run). */
function serial(): string {
  let text = '';
  for (let i = 1; i <= boots; i++) {
    const f = path.join(work, `serial-${i}.log`);
    if (fs.existsSync(f)) text += `\n===== boot ${i} =====\n` + fs.readFileSync(f, 'latin1').replace(/\r/g, '');
  }
  return text;
}
const serialOf = (n: number) => fs.readFileSync(path.join(work, `serial-${n}.log`), 'latin1').replace(/\r/g, '');

/** Power the VM on: a new QEMU process with the same disk and MAC. */
function powerOn(disk: string, port: number): { n: number; exit: Promise<number | null> } {
  const n = ++boots;
  const stderr = fs.openSync(path.join(work, `qemu-${n}.err`), 'w');
  qemu = spawn(
    'qemu-system-x86_64',
    [
      '-machine', 'pc,accel=tcg', '-m', '1024', '-display', 'none', '-vga', 'none', '-monitor', 'none', '-no-reboot',
      // SeaBIOS (and so iPXE's BIOS console) writes to the serial port too.
      '-fw_cfg', `name=etc/sercon-port,file=${path.join(work, 'sercon-port.bin')}`,
      '-serial', `file:${path.join(work, `serial-${n}.log`)}`,
      '-netdev', `user,id=n0,bootfile=http://10.0.2.2:${port}/boot.ipxe`, '-device', `e1000,netdev=n0,mac=${MAC}`,
      '-drive', `file=${disk},if=virtio,format=raw`,
      '-boot', 'order=nc',
    ],
    { stdio: ['ignore', 'ignore', stderr] },
  );
  children.push(qemu);
  const child = qemu;
  const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { n, exit };
}

/** Wait for this boot's QEMU to end by itself (the guest rebooted or powered off). */
async function ended(boot: { n: number; exit: Promise<number | null> }, what: string, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), ms)));
  const code = await Promise.race([boot.exit, timeout]);
  clearTimeout(timer);
  if (code === 'timeout') throw new Error(`boot ${boot.n}: timed out after ${seconds(ms)} waiting for ${what}`);
  if (code !== 0) throw new Error(`boot ${boot.n}: QEMU exited with ${code} waiting for ${what}: ${fs.readFileSync(path.join(work, `qemu-${boot.n}.err`), 'utf8')}`);
}

function fleetFiles(generation: number): Record<string, string> {
  return {
    'fleet/machines/lab.yaml': `apiVersion: dragonfly.computer/v1
kind: Machine
metadata: {name: ${NAME}, labels: {role: lab}}
spec: {mac: "${MAC}"}
`,
    'fleet/assignments/lab.yaml': `apiVersion: dragonfly.computer/v1
kind: Assignment
metadata: {name: lab}
spec: {template: marker-os, selector: {role: lab}, generation: ${generation}}
`,
  };
}

/** The installed OS: 64 MiB raw disk, MBR = the marker stub + one ext4 partition with /etc. */
function buildOsImage(): { file: string; sha256: string; bytes: number } {
  const mbr = path.join(work, 'marker-mbr.bin');
  execFileSync('nasm', ['-f', 'bin', '-o', mbr, path.join(ROOT, 'test/fixtures/lifecycle/marker-mbr.asm')]);
  const code = fs.readFileSync(mbr);
  expect(code.length).toBe(440);
  const raw = path.join(work, 'os.raw');
  execFileSync('truncate', ['-s', '64M', raw]);
  execFileSync('sfdisk', ['-q', raw], { input: 'label: dos\nlabel-id: 0x6c630001\nstart=2048, type=83\n' });
  const tree = path.join(work, 'os-tree');
  fs.mkdirSync(path.join(tree, 'etc'), { recursive: true });
  fs.writeFileSync(path.join(tree, 'etc', 'os-release'), 'NAME="Dragonfly marker OS"\n');
  // Incompressible bytes, so that the download takes long enough for progress reports between 0 and 100%.
  fs.mkdirSync(path.join(tree, 'opt'));
  fs.writeFileSync(path.join(tree, 'opt', 'payload'), randomBytes(PAYLOAD_BYTES));
  const rootfs = path.join(work, 'os.ext4');
  execFileSync('truncate', ['-s', `${64 * MiB - PART1_OFFSET}`, rootfs]);
  execFileSync('mkfs.ext4', ['-q', '-F', '-L', 'root', '-d', tree, rootfs]);
  execFileSync('dd', [`if=${rootfs}`, `of=${raw}`, 'bs=1M', 'seek=1', 'conv=notrunc', 'status=none']);
  const fd = fs.openSync(raw, 'r+');
  fs.writeSync(fd, code, 0, 440, 0); // the boot code only: sfdisk's disk id, table and 0x55AA stay
  fs.closeSync(fd);
  execFileSync('zstd', ['-q', '-f', raw, '-o', `${raw}.zst`]);
  return { file: `${raw}.zst`, sha256: createHash('sha256').update(fs.readFileSync(`${raw}.zst`)).digest('hex'), bytes: 64 * MiB };
}

/** A file in the VM disk's first partition, read with debugfs. */
function fileOnDisk(disk: string, file: string): Buffer {
  return execFileSync('debugfs', ['-R', `cat ${file}`, `${disk}?offset=${PART1_OFFSET}`], { stdio: ['ignore', 'pipe', 'ignore'], maxBuffer: 64 * MiB });
}

beforeAll(async () => {
  tmp = tempDir('dragonfly-lifecycle-');
  work = tmp.dir;
  fs.writeFileSync(path.join(work, 'sercon-port.bin'), Buffer.from([0xf8, 0x03]));
});

afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await git?.close();
  if (process.env.DRAGONFLY_KEEP_WORK) console.log(`lifecycle: work dir kept at ${work}`);
  else tmp?.cleanup();
});

interface Workflow {
  generation: number;
  actions: { action: string; state: string; percent?: number; message?: string }[];
}

interface MachineRow {
  mac: string;
  name: string;
  memorableName: string;
  phase: string;
  source?: string;
  template: string | null;
  installed: string | null;
  hardware?: { disks: { name: string; sizeBytes: number }[]; nics: { mac: string; driver?: string }[] };
}

describe('the machine lifecycle in QEMU: discovery → git → imaging → local boot → reimage', () => {
  it('PXE boots an unknown VM into Mage, images it from git, boots its disk, and reimages it on a generation bump', async () => {
    const times: [string, number][] = [];
    let mark = Date.now();
    const phase = (name: string) => {
      const now = Date.now();
      times.push([name, now - mark]);
      console.log(`lifecycle: ${name}: ${seconds(now - mark)}`);
      mark = now;
    };
    let watch: { child: ChildProcess; out: { text: () => string } } | undefined;
    let serve: { child: ChildProcess; out: { text: () => string } } | undefined;
    try {
      // 0. The Mage image, the OS image and its HTTP server, the fleet repo, `dragonfly serve` and `dragonfly watch`.
      let mageDir = process.env.DRAGONFLY_LIFECYCLE_MAGE_DIR;
      if (!mageDir) {
        mageDir = path.join(work, 'mage');
        await exec(process.execPath, [BIN, 'mage', 'build', '--out', mageDir], {
          cwd: ROOT,
          env: { ...process.env, DRAGONFLY_DEB_CACHE: DEB_CACHE, DRAGONFLY_MAGE_ZSTD_LEVEL: '3' },
          timeout: 240_000,
          maxBuffer: 16 * MiB,
        });
      }
      expect(fs.existsSync(path.join(mageDir, 'initrd'))).toBe(true);
      const image = buildOsImage();
      const imagePort = await freePort();
      const images = start(['-e', IMAGE_SERVER, image.file, String(imagePort)], 'images.log');
      await until('the image server', () => images.out.text().includes('listening'));

      git = await startGitHttp({ root: path.join(work, 'srv') });
      repo = await createRepo(path.join(work, 'srv'), 'fleet.git', path.join(work, 'git'));
      repo.write(
        'fleet/templates/marker-os.yaml',
        `apiVersion: dragonfly.computer/v1
kind: Template
metadata: {name: marker-os}
spec:
  image: {url: "http://10.0.2.2:${imagePort}/os.raw.zst", sha256: "${image.sha256}", size: 64MiB}
  timeout: 10m
  actions:
    - image2disk: {disk: \${disk}}
    - writefile: {partition: 1, path: /etc/hostname, content: "\${machine.name}\\n", mode: "0644"}
`,
      );
      const first = await repo.commitAndPush('the marker OS template', ALAN);

      const port = await freePort();
      const api = `http://127.0.0.1:${port}`;
      const state = path.join(work, 'state');
      serve = start(
        [BIN, 'serve', '--repo', git.url('fleet.git'), '--path', 'fleet', '--poll', '1s', '--mage-dir', mageDir, '--state', state,
          '--http', `127.0.0.1:${port}`, '--tftp', 'off', '--public-url', `http://10.0.2.2:${port}`],
        'serve.log',
      );
      await until('the server', async () => (await fetch(`${api}/healthz`).catch(() => undefined))?.ok === true, 30_000);
      const status = async () => JSON.parse((await cli(['status', '--state', state, '--json'])).stdout) as { controller: { applied?: { revision: string; author?: string }; seen?: { revision: string; valid: boolean } } | null };
      // A template alone changes no machine: the commit is seen (and valid), with nothing to apply.
      await until('the first commit seen', async () => (await status()).controller?.seen?.revision === first, 30_000, 250);
      expect((await status()).controller!.seen!.valid).toBe(true);
      watch = start([BIN, 'watch', '--server', api, '--since', '0'], 'watch.log');
      const bootScripts = async (fate: string) =>
        Number(new RegExp(`dragonfly_boot_scripts_total\\{fate="${fate}"\\} (\\d+)`).exec(await (await fetch(`${api}/metrics`)).text())?.[1] ?? 0);
      const machines = async () => (await (await fetch(`${api}/api/v1/machines`)).json()) as MachineRow[];
      const disk = path.join(work, 'vm-disk.img');
      fs.writeFileSync(disk, '');
      fs.truncateSync(disk, 2 ** 30);
      phase('setup (Mage build, OS image, git, serve)');

      // 1. Unknown MAC → discovery: Mage boots and reports its hardware; the VM waits for git.
      let boot = powerOn(disk, port);
      let seen: MachineRow | undefined;
      await until(
        'Mage to report the hardware',
        async () => {
          if (qemu!.exitCode !== null) throw new Error(`QEMU exited (${qemu!.exitCode})`);
          seen = (await machines()).find((m) => m.mac === MAC && m.hardware);
          return seen !== undefined;
        },
        150_000,
        500,
      );
      expect(seen).toMatchObject({ phase: 'Discovered', memorableName: memorableName(MAC) });
      expect(seen!.hardware!.disks).toEqual([expect.objectContaining({ name: 'vda', sizeBytes: 2 ** 30 })]);
      expect(seen!.hardware!.nics).toEqual([expect.objectContaining({ mac: MAC, driver: 'e1000' })]);
      await until('Mage to wait', () => /registered as \S+ \(\S+\): wait/.test(serialOf(boot.n)), 30_000, 250);
      expect(serialOf(boot.n)).toContain('iPXE');
      phase('1 discovery: power on → Discovered with hardware');

      // 2. The machine goes into git; the controller applies it; the waiting Mage is told to reboot.
      repo.writeAll(fleetFiles(1));
      const second = await repo.commitAndPush(`add ${NAME}`, GRACE);
      await until('the commit applied', async () => (await status()).controller?.applied?.revision === second, 30_000, 250);
      expect((await status()).controller!.applied!.author).toBe(`${GRACE.name} <${GRACE.email}>`);
      await ended(boot, 'the discovery Mage to reboot', 40_000);
      expect(serialOf(boot.n)).toMatch(/registered as lab-01 \(\S+\): reboot/);
      phase('2 git: push → applied → Mage reboots');

      // 3. Imaging: iPXE gets the imaging script, Mage runs the workflow, reports success and reboots.
      const imaged = async (generation: number) => {
        const scripts = await bootScripts('imaging');
        // Progress on the way: the workflow's image2disk action as the server has it, sampled while Mage runs
        // (watch prints action state changes; the percentages in between live in the workflow record).
        const midway: string[] = [];
        let sampling = true;
        const sampler = (async () => {
          while (sampling) {
            const wfs = (await (await fetch(`${api}/api/v1/workflows`)).json().catch(() => [])) as Workflow[];
            const a = wfs.find((w) => w.generation === generation)?.actions[0];
            if (a?.state === 'running' && a.percent !== undefined && a.percent > 0 && a.percent < 100) {
              const seen = `${a.percent.toFixed(0)}% (${a.message ?? ''})`;
              if (midway.at(-1) !== seen) midway.push(seen);
            }
            await new Promise((r) => setTimeout(r, 150));
          }
        })();
        boot = powerOn(disk, port);
        try {
          await ended(boot, `Mage to image the disk (generation ${generation}) and reboot`, 180_000);
        } finally {
          sampling = false;
          await sampler;
        }
        console.log(`lifecycle: image2disk progress seen midway (generation ${generation}): ${midway.join(', ')}`);
        expect(midway.length).toBeGreaterThan(0);
        const console_ = serialOf(boot.n);
        expect(console_).toMatch(/dragonfly\.workflow=wf-\S+ dragonfly\.token=[0-9a-f]{64}/);
        expect(console_).toMatch(/: run wf-/);
        expect(console_).toMatch(/registered as lab-01 \(\S+\): localboot/);
        expect(await bootScripts('imaging')).toBe(scripts + 1);
        const m = (await machines()).find((r) => r.mac === MAC)!;
        expect(m).toMatchObject({ name: NAME, phase: 'Ready' });
        expect(fileOnDisk(disk, '/etc/hostname').toString()).toBe(`${NAME}\n`);
        expect(fileOnDisk(disk, '/opt/payload').equals(fs.readFileSync(path.join(work, 'os-tree', 'opt', 'payload')))).toBe(true);
        // The disk starts with the image: the marker MBR's boot code and the partition table.
        const head = Buffer.alloc(512);
        const fd = fs.openSync(disk, 'r');
        fs.readSync(fd, head, 0, 512, 0);
        fs.closeSync(fd);
        expect(head.subarray(0, 440).equals(fs.readFileSync(path.join(work, 'marker-mbr.bin')))).toBe(true);
        expect(head.readUInt16LE(510)).toBe(0xaa55);
      };
      await imaged(1);
      phase('3 imaging: power on → imaging script → Mage writes image + hostname → Ready → reboot');

      // 4. Local boot: iPXE exits, SeaBIOS boots the disk, the marker prints and powers off.
      const localBoot = async () => {
        const scripts = await bootScripts('localboot');
        boot = powerOn(disk, port);
        await ended(boot, 'the disk to boot and power off', 90_000);
        expect(await bootScripts('localboot')).toBe(scripts + 1);
        const console_ = serialOf(boot.n);
        expect(console_).toContain(MARKER);
        expect(console_).not.toContain('MAGE[');
      };
      await localBoot();
      phase('4 local boot: power on → iPXE exit → disk MBR marker → power off');

      // 5. What the CLI says: Ready with template@generation; the apply with its commit author.
      const rows = JSON.parse((await cli(['machines', '--state', state, '--json'])).stdout) as MachineRow[];
      expect(rows).toEqual([expect.objectContaining({ mac: MAC, name: NAME, phase: 'Ready', installed: 'marker-os@1', template: 'marker-os@1', memorableName: memorableName(MAC) })]);
      const history = await cli(['history', '--state', state]);
      expect(history.status).toBe(0);
      expect(history.stdout).toContain(`for ${GRACE.name} <${GRACE.email}>`);
      const watched = watch.out.text();
      expect(watched).toMatch(new RegExp(`${memorableName(MAC)} machine\\.discovered`));
      expect(watched).toMatch(/lab-01 workflow\.running: marker-os@1 started/);
      expect(watched).toMatch(/lab-01 workflow\.action 0%: image2disk \(action 1 of 2\) started/);
      expect(watched).toMatch(/lab-01 workflow\.action 100%: image2disk \(action 1 of 2\) done/);
      expect(watched).toMatch(/lab-01 workflow\.action.*writefile/);
      expect(watched).toMatch(/marker-os@1 installed/);
      phase('5 CLI: machines, history, watch');

      // 6. A generation bump reimages the VM: imaging again, then its disk boots again.
      repo.writeAll(fleetFiles(2));
      const third = await repo.commitAndPush('reimage lab: generation 2', GRACE);
      await until('the bump applied', async () => (await status()).controller?.applied?.revision === third, 30_000, 250);
      await until('the reimage workflow', async () => (await machines()).find((m) => m.mac === MAC)?.phase !== 'Ready', 10_000, 250);
      phase('6 git: generation bump applied');
      await imaged(2);
      phase('6 reimaging: power on → Mage → Ready → reboot');
      await localBoot();
      phase('6 local boot after the reimage');
      const after = JSON.parse((await cli(['machines', '--state', state, '--json'])).stdout) as MachineRow[];
      expect(after).toEqual([expect.objectContaining({ name: NAME, phase: 'Ready', installed: 'marker-os@2' })]);
      await until('the watch to show generation 2', () => /marker-os@2 installed/.test(watch!.out.text()), 10_000);

      const total = times.reduce((s, [, ms]) => s + ms, 0);
      console.log(`lifecycle: total ${seconds(total)}; ${times.map(([n, ms]) => `${n.split(':')[0]} ${seconds(ms)} (${Math.round((100 * ms) / total)}%)`).join(', ')}`);
    } catch (e) {
      const tail = (s: string, n: number) => s.slice(-n);
      throw new Error(
        `${(e as Error).message}\n--- serial (last 6000 chars):\n${tail(serial(), 6000)}` +
          `\n--- serve (last 3000):\n${tail(serve?.out.text() ?? '', 3000)}\n--- watch (last 2000):\n${tail(watch?.out.text() ?? '', 2000)}`,
        { cause: e },
      );
    } finally {
      for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    }
  }, 290_000);
});
