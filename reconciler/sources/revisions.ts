// The fleet at any revision of a git repository, as `dragonfly diff` and `plan --base --head` read it: a
// local clone (read with the git CLI) or an http(s) repository (GitSource, cached under the state directory).
import { spawn } from 'node:child_process';
import path from 'node:path';
import { DragonflyError, isDragonflyError } from '../../schemas/errors.js';
import { stateDirFrom } from '../../store/lmdb.js';
import type { SourceFile } from '../parse.js';
import { shortSha } from '../render.js';
import { checkFleetDir, isFleetPath, isRegularGitFile } from './fleet-dir.js';
import { GitSource, gitCacheDir, normalizeFleetPath } from './git-source.js';
import { byPath, type FileChange } from './tree-diff.js';

/** The fleet at any revision of a git repository. */
export interface RevisionSource {
  /** The repository, for messages. */
  readonly where: string;
  /** The fleet folder inside the repository, '/'-separated ('' = its root). */
  readonly path: string;
  /** A revision → full commit SHA (DF_ERR_GIT_REF when there is none). */
  resolve(ref: string): Promise<string>;
  /** Every fleet file at `commit`; undefined when the fleet folder does not exist there and allowMissing. */
  files(commit: string, allowMissing: boolean): Promise<SourceFile[] | undefined>;
  /** The fleet files that differ between two commits, and their texts on each side. */
  changedFiles(from: string, to: string): Promise<{ paths: FileChange[]; base: SourceFile[]; head: SourceFile[] }>;
}

export interface RevisionOptions {
  repo?: string;
  fleet?: string;
  path?: string;
  state?: string;
  /** --git-credentials-file, for --repo. */
  credentialsFile?: string;
}

/** --repo URL (http(s), through GitSource) or --fleet DIR (a local clone, through the git CLI). */
export async function openRevisions(opts: RevisionOptions, defaultFleet?: string): Promise<RevisionSource> {
  if (opts.repo !== undefined && opts.fleet !== undefined) {
    throw new DragonflyError('DF_ERR_USAGE', '--repo and --fleet cannot be used together', {}, 'give --repo URL for a remote repository, or --fleet DIR for a local clone');
  }
  if (opts.repo !== undefined) {
    // A cache of its own (STATE/review/git/…), apart from the one `serve` fetches into: two processes
    // never write one bare repository at once.
    const dir = gitCacheDir(path.join(stateDirFrom(opts.state), 'review'), opts.repo);
    return new RemoteRevisions(
      new GitSource({
        url: opts.repo,
        dir,
        ...(opts.path !== undefined ? { path: opts.path } : {}),
        ...(opts.credentialsFile !== undefined ? { credentialsFile: opts.credentialsFile } : {}),
      }),
    );
  }
  const fleet = opts.fleet ?? defaultFleet;
  if (fleet === undefined) {
    throw new DragonflyError('DF_ERR_USAGE', 'missing --fleet DIR or --repo URL', {}, 'pass --fleet DIR (a directory in a git clone) or --repo URL (an http(s) git repository)');
  }
  return LocalRevisions.open(fleet, opts.path ?? '');
}

// -------------------------------------------------------------------------------------------------
// A remote repository: GitSource. Only resolve() fetches (branch and tag names, from the remote);
// sync() is never called, so the branch head that `dragonfly serve` follows in the same cache is untouched.

const HEX = /^[0-9a-f]{4,64}$/i;

class RemoteRevisions implements RevisionSource {
  readonly where: string;
  readonly path: string;

  constructor(private readonly source: GitSource) {
    this.where = source.displayUrl;
    this.path = source.path;
  }

  async resolve(ref: string): Promise<string> {
    try {
      return await this.source.resolve(ref);
    } catch (e) {
      // A SHA is found only in history already fetched: fetch the default branch, then look again.
      if (!isDragonflyError(e) || e.code !== 'DF_ERR_GIT_REF' || !HEX.test(ref.trim())) throw e;
      await this.source.resolve('HEAD');
      return this.source.resolve(ref);
    }
  }

  async files(commit: string, allowMissing: boolean): Promise<SourceFile[] | undefined> {
    try {
      return await this.source.files(commit);
    } catch (e) {
      if (allowMissing && isDragonflyError(e) && e.code === 'DF_ERR_GIT_PATH') return undefined;
      throw e;
    }
  }

