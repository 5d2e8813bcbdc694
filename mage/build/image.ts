// `dragonfly mage build`: Mage's boot environment from Debian packages and npm only.
//   vmlinuz     the kernel of a Debian linux-image package (apt-get download + dpkg-deb -x)
//   initrd      a zstd-compressed newc cpio: busybox-static, node, the disk tools Mage's actions run and
//               every shared library they and node load (Debian packages too: tools.ts), NIC and disk
//               drivers with their dependencies, /init, and Mage bundled by esbuild into one file
//   manifest.json  what went in: package versions, module and tool lists, sizes and sha256s, the inputs
//               that decide whether a build can be reused (mageInputs)
// Reproducible: one mtime (SOURCE_DATE_EPOCH, else 0) on every entry, entries sorted, inode numbers
// counted, zstd at a fixed level (zstd frames carry no timestamp): the same inputs give the same bytes.
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { writeNewc } from './cpio.js';
import { aptCandidates, fetchDeb, type DebInfo } from './debs.js';
import { fileSha256, MageBuildError, run, which } from './exec.js';
import { MAGE_TOOL_PACKAGES, stagePrograms, type ToolPackage } from './tools.js';
import { Tree } from './tree.js';

export { MageBuildError } from './exec.js';
export { MAGE_TOOL_PACKAGES } from './tools.js';

const execFileP = promisify(execFile);

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

/**
 * zstd level of the initrd ($DRAGONFLY_MAGE_ZSTD_LEVEL overrides). Measured on the 130 MB cpio, 2 cores, -T0:
 * 9 gives 40.3 MB in 1.6 s; 19 gives 35.3 MB in 43 s. 5 MB more to send is 0.04 s per machine at 1 Gb/s, and
 * decompressing at boot costs the same at every level (docs/mage-image.md has the whole table).
 */
export const ZSTD_LEVEL = 9;
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
  /** The tools and the packages that hold them (default MAGE_TOOL_PACKAGES). */
  toolPackages?: readonly ToolPackage[];
  log?: (line: string) => void;
  /** Called as each step starts (step counts from 0), and with step === total when done. */
  progress?: (step: number, total: number, label: string) => void;
  /** Stops the build (its child processes too) with DF_ERR_MAGE_BUILD "cancelled". */
  signal?: AbortSignal;
  /** What resolveMageInputs returned for these options, when the caller already asked (saves ~2 s). */
  resolved?: ResolvedInputs;
}

export interface FileInfo {
  bytes: number;
  sha256: string;
}

/** What decides the image's bytes that can change without a new dragonfly: a build is reused only while they match. */
export interface MageInputs {
  dragonfly: string;
  /** sha256 of the Mage bundle (esbuild output of mage/ and schemas/). */
  bundle: string;
  /** sha256 of /init and the udhcpc script. */
  init: string;
  /** The kernel package asked for (linux-image-amd64's dependency by default) and apt's candidate version of it. */
  kernel: { package: string; version: string };
  node: { version: string; sha256: string };
  zstdLevel: number;
  /** The tool packages and tools, as MAGE_TOOL_PACKAGES lists them. */
  tools: string;
  sourceDateEpoch: number;
}

export interface MageManifest {
  format: 2;
  arch: string;
  inputs: MageInputs;
  kernel: { package: string; version: string; release: string; debSha256: string };
  busybox: { package: string; version: string; applets: number };
  node: { version: string; source: string; stripped: boolean; bytes: number };
  bundle: { path: string; bytes: number; sha256: string; esbuild: string; inputs: number };
  vmlinuz: FileInfo;
  initrd: FileInfo & { compression: string; uncompressedBytes: number; uncompressedSha256: string; entries: number };
  modules: { loaded: string[]; onDemand: string[]; builtin: string[]; missing: string[]; files: string[]; allFiles: string[] };
  /** Each tool, where it is in the image, and the Debian package it came from. */
  tools: { name: string; path: string; package: string; version: string }[];
  /** Shared libraries in the image (the dynamic loader too) and their Debian packages. */
  libraries: { path: string; package: string }[];
  /** Every .deb the image was made from. */
  packages: { package: string; version: string; sha256: string }[];
  sourceDateEpoch: number;
}

