// I/O edge: the fleet from a git repository over HTTP(S), with isomorphic-git. A bare copy of the
// repository lives in a local cache dir (e.g. STATE/git/<hash of the URL>); `sync()` fetches the
// followed branch into it (git-transport.ts, one shared cache object), and everything else reads
// objects from it locally. Trees and blobs are read from the pack files by pack-reader.ts (native zlib,
// each object checked against its oid): isomorphic-git's per-object overhead makes 10,000 files take
// seconds. Loose or unusual objects fall back to isomorphic-git's readTree/readBlob.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import git from 'isomorphic-git';
import { DragonflyError, type ErrorCode } from '../../schemas/errors.js';
import type { SourceFile } from '../parse.js';
import { CredentialResolver, sanitizeUrl, stripUserinfo, type GitCredentials } from './credentials.js';
import { GitTransport, listNames, REMOTE, type IsoGitError } from './git-transport.js';
import { PackSet, parseTree, type PackSession, type TreeEntry } from './pack-reader.js';
import { byPath, diffFleetTrees, fleetFilesInTree, type FileChange } from './tree-diff.js';

export interface GitSourceOptions {
  /** http:// or https:// URL of the repository. Credentials in it are used, never shown. */
  url: string;
  /** The branch to follow. Default 'main'. */
  branch?: string;
  /** Folder of the fleet inside the repository, '/'-separated, relative to its root. Default '' (the root). */
  path?: string;
  /** Local cache directory: a bare repository created on first use (see gitCacheDir). */
  dir: string;
  /** Explicit credentials (take precedence over credentialsFile, the URL, and the environment). */
  auth?: GitCredentials;
  /** File whose first line is `user:password` or a token. Read at every authentication. */
  credentialsFile?: string;
  /** Environment for DRAGONFLY_GIT_USERNAME / DRAGONFLY_GIT_PASSWORD / DRAGONFLY_GIT_TOKEN. Default process.env. */
  env?: NodeJS.ProcessEnv;
  /** Socket idle timeout of every HTTP request, in ms. Default 60 000. */
  timeoutMs?: number;
}

export interface SyncResult {
  /** Head commit of the branch after the fetch. */
  commit: string;
  /** Head commit of the previous successful sync (null on the first). */
  previous: string | null;
  /** commit !== previous. */
  changed: boolean;
  /** The branch was rewritten (force-push): previous is not an ancestor of commit. It is followed anyway. */
  forced: boolean;
  /** This sync created the cache (first clone). */
  cloned: boolean;
}

export interface GitPerson {
  name: string;
  email: string;
  /** Seconds since the epoch. */
  timestamp: number;
  /** Minutes, as isomorphic-git gives it (git's sign convention inverted: UTC+2 is -120). */
  timezoneOffset: number;
  /** ISO 8601 in UTC. */
  date: string;
}

export interface CommitInfo {
  sha: string;
  parents: string[];
  author: GitPerson;
  committer: GitPerson;
  /** First line of the message. */
  subject: string;
  message: string;
}

const FULL_SHA = /^[0-9a-f]{40}$/i;
const SHORT_SHA = /^[0-9a-f]{4,39}$/i;
const BLOB_CONCURRENCY = 32;

/** A cache dir for `url` under the state dir: STATE/git/<sha256 of the URL without credentials, 16 hex>. */
export function gitCacheDir(stateDir: string, url: string): string {
  const clean = stripUserinfo(url.trim()).url.replace(/\/+$/, '');
  return path.join(stateDir, 'git', createHash('sha256').update(clean).digest('hex').slice(0, 16));
}

/** Normalise the fleet path: '/'-separated, no leading/trailing '/', no '.' segments; '..' is refused. */
export function normalizeFleetPath(p: string): string {
  const segs = p.replace(/\\/g, '/').split('/').filter((s) => s !== '' && s !== '.');
  if (segs.includes('..')) throw new DragonflyError('DF_ERR_GIT_PATH', `the fleet path ${JSON.stringify(p)} must stay inside the repository (no '..')`, { path: p });
  return segs.join('/');
}

