// The programs Mage's actions run, and the shared libraries they and node need, all out of Debian packages
// (apt-get download + dpkg-deb -x, like the kernel): a build on a fresh host holds the same tools as on a
// workstation. Libraries: the packages come from the tools' Depends through Section: libs (what
// dpkg-shlibdeps recorded), the files from each program's own DT_NEEDED (elf.ts), so only what is loaded
// ships, and a library no package holds is an error, never a program that cannot start.
import fs from 'node:fs';
import path from 'node:path';
import { fetchDebs, withLibraryPackages, type DebInfo } from './debs.js';
import { elfNeeds } from './elf.js';
import { MageBuildError, run } from './exec.js';
import { usrPath, type Tree } from './tree.js';

export interface ToolPackage {
  /** The Debian package. */
  package: string;
  /** Programs it must hold (in /usr/sbin, /usr/bin, /sbin or /bin). */
  tools: string[];
  /** Other files the image takes from it (absolute paths). */
  files?: string[];
}

/** Programs Mage's actions run, by the Debian package that holds them. */
export const MAGE_TOOL_PACKAGES: readonly ToolPackage[] = [
  // image2disk's decoders pipe into `dd iflag=count_bytes oflag=seek_bytes` (busybox dd lacks both)
  { package: 'coreutils', tools: ['dd'] },
  { package: 'fdisk', tools: ['sfdisk'] },
  { package: 'util-linux', tools: ['blkid', 'blockdev', 'partx', 'mkswap'] },
  { package: 'mount', tools: ['mount', 'umount'] },
  { package: 'dosfstools', tools: ['mkfs.vfat'] },
  { package: 'e2fsprogs', tools: ['mkfs.ext4', 'mke2fs', 'debugfs'], files: ['/etc/mke2fs.conf'] },
  { package: 'mtools', tools: ['mtools', 'mcopy', 'mmd', 'mtype', 'mdir'] },
  { package: 'kexec-tools', tools: ['kexec'] },
  // image decoders
  { package: 'zstd', tools: ['zstd'] },
  { package: 'xz-utils', tools: ['xz'] },
  { package: 'bzip2', tools: ['bzip2'] },
];

/** The libraries a node binary from nodejs.org or Debian links (libc, libm, libstdc++, libgcc_s, the loader). */
export const NODE_LIBRARY_PACKAGES = ['libc6', 'libgcc-s1', 'libstdc++6'] as const;

const PROGRAM_DIRS = ['/usr/sbin', '/usr/bin', '/sbin', '/bin'];

export interface StagedPrograms {
  tools: { name: string; path: string; package: string; version: string }[];
  libraries: { path: string; package: string }[];
  /** Every .deb the tools and libraries came from. */
  packages: DebInfo[];
}

/** The other spelling of a path on a /usr-merged system: /lib/x ↔ /usr/lib/x. */
function usrMergeTwin(p: string): string | undefined {
  const m = /^\/usr(\/(?:lib64|lib|bin|sbin)\/.*)$/.exec(p);
  if (m) return m[1];
  return /^\/(?:lib64|lib|bin|sbin)\//.test(p) ? `/usr${p}` : undefined;
}

/** Follow `abs` inside an extracted package (links are read as the package meant them): the real file and the links on the way. */
export function resolveInRoot(root: string, abs: string): { real: string; links: string[] } | undefined {
  let p = path.posix.normalize(abs);
  const links: string[] = [];
  for (let hops = 0; hops < 40; hops++) {
    let st = lstat(path.join(root, p));
    if (!st) {
      const twin = usrMergeTwin(p);
      st = twin ? lstat(path.join(root, twin)) : undefined;
      if (!st) return undefined;
      p = twin!;
    }
    if (st.isSymbolicLink()) {
      links.push(p);
      const target = fs.readlinkSync(path.join(root, p));
      p = target.startsWith('/') ? path.posix.normalize(target) : path.posix.join(path.posix.dirname(p), target);
      continue;
    }
    return st.isFile() ? { real: p, links } : undefined;
  }
  return undefined;
}

function lstat(p: string): fs.Stats | undefined {
  try {
    return fs.lstatSync(p);
  } catch {
    return undefined;
  }
}

/** Put `abs` of an extracted package into the tree at its /usr path, with the links that lead to it; the real file's data. */
function place(tree: Tree, root: string, abs: string): { data: Buffer; path: string } | undefined {
  const r = resolveInRoot(root, abs);
  if (!r) return undefined;
  const dest = usrPath(r.real);
  const file = path.join(root, r.real);
  const data = fs.readFileSync(file);
  if (!tree.has(dest)) tree.file(dest, data, fs.statSync(file).mode & 0o777);
  for (const l of r.links) tree.link(usrPath(l), dest);
  return { data, path: dest };
}

/** Where each soname is, over the library packages' folders (packages by name, then a fixed folder order): first wins. */
function libraryIndex(roots: { package: string; root: string }[]): Map<string, { package: string; root: string; path: string }> {
  const index = new Map<string, { package: string; root: string; path: string }>();
  for (const { package: pkg, root } of roots) {
    const dirs: string[] = [];
    for (const parent of ['/usr/lib', '/lib']) {
      const subs = fs.existsSync(path.join(root, parent)) ? fs.readdirSync(path.join(root, parent)).sort() : [];
      for (const s of subs) if (/-linux-gnu/.test(s)) dirs.push(`${parent}/${s}`);
    }
    dirs.push('/usr/lib64', '/lib64', '/usr/lib', '/lib');
    for (const dir of dirs) {
      let names: string[];
      try {
        names = fs.readdirSync(path.join(root, dir)).sort();
      } catch {
        continue;
      }
      for (const n of names) if (/\.so(\.|$)/.test(n) && !index.has(n)) index.set(n, { package: pkg, root, path: `${dir}/${n}` });
    }
  }
  return index;
}

