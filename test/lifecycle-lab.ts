// Test and bench helper (not a test): the whole product in a PXE network, for test/lifecycle.test.ts and
// bench/lifecycle.ts. A network namespace (test/pxe-network.ts) holds the bridge, one tap per VM, a plain
// DHCP server on "another host" that leases the addresses, `dragonfly serve` with its proxyDHCP, TFTP and
// HTTP, and a server for the OS image. The fleet repo is served over smart HTTP by this process, on the
// host's end of a management veth; the test reaches serve's API on the lab's end. VMs are QEMU (TCG) with
// the iPXE NIC ROM, a blank virtio disk and `-boot order=nc`. No stand-ins anywhere in the chain.
import { execFile, execFileSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { createRepo, startGitHttp, tempDir, type GitHttpServer, type TestRepo } from './git-http.js';
import { PxeNetwork, requireNetnsTools, SERVER_IP } from './pxe-network.js';

/** The repository root, from test/ (vitest) or dist/test/ (the compiled bench). */
export const ROOT = (() => {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!fs.existsSync(path.join(dir, 'package.json'))) dir = path.dirname(dir);
  return dir;
})();
export const BIN = path.join(ROOT, 'bin', 'dragonfly.js');
/** What the installed OS's MBR prints on COM1 before it powers the VM off. */
export const MARKER = 'DRAGONFLY-DISK-BOOT-OK';
const MiB = 2 ** 20;
/** The lab's serve reads its API with this admin token (the read API is not open). */
export const LAB_TOKEN = 'lifecycle-lab-token';
const LAB_AUTH = { authorization: `Bearer ${LAB_TOKEN}` };
const DEB_CACHE = process.env.DRAGONFLY_DEB_CACHE ?? '/var/tmp/dragonfly-debs';
const HTTP_PORT = 8080;
const IMAGE_PORT = 8081;
/** The image's only partition starts at sector 2048. */
export const PART1_OFFSET = 1 * MiB;
const exec = promisify(execFile);
export const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

// Serves one file with HTTP Range support (image2disk resumes with Range after a broken connection).
const IMAGE_SERVER = `
const http = require('http'), fs = require('fs');
const [file, host, port] = process.argv.slice(1);
const body = fs.readFileSync(file);
http.createServer((req, res) => {
  const m = /^bytes=(\\d+)-(\\d*)$/.exec(req.headers.range || '');
  const from = m ? Number(m[1]) : 0;
  const to = m && m[2] ? Math.min(Number(m[2]), body.length - 1) : body.length - 1;
  console.log(req.method + ' ' + req.url + (m ? ' range ' + from + '-' + to : ''));
  res.writeHead(m ? 206 : 200, { 'content-type': 'application/octet-stream', 'accept-ranges': 'bytes', 'content-length': to - from + 1, ...(m ? { 'content-range': 'bytes ' + from + '-' + to + '/' + body.length } : {}) });
  res.end(req.method === 'HEAD' ? undefined : body.subarray(from, to + 1));
}).listen(Number(port), host, () => console.log('listening'));
`;

export interface OsImage {
  /** The zstd-compressed raw disk image. */
  file: string;
  sha256: string;
  /** The marker MBR's 440 bytes of boot code. */
  mbr: Buffer;
  /** The incompressible file at /opt/payload in the image's ext4 partition. */
  payload: Buffer;
}

/**
 * The installed OS: a 64 MiB raw disk whose boot code is test/fixtures/lifecycle/marker-mbr.asm (assembled
 * with nasm) and whose only partition is ext4 with /etc/os-release and `payloadBytes` of random bytes (so
 * that the download lasts long enough for progress reports between 0 and 100%), zstd-compressed.
 */