  async changedFiles(from: string, to: string) {
    const paths = await this.source.changedPaths(from, to);
    if (paths.length === 0) return { paths, base: [], head: [] };
    // GitSource reads whole trees (its pack reader makes that cheap); keep only the changed files.
    const changed = new Set(paths.map((p) => p.path));
    const [base, head] = await Promise.all([this.files(from, true), this.files(to, true)]);
    return { paths, base: (base ?? []).filter((f) => changed.has(f.path)), head: (head ?? []).filter((f) => changed.has(f.path)) };
  }
}

// -------------------------------------------------------------------------------------------------
// A local clone, read with the git CLI. isomorphic-git could read the objects of a local .git too, but
// the git CLI is always there where a clone was made (CI checkouts included), and it understands
// everything a clone can be: linked worktrees, packed refs and reftables, alternates, partial clones,
// SHA-256 repositories, and revisions such as origin/main, HEAD~1 or v1.2^{commit}.

const GIT_CLI_ENV = { GIT_TERMINAL_PROMPT: '0', GIT_LITERAL_PATHSPECS: '1', GIT_OPTIONAL_LOCKS: '0', LC_ALL: 'C' };

class GitFailed extends Error {
  constructor(
    readonly status: number | null,
    readonly stderr: string,
  ) {
    super(stderr || `git exited with status ${status}`);
  }
}

function runGit(cwd: string, args: string[], input = ''): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn('git', args, { cwd, env: { ...process.env, ...GIT_CLI_ENV }, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', (e: NodeJS.ErrnoException) => {
      reject(
        e.code === 'ENOENT'
          ? new DragonflyError('DF_ERR_GIT_LOCAL', 'the git command is not installed: it reads the revisions of the local clone', { cwd })
          : new DragonflyError('DF_ERR_GIT_LOCAL', `cannot run git: ${e.message}`, { cwd }),
      );
    });
    child.on('close', (status) => (status === 0 ? resolve(Buffer.concat(out)) : reject(new GitFailed(status, err.trim()))));
    child.stdin.on('error', () => {}); // git may exit before reading everything
    child.stdin.end(input);
  });
}

function firstLine(text: string): string {
  return text.split('\n').find((l) => l.trim() !== '')?.replace(/^(fatal|error): /, '') ?? '';
}

/** The rule of readFleetDir and GitSource (fleet-dir.ts), for a git tree entry. */
function isFleetEntry(rel: string, mode: string): boolean {
  return isRegularGitFile(mode) && isFleetPath(rel);
}

class LocalRevisions implements RevisionSource {
  private constructor(
    /** The top of the working tree. */
    private readonly top: string,
    readonly path: string,
  ) {}

  get where(): string {
    return `the git repository at ${this.top}`;
  }

  static async open(dir: string, sub: string): Promise<LocalRevisions> {
    checkFleetDir(dir);
    let out: string;
    try {
      out = (await runGit(path.resolve(dir), ['rev-parse', '--show-toplevel', '--show-prefix'])).toString('utf8');
    } catch (e) {
      if (e instanceof GitFailed) {
        throw new DragonflyError('DF_ERR_GIT_LOCAL', `${dir} is not in a git working tree that git can read: ${firstLine(e.stderr)}`, { path: dir });
      }
      throw e;
    }
    const [top = '', prefix = ''] = out.split('\n');
    return new LocalRevisions(top, normalizeFleetPath(`${prefix}/${sub}`));
  }

  private async git(args: string[], input?: string): Promise<Buffer> {
    try {
      return await runGit(this.top, args, input);
    } catch (e) {
      if (e instanceof GitFailed) throw new DragonflyError('DF_ERR_GIT_LOCAL', `git ${args[0]} failed in ${this.top}: ${firstLine(e.stderr)}`, { cwd: this.top });
      throw e;
    }
  }

  async resolve(ref: string): Promise<string> {
    const name = ref.trim();
    if (!name || name.startsWith('-')) {
      throw new DragonflyError('DF_ERR_GIT_REF', `${JSON.stringify(ref)} is not a revision`, { ref });
    }
    try {
      return (await runGit(this.top, ['rev-parse', '--verify', '--quiet', `${name}^{commit}`])).toString('utf8').trim();
    } catch (e) {
      if (!(e instanceof GitFailed)) throw e;
      const shallow = (await runGit(this.top, ['rev-parse', '--is-shallow-repository']).catch(() => Buffer.from(''))).toString().trim() === 'true';
      throw new DragonflyError(
        'DF_ERR_GIT_REF',
        `no branch, tag or commit named ${JSON.stringify(name)} in ${this.where}${shallow ? ' (a shallow clone)' : ''}`,
        { ref: name },
        shallow
          ? 'the clone is shallow: fetch the revision first (actions/checkout with fetch-depth: 0, or `git fetch origin main`)'
          : 'give a branch (origin/main for the remote one), a tag or a commit SHA of this clone; `git fetch` first if it is only on the remote',
      );
    }
  }

