// I/O edge: the fleet from a git repository over HTTP(S), with isomorphic-git. A bare copy of the
// repository lives in a local cache dir (e.g. STATE/git/<hash of the URL>); `sync()` fetches the
// followed branch into it (isomorphic-git, one shared cache object), and everything else reads
// objects from it locally. Trees and blobs are read from the pack files by a small reader below
// (native zlib, each object checked against its oid): isomorphic-git's per-object overhead makes
// 10,000 files take seconds. Loose or unusual objects fall back to isomorphic-git's readTree/readBlob.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import git from 'isomorphic-git';
import httpNode from 'isomorphic-git/http/node';
import type { AuthCallback, AuthFailureCallback, GitAuth as IsoGitAuth, HttpClient, ServerRef } from 'isomorphic-git';
import { DragonflyError, type ErrorCode } from '../schemas/errors.js';
import { isFleetFile, isRegularGitFile, isSkippedName } from './fleet-dir.js';
import type { SourceFile } from './parse.js';

/** Credentials: a user and password, or a token (sent as the password of `username`, default `x-access-token`). */
export interface GitCredentials {
  username?: string;
  password?: string;
  token?: string;
}

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

export type ChangeKind = 'added' | 'modified' | 'deleted';

export interface FileChange {
  /** Relative to the fleet path, '/'-separated, like SourceFile.path. */
  path: string;
  change: ChangeKind;
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

/** Environment variables read for credentials. */
export const GIT_ENV = {
  username: 'DRAGONFLY_GIT_USERNAME',
  password: 'DRAGONFLY_GIT_PASSWORD',
  token: 'DRAGONFLY_GIT_TOKEN',
} as const;

const TOKEN_USERNAME = 'x-access-token';
const REMOTE = 'origin';
const FULL_SHA = /^[0-9a-f]{40}$/i;
const SHORT_SHA = /^[0-9a-f]{4,39}$/i;
const BLOB_CONCURRENCY = 32;

/** Replace the userinfo of every URL in `text` by `***`. */
export function sanitizeUrl(text: string): string {
  return text.replace(/([a-z][a-z0-9+.-]*:\/\/)[^/\s@]*@/gi, '$1***@');
}

/** A cache dir for `url` under the state dir: STATE/git/<sha256 of the URL without credentials, 16 hex>. */
export function gitCacheDir(stateDir: string, url: string): string {
  const clean = stripUserinfo(url.trim()).url.replace(/\/+$/, '');
  return path.join(stateDir, 'git', createHash('sha256').update(clean).digest('hex').slice(0, 16));
}

function stripUserinfo(url: string): { url: string; auth?: GitCredentials } {
  const m = /^([a-z][a-z0-9+.-]*:\/\/)([^/\s@]*)@(.*)$/is.exec(url);
  if (!m) return { url };
  const userinfo = m[2]!;
  const i = userinfo.indexOf(':');
  const dec = (s: string) => {
    try {
      return decodeURIComponent(s);
    } catch {
      return s;
    }
  };
  const auth: GitCredentials = i === -1 ? { username: dec(userinfo) } : { username: dec(userinfo.slice(0, i)), password: dec(userinfo.slice(i + 1)) };
  return { url: m[1]! + m[3]!, auth: auth.username || auth.password ? auth : undefined };
}

/** Normalise the fleet path: '/'-separated, no leading/trailing '/', no '.' segments; '..' is refused. */
function normalizeFleetPath(p: string): string {
  const segs = p.replace(/\\/g, '/').split('/').filter((s) => s !== '' && s !== '.');
  if (segs.includes('..')) throw new DragonflyError('DF_ERR_GIT_PATH', `the fleet path ${JSON.stringify(p)} must stay inside the repository (no '..')`, { path: p });
  return segs.join('/');
}

function byPath(a: { path: string }, b: { path: string }): number {
  return a.path < b.path ? -1 : a.path > b.path ? 1 : 0;
}

interface IsoError {
  code?: string;
  message?: string;
  data?: { statusCode?: number; statusMessage?: string; candidates?: string[] };
}

const NET_CAUSES: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ENOTFOUND: 'host not found',
  EAI_AGAIN: 'name resolution failed (temporarily)',
  ECONNRESET: 'connection reset',
  ETIMEDOUT: 'connection timed out',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  EPIPE: 'connection closed',
  ECONNABORTED: 'connection aborted',
};

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

  private readonly urlAuth?: GitCredentials;
  private readonly options: GitSourceOptions;
  private readonly http: HttpClient;
  private readonly secrets = new Set<string>();
  private queue: Promise<unknown> = Promise.resolve();
  private readonly packs: PackSet;
  private remoteReady = false;
  /** What the last authentication attempt sent (for the error message). */
  private lastAuthSource: string | null = null;

  constructor(options: GitSourceOptions) {
    this.options = options;
    this.branch = options.branch ?? 'main';
    this.dir = path.resolve(options.dir);
    const raw = options.url.trim();
    const { url, auth } = stripUserinfo(raw);
    this.url = url;
    this.urlAuth = auth;
    if (auth?.password) this.secrets.add(auth.password);
    this.displayUrl = sanitizeUrl(raw);
    this.checkUrl(raw);
    this.path = normalizeFleetPath(options.path ?? '');
    this.packs = new PackSet(path.join(this.dir, 'objects', 'pack'));
    if (!this.branch || this.branch.startsWith('-') || /[\s~^:?*[\\]|\.\.|@\{/.test(this.branch)) {
      throw new DragonflyError('DF_ERR_GIT_BRANCH', `${JSON.stringify(this.branch)} is not a valid branch name`, { url: this.displayUrl, branch: this.branch });
    }
    const timeout = options.timeoutMs ?? 60_000;
    const headRef = `refs/heads/${this.branch}`;
    this.http = {
      request: async (req) => {
        const res = await httpNode.request({ ...req, fetchOptions: { ...(req.fetchOptions ?? {}), timeout } });
        // isomorphic-git's fetch fails with "Could not find HEAD" when the remote's HEAD is dangling
        // (a bare repo made by `git init --bare` whose HEAD names `master`, with only `main` pushed):
        // give it a HEAD line in the ref advertisement.
        if (res.statusCode !== 200 || !res.body || !/\/info\/refs\?service=git-upload-pack$/.test(req.url)) return res;
        const chunks: Uint8Array[] = [];
        for await (const chunk of res.body) chunks.push(chunk);
        const body = Buffer.concat(chunks);
        const patched = withHeadAdvertised(body, headRef) ?? body;
        return { ...res, body: (async function* () { yield patched; })() };
      },
    };
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
      const commit = await this.fetchRef(`refs/heads/${this.branch}`, false);
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
    const remoteRefs = await this.listRemoteRefs();
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
        const fetched = await this.fetchRef(found.ref, found.ref.startsWith('refs/tags/'));
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
        const err = e as IsoError;
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
    const known = [branches.length ? `branches: ${list(branches)}` : 'no branches', tags.length ? `tags: ${list(tags)}` : 'no tags'].join('; ');
    throw this.refError(name, `no branch, tag or commit named ${JSON.stringify(name)} in ${this.displayUrl} (${known})`);
  }

  // ---------------------------------------------------------------------------------------------
  // Reading commits (local only)

  /** Every fleet file under the fleet path at `commit`, sorted by path, paths relative to the fleet path. */
  async files(commit: string): Promise<SourceFile[]> {
    const session = await this.session();
    const root = await this.fleetTree(session, commit, false);
    const entries: { path: string; oid: string }[] = [];
    const collect = async (treeOid: string, prefix: string): Promise<void> => {
      const subdirs: Promise<void>[] = [];
      for (const e of await this.readTree(session, treeOid)) {
        const rel = prefix ? `${prefix}/${e.path}` : e.path;
        const kind = entryKind(e);
        if (kind === 'dir') subdirs.push(collect(e.oid, rel));
        else if (kind === 'file') entries.push({ path: rel, oid: e.oid });
      }
      await Promise.all(subdirs);
    };
    await collect(root!, '');
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
    const out: (FileChange & { oid?: string })[] = [];
    const diff = async (ta: string | undefined, tb: string | undefined, prefix: string): Promise<void> => {
      if (ta === tb) return;
      const [ea, eb] = await Promise.all([ta ? this.readTree(session, ta) : [], tb ? this.readTree(session, tb) : []]);
      const left = new Map(ea.map((e) => [e.path, e] as const));
      const right = new Map(eb.map((e) => [e.path, e] as const));
      const names = new Set([...left.keys(), ...right.keys()]);
      const subdirs: Promise<void>[] = [];
      for (const name of names) {
        const x = left.get(name);
        const y = right.get(name);
        const rel = prefix ? `${prefix}/${name}` : name;
        const kx = x ? entryKind(x) : null;
        const ky = y ? entryKind(y) : null;
        if (kx === 'dir' || ky === 'dir') subdirs.push(diff(kx === 'dir' ? x!.oid : undefined, ky === 'dir' ? y!.oid : undefined, rel));
        if (kx === 'file' && ky === 'file') {
          if (x!.oid !== y!.oid) out.push({ path: rel, change: 'modified', oid: y!.oid });
        } else if (kx === 'file') out.push({ path: rel, change: 'deleted' });
        else if (ky === 'file') out.push({ path: rel, change: 'added', oid: y!.oid });
      }
      await Promise.all(subdirs);
    };
    await diff(a, b, '');
    return out.sort(byPath);
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

  private checkUrl(raw: string): void {
    const hint = 'use the http(s) clone URL of the repository; for a directory on this machine use --fleet DIR, for a local repository serve it over HTTP (e.g. git http-backend)';
    let parsed: URL | undefined;
    try {
      parsed = new URL(this.url);
    } catch {
      parsed = undefined;
    }
    if (!parsed || (parsed.protocol !== 'http:' && parsed.protocol !== 'https:')) {
      const what =
        /^file:/i.test(raw) || raw.startsWith('/') || raw.startsWith('.') || /^[a-z]:[\\/]/i.test(raw)
          ? 'a local path: Dragonfly reads git repositories over HTTP(S) only'
          : /^ssh:|^[\w.-]+@[\w.-]+:/i.test(raw)
            ? 'an SSH URL: Dragonfly reads git repositories over HTTP(S) only'
            : parsed
              ? `a ${parsed.protocol.replace(/:$/, '')}: URL, not http(s)`
              : 'not a valid URL';
      throw new DragonflyError('DF_ERR_GIT_URL', `git URL ${this.displayUrl} is ${what}`, { url: this.displayUrl }, hint);
    }
  }

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

  /** Fetch one remote ref (refs/heads/X or refs/tags/X); returns the oid it points to. */
  private async fetchRef(remoteRef: string, tags: boolean): Promise<string> {
    let res: Awaited<ReturnType<typeof git.fetch>>;
    try {
      res = await git.fetch({
        fs,
        http: this.http,
        gitdir: this.dir,
        cache: this.cache,
        url: this.url,
        remote: REMOTE,
        // `ref` only serves as the "have" for negotiation: our last synced head.
        ref: `refs/heads/${this.branch}`,
        remoteRef,
        singleBranch: true,
        tags,
        onAuth: this.onAuth,
        onAuthFailure: this.onAuthFailure,
      });
    } catch (e) {
      throw await this.networkError(e, remoteRef);
    }
    if (!res.fetchHead) throw await this.missingBranch(remoteRef, true);
    return res.fetchHead;
  }

  private async listRemoteRefs(): Promise<ServerRef[]> {
    try {
      return await git.listServerRefs({
        http: this.http,
        url: this.url,
        onAuth: this.onAuth,
        onAuthFailure: this.onAuthFailure,
        protocolVersion: 1,
        peelTags: true,
      });
    } catch (e) {
      throw await this.networkError(e, null);
    }
  }

  private readonly onAuth: AuthCallback = () => {
    const found = this.credentials();
    if (!found) {
      this.lastAuthSource = null;
      return undefined;
    }
    this.lastAuthSource = found.source;
    return found.auth;
  };

  private readonly onAuthFailure: AuthFailureCallback = () => ({ cancel: true });

  /** Credentials, in order: the auth option, the credentials file, the URL, the environment. */
  private credentials(): { auth: IsoGitAuth; source: string } | undefined {
    const env = this.options.env ?? process.env;
    const envUser = env[GIT_ENV.username] || undefined;
    const withToken = (token: string, username = envUser ?? TOKEN_USERNAME) => ({ username, password: token });
    const remember = (auth: IsoGitAuth, source: string) => {
      if (auth.password) this.secrets.add(auth.password);
      return { auth, source };
    };
    const o = this.options.auth;
    if (o && (o.token || o.password || o.username)) {
      return remember(o.token ? withToken(o.token, o.username ?? TOKEN_USERNAME) : { username: o.username ?? '', password: o.password ?? '' }, 'the auth option');
    }
    if (this.options.credentialsFile) {
      const file = this.options.credentialsFile;
      let line: string;
      try {
        line = (fs.readFileSync(file, 'utf8').split(/\r?\n/, 1)[0] ?? '').trim();
      } catch (e) {
        throw new DragonflyError('DF_ERR_GIT_AUTH', `cannot read the git credentials file ${file}: ${(e as NodeJS.ErrnoException).code ?? 'error'}`, {
          url: this.displayUrl,
          file,
        });
      }
      if (!line) throw new DragonflyError('DF_ERR_GIT_AUTH', `the git credentials file ${file} is empty`, { url: this.displayUrl, file }, 'write `user:password` or a token on its first line');
      const i = line.indexOf(':');
      const auth = i === -1 ? withToken(line) : { username: line.slice(0, i), password: line.slice(i + 1) };
      return remember(auth, `the credentials file ${file}`);
    }
    if (this.urlAuth) return remember({ username: this.urlAuth.username ?? '', password: this.urlAuth.password ?? '' }, 'the URL');
    const password = env[GIT_ENV.password];
    if (password) return remember({ username: envUser ?? '', password }, `${GIT_ENV.username}/${GIT_ENV.password}`);
    const token = env[GIT_ENV.token];
    if (token) return remember(withToken(token), GIT_ENV.token);
    return undefined;
  }

  /** Remove every known secret and URL userinfo from a message. */
  private redact(text: string): string {
    let out = sanitizeUrl(text);
    for (const s of this.secrets) if (s.length >= 3) out = out.split(s).join('***');
    return out;
  }

  private error(code: ErrorCode, message: string, data: Record<string, unknown> = {}, hint?: string): DragonflyError {
    return new DragonflyError(code, this.redact(message), { url: this.displayUrl, branch: this.branch, ...data }, hint && this.redact(hint));
  }

  private refError(ref: string, message: string, hint?: string): DragonflyError {
    return this.error('DF_ERR_GIT_REF', message, { ref }, hint);
  }

  /** Map an isomorphic-git / network failure to a DF_ERR_GIT_* error. */
  private async networkError(e: unknown, remoteRef: string | null): Promise<DragonflyError> {
    if (e instanceof DragonflyError) return e;
    const err = (e ?? {}) as IsoError & { cause?: { code?: string } };
    const where = remoteRef?.startsWith('refs/tags/')
      ? `tag ${remoteRef.slice(10)} of ${this.displayUrl}`
      : remoteRef
        ? `branch ${remoteRef.replace(/^refs\/heads\//, '')} of ${this.displayUrl}`
        : `the branches and tags of ${this.displayUrl}`;
    if (err.code === 'HttpError') {
      const status = err.data?.statusCode ?? 0;
      const statusText = `HTTP ${status}${err.data?.statusMessage ? ' ' + err.data.statusMessage : ''}`;
      if (status === 401 || status === 403) {
        const source = this.lastAuthSource;
        return source
          ? this.error('DF_ERR_GIT_AUTH', `${this.displayUrl} refused the credentials from ${source} (${statusText}) while fetching ${where}`, { status })
          : this.error('DF_ERR_GIT_AUTH', `${this.displayUrl} requires credentials (${statusText}) and none are configured, while fetching ${where}`, { status });
      }
      if (status === 404 || status === 410) {
        return this.error('DF_ERR_GIT_REPO', `no git repository at ${this.displayUrl} (${statusText})`, { status });
      }
      return this.error('DF_ERR_GIT_UNREACHABLE', `cannot fetch ${where}: the server answered ${statusText}`, { status });
    }
    if (err.code === 'UserCanceledError') {
      return this.error('DF_ERR_GIT_AUTH', `${this.displayUrl} refused the credentials from ${this.lastAuthSource ?? 'the configuration'} while fetching ${where}`, { status: 401 });
    }
    if (err.code === 'SmartHttpError') {
      return this.error('DF_ERR_GIT_REPO', `${this.displayUrl} did not answer with the git smart HTTP protocol (is it the clone URL of a repository?)`);
    }
    if (err.code === 'NotFoundError' && remoteRef) return this.missingBranch(remoteRef, false);
    if (err.code === 'RemoteCapabilityError') {
      return this.error('DF_ERR_GIT_REPO', `${this.displayUrl} lacks a git capability Dragonfly needs: ${err.message ?? ''}`);
    }
    const sysCode = (err as { code?: string }).code ?? err.cause?.code;
    const cause =
      (sysCode && NET_CAUSES[sysCode] ? `${NET_CAUSES[sysCode]} (${sysCode})` : undefined) ??
      (/timed out/i.test(err.message ?? '') ? `no answer within ${Math.round((this.options.timeoutMs ?? 60_000) / 1000)}s` : undefined) ??
      (sysCode && /CERT|TLS|SSL/.test(sysCode) ? `TLS error (${sysCode})` : undefined) ??
      (/aborted|premature|unexpected end|socket hang up/i.test(err.message ?? '') ? 'the connection dropped during the transfer' : undefined) ??
      `${err.message ?? String(e)}`;
    return this.error('DF_ERR_GIT_UNREACHABLE', `cannot fetch ${where}: ${cause}`, sysCode ? { cause: sysCode } : {});
  }

  private async missingBranch(remoteRef: string, empty: boolean): Promise<DragonflyError> {
    const name = remoteRef.replace(/^refs\/(heads|tags)\//, '');
    const noun = remoteRef.startsWith('refs/tags/') ? 'tag' : 'branch';
    let known = '';
    if (!empty) {
      try {
        const refs = await this.listRemoteRefs();
        const branches = refs.filter((r) => r.ref.startsWith('refs/heads/')).map((r) => r.ref.slice(11));
        known = branches.length ? ` (branches: ${list(branches)})` : ' (it has no branches)';
      } catch {
        known = '';
      }
    }
    const message = empty ? `the repository ${this.displayUrl} is empty: ${noun} ${name} does not exist` : `${noun} ${name} does not exist in ${this.displayUrl}${known}`;
    return this.error(noun === 'tag' ? 'DF_ERR_GIT_REF' : 'DF_ERR_GIT_BRANCH', message, { ref: name });
  }

  /** Run a local cache operation; fs failures become DF_ERR_GIT_CACHE. */
  private async cacheOp<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      if (e instanceof DragonflyError) throw e;
      const err = e as IsoError & { code?: string };
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
      const err = e as IsoError;
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

/**
 * A v1 smart-HTTP ref advertisement without a HEAD line (the remote's HEAD is dangling) gets one,
 * pointing at `preferredRef` (or the first ref); null when nothing needs changing or it cannot be parsed.
 */
export function withHeadAdvertised(body: Buffer, preferredRef: string): Buffer | null {
  const lines: (Buffer | null)[] = []; // null = flush-pkt
  let pos = 0;
  while (pos < body.length) {
    const len = Number.parseInt(body.subarray(pos, pos + 4).toString('latin1'), 16);
    if (!Number.isFinite(len) || (len > 0 && len < 4) || pos + Math.max(len, 4) > body.length) return null;
    lines.push(len === 0 ? null : body.subarray(pos + 4, pos + len));
    pos += len === 0 ? 4 : len;
  }
  const first = lines.findIndex((l, i) => l !== null && i > 0 && lines[i - 1] === null);
  if (first === -1 || !lines[0]?.toString('latin1').startsWith('# service=')) return null;
  const text = lines[first]!.toString('latin1');
  const nul = text.indexOf('\0');
  if (nul === -1) return null;
  const [oid, name] = text.slice(0, nul).split(' ');
  if (!oid || !name || name === 'HEAD' || /^0{40}$/.test(oid)) return null;
  const caps = text.slice(nul + 1).replace(/\n$/, '');
  let target = oid;
  for (let i = first; i < lines.length && lines[i] !== null; i++) {
    const [o, r] = lines[i]!.toString('latin1').split('\0')[0]!.replace(/\n$/, '').split(' ');
    if (r === preferredRef && o) target = o;
  }
  const pkt = (s: string) => Buffer.concat([Buffer.from((s.length + 4).toString(16).padStart(4, '0'), 'latin1'), Buffer.from(s, 'latin1')]);
  const out: Buffer[] = [];
  for (const [i, l] of lines.entries()) {
    if (l === null) out.push(Buffer.from('0000', 'latin1'));
    else if (i === first) out.push(pkt(`${target} HEAD\0${caps}\n`), pkt(`${oid} ${name}\n`));
    else out.push(pkt(l.toString('latin1')));
  }
  return Buffer.concat(out);
}

/** 'dir' (walked), 'file' (a fleet file), or null (skipped) — the same rules as readFleetDir. */
function entryKind(e: { path: string; type: string; mode: string }): 'dir' | 'file' | null {
  if (isSkippedName(e.path)) return null;
  if (e.type === 'tree') return 'dir';
  if (e.type === 'blob' && isRegularGitFile(e.mode) && isFleetFile(e.path)) return 'file';
  return null;
}

function list(names: string[], max = 10): string {
  return names.length > max ? `${names.slice(0, max).join(', ')}, … (${names.length} in all)` : names.join(', ');
}

// -------------------------------------------------------------------------------------------------
// A minimal reader of git pack files (index v2), for blobs only: isomorphic-git inflates every object
// with pako and probes the file system (stat, a loose-object read, a readdir) for each one, which
// costs ~0.3 ms per object; this reads with native zlib from packs held in memory.

const OBJ_TYPES = ['', 'commit', 'tree', 'blob', 'tag'] as const;
const OFS_DELTA = 6;
const REF_DELTA = 7;

interface Pack {
  name: string;
  /** N sorted 20-byte oids. */
  oids: Buffer;
  /** Offset of each oid in the pack. */
  offsets: Float64Array;
  fanout: Uint32Array;
  data: Buffer;
}

class PackSet {
  private readonly loaded = new Map<string, Pack>();

  constructor(private readonly dir: string) {}

  /** Load the packs that appeared since the last call (packs are immutable; new ones come with fetches). */
  async refresh(): Promise<this> {
    let names: string[];
    try {
      names = await fs.promises.readdir(this.dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return this;
      throw e;
    }
    for (const idx of names.filter((n) => n.endsWith('.idx'))) {
      const name = idx.slice(0, -4);
      if (this.loaded.has(name) || !names.includes(`${name}.pack`)) continue;
      const [idxBuf, data] = await Promise.all([fs.promises.readFile(path.join(this.dir, idx)), fs.promises.readFile(path.join(this.dir, `${name}.pack`))]);
      const pack = parseIndex(name, idxBuf, data);
      if (pack) this.loaded.set(name, pack);
    }
    return this;
  }

  /** A reading session: resolved delta bases are kept for its duration. */
  session(): PackSession {
    // Largest first: most lookups end in the first clone's pack. Small packs (one per fetch) cost
    // two fanout reads per lookup when they do not hold the oid's first byte.
    const packs = [...this.loaded.values()].sort((a, b) => b.offsets.length - a.offsets.length);
    const memo = new Map<string, { type: number; data: Buffer }>();
    let memoBytes = 0;
    const MEMO_LIMIT = 64 * 1024 * 1024;

    const locate = (oid: Buffer): { pack: Pack; offset: number } | undefined => {
      for (const pack of packs) {
        const first = oid[0]!;
        let lo = first === 0 ? 0 : pack.fanout[first - 1]!;
        let hi = pack.fanout[first]!;
        while (lo < hi) {
          const mid = (lo + hi) >>> 1;
          const c = pack.oids.compare(oid, 0, 20, mid * 20, mid * 20 + 20);
          if (c === 0) return { pack, offset: pack.offsets[mid]! };
          if (c < 0) lo = mid + 1; // pack oid < wanted
          else hi = mid;
        }
      }
      return undefined;
    };

    const readAt = (pack: Pack, offset: number, depth: number): { type: number; data: Buffer } => {
      const key = `${pack.name}:${offset}`;
      const hit = memo.get(key);
      if (hit) return hit;
      if (depth > 10_000) throw new Error('delta chain too deep');
      const d = pack.data;
      let p = offset;
      let c = d[p++]!;
      const type = (c >> 4) & 7;
      let size = c & 15;
      let shift = 4;
      while (c & 0x80) {
        c = d[p++]!;
        size += (c & 0x7f) * 2 ** shift;
        shift += 7;
      }
      let result: { type: number; data: Buffer };
      if (type === OFS_DELTA) {
        c = d[p++]!;
        let back = c & 0x7f;
        while (c & 0x80) {
          c = d[p++]!;
          back = (back + 1) * 128 + (c & 0x7f);
        }
        const base = readAt(pack, offset - back, depth + 1);
        result = { type: base.type, data: applyDelta(base.data, inflate(d, p, size)) };
      } else if (type === REF_DELTA) {
        const baseOid = d.subarray(p, p + 20);
        const where = locate(baseOid);
        if (!where) throw new Error(`delta base ${baseOid.toString('hex')} not in any pack`);
        const base = readAt(where.pack, where.offset, depth + 1);
        result = { type: base.type, data: applyDelta(base.data, inflate(d, p + 20, size)) };
      } else if (type >= 1 && type <= 4) {
        result = { type, data: inflate(d, p, size) };
      } else {
        throw new Error(`unknown pack object type ${type}`);
      }
      if (memoBytes < MEMO_LIMIT) {
        // Any object may be the base of a later one (chains are up to 50 deep).
        memo.set(key, result);
        memoBytes += result.data.length;
      }
      return result;
    };

    return {
      read(oid: string, type: 'blob' | 'tree'): Buffer | undefined {
        const raw = Buffer.from(oid, 'hex');
        if (raw.length !== 20) return undefined;
        try {
          const where = locate(raw);
          if (!where) return undefined;
          const obj = readAt(where.pack, where.offset, 0);
          if (OBJ_TYPES[obj.type] !== type) return undefined;
          // Content addressing: what we read must hash to the oid that named it.
          const sum = createHash('sha1').update(`${type} ${obj.data.length}\0`).update(obj.data).digest('hex');
          return sum === oid ? obj.data : undefined;
        } catch {
          return undefined; // isomorphic-git reads it instead (and reports what is wrong)
        }
      },
    };
  }
}

interface PackSession {
  /** The object's content when it is packed, of this type, and hashes to its oid; else undefined. */
  read(oid: string, type: 'blob' | 'tree'): Buffer | undefined;
}

interface TreeEntry {
  mode: string;
  path: string;
  oid: string;
  type: 'blob' | 'tree' | 'commit';
}

/** A raw tree object → entries, with modes canonicalised as isomorphic-git does; null when malformed. */
function parseTree(data: Buffer): TreeEntry[] | null {
  const out: TreeEntry[] = [];
  let p = 0;
  while (p < data.length) {
    const space = data.indexOf(0x20, p);
    const nul = space === -1 ? -1 : data.indexOf(0, space + 1);
    if (space === -1 || nul === -1 || nul + 21 > data.length) return null;
    const rawMode = data.toString('latin1', p, space);
    const name = data.toString('utf8', space + 1, nul);
    if (!name || name.includes('/')) return null; // isomorphic-git then reports the unsafe name
    const oid = data.toString('hex', nul + 1, nul + 21);
    p = nul + 21;
    const m = Number.parseInt(rawMode, 8);
    let mode: string;
    let type: TreeEntry['type'];
    if ((m & 0o170000) === 0o040000) [mode, type] = ['040000', 'tree'];
    else if ((m & 0o170000) === 0o160000) [mode, type] = ['160000', 'commit'];
    else if ((m & 0o170000) === 0o120000) [mode, type] = ['120000', 'blob'];
    else if ((m & 0o170000) === 0o100000) [mode, type] = [m & 0o111 ? '100755' : '100644', 'blob'];
    else return null;
    out.push({ mode, path: name, oid, type });
  }
  return out;
}

function parseIndex(name: string, idx: Buffer, data: Buffer): Pack | undefined {
  // Version 2 only (git has written v2 since 1.5.2; isomorphic-git writes v2).
  if (idx.length < 8 + 256 * 4 || idx.readUInt32BE(0) !== 0xff744f63 || idx.readUInt32BE(4) !== 2) return undefined;
  if (data.length < 12 || data.toString('latin1', 0, 4) !== 'PACK') return undefined;
  const fanout = new Uint32Array(256);
  for (let i = 0; i < 256; i++) fanout[i] = idx.readUInt32BE(8 + i * 4);
  const n = fanout[255]!;
  const oidsAt = 8 + 256 * 4;
  const crcAt = oidsAt + n * 20;
  const offAt = crcAt + n * 4;
  const bigAt = offAt + n * 4;
  if (idx.length < bigAt + 40) return undefined;
  const offsets = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const o = idx.readUInt32BE(offAt + i * 4);
    offsets[i] = o & 0x80000000 ? Number(idx.readBigUInt64BE(bigAt + (o & 0x7fffffff) * 8)) : o;
  }
  return { name, oids: idx.subarray(oidsAt, crcAt), offsets, fanout, data };
}

function inflate(d: Buffer, at: number, size: number): Buffer {
  // Trailing bytes after the zlib stream (the rest of the pack) are ignored by inflateSync.
  const out = zlib.inflateSync(d.subarray(at), size > 0 ? { maxOutputLength: Math.max(size, 1) } : {});
  if (out.length !== size) throw new Error(`pack object inflated to ${out.length} bytes, expected ${size}`);
  return out;
}

function applyDelta(base: Buffer, delta: Buffer): Buffer {
  let p = 0;
  const varint = () => {
    let v = 0;
    let shift = 0;
    let c: number;
    do {
      c = delta[p++]!;
      v += (c & 0x7f) * 2 ** shift;
      shift += 7;
    } while (c & 0x80);
    return v;
  };
  const srcSize = varint();
  if (srcSize !== base.length) throw new Error(`delta expects a base of ${srcSize} bytes, got ${base.length}`);
  const out = Buffer.allocUnsafe(varint());
  let o = 0;
  while (p < delta.length) {
    const op = delta[p++]!;
    if (op & 0x80) {
      let off = 0;
      let len = 0;
      if (op & 0x01) off |= delta[p++]!;
      if (op & 0x02) off |= delta[p++]! << 8;
      if (op & 0x04) off |= delta[p++]! << 16;
      if (op & 0x08) off = (off | (delta[p++]! << 24)) >>> 0;
      if (op & 0x10) len |= delta[p++]!;
      if (op & 0x20) len |= delta[p++]! << 8;
      if (op & 0x40) len |= delta[p++]! << 16;
      if (len === 0) len = 0x10000;
      if (off + len > base.length || o + len > out.length) throw new Error('delta copy out of range');
      base.copy(out, o, off, off + len);
      o += len;
    } else if (op > 0) {
      if (o + op > out.length || p + op > delta.length) throw new Error('delta insert out of range');
      delta.copy(out, o, p, p + op);
      o += op;
      p += op;
    } else {
      throw new Error('delta opcode 0 is reserved');
    }
  }
  if (o !== out.length) throw new Error('delta result has the wrong size');
  return out;
}