export function buildMarkerOs(work: string, payloadBytes = 16 * MiB): OsImage {
  const mbrFile = path.join(work, 'marker-mbr.bin');
  execFileSync('nasm', ['-f', 'bin', '-o', mbrFile, path.join(ROOT, 'test/fixtures/lifecycle/marker-mbr.asm')]);
  const mbr = fs.readFileSync(mbrFile);
  if (mbr.length !== 440) throw new Error(`marker-mbr.asm assembled to ${mbr.length} bytes, not 440`);
  const raw = path.join(work, 'os.raw');
  execFileSync('truncate', ['-s', '64M', raw]);
  execFileSync('sfdisk', ['-q', raw], { input: 'label: dos\nlabel-id: 0x6c630001\nstart=2048, type=83\n' });
  const tree = path.join(work, 'os-tree');
  fs.mkdirSync(path.join(tree, 'etc'), { recursive: true });
  fs.writeFileSync(path.join(tree, 'etc', 'os-release'), 'NAME="Dragonfly marker OS"\n');
  fs.mkdirSync(path.join(tree, 'opt'));
  const payload = randomBytes(payloadBytes);
  fs.writeFileSync(path.join(tree, 'opt', 'payload'), payload);
  const rootfs = path.join(work, 'os.ext4');
  execFileSync('truncate', ['-s', `${64 * MiB - PART1_OFFSET}`, rootfs]);
  execFileSync('mkfs.ext4', ['-q', '-F', '-L', 'root', '-d', tree, rootfs]);
  execFileSync('dd', [`if=${rootfs}`, `of=${raw}`, 'bs=1M', 'seek=1', 'conv=notrunc', 'status=none']);
  const fd = fs.openSync(raw, 'r+');
  fs.writeSync(fd, mbr, 0, 440, 0); // the boot code only: sfdisk's disk id, table and 0x55AA stay
  fs.closeSync(fd);
  execFileSync('zstd', ['-q', '-f', raw, '-o', `${raw}.zst`]);
  fs.rmSync(rootfs);
  fs.rmSync(raw);
  const file = `${raw}.zst`;
  return { file, sha256: createHash('sha256').update(fs.readFileSync(file)).digest('hex'), mbr, payload };
}

/** The Mage boot image: DRAGONFLY_LIFECYCLE_MAGE_DIR when set, else `dragonfly mage build` into work/mage (zstd -3: ~15 s). */
export async function mageImage(work: string): Promise<string> {
  const given = process.env.DRAGONFLY_LIFECYCLE_MAGE_DIR;
  const dir = given ?? path.join(work, 'mage');
  if (!given) {
    await exec(process.execPath, [BIN, 'mage', 'build', '--out', dir], {
      cwd: ROOT,
      env: { ...process.env, DRAGONFLY_DEB_CACHE: DEB_CACHE, DRAGONFLY_MAGE_ZSTD_LEVEL: '3' },
      timeout: 300_000,
      maxBuffer: 16 * MiB,
    });
  }
  for (const f of ['vmlinuz', 'initrd']) if (!fs.existsSync(path.join(dir, f))) throw new Error(`no ${f} in the Mage image directory ${dir}`);
  return dir;
}

/** A file in a VM disk's first partition, read with debugfs. */
export function fileOnDisk(disk: string, file: string): Buffer {
  return execFileSync('debugfs', ['-R', `cat ${file}`, `${disk}?offset=${PART1_OFFSET}`], { stdio: ['ignore', 'pipe', 'ignore'], maxBuffer: 64 * MiB });
}

export interface Vm {
  index: number;
  mac: string;
  /** Its metadata.name once it is in git. */
  name: string;
  disk: string;
  tap: string;
}

export interface Boot {
  /** Numbers every QEMU start of the lab. */
  n: number;
  vm: Vm;
  startedAt: number;
  child: ChildProcess;
  /** QEMU's exit code: the guest rebooted (with -no-reboot) or powered off. */
  exit: Promise<number | null>;
  /** When QEMU exited (Date.now()), once it has. */
  exitedAt?: number;
}

export interface MachineRow {
  mac: string;
  name?: string;
  memorableName: string;
  phase: string;
  template?: string | null;
  installed?: string | null;
  workflow?: string;
  hardware?: { disks: { name: string; sizeBytes: number }[]; nics: { mac: string; driver?: string }[] };
}

export interface WorkflowRow {
  id: string;
  mac: string;
  generation: number;
  state: string;
  startedAt?: string;
  finishedAt?: string;
  actions: { action: string; state: string; percent?: number; message?: string }[];
}

export const TEMPLATE = 'marker-os';