  async files(commit: string, allowMissing: boolean): Promise<SourceFile[] | undefined> {
    if (this.path) {
      const type = await runGit(this.top, ['cat-file', '-t', `${commit}:${this.path}`]).then(
        (b) => b.toString().trim(),
        () => 'missing',
      );
      if (type !== 'tree') {
        if (allowMissing) return undefined;
        const what = type === 'missing' ? 'does not exist' : 'is not a folder';
        throw new DragonflyError('DF_ERR_GIT_PATH', `fleet folder ${this.path} ${what} at commit ${shortSha(commit)} of ${this.where}`, { path: this.path, commit });
      }
    }
    const listing = (await this.git(['ls-tree', '-r', '-z', commit, ...(this.path ? ['--', this.path] : [])])).toString('utf8');
    const entries: { path: string; oid: string }[] = [];
    const strip = this.path ? this.path.length + 1 : 0;
    for (const rec of listing.split('\0')) {
      const tab = rec.indexOf('\t');
      if (tab === -1) continue;
      const [mode = '', type = '', oid = ''] = rec.slice(0, tab).split(' ');
      const full = rec.slice(tab + 1);
      const rel = full.slice(strip);
      if (type === 'blob' && isFleetEntry(rel, mode)) entries.push({ path: rel, oid });
    }
    const texts = await this.blobs(entries.map((e) => e.oid));
    return entries.map((e) => ({ path: e.path, text: texts.get(e.oid)! })).sort(byPath);
  }

  async changedFiles(from: string, to: string) {
    const raw = (await this.git(['diff-tree', '-r', '-z', '--no-renames', '--raw', from, to, ...(this.path ? ['--', this.path] : [])])).toString('utf8');
    const parts = raw.split('\0');
    const strip = this.path ? this.path.length + 1 : 0;
    const paths: FileChange[] = [];
    const wanted: { path: string; before?: string; after?: string }[] = [];
    for (let i = 0; i + 1 < parts.length; i += 2) {
      const meta = parts[i]!;
      if (!meta.startsWith(':')) break;
      const [srcMode = '', dstMode = '', srcOid = '', dstOid = ''] = meta.slice(1).split(' ');
      const rel = parts[i + 1]!.slice(strip);
      const before = isFleetEntry(rel, srcMode) ? srcOid : undefined;
      const after = isFleetEntry(rel, dstMode) ? dstOid : undefined;
      if (before && after) {
        if (before !== after) paths.push({ path: rel, change: 'modified' });
        else continue; // a mode change only
      } else if (before) paths.push({ path: rel, change: 'deleted' });
      else if (after) paths.push({ path: rel, change: 'added' });
      else continue;
      wanted.push({ path: rel, ...(before ? { before } : {}), ...(after ? { after } : {}) });
    }
    const texts = await this.blobs(wanted.flatMap((w) => [w.before, w.after].filter((x): x is string => x !== undefined)));
    const side = (k: 'before' | 'after') => wanted.filter((w) => w[k]).map((w) => ({ path: w.path, text: texts.get(w[k]!)! }));
    return { paths: paths.sort(byPath), base: side('before').sort(byPath), head: side('after').sort(byPath) };
  }

  /** Blob texts by oid, in one `git cat-file --batch`. */
  private async blobs(oids: string[]): Promise<Map<string, string>> {
    const unique = [...new Set(oids)];
    const texts = new Map<string, string>();
    if (unique.length === 0) return texts;
    const out = await this.git(['cat-file', '--batch'], unique.join('\n') + '\n');
    let p = 0;
    while (p < out.length) {
      const nl = out.indexOf(0x0a, p);
      if (nl === -1) break;
      const [oid = '', type = '', size = ''] = out.toString('utf8', p, nl).split(' ');
      p = nl + 1;
      if (type === 'missing' || size === '') {
        throw new DragonflyError('DF_ERR_GIT_LOCAL', `object ${oid} is missing from ${this.where} (a partial or damaged clone?)`, { oid });
      }
      const n = Number(size);
      texts.set(oid, out.toString('utf8', p, p + n));
      p += n + 1;
    }
    return texts;
  }
}
