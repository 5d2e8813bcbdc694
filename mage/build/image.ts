// `dragonfly mage build`: Mage's boot environment from Debian packages and npm only.
//   vmlinuz     the kernel of a Debian linux-image package (apt-get download + dpkg-deb -x)
//   initrd      a zstd-compressed newc cpio: busybox-static, a node binary with the libraries ldd lists,
//               the disk tools Mage's actions run (copied from this host with their libraries), NIC and
//               disk drivers with their dependencies, /init, and Mage bundled by esbuild into one file
//   manifest.json  what went in: package versions, module and tool lists, sizes and sha256s
// Reproducible: one mtime (SOURCE_DATE_EPOCH, else 0) on every entry, entries sorted, inode numbers
// counted, zstd at a fixed level (zstd frames carry no timestamp): the same inputs give the same bytes.
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { DragonflyError } from '../../schemas/errors.js';
import { writeNewc, type CpioEntry } from './cpio.js';

const execFileP = promisify(execFile);

/** A build that cannot go on: DF_ERR_MAGE_BUILD, with a hint specific to the step that failed. */
export class MageBuildError extends DragonflyError {
  constructor(message: string, hint: string) {
    super('DF_ERR_MAGE_BUILD', message, {}, hint);
    this.name = 'MageBuildError';
  }
}

/** Drivers /init loads at boot (with what they depend on), when the kernel has them as modules. */
export const MAGE_MODULES = [
  // virtual machines
  'virtio_pci', 'virtio_net', 'virtio_blk', 'virtio_scsi',
  // NICs
  'e1000', 'e1000e', 'igb', 'igc', 'ixgbe', 'i40e', 'bnxt_en', 'tg3', 'r8169',
  // Mellanox ConnectX-3 and ConnectX-4+ (firmware on the card); Intel E800 (without its DDP file it runs in
  // safe mode: plain networking, which is all PXE and Mage need)
  'mlx4_en', 'mlx5_core', 'ice',
  // disks
  'ahci', 'nvme', 'sd_mod', 'megaraid_sas', 'mpt3sas', 'usb-storage', 'xhci_pci', 'ehci_pci',
  // writefile mounts filesystems other than ext4/vfat through a loop device (for partitions in images)
  'loop',
] as const;

/** In the initramfs but not loaded at boot: the kernel loads them through /sbin/modprobe when mounted. */
export const MAGE_ON_DEMAND_MODULES = ['xfs', 'btrfs'] as const;

/** Programs Mage's actions run, copied from this host (with their shared libraries). */
export const MAGE_TOOLS = [
  'dd', // GNU coreutils: image2disk's decoders pipe into `dd iflag=count_bytes oflag=seek_bytes` (busybox dd lacks both)
  'sfdisk', 'blkid', 'blockdev', 'partx', 'mount', 'umount', 'mkswap', // util-linux
  'mkfs.vfat', // dosfstools
  'mkfs.ext4', 'debugfs', // e2fsprogs
  'mtools', 'mcopy', 'mmd', 'mtype', 'mdir', // mtools
  'kexec', // kexec-tools
  'zstd', 'xz', 'bzip2', // image decoders
] as const;