/** The fleet files for `vms` (Machine per VM, one Assignment for all of them) at `generation`. */
export function fleetFiles(vms: readonly Vm[], generation: number): Record<string, string> {
  const files: Record<string, string> = {
    'fleet/assignments/lab.yaml': `apiVersion: dragonfly.computer/v1
kind: Assignment
metadata: {name: lab}
spec: {template: ${TEMPLATE}, selector: {role: lab}, generation: ${generation}}
`,
  };
  for (const vm of vms) {
    files[`fleet/machines/${vm.name}.yaml`] = `apiVersion: dragonfly.computer/v1
kind: Machine
metadata: {name: ${vm.name}, labels: {role: lab}}
spec: {mac: "${vm.mac}"}
`;
  }
  return files;
}

/**
 * The lab: network, image server, git server, repository; then `startServe`, and VMs by `powerOn`.
 * `stop()` kills everything and removes the work dir (unless DRAGONFLY_KEEP_WORK is set).
 */
export class LifecycleLab {
  readonly vms: Vm[];
  readonly work: string;
  readonly net: PxeNetwork;
  git: GitHttpServer | undefined;
  repo!: TestRepo;
  image!: OsImage;
  /** serve's HTTP as the test reaches it (the lab's end of the management veth). */
  readonly api: string;
  /** serve's HTTP as the VMs reach it. */
  readonly publicUrl = `http://${SERVER_IP}:${HTTP_PORT}`;
  readonly state: string;
  serve: ChildProcess | undefined;
  readonly boots: Boot[] = [];
  private readonly cleanup: () => void;

  /** `tag`: one letter that keeps this lab's namespaces and management addresses apart from another lab's. */
  constructor(vmCount: number, opts: { tag?: string } = {}) {
    const tmp = tempDir('dragonfly-lifecycle-');
    this.work = tmp.dir;
    this.cleanup = tmp.cleanup;
    fs.chmodSync(this.work, 0o755);
    this.net = new PxeNetwork({ prefix: 'dflc', tag: opts.tag ?? 'a', taps: vmCount, work: this.work, router: { packetJs: path.join(ROOT, 'dist/boot/dhcp/packet.js') }, mgmt: true });
    this.api = `http://${this.net.mgmt.lab}:${HTTP_PORT}`;
    this.state = path.join(this.work, 'state');
    this.vms = Array.from({ length: vmCount }, (_, i) => {
      const n = String(i + 1).padStart(2, '0');
      return { index: i, mac: `52:54:00:6c:63:${n}`, name: `lab-${n}`, disk: path.join(this.work, `vm-${n}.img`), tap: `tap${i}` };
    });
  }

  /** Network, OS image and its server, the git server with a repository holding the template. Returns the first commit. */
  async start(opts: { payloadBytes?: number } = {}): Promise<string> {
    const missing: string[] = [];
    for (const f of ['dist/boot/dhcp/packet.js', 'dist/cli/main.js']) if (!fs.existsSync(path.join(ROOT, f))) missing.push(`${f} (npm run build)`);
    if (!fs.existsSync('/usr/lib/ipxe/undionly.kpxe')) missing.push('/usr/lib/ipxe/undionly.kpxe (Debian package ipxe)');
    requireNetnsTools(['ip', 'ss', 'qemu-system-x86_64', 'nasm', 'sfdisk', 'mkfs.ext4', 'debugfs', 'zstd'], missing);
    fs.writeFileSync(path.join(this.work, 'sercon-port.bin'), Buffer.from([0xf8, 0x03])); // SeaBIOS and iPXE on COM1 too
    await this.net.start();
    for (const vm of this.vms) {
      fs.writeFileSync(vm.disk, '');
      fs.truncateSync(vm.disk, 2 ** 30);
    }

    this.image = buildMarkerOs(this.work, opts.payloadBytes);
    this.net.spawn('images', process.execPath, ['-e', IMAGE_SERVER, this.image.file, SERVER_IP, String(IMAGE_PORT)]);
    await this.net.until(() => this.net.read('images.log').includes('listening'), 15_000, 'the image server', 'images');

    const srv = path.join(this.work, 'srv');
    this.git = await startGitHttp({ root: srv, host: this.net.mgmt.host });
    this.repo = await createRepo(srv, 'fleet.git', path.join(this.work, 'git'));
    this.repo.write(
      `fleet/templates/${TEMPLATE}.yaml`,
      `apiVersion: dragonfly.computer/v1
kind: Template
metadata: {name: ${TEMPLATE}}
spec:
  image: {url: "http://${SERVER_IP}:${IMAGE_PORT}/os.raw.zst", sha256: "${this.image.sha256}", size: 64MiB}
  timeout: 10m
  actions:
    - image2disk: {disk: \${disk}}
    - writefile: {partition: 1, path: /etc/hostname, content: "\${machine.name}\\n", mode: "0644"}
`,
    );
    return this.repo.commitAndPush('the marker OS template', { name: 'Alan Turing', email: 'alan@example.com' });
  }

