// Debian packages for Mage's image: what apt's candidate of each is (apt-cache, no download), the library
// packages a set of packages needs (their Depends through Section: libs), and the .debs themselves,
// downloaded once with apt-get download into a cache and reused while their sha256 matches what apt expects.
import fs from 'node:fs';
import path from 'node:path';
import { fileSha256, MageBuildError, run } from './exec.js';

export interface AptCandidate {
  package: string;
  version: string;
  section: string;
  sha256?: string;
  size?: number;
  /** Depends and Pre-Depends: the first alternative of each, name only (no version, no :any). */
  depends: string[];
}

export interface DebInfo {
  package: string;
  version: string;
  sha256: string;
  file: string;
}

function firstAlternatives(field: string | undefined): string[] {
  if (!field) return [];
  return field
    .split(',')
    .map((group) => group.split('|')[0]!.trim().split(/[\s(]/)[0]!.replace(/:\w+$/, ''))
    .filter(Boolean);
}

/** Parse `apt-cache show` stanzas (continuation lines folded away). */
export function parseAptShow(text: string): Map<string, AptCandidate> {
  const out = new Map<string, AptCandidate>();
  for (const stanza of text.split(/\n\s*\n/)) {
    const fields = new Map<string, string>();
    for (const line of stanza.split('\n')) {
      const m = /^([A-Za-z0-9-]+): ?(.*)$/.exec(line);
      if (m) fields.set(m[1]!, m[2]!);
    }
    const name = fields.get('Package');
    const version = fields.get('Version');
    if (!name || !version || out.has(name)) continue;
    const size = fields.get('Size');
    out.set(name, {
      package: name,
      version,
      section: fields.get('Section') ?? '',
      ...(fields.get('SHA256') ? { sha256: fields.get('SHA256')! } : {}),
      ...(size ? { size: Number(size) } : {}),
      depends: [...firstAlternatives(fields.get('Pre-Depends')), ...firstAlternatives(fields.get('Depends'))],
    });
  }
  return out;
}

/** apt's candidate of each package, in one apt-cache call; packages apt does not know are absent. */
export async function aptCandidates(pkgs: string[]): Promise<Map<string, AptCandidate>> {
  if (pkgs.length === 0) return new Map();
  const r = await run('apt-cache', ['show', '--no-all-versions', ...pkgs], { allowFail: true });
  return parseAptShow(r.stdout);
}

/** The candidate of one package, or DF_ERR_MAGE_BUILD naming it. */
export async function aptCandidate(pkg: string, hint = 'check the name (apt-cache search NAME) and run apt-get update'): Promise<AptCandidate> {
  const c = (await aptCandidates([pkg])).get(pkg);
  if (!c) throw new MageBuildError(`Debian package ${pkg} is not known to apt`, hint);
  return c;
}

const isLibrarySection = (section: string) => /(^|\/)(libs|oldlibs)$/.test(section);

/**
 * `roots` and the library packages they need: Depends/Pre-Depends followed through packages of Section
 * libs (the packages dpkg-shlibdeps names for a program's shared libraries, and what those need in turn).
 * Programs (debconf, logsave…) that a root depends on are not followed: Mage runs the root's programs only.
 * Two apt-cache calls: the recursive dependency names, then every candidate at once.
 */
export async function withLibraryPackages(roots: string[]): Promise<Map<string, AptCandidate>> {
  const deps = await run(
    'apt-cache',
    ['depends', '--recurse', '--no-recommends', '--no-suggests', '--no-conflicts', '--no-breaks', '--no-replaces', '--no-enhances', ...roots],
    { allowFail: true },
  );
  const names = new Set(roots);
  for (const line of deps.stdout.split('\n')) if (/^[a-z0-9][a-z0-9+.-]+$/.test(line)) names.add(line);
  const known = await aptCandidates([...names].sort());
  const missing = roots.filter((r) => !known.has(r));
  if (missing.length > 0) {
    throw new MageBuildError(`Debian package${missing.length > 1 ? 's' : ''} ${missing.join(', ')} ${missing.length > 1 ? 'are' : 'is'} not known to apt`, 'run apt-get update; on another distribution, name the package that holds the tool in MAGE_TOOL_PACKAGES (mage/build/tools.ts)');
  }
  const out = new Map<string, AptCandidate>();
  const queue = [...roots];
  while (queue.length > 0) {
    const c = known.get(queue.shift()!);
    if (!c || out.has(c.package)) continue;
    out.set(c.package, c);
    for (const d of c.depends) {
      const dc = known.get(d);
      if (dc && !out.has(d) && isLibrarySection(dc.section)) queue.push(d);
    }
  }
  return out;
}

/** The .deb of each candidate in `cache`, downloading those not there with one apt-get download. */
export async function fetchDebs(candidates: AptCandidate[], cache: string, log: (line: string) => void, signal?: AbortSignal): Promise<Map<string, DebInfo>> {
  fs.mkdirSync(cache, { recursive: true });
  const arch = (await run('dpkg', ['--print-architecture'])).stdout.trim();
  const find = (want: AptCandidate): DebInfo | undefined => {
    const versionInName = want.version.replace(/:/g, '%3a');
    const exact = [`${want.package}_${versionInName}_${arch}.deb`, `${want.package}_${versionInName}_all.deb`];
    // apt-get download's own names first; then any file of the package with the expected size and sha256.
    const files = fs.readdirSync(cache).filter((f) => f.startsWith(`${want.package}_`) && f.endsWith('.deb')).sort((a, b) => Number(exact.includes(b)) - Number(exact.includes(a)) || (a < b ? -1 : 1));
    for (const f of files) {
      const file = path.join(cache, f);
      if (want.sha256) {
        if (want.size !== undefined && fs.statSync(file).size !== want.size) continue;
        const sha = fileSha256(file);
        if (sha === want.sha256) return { package: want.package, version: want.version, sha256: sha, file };
      } else if (exact.includes(f)) {
        return { package: want.package, version: want.version, sha256: fileSha256(file), file };
      }
    }
    return undefined;
  };
  const out = new Map<string, DebInfo>();
  const missing: AptCandidate[] = [];
  for (const c of candidates) {
    const got = find(c);
    if (got) out.set(c.package, got);
    else missing.push(c);
  }
  if (missing.length > 0) {
    const bytes = missing.reduce((n, c) => n + (c.size ?? 0), 0);
    log(`downloading ${missing.length} package${missing.length > 1 ? 's' : ''} (${(bytes / 1e6).toFixed(1)} MB) with apt-get download: ${missing.map((c) => c.package).join(' ')}`);
    const t0 = Date.now();
    // Into a directory of its own, then renamed into the cache: two builds at once (serve's and a test's)
    // must never see each other's half-written .deb, which would fail its sha256 and the build.
    const incoming = fs.mkdtempSync(path.join(cache, '.incoming-'));
    try {
      await run('apt-get', ['download', '-q', ...missing.map((c) => `${c.package}=${c.version}`)], { cwd: incoming, ...(signal ? { signal } : {}) });
      for (const f of fs.readdirSync(incoming)) if (f.endsWith('.deb')) fs.renameSync(path.join(incoming, f), path.join(cache, f));
    } finally {
      fs.rmSync(incoming, { recursive: true, force: true });
    }
    for (const c of missing) {
      const got = find(c);
      if (!got) throw new MageBuildError(`apt-get download ${c.package}=${c.version} left no matching .deb in ${cache}`, 'run apt-get update, then try again');
      out.set(c.package, got);
    }
    log(`downloaded in ${((Date.now() - t0) / 1000).toFixed(1)} s into ${cache}`);
  }
  return out;
}

/** The .deb of one package (apt's candidate). */
export async function fetchDeb(pkg: string, cache: string, log: (line: string) => void, signal?: AbortSignal): Promise<DebInfo> {
  const c = await aptCandidate(pkg);
  return (await fetchDebs([c], cache, log, signal)).get(pkg)!;
}