export interface StageOptions {
  toolPackages: readonly ToolPackage[];
  /** node's data (already stripped) and its path in the image; its libraries come from NODE_LIBRARY_PACKAGES. */
  node?: { data: Buffer; source: string };
  cache: string;
  /** A scratch folder for the extracted packages. */
  work: string;
  log: (line: string) => void;
  signal?: AbortSignal;
}

/** Put the tools, node's and their libraries (and the dynamic loader) into `tree`, all from Debian packages. */
export async function stagePrograms(tree: Tree, opts: StageOptions): Promise<StagedPrograms> {
  const toolPkgs = [...new Set(opts.toolPackages.map((t) => t.package))];
  const candidates = await withLibraryPackages([...toolPkgs, ...(opts.node ? NODE_LIBRARY_PACKAGES : [])]);
  const debs = await fetchDebs([...candidates.values()], opts.cache, opts.log, opts.signal);
  const roots = new Map<string, string>();
  const names = [...debs.keys()].sort();
  // Two at a time: dpkg-deb is one process per package, mostly waiting on xz/zstd.
  for (let i = 0; i < names.length; i += 2) {
    await Promise.all(
      names.slice(i, i + 2).map(async (pkg) => {
        const root = path.join(opts.work, pkg);
        fs.mkdirSync(root, { recursive: true });
        await run('dpkg-deb', ['-x', debs.get(pkg)!.file, root], opts.signal ? { signal: opts.signal } : {});
        roots.set(pkg, root);
      }),
    );
  }
  opts.log(`extracted ${names.length} packages: ${toolPkgs.length} with tools, ${names.length - toolPkgs.length} with the libraries they and node need`);

  const staged: StagedPrograms = { tools: [], libraries: [], packages: names.map((n) => debs.get(n)!) };
  const elves: { who: string; data: Buffer; hint: string }[] = [];
  for (const tp of opts.toolPackages) {
    const deb = debs.get(tp.package)!;
    const root = roots.get(tp.package)!;
    for (const name of tp.tools) {
      const found = PROGRAM_DIRS.map((d) => `${d}/${name}`).find((p) => resolveInRoot(root, p));
      if (!found) {
        throw new MageBuildError(
          `Debian package ${tp.package} ${deb.version} has no ${name} (looked in ${PROGRAM_DIRS.join(', ')}), so Mage's actions could not run it`,
          `name the package that holds ${name} on this distribution (dpkg -S ${name}; packages.debian.org) in MAGE_TOOL_PACKAGES (mage/build/tools.ts)`,
        );
      }
      const placed = place(tree, root, found)!;
      staged.tools.push({ name, path: `/${usrPath(found)}`, package: tp.package, version: deb.version });
      elves.push({ who: `${name} (Debian package ${tp.package})`, data: placed.data, hint: `check the Depends of ${tp.package} (apt-cache show ${tp.package}) and run apt-get update` });
    }
    for (const f of tp.files ?? []) {
      if (!place(tree, root, f)) throw new MageBuildError(`Debian package ${tp.package} ${deb.version} has no ${f}`, `fix the files of ${tp.package} in MAGE_TOOL_PACKAGES (mage/build/tools.ts)`);
    }
  }
  if (opts.node) elves.push({ who: `node (${opts.node.source})`, data: opts.node.data, hint: `pass --node a binary built for this distribution, or add the package that holds the library to NODE_LIBRARY_PACKAGES (mage/build/tools.ts)` });

  // Each program's loader and DT_NEEDED, then the libraries' own, until nothing new is needed.
  const libRoots = names.map((n) => ({ package: n, root: roots.get(n)! }));
  const index = libraryIndex(libRoots);
  const done = new Set<string>();
  while (elves.length > 0) {
    const { who, data, hint } = elves.shift()!;
    let needs;
    try {
      needs = elfNeeds(data);
    } catch (e) {
      throw new MageBuildError(`${who} is not an ELF file the build can read: ${(e as Error).message}`, hint);
    }
    if (!needs) continue; // a script
    const wanted: { key: string; find: () => { package: string; root: string; path: string } | undefined }[] = [];
    if (needs.interp) {
      const interp = needs.interp;
      wanted.push({ key: interp, find: () => libRoots.map((r) => ({ ...r, path: interp })).find((r) => resolveInRoot(r.root, interp)) });
    }
    for (const soname of needs.needed) wanted.push({ key: soname, find: () => index.get(soname) });
    for (const w of wanted) {
      if (done.has(w.key)) continue;
      done.add(w.key);
      const at = w.find();
      if (!at) {
        throw new MageBuildError(`${who} needs ${w.key}, which none of the Debian packages ${libRoots.map((r) => r.package).join(' ')} holds`, hint);
      }
      const placed = place(tree, at.root, at.path)!;
      staged.libraries.push({ path: `/${usrPath(at.path)}`, package: at.package });
      elves.push({ who: `${w.key} (Debian package ${at.package})`, data: placed.data, hint: `check the Depends of ${at.package}` });
    }
  }
  staged.libraries.sort((a, b) => (a.path < b.path ? -1 : 1));
  return staged;
}