/** zstd level of the initrd: 19 is ~15% smaller than 9 and ~10x slower to build ($DRAGONFLY_MAGE_ZSTD_LEVEL overrides). */
export const ZSTD_LEVEL = 19;
export const DEFAULT_DEB_CACHE = '/var/tmp/dragonfly-debs';
const BUNDLE_PATH = 'usr/lib/mage/mage.mjs';
/** Folders and packages Mage must never carry (native modules, the server side). */
const FORBIDDEN_IN_BUNDLE = [/^(dist\/)?(store|boot|reconciler|cli)\//, /node_modules\/(lmdb|fastify|@fastify|isomorphic-git|chokidar|msgpackr|pino|cli-progress)\//, /\.node$/];

export interface BuildOptions {
  out: string;
  /** The Debian kernel package; default: what linux-image-<arch> depends on. */
  kernelPackage?: string;
  /** The node binary to ship; default: the one running this build. */
  node?: string;
  /** Where downloaded .debs are kept between builds (default $DRAGONFLY_DEB_CACHE or /var/tmp/dragonfly-debs). */
  debCache?: string;
  /** Seconds since the epoch on every initramfs entry (default $SOURCE_DATE_EPOCH, else 0). */
  sourceDateEpoch?: number;
  /** zstd level, 1–19 (default $DRAGONFLY_MAGE_ZSTD_LEVEL, else ZSTD_LEVEL). */
  zstdLevel?: number;
  log?: (line: string) => void;
}

export interface FileInfo {
  bytes: number;
  sha256: string;
}

export interface MageManifest {
  format: 1;
  arch: string;
  kernel: { package: string; version: string; release: string; debSha256: string };
  busybox: { package: string; version: string; applets: number };
  node: { version: string; source: string; stripped: boolean; bytes: number };
  bundle: { path: string; bytes: number; sha256: string; esbuild: string; inputs: number };
  vmlinuz: FileInfo;
  initrd: FileInfo & { compression: string; uncompressedBytes: number; uncompressedSha256: string; entries: number };
  modules: { loaded: string[]; onDemand: string[]; builtin: string[]; missing: string[]; files: string[]; allFiles: string[] };
  tools: { name: string; path: string; package?: string; version?: string }[];
  missingTools: string[];
  libraries: string[];
  sourceDateEpoch: number;
}

const sha256 = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');

async function run(cmd: string, args: string[], opts: { cwd?: string; allowFail?: boolean } = {}): Promise<{ stdout: string; stderr: string; code: number }> {
  try {
    const { stdout, stderr } = await execFileP(cmd, args, { cwd: opts.cwd, maxBuffer: 64 * 1024 * 1024, encoding: 'utf8', env: { ...process.env, LC_ALL: 'C' } });
    return { stdout, stderr, code: 0 };
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stdout?: string; stderr?: string; code?: number | string };
    if (err.code === 'ENOENT') throw new MageBuildError(`${cmd} is not installed`, `install the Debian package that provides ${cmd} (scripts/install-deps.sh installs what the build needs)`);
    if (opts.allowFail) return { stdout: err.stdout ?? '', stderr: err.stderr ?? '', code: typeof err.code === 'number' ? err.code : 1 };
    throw new MageBuildError(`${cmd} ${args.join(' ')} failed: ${(err.stderr || err.message).trim().split('\n').slice(-5).join('; ')}`, `run the command by hand to see why`);
  }
}

function which(name: string): string | undefined {
  for (const dir of ['/usr/sbin', '/usr/bin', '/sbin', '/bin']) {
    const p = path.join(dir, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      /* next */
    }
  }
  return undefined;
}

/** The package root (the folder of package.json), from this file in the source tree or in dist/. */
export function packageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pj = path.join(dir, 'package.json');
    if (fs.existsSync(pj) && (JSON.parse(fs.readFileSync(pj, 'utf8')) as { name?: string }).name === 'dragonfly') return dir;
    const up = path.dirname(dir);
    if (up === dir) throw new MageBuildError('cannot find the dragonfly package root', 'run dragonfly from its repository or installed package');
    dir = up;
  }
}

/** A host path as it sits in the initramfs, which is always /usr-merged: /lib → usr/lib, /sbin → usr/sbin. */
function mergedPath(hostPath: string): string {
  let dir = fs.realpathSync(path.dirname(hostPath));
  for (const top of ['lib64', 'lib', 'bin', 'sbin']) {
    if (dir === `/${top}` || dir.startsWith(`/${top}/`)) dir = `/usr${dir}`;
  }
  return path.posix.join(dir, path.basename(hostPath)).slice(1);
}

class Tree {
  readonly entries = new Map<string, CpioEntry>();

  dir(p: string, mode = 0o755): void {
    const parts = p.split('/').filter(Boolean);
    for (let i = 1; i <= parts.length; i++) {
      const sub = parts.slice(0, i).join('/');
      const existing = this.entries.get(sub);
      if (existing && existing.type !== 'dir') {
        if (existing.type === 'symlink') continue; // lib → usr/lib: the real folder is added separately
        throw new MageBuildError(`initramfs: ${sub} is both a file and a folder`, 'report this as a bug');
      }
      if (!existing) this.entries.set(sub, { path: sub, type: 'dir', mode: i === parts.length ? mode : 0o755 });
    }
  }

  private parent(p: string): void {
    const d = path.posix.dirname(p);
    if (d !== '.') this.dir(d);
  }

  file(p: string, data: Uint8Array | string, mode = 0o644): void {
    this.parent(p);
    this.entries.set(p, { path: p, type: 'file', mode, data: typeof data === 'string' ? Buffer.from(data) : data });
  }

  symlink(p: string, target: string): void {
    this.parent(p);
    this.entries.set(p, { path: p, type: 'symlink', target });
  }

  has(p: string): boolean {
    return this.entries.has(p);
  }