type Exclusive = <T>(fn: () => Promise<T>) => Promise<T>;

/** The fleet from a git repository: sync (clone/fetch), list fleet files at a commit, diff two commits. */
export class GitSource {
  /** The URL without credentials (what is fetched). */
  readonly url: string;
  /** The URL for messages: userinfo replaced by ***. */
  readonly displayUrl: string;
  readonly branch: string;
  /** Normalised fleet path ('' = repository root). */
  readonly path: string;
  readonly dir: string;
  /** The one isomorphic-git cache of this source (pack indexes, pack data). */
  readonly cache: object = {};
  /** Blobs read so far by our pack reader, and by isomorphic-git (loose objects, anything unusual). */
  readonly blobReads = { packed: 0, other: 0 };

  private readonly credentials: CredentialResolver;
  private readonly transport: GitTransport;
  private queue: Promise<unknown> = Promise.resolve();
  private readonly packs: PackSet;
  private remoteReady = false;

  constructor(options: GitSourceOptions) {
    this.branch = options.branch ?? 'main';
    this.dir = path.resolve(options.dir);
    const raw = options.url.trim();
    const { url, auth } = stripUserinfo(raw);
    this.url = url;
    this.displayUrl = sanitizeUrl(raw);
    this.credentials = new CredentialResolver({
      displayUrl: this.displayUrl,
      urlAuth: auth,
      auth: options.auth,
      credentialsFile: options.credentialsFile,
      env: options.env,
    });
    // Checks the URL first: a wrong URL is reported before a wrong path or branch.
    this.transport = new GitTransport({
      raw,
      url,
      displayUrl: this.displayUrl,
      branch: this.branch,
      dir: this.dir,
      cache: this.cache,
      credentials: this.credentials,
      timeoutMs: options.timeoutMs,
      fail: (code, message, data, hint) => this.error(code, message, data, hint),
    });
    this.path = normalizeFleetPath(options.path ?? '');
    this.packs = new PackSet(path.join(this.dir, 'objects', 'pack'));
    if (!this.branch || this.branch.startsWith('-') || /[\s~^:?*[\\]|\.\.|@\{/.test(this.branch)) {
      throw new DragonflyError('DF_ERR_GIT_BRANCH', `${JSON.stringify(this.branch)} is not a valid branch name`, { url: this.displayUrl, branch: this.branch });
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Network

  /**
   * Clone on first use, else fetch; returns the branch head after the fetch. A force-push is followed
   * (the remote is the truth) and reported with `forced: true`.
   */
  sync(): Promise<SyncResult> {
    return this.exclusive(async () => {
      const cloned = await this.ensureRepo();
      const localRef = `refs/heads/${this.branch}`;
      // Our own ref, written only after a complete fetch (isomorphic-git updates the remote-tracking
      // ref before the pack has arrived, so that one can name a commit we do not have).
      const previous = await this.localCommit(localRef);
      const commit = await this.transport.fetchRef(`refs/heads/${this.branch}`, false);
      let forced = false;
      if (previous && previous !== commit) {
        try {
          forced = !(await git.isDescendent({ fs, gitdir: this.dir, oid: commit, ancestor: previous, depth: -1, cache: this.cache }));
        } catch {
          forced = true; // history cannot be walked back to the previous head: treat as rewritten
        }
      }
      await this.cacheOp('update the branch head', () => git.writeRef({ fs, gitdir: this.dir, ref: localRef, value: commit, force: true }));
      return { commit, previous, changed: previous !== commit, forced, cloned };
    });
  }

  /**
   * A branch, tag or commit SHA (full or abbreviated, at least 4 hex digits) → commit SHA. Branches
   * and tags are looked up on the remote (the truth) and fetched when their commit is not cached yet.
   */
  async resolve(ref: string): Promise<string> {
    const name = ref.trim();
    if (!name) throw this.refError(ref, 'an empty revision');
    if (FULL_SHA.test(name)) {
      const oid = await this.peelLocal(name.toLowerCase());
      if (!oid) throw this.refError(name, `commit ${name} is not in the fetched history of ${this.displayUrl}`, 'sync first; a commit that no branch or tag of the remote contains cannot be fetched');
      return oid;
    }
    const remoteRefs = await this.transport.listRemoteRefs();
    const short = name === 'HEAD' ? this.branch : name.replace(/^origin\//, '');
    const candidates = name.startsWith('refs/') ? [name] : [`refs/tags/${short}`, `refs/heads/${short}`];
    for (const candidate of candidates) {
      const found = remoteRefs.find((r) => r.ref === candidate);
      if (!found) continue;
      const target = found.peeled ?? found.oid;
      const local = await this.peelLocal(target);
      if (local) return local;
      return this.exclusive(async () => {
        await this.ensureRepo();
        const fetched = await this.transport.fetchRef(found.ref, found.ref.startsWith('refs/tags/'));
        const oid = await this.peelLocal(fetched);
        if (!oid) throw this.refError(name, `${found.ref} of ${this.displayUrl} does not point to a commit`);
        return oid;
      });
    }
    if (SHORT_SHA.test(name)) {
      let oid: string | undefined;
      try {
        oid = await git.expandOid({ fs, gitdir: this.dir, oid: name.toLowerCase(), cache: this.cache });
      } catch (e) {
        const err = e as IsoGitError;
        if (err.code === 'AmbiguousError') {
          const list = (err.data?.candidates ?? []).slice(0, 5).join(', ');
          throw this.refError(name, `the abbreviated SHA ${name} is ambiguous (${list})`, 'give more hex digits of the commit SHA');
        }
      }
      const commit = oid && (await this.peelLocal(oid));
      if (commit) return commit;
    }
    const branches = remoteRefs.filter((r) => r.ref.startsWith('refs/heads/')).map((r) => r.ref.slice(11));
    const tags = remoteRefs.filter((r) => r.ref.startsWith('refs/tags/')).map((r) => r.ref.slice(10));
    const known = [branches.length ? `branches: ${listNames(branches)}` : 'no branches', tags.length ? `tags: ${listNames(tags)}` : 'no tags'].join('; ');
    throw this.refError(name, `no branch, tag or commit named ${JSON.stringify(name)} in ${this.displayUrl} (${known})`);
  }

  // ---------------------------------------------------------------------------------------------
  // Reading commits (local only)

  /** Every fleet file under the fleet path at `commit`, sorted by path, paths relative to the fleet path. */
  async files(commit: string): Promise<SourceFile[]> {
    const session = await this.session();
    const root = await this.fleetTree(session, commit, false);
    const entries = await fleetFilesInTree(root!, (oid) => this.readTree(session, oid));
    const texts = await this.readBlobs(session, [...new Set(entries.map((e) => e.oid))]);
    return entries.map((e) => ({ path: e.path, text: texts.get(e.oid)! })).sort(byPath);
  }

  /**
   * The fleet files added, modified or deleted under the fleet path from `fromCommit` to `toCommit`
   * (a rename is a deletion plus an addition), sorted by path. Unchanged subtrees are skipped by oid.
   * A fleet path missing at one of the commits counts as empty there.
   */
  async changedPaths(fromCommit: string, toCommit: string): Promise<FileChange[]> {
    return (await this.changedEntries(fromCommit, toCommit)).map(({ path, change }) => ({ path, change }));
  }

  /** changedPaths, with the blob at `toCommit` of each added or modified file. */
  private async changedEntries(fromCommit: string, toCommit: string): Promise<(FileChange & { oid?: string })[]> {
    const session = await this.session();
    const [a, b] = await Promise.all([this.fleetTree(session, fromCommit, true), this.fleetTree(session, toCommit, true)]);
    return diffFleetTrees(a, b, (oid) => this.readTree(session, oid));
  }

  /**
   * The files at `toCommit`, given the files at `fromCommit`: only the blobs that changed are read (a
   * commit that edits one file of 10,000 reads one blob). Returns the changed paths too.
   */
  async filesSince(previous: readonly SourceFile[], fromCommit: string, toCommit: string): Promise<{ files: SourceFile[]; changed: FileChange[] }> {
    const changed = await this.changedEntries(fromCommit, toCommit);
    const session = await this.session();
    const texts = await this.readBlobs(session, [...new Set(changed.flatMap((c) => (c.oid ? [c.oid] : [])))]);
    const byPathMap = new Map(previous.map((f) => [f.path, f] as const));
    for (const c of changed) {
      if (c.change === 'deleted') byPathMap.delete(c.path);
      else byPathMap.set(c.path, { path: c.path, text: texts.get(c.oid!)! });
    }
    return { files: [...byPathMap.values()].sort(byPath), changed: changed.map(({ path, change }) => ({ path, change })) };
  }

  /** Author, committer, subject and parents of a commit (annotated tags are peeled). */
  async commitInfo(sha: string): Promise<CommitInfo> {
    const { oid, commit } = await this.readCommit(sha);
    const person = (p: { name: string; email: string; timestamp: number; timezoneOffset: number }): GitPerson => ({
      name: p.name,
      email: p.email,
      timestamp: p.timestamp,
      timezoneOffset: p.timezoneOffset,
      date: new Date(p.timestamp * 1000).toISOString(),
    });
    return {
      sha: oid,
      parents: commit.parent,
      author: person(commit.author),
      committer: person(commit.committer),
      subject: commit.message.split('\n', 1)[0]!.trim(),
      message: commit.message,
    };
  }

  // ---------------------------------------------------------------------------------------------
  // Internals

  private exclusive: Exclusive = (fn) => {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  };

  /** Create the bare cache repository on first use; true when it was created. */
  private async ensureRepo(): Promise<boolean> {
    const gitdir = this.dir;
    let created = false;
    await this.cacheOp('prepare the cache', async () => {
      if (!fs.existsSync(path.join(gitdir, 'config'))) {
        if (fs.existsSync(gitdir) && fs.readdirSync(gitdir).length > 0) {
          throw new DragonflyError('DF_ERR_GIT_CACHE', `git cache ${gitdir} exists but is not a git repository`, { dir: gitdir });
        }
        fs.mkdirSync(gitdir, { recursive: true });
        await git.init({ fs, gitdir, bare: true, defaultBranch: this.branch });
        created = true;
      }
      if (!this.remoteReady) {
        await git.addRemote({ fs, gitdir, remote: REMOTE, url: this.url, force: true });
        this.remoteReady = true;
      }
    });
    return created;
  }

  private error(code: ErrorCode, message: string, data: Record<string, unknown> = {}, hint?: string): DragonflyError {
    return new DragonflyError(code, this.credentials.redact(message), { url: this.displayUrl, branch: this.branch, ...data }, hint && this.credentials.redact(hint));
  }

  private refError(ref: string, message: string, hint?: string): DragonflyError {
    return this.error('DF_ERR_GIT_REF', message, { ref }, hint);
  }

  /** Run a local cache operation; fs failures become DF_ERR_GIT_CACHE. */
  private async cacheOp<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      if (e instanceof DragonflyError) throw e;
      const err = e as IsoGitError & { code?: string };
      throw this.error('DF_ERR_GIT_CACHE', `cannot ${what} in the git cache ${this.dir}: ${err.code ?? ''} ${err.message ?? String(e)}`.replace(/\s+/g, ' '), { dir: this.dir });
    }
  }

  /**
   * Blob texts by oid. Packed blobs are read by our own pack reader (native zlib, one pass over the
   * pack index), each checked against its oid; anything else goes through isomorphic-git.
   */
  private async readBlobs(session: PackSession, oids: string[]): Promise<Map<string, string>> {
    const texts = new Map<string, string>();
    const rest: string[] = [];
    for (const oid of oids) {
      const blob = session.read(oid, 'blob');
      if (blob) texts.set(oid, blob.toString('utf8'));
      else rest.push(oid);
    }
    this.blobReads.packed += texts.size;
    this.blobReads.other += rest.length;
    let next = 0;
    const worker = async () => {
      while (next < rest.length) {
        const oid = rest[next++]!;
        const { blob } = await this.cacheOp(`read blob ${oid}`, () => git.readBlob({ fs, gitdir: this.dir, oid, cache: this.cache }));
        texts.set(oid, Buffer.from(blob.buffer, blob.byteOffset, blob.byteLength).toString('utf8'));
      }
    };
    await Promise.all(Array.from({ length: Math.min(BLOB_CONCURRENCY, rest.length) }, worker));
    return texts;
  }

  /** The commit a local ref points to, if that commit is fully present; else null. */
  private async localCommit(ref: string): Promise<string | null> {
    try {
      const oid = await git.resolveRef({ fs, gitdir: this.dir, ref });
      return await this.peelLocal(oid);
    } catch {
      return null;
    }
  }

  /** `oid` (a commit or an annotated tag) → commit oid, or null when it is not in the cache. */
  private async peelLocal(oid: string): Promise<string | null> {
    try {
      const { oid: commit } = await git.readCommit({ fs, gitdir: this.dir, oid, cache: this.cache });
      return commit;
    } catch {
      return null;
    }
  }

  private async readCommit(sha: string) {
    try {
      return await git.readCommit({ fs, gitdir: this.dir, oid: sha, cache: this.cache });
    } catch (e) {
      const err = e as IsoGitError;
      const why = err.code === 'ObjectTypeError' ? 'is not a commit' : 'is not in the local cache';
      throw this.refError(sha, `${sha} ${why} (repository ${this.displayUrl})`, 'pass a commit SHA returned by sync() or resolve()');
    }
  }

  /** A reading session over the packs as they are now (new packs appear with fetches). */
  private async session(): Promise<PackSession> {
    const packs = await this.cacheOp('read the pack files', () => this.packs.refresh());
    return packs.session();
  }

  /** Entries of a tree: from the packs when possible, else through isomorphic-git. */
  private async readTree(session: PackSession, oid: string): Promise<TreeEntry[]> {
    const data = session.read(oid, 'tree');
    if (data) {
      const entries = parseTree(data);
      if (entries) return entries;
    }
    const { tree } = await this.cacheOp(`read tree ${oid}`, () => git.readTree({ fs, gitdir: this.dir, oid, cache: this.cache }));
    return tree;
  }

  /** Tree oid of the fleet path at `commit`; undefined when missing and allowMissing. */
  private async fleetTree(session: PackSession, commit: string, allowMissing: boolean): Promise<string | undefined> {
    const { commit: c, oid } = await this.readCommit(commit);
    let tree = c.tree;
    if (!this.path) return tree;
    const segs = this.path.split('/');
    for (const [i, seg] of segs.entries()) {
      const entry = (await this.readTree(session, tree)).find((e) => e.path === seg);
      if (!entry || entry.type !== 'tree') {
        if (allowMissing) return undefined;
        const at = segs.slice(0, i + 1).join('/');
        const what = !entry ? 'does not exist' : 'is a file, not a folder';
        throw this.error('DF_ERR_GIT_PATH', `fleet path ${this.path} ${what} at commit ${oid.slice(0, 12)} of ${this.displayUrl} (following branch ${this.branch})${at !== this.path ? `: ${at} ${what}` : ''}`, {
          path: this.path,
          commit: oid,
        });
      }
      tree = entry.oid;
    }
    return tree;
  }
}