  /**
   * `dragonfly serve` inside the lab: following the repo over smart HTTP (polling every second), proxyDHCP on
   * br0, TFTP, HTTP for scripts, Mage and the API. With `chainloadIpxe` the iPXE ROM is handed our
   * undionly.kpxe over TFTP first (as a BIOS PXE ROM would be) — once per MAC per 2 minutes: within that
   * window the server cannot tell a reboot from the chained binary's own DHCP, so it answers with the script.
   * Under TCG undionly's UNDI driver downloads Mage several times slower than the ROM's own e1000 driver.
   * Without `mageDir`, serve builds Mage into STATE/mage itself, as the README's first command does (zstd -3 here).
   */
  async startServe(mageDir: string | undefined, opts: { chainloadIpxe?: boolean } = {}): Promise<void> {
    this.serve = this.net.spawn(
      'serve',
      process.execPath,
      [BIN, 'serve', '--repo', this.git!.url('fleet.git'), '--path', 'fleet', '--poll', '1s', ...(mageDir ? ['--mage-dir', mageDir] : []), '--state', this.state,
        '--http', `0.0.0.0:${HTTP_PORT}`, '--tftp', `${SERVER_IP}:69`, '--dhcp', 'proxy', '--dhcp-ip', SERVER_IP,
        ...(opts.chainloadIpxe ? ['--chainload-ipxe'] : []), '--public-url', this.publicUrl],
      { cwd: ROOT, env: { ...process.env, NO_COLOR: '1', DRAGONFLY_STATE: '', DRAGONFLY_API_TOKEN: LAB_TOKEN, DRAGONFLY_DEB_CACHE: DEB_CACHE, DRAGONFLY_MAGE_ZSTD_LEVEL: '3' } },
    );
    const end = Date.now() + 30_000;
    while (!(await fetch(`${this.api}/healthz`).then((r) => r.ok, () => false))) {
      if (this.serve.exitCode !== null || Date.now() > end) throw new Error(`dragonfly serve did not come up: ${this.net.read('serve.log').slice(-3000)}${this.net.read('serve.stderr')}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    await this.net.udpListening(69);
    await this.net.udpListening(67);
  }

  /**
   * Power a VM on: a new QEMU process with its disk and MAC on its tap. With `reboot: 'exit'` (-no-reboot) a
   * reboot ends the process and the caller powers it on again; with 'in-place' QEMU reboots by itself, and
   * only a power-off (the marker OS) ends it. `kernel`: boot Mage directly (-kernel/-initrd), no PXE.
   */
  powerOn(vm: Vm, opts: { reboot: 'exit' | 'in-place'; kernel?: string } = { reboot: 'exit' }): Boot {
    const n = this.boots.length + 1;
    const direct = opts.kernel
      ? ['-kernel', path.join(opts.kernel, 'vmlinuz'), '-initrd', path.join(opts.kernel, 'initrd'), '-append', `console=ttyS0 dragonfly.url=${this.publicUrl} dragonfly.mac=${vm.mac}`]
      : ['-boot', 'order=nc'];
    const child = this.net.spawn(`qemu-${n}`, 'qemu-system-x86_64', [
      '-machine', 'pc,accel=tcg', '-m', '1024', '-display', 'none', '-vga', 'none', '-monitor', 'none',
      ...(opts.reboot === 'exit' ? ['-no-reboot'] : []),
      '-fw_cfg', `name=etc/sercon-port,file=${path.join(this.work, 'sercon-port.bin')}`,
      '-serial', `file:${this.serialFile(n)}`,
      '-netdev', `tap,id=n0,ifname=${vm.tap},script=no,downscript=no`, '-device', `e1000,netdev=n0,mac=${vm.mac}`,
      '-drive', `file=${vm.disk},if=virtio,format=raw`,
      ...direct,
    ]);
    const boot: Boot = { n, vm, startedAt: Date.now(), child, exit: new Promise((resolve) => child.once('exit', (code) => { boot.exitedAt = Date.now(); resolve(code); })) };
    this.boots.push(boot);
    return boot;
  }

  /** Wait for a boot's QEMU to end by itself (the guest rebooted or powered off) with exit code 0. */
  async ended(boot: Boot, what: string, ms: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), ms)));
    const code = await Promise.race([boot.exit, timeout]);
    clearTimeout(timer);
    if (code === 'timeout') throw new Error(`boot ${boot.n} (${boot.vm.name}): timed out after ${seconds(ms)} waiting for ${what}`);
    if (code !== 0) throw new Error(`boot ${boot.n} (${boot.vm.name}): QEMU exited with ${code} waiting for ${what}: ${this.net.read(`qemu-${boot.n}.stderr`)}`);
  }

  /** One boot's serial console, CRs and ANSI escapes removed. */
  serial(n: number): string {
    try {
      return fs.readFileSync(this.serialFile(n), 'latin1').replace(/\x1b\[[0-9;?]*[a-zA-Z]|\x1bc/g, '').replace(/\r/g, '');
    } catch {
      return '';
    }
  }

  /** Every boot's console so far, for failure messages. */
  serials(): string {
    return this.boots.map((b) => `\n===== boot ${b.n} (${b.vm.name}) =====\n${this.serial(b.n)}`).join('');
  }

  async machines(): Promise<MachineRow[]> {
    return ((await (await fetch(`${this.api}/api/v1/machines?limit=5000`, { headers: LAB_AUTH })).json()) as { items: MachineRow[] }).items;
  }

  async workflows(): Promise<WorkflowRow[]> {
    return ((await (await fetch(`${this.api}/api/v1/workflows?limit=5000`, { headers: LAB_AUTH })).json()) as { items: WorkflowRow[] }).items;
  }

  /** One series of serve's /metrics, e.g. `dragonfly_boot_scripts_total{fate="imaging"}` or `dragonfly_tftp_transfers_total`. */
  async metric(series: string): Promise<number> {
    const text = await (await fetch(`${this.api}/metrics`, { headers: LAB_AUTH })).text();
    const line = text.split('\n').find((l) => l.startsWith(`${series} `));
    return Number(line?.slice(series.length + 1) ?? 0);
  }

  /** The CLI, from this process's namespace, without blocking the event loop (the git server lives here). */
  async cli(args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
    try {
      const r = await exec(process.execPath, [BIN, ...args], { cwd: ROOT, env: { ...process.env, NO_COLOR: '1', DRAGONFLY_STATE: '', DRAGONFLY_API_TOKEN: LAB_TOKEN }, timeout: 60_000, maxBuffer: 16 * MiB });
      return { status: 0, stdout: r.stdout, stderr: r.stderr };
    } catch (e) {
      const err = e as { code?: number; stdout?: string; stderr?: string };
      return { status: typeof err.code === 'number' ? err.code : -1, stdout: err.stdout ?? '', stderr: err.stderr ?? '' };
    }
  }

  /** The controller's status as `dragonfly status --json` shows it. */
  async status(): Promise<{ applied?: { revision: string; author?: string }; seen?: { revision: string; valid: boolean } } | null> {
    return (JSON.parse((await this.cli(['status', '--state', this.state, '--json'])).stdout) as { controller: null }).controller;
  }

  /** Body bytes the image server has sent, from its log of requests (a whole GET, or a Range). */
  imageBytesSent(): number {
    const size = fs.statSync(this.image.file).size;
    let sent = 0;
    for (const line of this.net.read('images.log').split('\n')) {
      const m = /^GET \S+(?: range (\d+)-(\d+))?$/.exec(line);
      if (m) sent += m[1] === undefined ? size : Number(m[2]) - Number(m[1]) + 1;
    }
    return sent;
  }

  /** The last `chars` of serve's log. */
  serveLog(chars = 3000): string {
    return this.net.read('serve.log').slice(-chars) + this.net.read('serve.stderr').slice(-chars);
  }

  async stop(): Promise<void> {
    await this.net.stop();
    await this.git?.close();
    if (process.env.DRAGONFLY_KEEP_WORK) console.log(`lifecycle: work dir kept at ${this.work}`);
    else this.cleanup();
  }

  private serialFile(n: number): string {
    return path.join(this.work, `serial-${n}.log`);
  }
}

/** One VM's way through the lifecycle when it runs on its own (QEMU rebooting in place): when each phase ended. */
export interface Timeline {
  poweredOn: number;
  registered?: number;
  started?: number;
  finished?: number;
  diskBooted?: number;
  /** The boot whose console is this VM's. */
  boot?: number;
}

/**
 * Power every VM on at once and follow each to its disk's marker: PXE → Mage registers → `addToGit` (the
 * caller pushes its Machine) → the waiting Mage goes on in the same boot (fast track) → imaging → reboot →
 * PXE → local boot → the marker OS powers it off. Returns their timelines in order.
 */
export async function runAll(lab: LifecycleLab, vms: Vm[], addToGit: (vm: Vm) => Promise<void>): Promise<Timeline[]> {
  return Promise.all(
    vms.map(async (vm) => {
      const boot = lab.powerOn(vm, { reboot: 'in-place' });
      const t: Timeline = { poweredOn: boot.startedAt, boot: boot.n };
      t.registered = await registered(lab, vm, boot);
      await addToGit(vm);
      const wf = async (done: boolean) => {
        for (;;) {
          const w = (await lab.workflows()).find((x) => x.mac === vm.mac);
          if (w && (done ? w.finishedAt : w.startedAt)) {
            if (done && w.state !== 'succeeded') throw new Error(`${vm.name}: workflow ${w.id} ${w.state}`);
            return Date.parse(done ? w.finishedAt! : w.startedAt!);
          }
          await alive(boot, 'its workflow');
        }
      };
      t.started = await wf(false);
      t.finished = await wf(true);
      const code = await boot.exit;
      if (code !== 0 || !lab.serial(boot.n).includes(MARKER)) throw new Error(`${vm.name}: QEMU exited ${code} without the disk's marker`);
      t.diskBooted = boot.exitedAt!;
      return t;
    }),
  );
}