const sha256 = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');

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


function compress(input: string, output: string, level: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    // zstd's multi-threaded output does not depend on the number of threads: -T0 stays reproducible.
    const z = spawn('zstd', [`-${level}`, '-T0', '-q', '-f', input, '-o', output], { stdio: ['ignore', 'ignore', 'pipe'], ...(signal ? { signal } : {}) });
    let err = '';
    z.stderr.on('data', (d: Buffer) => (err += d));
    z.on('error', (e) => {
      if (e.name === 'AbortError') reject(new MageBuildError('the build was cancelled', 'start it again'));
      else reject((e as NodeJS.ErrnoException).code === 'ENOENT' ? new MageBuildError('zstd is not installed', 'apt-get install zstd') : e);
    });
    z.on('exit', (code) => (code === 0 ? resolve() : reject(new MageBuildError(`zstd failed: ${err.trim()}`, 'check the free space of the output folder'))));
  });
}

const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`;
const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

function zstdLevelOf(opts: Pick<BuildOptions, 'zstdLevel'>): number {
  const level = opts.zstdLevel ?? (process.env.DRAGONFLY_MAGE_ZSTD_LEVEL ? Number(process.env.DRAGONFLY_MAGE_ZSTD_LEVEL) : ZSTD_LEVEL);
  if (!Number.isInteger(level) || level < 1 || level > 19) throw new MageBuildError(`zstd level ${process.env.DRAGONFLY_MAGE_ZSTD_LEVEL ?? level} is not 1–19`, `unset DRAGONFLY_MAGE_ZSTD_LEVEL (default ${ZSTD_LEVEL}), or set it to 1–19`);
  return level;
}

function epochOf(opts: Pick<BuildOptions, 'sourceDateEpoch'>): number {
  const epoch = opts.sourceDateEpoch ?? (process.env.SOURCE_DATE_EPOCH ? Number(process.env.SOURCE_DATE_EPOCH) : 0);
  if (!Number.isInteger(epoch) || epoch < 0) throw new MageBuildError(`SOURCE_DATE_EPOCH=${process.env.SOURCE_DATE_EPOCH} is not a number of seconds`, 'unset it, or set it to e.g. the commit time: git log -1 --format=%ct');
  return epoch;
}

/** What resolveMageInputs learnt: the inputs, and what the build goes on with. */
export interface ResolvedInputs {
  inputs: MageInputs;
  root: string;
  arch: string;
  nodeBin: string;
  bundle: Awaited<ReturnType<typeof bundleMage>>;
}


/** Everything the build's bytes depend on that is cheap to learn (~2 s: esbuild, apt-cache, node's sha256). */
export async function resolveMageInputs(opts: Omit<BuildOptions, 'out' | 'resolved'> = {}): Promise<ResolvedInputs> {
  const root = packageRoot();
  const epoch = epochOf(opts);
  const level = zstdLevelOf(opts);
  for (const tool of ['apt-get', 'apt-cache', 'dpkg-deb', 'depmod', 'modprobe', 'zstd']) {
    if (!which(tool)) throw new MageBuildError(`${tool} is not installed`, `the build needs apt, dpkg, kmod and zstd: apt-get install kmod zstd`);
  }
  const arch = (await run('dpkg', ['--print-architecture'])).stdout.trim();
  const nodeBin = path.resolve(opts.node ?? process.execPath);
  if (!fs.existsSync(nodeBin)) throw new MageBuildError(`--node ${nodeBin} does not exist`, 'give the path of a node binary (default: the node running dragonfly)');
  const nodeVersion = (await run(nodeBin, ['--version'])).stdout.trim();
  if (Number(/^v(\d+)\./.exec(nodeVersion)?.[1] ?? 0) < 20) throw new MageBuildError(`${nodeBin} is node ${nodeVersion || '(unknown)'}; Mage needs node 20 or newer`, 'pass --node PATH of a node 20+ binary');
  const kernelPackage = opts.kernelPackage ?? (await defaultKernelPackage(arch));
  if (!/^linux-image-[a-z0-9.+-]+$/.test(kernelPackage)) throw new MageBuildError(`--kernel-package ${kernelPackage} is not a linux-image-… package name`, 'e.g. linux-image-amd64 or linux-image-cloud-amd64 (or a versioned linux-image-6.1.0-…-amd64)');
  const kernel = (await aptCandidates([kernelPackage])).get(kernelPackage);
  if (!kernel) throw new MageBuildError(`Debian package ${kernelPackage} is not known to apt`, 'check the name (apt-cache search linux-image) and run apt-get update');
  const bundle = await bundleMage(root);
  const buildDir = path.join(root, 'mage/build');
  const init = createHash('sha256').update(fs.readFileSync(path.join(buildDir, 'init.sh'))).update(fs.readFileSync(path.join(buildDir, 'udhcpc.sh'))).digest('hex');
  const toolPackages = opts.toolPackages ?? MAGE_TOOL_PACKAGES;
  return {
    root,
    arch,
    nodeBin,
    bundle,
    inputs: {
      dragonfly: (JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string }).version,
      bundle: sha256(bundle.code),
      init,
      kernel: { package: kernelPackage, version: kernel.version },
      node: { version: nodeVersion, sha256: fileSha256(nodeBin) },
      zstdLevel: level,
      tools: toolPackages.map((t) => `${t.package}:${t.tools.join(',')}${t.files ? `:${t.files.join(',')}` : ''}`).join(' '),
      sourceDateEpoch: epoch,
    },
  };
}

const STEPS = ['resolving inputs', 'kernel and busybox packages', 'kernel modules', 'tools and libraries', 'node, busybox and Mage', 'writing the archive', 'compressing'] as const;

/** Build DIR/vmlinuz, DIR/initrd and DIR/manifest.json. */
export async function buildMageImage(opts: BuildOptions): Promise<MageManifest> {
  const log = opts.log ?? (() => {});
  const signal = opts.signal;
  const sig = signal ? { signal } : {};
  let stepStarted = Date.now();
  const step = (i: number) => {
    if (signal?.aborted) throw new MageBuildError('the build was cancelled', 'start it again');
    opts.progress?.(i, STEPS.length, STEPS[i] ?? 'done');
    stepStarted = Date.now();
  };
  const started = Date.now();
  step(0);
  const { inputs, root, arch, nodeBin, bundle } = opts.resolved ?? (await resolveMageInputs(opts));
  const level = inputs.zstdLevel;
  const epoch = inputs.sourceDateEpoch;
  const cache = opts.debCache ?? process.env.DRAGONFLY_DEB_CACHE ?? DEFAULT_DEB_CACHE;
  const out = path.resolve(opts.out);
  fs.mkdirSync(out, { recursive: true });
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dragonfly-mage-build-'));
  try {
    // 1. Debian packages: the kernel (a meta package such as linux-image-amd64 is followed) and busybox.
    step(1);
    const kernelPackage = inputs.kernel.package;
    let kdeb = await fetchDeb(kernelPackage, cache, log, signal);
    if (!(await run('dpkg-deb', ['-c', kdeb.file])).stdout.includes('/boot/vmlinuz-')) {
      const dep = (await run('dpkg-deb', ['-f', kdeb.file, 'Depends'], { allowFail: true })).stdout.trim();
      const next = dep?.split(/[,|]/).map((s) => s.trim().split(' ')[0]!).find((s) => s.startsWith('linux-image-'));
      if (!next) throw new MageBuildError(`${kernelPackage} holds no /boot/vmlinuz and depends on no linux-image package`, 'name a Debian kernel package with --kernel-package');
      log(`${kernelPackage} is a meta package for ${next}`);
      kdeb = await fetchDeb(next, cache, log, signal);
    }
    const bdeb = await fetchDeb('busybox-static', cache, log, signal);
    log(`kernel ${kdeb.package} ${kdeb.version}, busybox-static ${bdeb.version} (${seconds(Date.now() - stepStarted)})`);

    // 2. Kernel and modules.
    step(2);
    const kroot = path.join(work, 'kernel');
    fs.mkdirSync(kroot);
    await run('dpkg-deb', ['-x', kdeb.file, kroot], sig);
    const vmlinuzName = fs.readdirSync(path.join(kroot, 'boot')).find((f) => f.startsWith('vmlinuz-'));
    if (!vmlinuzName) throw new MageBuildError(`${kdeb.package} has no /boot/vmlinuz-*`, 'name a Debian kernel image package with --kernel-package');
    const release = vmlinuzName.slice('vmlinuz-'.length);
    // Newer Debian kernels ship /usr/lib/modules only; modprobe -d and depmod -b look under lib/modules.
    if (!fs.existsSync(path.join(kroot, 'lib/modules', release)) && fs.existsSync(path.join(kroot, 'usr/lib/modules', release))) {
      fs.mkdirSync(path.join(kroot, 'lib'), { recursive: true });
      fs.symlinkSync(path.join(kroot, 'usr/lib/modules'), path.join(kroot, 'lib/modules'));
    }
    await run('depmod', ['-b', kroot, release], sig); // the .deb ships no modules.dep: its postinst makes it
    const stage = path.join(work, 'modules');
    const modules = await stageModules(kroot, release, stage);
    log(`modules: ${modules.files.length} loaded at boot for ${modules.loaded.length} drivers, ${modules.allFiles.length - modules.files.length} more on demand (${modules.onDemand.join(' ') || '-'}); built in: ${modules.builtin.join(' ') || '-'}; not in this kernel: ${modules.missing.join(' ') || '-'} (${seconds(Date.now() - stepStarted)})`);

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

    // 3. The actions' tools, and every library they and node load, from Debian packages.
    step(3);
    let nodeData = fs.readFileSync(nodeBin);
    let stripped = false;
    if (which('strip')) {
      const tmp = path.join(work, 'node');
      fs.writeFileSync(tmp, nodeData, { mode: 0o755 });
      const r = await run('strip', ['--strip-all', tmp], { allowFail: true, ...sig });
      if (r.code === 0) {
        nodeData = fs.readFileSync(tmp);
        stripped = true;
      }
    }
    tree.file('usr/bin/node', nodeData, 0o755);
    const programs = await stagePrograms(tree, {
      toolPackages: opts.toolPackages ?? MAGE_TOOL_PACKAGES,
      node: { data: nodeData, source: nodeBin },
      cache,
      work: path.join(work, 'debs'),
      log,
      ...sig,
    });
    log(`tools: ${programs.tools.length} from ${new Set(programs.tools.map((t) => t.package)).size} packages, ${programs.libraries.length} libraries from ${new Set(programs.libraries.map((l) => l.package)).size} (${seconds(Date.now() - stepStarted)})`);

    // 4. busybox for everything else, node, Mage itself, /init.
    step(4);
    const bbroot = path.join(work, 'busybox');
    await run('dpkg-deb', ['-x', bdeb.file, bbroot], sig);
    const bbHost = ['usr/bin/busybox', 'bin/busybox'].map((p) => path.join(bbroot, p)).find((p) => fs.existsSync(p));
    if (!bbHost) throw new MageBuildError('busybox-static has no bin/busybox', 'report this as a bug');
    tree.file('usr/bin/busybox', fs.readFileSync(bbHost), 0o755);
    const applets = (await run(bbHost, ['--list'])).stdout.split('\n').filter((a) => /^[a-z0-9._[-]+$/.test(a) && a !== 'busybox');
    let appletCount = 0;
    for (const a of applets) {
      // The packaged tools win (GNU dd, util-linux mount); busybox stands in for everything else.
      if (tree.has(`usr/bin/${a}`) || tree.has(`usr/sbin/${a}`)) continue;
      tree.symlink(`usr/bin/${a}`, 'busybox');
      appletCount++;
    }
    // The kernel runs /sbin/modprobe to load filesystem drivers on demand (mount -t xfs).
    if (!tree.has('usr/sbin/modprobe')) tree.symlink('usr/sbin/modprobe', '../bin/busybox');
    log(`node ${inputs.node.version}: ${mb(nodeData.length)}${stripped ? ' (stripped)' : ''}; busybox ${appletCount} applets; Mage bundle ${(bundle.code.length / 1e3).toFixed(0)} kB`);
    tree.file(BUNDLE_PATH, bundle.code);
    tree.file('usr/bin/mage', `#!/bin/sh\n# Mage, the Dragonfly agent (as /init runs it)\nexec node /${BUNDLE_PATH} "$@"\n`, 0o755);
    const buildDir = path.join(root, 'mage/build');
    tree.file('init', fs.readFileSync(path.join(buildDir, 'init.sh')), 0o755);
    tree.file('etc/mage/udhcpc.sh', fs.readFileSync(path.join(buildDir, 'udhcpc.sh')), 0o755);
    tree.file('etc/mage/release', `Mage (dragonfly ${inputs.dragonfly}), ${kdeb.package} ${kdeb.version}, node ${inputs.node.version}\n`);
    tree.file('etc/passwd', 'root:x:0:0:root:/root:/bin/sh\n');
    tree.file('etc/group', 'root:x:0:\n');
    tree.file('etc/hosts', '127.0.0.1 localhost\n::1 localhost\n');
    tree.file('etc/nsswitch.conf', 'passwd: files\ngroup: files\nhosts: files dns\n');
    tree.symlink('etc/mtab', '../proc/self/mounts');

    // 5. The archive.
    step(5);
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
    step(6);
    log(`compressing ${entries.length} entries (${mb(cpioBytes)}) with zstd -${level}`);
    const initrdTmp = path.join(out, '.initrd.tmp');
    await compress(cpioFile, initrdTmp, level, signal);
    log(`compressed in ${seconds(Date.now() - stepStarted)}`);
    const vmlinuzData = fs.readFileSync(path.join(kroot, 'boot', vmlinuzName));
    fs.writeFileSync(path.join(out, '.vmlinuz.tmp'), vmlinuzData);
    fs.renameSync(path.join(out, '.vmlinuz.tmp'), path.join(out, 'vmlinuz'));
    fs.renameSync(initrdTmp, path.join(out, 'initrd'));
    const initrdInfo = { bytes: fs.statSync(path.join(out, 'initrd')).size, sha256: fileSha256(path.join(out, 'initrd')) };

    const debs: DebInfo[] = [kdeb, bdeb, ...programs.packages];
    const manifest: MageManifest = {
      format: 2,
      arch,
      inputs,
      kernel: { package: kdeb.package, version: kdeb.version, release, debSha256: kdeb.sha256 },
      busybox: { package: bdeb.package, version: bdeb.version, applets: appletCount },
      node: { version: inputs.node.version, source: nodeBin, stripped, bytes: nodeData.length },
      bundle: { path: `/${BUNDLE_PATH}`, bytes: bundle.code.length, sha256: inputs.bundle, esbuild: bundle.esbuild, inputs: bundle.inputs.length },
      vmlinuz: { bytes: vmlinuzData.length, sha256: sha256(vmlinuzData) },
      initrd: { ...initrdInfo, compression: `zstd -${level}`, uncompressedBytes: cpioBytes, uncompressedSha256: cpioHash.digest('hex'), entries: entries.length + 1 },
      modules,
      tools: programs.tools,
      libraries: programs.libraries,
      packages: debs.map((d) => ({ package: d.package, version: d.version, sha256: d.sha256 })),
      sourceDateEpoch: epoch,
    };
    fs.writeFileSync(path.join(out, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
    opts.progress?.(STEPS.length, STEPS.length, 'done');
    log(`done in ${seconds(Date.now() - started)}: vmlinuz ${mb(manifest.vmlinuz.bytes)}, initrd ${mb(manifest.initrd.bytes)} (${mb(cpioBytes)} unpacked)`);
    return manifest;
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}