  /** A host file with its mode, at its /usr-merged path; returns that path. */
  hostFile(hostPath: string): string {
    const dest = mergedPath(hostPath);
    if (!this.entries.has(dest)) {
      const st = fs.statSync(hostPath);
      this.file(dest, fs.readFileSync(hostPath), st.mode & 0o777);
    }
    return dest;
  }
}

/** Shared libraries of an ELF file, as ldd lists them (none for a static binary). */
async function sharedLibraries(file: string): Promise<string[]> {
  const r = await run('ldd', [file], { allowFail: true });
  if (r.code !== 0) {
    if (/not a dynamic executable|statically linked/.test(r.stdout + r.stderr)) return [];
    throw new MageBuildError(`ldd ${file} failed: ${r.stderr.trim()}`, 'the build copies programs from this host: check that they run here');
  }
  const libs: string[] = [];
  for (const line of r.stdout.split('\n')) {
    if (/=>\s*not found/.test(line)) throw new MageBuildError(`${file} needs a library that is missing on this host: ${line.trim()}`, 'install the missing library package');
    const m = /=>\s*(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(0x/.exec(line);
    if (m) libs.push(m[1]!);
  }
  return libs;
}

async function addWithLibraries(tree: Tree, hostPath: string, libraries: Set<string>): Promise<void> {
  for (const lib of await sharedLibraries(hostPath)) libraries.add(tree.hostFile(lib));
}

interface DebInfo {
  package: string;
  version: string;
  sha256: string;
  file: string;
}

/** `apt-cache show` of the candidate version: version, size and sha256 of the .deb. */
async function candidate(pkg: string): Promise<{ version: string; sha256?: string; size?: number }> {
  const r = await run('apt-cache', ['show', '--no-all-versions', pkg], { allowFail: true });
  const version = /^Version: (\S+)$/m.exec(r.stdout)?.[1];
  if (r.code !== 0 || !version) {
    throw new MageBuildError(`Debian package ${pkg} is not known to apt`, `check the name (apt-cache search linux-image) and run apt-get update`);
  }
  const sha = /^SHA256: ([0-9a-f]{64})$/m.exec(r.stdout)?.[1];
  const size = /^Size: (\d+)$/m.exec(r.stdout)?.[1];
  return { version, ...(sha ? { sha256: sha } : {}), ...(size ? { size: Number(size) } : {}) };
}

function fileSha256(file: string): string {
  const h = createHash('sha256');
  const fd = fs.openSync(file, 'r');
  try {
    const buf = Buffer.alloc(4 * 1024 * 1024);
    for (let n; (n = fs.readSync(fd, buf, 0, buf.length, null)) > 0; ) h.update(buf.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
  return h.digest('hex');
}

/** The candidate .deb of `pkg` in `cache`, downloaded with apt-get download unless already there. */
async function fetchDeb(pkg: string, cache: string, log: (line: string) => void): Promise<DebInfo> {
  const want = await candidate(pkg);
  const arch = (await run('dpkg', ['--print-architecture'])).stdout.trim();
  fs.mkdirSync(cache, { recursive: true });
  const versionInName = want.version.replace(/:/g, '%3a');
  const find = (): DebInfo | undefined => {
    for (const f of fs.readdirSync(cache).sort()) {
      if (!f.startsWith(`${pkg}_`) || !f.endsWith('.deb')) continue;
      const file = path.join(cache, f);
      if (want.sha256) {
        if (fs.statSync(file).size !== want.size && want.size !== undefined) continue;
        const sha = fileSha256(file);
        if (sha === want.sha256) return { package: pkg, version: want.version, sha256: sha, file };
      } else if (f === `${pkg}_${versionInName}_${arch}.deb` || f === `${pkg}_${versionInName}_all.deb`) {
        return { package: pkg, version: want.version, sha256: fileSha256(file), file };
      }
    }
    return undefined;
  };
  const cached = find();
  if (cached) {
    log(`${pkg} ${want.version}: cached in ${cache}`);
    return cached;
  }
  log(`downloading ${pkg} ${want.version}${want.size ? ` (${(want.size / 1e6).toFixed(1)} MB)` : ''} with apt-get download`);
  const t0 = Date.now();
  await run('apt-get', ['download', '-q', `${pkg}=${want.version}`], { cwd: cache });
  const got = find();
  if (!got) throw new MageBuildError(`apt-get download ${pkg}=${want.version} left no matching .deb in ${cache}`, 'run apt-get update, then try again');
  log(`downloaded ${path.basename(got.file)} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  return got;
}

/** The kernel package linux-image-<arch> depends on (the distribution's current standard kernel). */
async function defaultKernelPackage(arch: string): Promise<string> {
  const meta = `linux-image-${arch}`;
  const r = await run('apt-cache', ['depends', meta], { allowFail: true });
  const dep = /^\s*\|?Depends: (linux-image-\S+)$/m.exec(r.stdout)?.[1];
  if (!dep) throw new MageBuildError(`cannot tell which kernel ${meta} depends on (apt-cache depends ${meta})`, 'run apt-get update, or name the kernel with --kernel-package linux-image-…');
  return dep;
}

function walkFiles(root: string, rel = ''): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(path.join(root, rel), { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const r = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...walkFiles(root, r));
    else if (e.isFile()) out.push(r);
  }
  return out;
}

interface ModuleSet {
  /** Loaded by /init. */
  loaded: string[];
  /** Loaded by the kernel when needed (mount -t xfs). */
  onDemand: string[];
  builtin: string[];
  missing: string[];
  /** initramfs paths of the .ko files /init loads, in load order. */
  files: string[];
  /** initramfs paths of every .ko file. */
  allFiles: string[];
}

/** Resolve MAGE_MODULES against the extracted kernel (modprobe -D) and stage them, decompressed, with depmod. */
async function stageModules(kroot: string, release: string, stage: string): Promise<ModuleSet> {
  const set: ModuleSet = { loaded: [], onDemand: [], builtin: [], missing: [], files: [], allFiles: [] };
  const kmods = fs.realpathSync(path.join(kroot, 'lib/modules', release));
  const order: string[] = [];
  const atBoot = new Set<string>();
  for (const name of [...MAGE_MODULES, ...MAGE_ON_DEMAND_MODULES]) {
    const boot = (MAGE_MODULES as readonly string[]).includes(name);
    const r = await run('modprobe', ['-d', kroot, '-S', release, '-D', name], { allowFail: true });
    const inserts = r.stdout.split('\n').filter((l) => l.startsWith('insmod ')).map((l) => l.slice(7).trim());
    if (inserts.length > 0) (boot ? set.loaded : set.onDemand).push(name);
    else if (/^builtin /m.test(r.stdout)) set.builtin.push(name);
    else set.missing.push(name);
    for (const ko of inserts) {
      if (!order.includes(ko)) order.push(ko);
      if (boot) atBoot.add(ko);
    }
  }
  const stagedRoot = path.join(stage, 'usr/lib/modules', release);
  fs.mkdirSync(stagedRoot, { recursive: true });
  fs.symlinkSync('usr/lib', path.join(stage, 'lib'));
  for (const ko of order) {
    const rel = path.relative(kmods, fs.realpathSync(ko.startsWith(kroot) ? ko : path.join(kroot, ko)));
    let target = rel;
    let data = fs.readFileSync(path.join(kmods, rel));
    // busybox insmod hands the bytes to init_module(): compressed modules are unpacked here.
    for (const [ext, tool] of [['.xz', 'xz'], ['.zst', 'zstd'], ['.gz', 'gzip']] as const) {
      if (rel.endsWith(ext)) {
        target = rel.slice(0, -ext.length);
        data = (await execFileP(tool, ['-dc', path.join(kmods, rel)], { encoding: 'buffer', maxBuffer: 256 * 1024 * 1024 })).stdout;
      }
    }
    fs.mkdirSync(path.dirname(path.join(stagedRoot, target)), { recursive: true });
    fs.writeFileSync(path.join(stagedRoot, target), data);
    set.allFiles.push(`/lib/modules/${release}/${target}`);
    if (atBoot.has(ko)) set.files.push(`/lib/modules/${release}/${target}`);
  }
  for (const f of ['modules.order', 'modules.builtin']) {
    if (fs.existsSync(path.join(kmods, f))) fs.copyFileSync(path.join(kmods, f), path.join(stagedRoot, f));
  }
  await run('depmod', ['-b', stage, release]);
  return set;
}

/** The bundle inputs (paths relative to the package root) that Mage must not carry. */
export function forbiddenInputs(inputs: string[]): string[] {
  return inputs.filter((i) => FORBIDDEN_IN_BUNDLE.some((re) => re.test(i.replace(/\\/g, '/'))));
}

/** Mage bundled by esbuild into one ESM file; fails when anything server-side or native got in. */
export async function bundleMage(root: string): Promise<{ code: Uint8Array; inputs: string[]; esbuild: string }> {
  const esbuild = await import('esbuild');
  const fromSource = fs.existsSync(path.join(root, 'mage/build/entry.ts'));
  const resolveDir = fromSource ? path.join(root, 'mage/build') : path.join(root, 'dist/mage/build');
  if (!fs.existsSync(path.join(resolveDir, fromSource ? 'entry.ts' : 'entry.js'))) {
    throw new MageBuildError(`neither mage/build/entry.ts nor dist/mage/build/entry.js exists under ${root}`, 'run npm run build');
  }
  const result = await esbuild.build({
    stdin: {
      contents: `import { mageMain } from './entry.${fromSource ? 'ts' : 'js'}';\nprocess.exitCode = await mageMain(process.argv.slice(2));\n`,
      resolveDir,
      sourcefile: 'mage-main.ts',
      loader: 'ts',
    },
    absWorkingDir: root,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    write: false,
    metafile: true,
    legalComments: 'none',
    logLevel: 'silent',
    // CommonJS dependencies (ajv) call require(); give the ESM bundle one.
    banner: { js: "import { createRequire as __mageCreateRequire } from 'node:module';\nconst require = __mageCreateRequire(import.meta.url);" },
  });
  const inputs = Object.keys(result.metafile.inputs).sort();
  const forbidden = forbiddenInputs(inputs);
  if (forbidden.length > 0) {
    throw new MageBuildError(
      `the Mage bundle pulls in server-side or native code: ${forbidden.slice(0, 8).join(', ')}${forbidden.length > 8 ? ', …' : ''}`,
      'Mage must import only mage/, schemas/ and p2p/: find the import that reaches these files and cut it',
    );
  }
  return { code: result.outputFiles[0]!.contents, inputs, esbuild: esbuild.version };
}

/** Host packages owning the given paths (best effort; /usr-merged hosts list some under /bin, /sbin). */
async function owners(paths: string[]): Promise<Map<string, { package: string; version?: string }>> {
  const variants = new Map<string, string[]>();
  const add = (variant: string, p: string) => variants.set(variant, [...(variants.get(variant) ?? []), p]);
  for (const p of paths) {
    const real = fs.realpathSync(p);
    for (const q of new Set([p, real])) {
      add(q, p);
      if (/^\/usr\/s?bin\//.test(q)) add(q.slice(4), p);
    }
  }
  const r = await run('dpkg', ['-S', ...variants.keys()], { allowFail: true });
  const owner = new Map<string, { package: string; version?: string }>();
  for (const line of r.stdout.split('\n')) {
    const m = /^([^:\s,]+)(?::\S+)?: (\/\S+)$/.exec(line);
    for (const p of (m && variants.get(m[2]!)) || []) if (!owner.has(p)) owner.set(p, { package: m![1]! });
  }
  const pkgs = [...new Set([...owner.values()].map((o) => o.package))];
  if (pkgs.length > 0) {
    const q = await run('dpkg-query', ['-W', '-f', '${Package} ${Version}\n', ...pkgs], { allowFail: true });
    const versions = new Map(q.stdout.split('\n').filter(Boolean).map((l) => l.split(' ') as [string, string]));
    for (const o of owner.values()) {
      const v = versions.get(o.package);
      if (v) o.version = v;
    }
  }
  return owner;
}

function compress(input: string, output: string, level: number): Promise<void> {
  return new Promise((resolve, reject) => {
    // zstd's multi-threaded output does not depend on the number of threads: -T0 stays reproducible.
    const z = spawn('zstd', [`-${level}`, '-T0', '-q', '-f', input, '-o', output], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    z.stderr.on('data', (d: Buffer) => (err += d));
    z.on('error', (e) => reject((e as NodeJS.ErrnoException).code === 'ENOENT' ? new MageBuildError('zstd is not installed', 'apt-get install zstd') : e));
    z.on('exit', (code) => (code === 0 ? resolve() : reject(new MageBuildError(`zstd failed: ${err.trim()}`, 'check the free space of the output folder'))));
  });
}

const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`;

/** Build DIR/vmlinuz, DIR/initrd and DIR/manifest.json. */
export async function buildMageImage(opts: BuildOptions): Promise<MageManifest> {
  const log = opts.log ?? (() => {});
  const started = Date.now();
  const root = packageRoot();
  const epoch = opts.sourceDateEpoch ?? (process.env.SOURCE_DATE_EPOCH ? Number(process.env.SOURCE_DATE_EPOCH) : 0);
  if (!Number.isInteger(epoch) || epoch < 0) throw new MageBuildError(`SOURCE_DATE_EPOCH=${process.env.SOURCE_DATE_EPOCH} is not a number of seconds`, 'unset it, or set it to e.g. the commit time: git log -1 --format=%ct');
  const level = opts.zstdLevel ?? (process.env.DRAGONFLY_MAGE_ZSTD_LEVEL ? Number(process.env.DRAGONFLY_MAGE_ZSTD_LEVEL) : ZSTD_LEVEL);
  if (!Number.isInteger(level) || level < 1 || level > 19) throw new MageBuildError(`zstd level ${process.env.DRAGONFLY_MAGE_ZSTD_LEVEL ?? level} is not 1–19`, `unset DRAGONFLY_MAGE_ZSTD_LEVEL (default ${ZSTD_LEVEL}), or set it to 1–19`);
  for (const tool of ['apt-get', 'apt-cache', 'dpkg-deb', 'depmod', 'modprobe', 'ldd', 'zstd']) {
    if (!which(tool)) throw new MageBuildError(`${tool} is not installed`, `the build needs apt, dpkg, kmod, libc-bin and zstd: apt-get install kmod zstd`);
  }
  const arch = (await run('dpkg', ['--print-architecture'])).stdout.trim();
  const cache = opts.debCache ?? process.env.DRAGONFLY_DEB_CACHE ?? DEFAULT_DEB_CACHE;
  const nodeBin = path.resolve(opts.node ?? process.execPath);
  if (!fs.existsSync(nodeBin)) throw new MageBuildError(`--node ${nodeBin} does not exist`, 'give the path of a node binary (default: the node running dragonfly)');
  const nodeVersion = (await run(nodeBin, ['--version'])).stdout.trim();
  if (Number(/^v(\d+)\./.exec(nodeVersion)?.[1] ?? 0) < 20) throw new MageBuildError(`${nodeBin} is node ${nodeVersion || '(unknown)'}; Mage needs node 20 or newer`, 'pass --node PATH of a node 20+ binary');
  const out = path.resolve(opts.out);
  fs.mkdirSync(out, { recursive: true });
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dragonfly-mage-build-'));
  try {
    // 1. Debian packages.
    const kernelPackage = opts.kernelPackage ?? (await defaultKernelPackage(arch));
    if (!/^linux-image-[a-z0-9.+-]+$/.test(kernelPackage)) throw new MageBuildError(`--kernel-package ${kernelPackage} is not a linux-image-… package name`, 'e.g. linux-image-amd64 or linux-image-cloud-amd64 (or a versioned linux-image-6.1.0-…-amd64)');
    let kdeb = await fetchDeb(kernelPackage, cache, log);
    // A meta package (linux-image-amd64) holds no kernel: follow it to the versioned one.
    if (!(await run('dpkg-deb', ['-c', kdeb.file])).stdout.includes('/boot/vmlinuz-')) {
      const dep = (await run('dpkg-deb', ['-f', kdeb.file, 'Depends'], { allowFail: true })).stdout.trim();
      const next = dep?.split(/[,|]/).map((s) => s.trim().split(' ')[0]!).find((s) => s.startsWith('linux-image-'));
      if (!next) throw new MageBuildError(`${kernelPackage} holds no /boot/vmlinuz and depends on no linux-image package`, 'name a Debian kernel package with --kernel-package');
      log(`${kernelPackage} is a meta package for ${next}`);
      kdeb = await fetchDeb(next, cache, log);
    }
    const bdeb = await fetchDeb('busybox-static', cache, log);

    // 2. Kernel and modules.
    log(`extracting ${path.basename(kdeb.file)}`);
    const kroot = path.join(work, 'kernel');
    fs.mkdirSync(kroot);
    await run('dpkg-deb', ['-x', kdeb.file, kroot]);
    const vmlinuzName = fs.readdirSync(path.join(kroot, 'boot')).find((f) => f.startsWith('vmlinuz-'));
    if (!vmlinuzName) throw new MageBuildError(`${kdeb.package} has no /boot/vmlinuz-*`, 'name a Debian kernel image package with --kernel-package');
    const release = vmlinuzName.slice('vmlinuz-'.length);
    // Newer Debian kernels ship /usr/lib/modules only; modprobe -d and depmod -b look under lib/modules.
    if (!fs.existsSync(path.join(kroot, 'lib/modules', release)) && fs.existsSync(path.join(kroot, 'usr/lib/modules', release))) {
      fs.mkdirSync(path.join(kroot, 'lib'), { recursive: true });
      fs.symlinkSync(path.join(kroot, 'usr/lib/modules'), path.join(kroot, 'lib/modules'));
    }
    await run('depmod', ['-b', kroot, release]); // the .deb ships no modules.dep: its postinst makes it
    log(`resolving kernel modules of ${release} (modprobe -D)`);
    const stage = path.join(work, 'modules');
    const modules = await stageModules(kroot, release, stage);
    log(`modules: ${modules.files.length} loaded at boot for ${modules.loaded.length} drivers, ${modules.allFiles.length - modules.files.length} more on demand (${modules.onDemand.join(' ') || '-'}); built in: ${modules.builtin.join(' ') || '-'}; not in this kernel: ${modules.missing.join(' ') || '-'}`);

    const tree = new Tree();
    for (const d of ['dev', 'proc', 'sys', 'run', 'mnt', 'root', 'etc/mage', 'usr/bin', 'usr/sbin', 'usr/lib', 'usr/lib64', 'var']) tree.dir(d);
    tree.dir('tmp', 0o1777);
    tree.dir('var/tmp', 0o1777);
    for (const [link, target] of [['bin', 'usr/bin'], ['sbin', 'usr/sbin'], ['lib', 'usr/lib'], ['lib64', 'usr/lib64']] as const) tree.symlink(link, target);
    tree.entries.set('dev/console', { path: 'dev/console', type: 'char', mode: 0o600, major: 5, minor: 1 });
    tree.entries.set('dev/null', { path: 'dev/null', type: 'char', mode: 0o666, major: 1, minor: 3 });
    const stagedModules = path.join(stage, 'usr/lib/modules', release);
    for (const f of walkFiles(stagedModules)) tree.file(`usr/lib/modules/${release}/${f}`, fs.readFileSync(path.join(stagedModules, f)));
    tree.file('etc/mage/modules', modules.files.join('\n') + '\n');

    // 3. Programs: node, the actions' tools, busybox for everything else.
    const libraries = new Set<string>();
    let nodeData = fs.readFileSync(nodeBin);
    let stripped = false;
    if (which('strip')) {
      const tmp = path.join(work, 'node');
      fs.writeFileSync(tmp, nodeData, { mode: 0o755 });
      const r = await run('strip', ['--strip-all', tmp], { allowFail: true });
      if (r.code === 0) {
        nodeData = fs.readFileSync(tmp);
        stripped = true;
      }
    }
    tree.file('usr/bin/node', nodeData, 0o755);
    await addWithLibraries(tree, nodeBin, libraries);
    log(`node ${nodeVersion}: ${mb(nodeData.length)}${stripped ? ' (stripped)' : ''}`);

    const toolPaths: { name: string; host: string }[] = [];
    const missingTools: string[] = [];
    for (const name of MAGE_TOOLS) {
      const host = which(name);
      if (!host) {
        missingTools.push(name);
        continue;
      }
      toolPaths.push({ name, host });
      const real = fs.realpathSync(host);
      const realDest = tree.hostFile(real);
      const dest = mergedPath(host);
      if (dest !== realDest) {
        const rel = path.posix.relative(path.posix.dirname(dest), realDest);
        tree.symlink(dest, rel);
      }
      await addWithLibraries(tree, real, libraries);
    }
    if (missingTools.length > 0) log(`warning: not on this host, so not in the image: ${missingTools.join(' ')} (the actions that run them will fail; apt-get install fdisk dosfstools e2fsprogs mtools kexec-tools zstd xz-utils bzip2)`);
    const own = await owners(toolPaths.map((t) => t.host));
    for (const f of ['/etc/mke2fs.conf']) if (fs.existsSync(f)) tree.file(f.slice(1), fs.readFileSync(f));

    const bbroot = path.join(work, 'busybox');
    await run('dpkg-deb', ['-x', bdeb.file, bbroot]);
    const bbHost = ['usr/bin/busybox', 'bin/busybox'].map((p) => path.join(bbroot, p)).find((p) => fs.existsSync(p));
    if (!bbHost) throw new MageBuildError('busybox-static has no bin/busybox', 'report this as a bug');
    tree.file('usr/bin/busybox', fs.readFileSync(bbHost), 0o755);
    const applets = (await run(bbHost, ['--list'])).stdout.split('\n').filter((a) => /^[a-z0-9._[-]+$/.test(a) && a !== 'busybox');
    let appletCount = 0;
    for (const a of applets) {
      // The host's tools win (GNU dd, util-linux mount); busybox stands in for those this host lacks.
      if (tree.has(`usr/bin/${a}`) || tree.has(`usr/sbin/${a}`)) continue;
      tree.symlink(`usr/bin/${a}`, 'busybox');
      appletCount++;
    }
    // The kernel runs /sbin/modprobe to load filesystem drivers on demand (mount -t xfs).
    if (!tree.has('usr/sbin/modprobe')) tree.symlink('usr/sbin/modprobe', '../bin/busybox');

    // 4. Mage itself, and /init.
    log('bundling Mage with esbuild');
    const bundle = await bundleMage(root);
    tree.file(BUNDLE_PATH, bundle.code);
    tree.file('usr/bin/mage', `#!/bin/sh\n# Mage, the Dragonfly agent (as /init runs it)\nexec node /${BUNDLE_PATH} "$@"\n`, 0o755);
    const buildDir = path.join(root, 'mage/build');
    tree.file('init', fs.readFileSync(path.join(buildDir, 'init.sh')), 0o755);
    tree.file('etc/mage/udhcpc.sh', fs.readFileSync(path.join(buildDir, 'udhcpc.sh')), 0o755);
    tree.file('etc/mage/release', `Mage (dragonfly ${JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).version}), ${kdeb.package} ${kdeb.version}, node ${nodeVersion}\n`);
    tree.file('etc/passwd', 'root:x:0:0:root:/root:/bin/sh\n');
    tree.file('etc/group', 'root:x:0:\n');
    tree.file('etc/hosts', '127.0.0.1 localhost\n::1 localhost\n');
    tree.file('etc/nsswitch.conf', 'passwd: files\ngroup: files\nhosts: files dns\n');
    tree.symlink('etc/mtab', '../proc/self/mounts');

    // 5. The archive.
    const entries = [...tree.entries.values()];
    const cpioFile = path.join(work, 'initrd.cpio');
    const fd = fs.openSync(cpioFile, 'w');
    const cpioHash = createHash('sha256');
    let cpioBytes = 0;
    try {
      writeNewc(entries, epoch, (chunk) => {
        fs.writeSync(fd, chunk);
        cpioHash.update(chunk);
        cpioBytes += chunk.length;
      });
    } finally {
      fs.closeSync(fd);
    }
    log(`compressing ${entries.length} entries (${mb(cpioBytes)}) with zstd -${level}`);
    const tz = Date.now();
    const initrdTmp = path.join(out, '.initrd.tmp');
    await compress(cpioFile, initrdTmp, level);
    log(`compressed in ${((Date.now() - tz) / 1000).toFixed(1)} s`);
    const vmlinuzData = fs.readFileSync(path.join(kroot, 'boot', vmlinuzName));
    fs.writeFileSync(path.join(out, '.vmlinuz.tmp'), vmlinuzData);
    fs.renameSync(path.join(out, '.vmlinuz.tmp'), path.join(out, 'vmlinuz'));
    fs.renameSync(initrdTmp, path.join(out, 'initrd'));
    const initrdInfo = { bytes: fs.statSync(path.join(out, 'initrd')).size, sha256: fileSha256(path.join(out, 'initrd')) };

    const manifest: MageManifest = {
      format: 1,
      arch,
      kernel: { package: kdeb.package, version: kdeb.version, release, debSha256: kdeb.sha256 },
      busybox: { package: bdeb.package, version: bdeb.version, applets: appletCount },
      node: { version: nodeVersion, source: nodeBin, stripped, bytes: nodeData.length },
      bundle: { path: `/${BUNDLE_PATH}`, bytes: bundle.code.length, sha256: sha256(bundle.code), esbuild: bundle.esbuild, inputs: bundle.inputs.length },
      vmlinuz: { bytes: vmlinuzData.length, sha256: sha256(vmlinuzData) },
      initrd: { ...initrdInfo, compression: `zstd -${level}`, uncompressedBytes: cpioBytes, uncompressedSha256: cpioHash.digest('hex'), entries: entries.length + 1 },
      modules,
      tools: toolPaths.map((t) => ({ name: t.name, path: t.host, ...(own.get(t.host) ?? {}) })),
      missingTools,
      libraries: [...libraries].sort().map((l) => `/${l}`),
      sourceDateEpoch: epoch,
    };
    fs.writeFileSync(path.join(out, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
    log(`done in ${((Date.now() - started) / 1000).toFixed(1)} s: vmlinuz ${mb(manifest.vmlinuz.bytes)}, initrd ${mb(manifest.initrd.bytes)} (${mb(cpioBytes)} unpacked)`);
    return manifest;
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}