/** When the server first had this VM's hardware report (polled every 250 ms). */
export async function registered(lab: LifecycleLab, vm: Vm, boot: Boot): Promise<number> {
  for (;;) {
    if ((await lab.machines()).some((m) => m.mac === vm.mac && m.hardware)) return Date.now();
    await alive(boot, 'Mage to register');
  }
}

/** A 250 ms pause that fails when the VM's QEMU is gone or the run takes more than 10 minutes. */
async function alive(boot: Boot, what: string): Promise<void> {
  if (boot.exitedAt !== undefined) throw new Error(`${boot.vm.name}: QEMU exited while waiting for ${what}`);
  if (Date.now() - boot.startedAt > 600_000) throw new Error(`${boot.vm.name}: no ${what} after 10 minutes`);
  await new Promise((r) => setTimeout(r, 250));
}

/** Where the VMs' image bytes came from, as each Mage logged it on its console (image2disk over P2P). */
export function p2pShare(lab: LifecycleLab, runs: Timeline[]): { mibFromPeers: number; mibFromSeed: number; mibFromUrl: number; fellBack: number; reported: number } {
  const out = { mibFromPeers: 0, mibFromSeed: 0, mibFromUrl: 0, fellBack: 0, reported: 0 };
  for (const t of runs) {
    const console_ = lab.serial(t.boot!);
    const m = /over P2P: ([\d.]+) MiB from peers, ([\d.]+) MiB from the server's seed, ([\d.]+) MiB from the image URL/.exec(console_);
    if (m) {
      out.reported++;
      out.mibFromPeers += Number(m[1]);
      out.mibFromSeed += Number(m[2]);
      out.mibFromUrl += Number(m[3]);
    }
    if (console_.includes('the P2P swarm failed')) out.fellBack++;
  }
  const r = (x: number) => Math.round(x * 10) / 10;
  return { mibFromPeers: r(out.mibFromPeers), mibFromSeed: r(out.mibFromSeed), mibFromUrl: r(out.mibFromUrl), fellBack: out.fellBack, reported: out.reported };
}
