// Test helper: serve bare repositories over git smart HTTP (`git http-backend` behind a node:http CGI
// wrapper), and drive working clones with the git CLI. Everything lives under a temp dir per test.
import { execFile, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';

export const GIT = '/usr/bin/git';
const EXEC_PATH = spawnSync(GIT, ['--exec-path'], { encoding: 'utf8' }).stdout.trim() || '/usr/lib/git-core';
const HTTP_BACKEND = path.join(EXEC_PATH, 'git-http-backend');

/** How the next failing requests fail. */
export type FailMode =
  /** 503 Service Unavailable, for any request. */
  | 'unavailable'
  /** The connection is destroyed before any response, for any request. */
  | 'reset'
  /** The upload-pack POST's response is cut off halfway (GETs pass through untouched). */
  | 'truncate'
  /** The request is accepted and never answered (the socket stays open). */
  | 'hang';

export interface GitHttpServer {
  /** http://HOST:PORT (127.0.0.1 unless options.host) */
  readonly baseUrl: string;
  readonly port: number;
  /** The directory served (GIT_PROJECT_ROOT). */
  readonly root: string;
  /** URL of a repository under root, e.g. url('fleet.git'). */
  url(repo: string): string;
  /** The next n requests (or upload-pack POSTs, for 'truncate') fail. */
  failNext(n: number, mode?: FailMode): void;
  /** Every request seen: method and path (with query). */
  readonly requests: { method: string; url: string; status: number }[];
  close(): Promise<void>;
}

export interface GitHttpOptions {
  /** Directory holding bare repositories. */
  root: string;
  /** Basic auth: requests without these credentials get 401 with WWW-Authenticate. */
  auth?: { username: string; password: string };
  /** The address to listen on (default 127.0.0.1): e.g. the host end of a test network namespace's veth. */
  host?: string;
}

/** Start a smart-HTTP git server on HOST:0 (127.0.0.1 by default). */
export async function startGitHttp(options: GitHttpOptions): Promise<GitHttpServer> {
  const root = path.resolve(options.root);
  let failures: { n: number; mode: FailMode } = { n: 0, mode: 'unavailable' };
  const requests: { method: string; url: string; status: number }[] = [];
  const sockets = new Set<import('node:net').Socket>();

  const server = http.createServer((req, res) => {
    const method = req.method ?? 'GET';
    const rawUrl = req.url ?? '/';
    const record = (status: number) => requests.push({ method, url: rawUrl, status });
    const isPackPost = method === 'POST' && rawUrl.split('?')[0]!.endsWith('/git-upload-pack');

    let truncate = false;
    if (failures.n > 0 && (failures.mode !== 'truncate' || isPackPost)) {
      failures.n--;
      const mode = failures.mode;
      if (mode === 'unavailable') {
        record(503);
        req.resume();
        res.writeHead(503, { 'content-type': 'text/plain' }).end('simulated outage\n');
        return;
      }
      if (mode === 'reset') {
        record(0);
        req.socket.destroy();
        return;
      }
      if (mode === 'hang') {
        record(0);
        req.resume();
        return; // never answered; close() destroys the socket
      }
      truncate = true;
    }

    if (options.auth) {
      const expected = 'Basic ' + Buffer.from(`${options.auth.username}:${options.auth.password}`).toString('base64');
      if (req.headers.authorization !== expected) {
        record(401);
        req.resume();
        res.writeHead(401, { 'www-authenticate': 'Basic realm="dragonfly-test"', 'content-type': 'text/plain' }).end('authentication required\n');
        return;
      }
    }

    const [pathInfo = '/', query = ''] = rawUrl.split(/\?(.*)/s);
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      GIT_CONFIG_NOSYSTEM: '1',
      HOME: root,
      GIT_PROJECT_ROOT: root,
      GIT_HTTP_EXPORT_ALL: '1',
      GATEWAY_INTERFACE: 'CGI/1.1',
      SERVER_PROTOCOL: 'HTTP/1.1',
      REQUEST_METHOD: method,
      PATH_INFO: decodeURIComponent(pathInfo),
      QUERY_STRING: query,
      CONTENT_TYPE: req.headers['content-type'] ?? '',
      REMOTE_ADDR: req.socket.remoteAddress ?? '127.0.0.1',
      REMOTE_USER: options.auth?.username ?? '',
    };
    if (req.headers['content-length'] !== undefined) env.CONTENT_LENGTH = req.headers['content-length'];
    // gzip request bodies are passed through as-is: http-backend inflates them itself.
    if (req.headers['content-encoding']) env.HTTP_CONTENT_ENCODING = req.headers['content-encoding'];
    const gitProtocol = req.headers['git-protocol'];
    if (typeof gitProtocol === 'string') env.GIT_PROTOCOL = gitProtocol;

    const child = spawn(HTTP_BACKEND, [], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', (e) => {
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' }).end(String(e));
    });
    req.pipe(child.stdin);
    child.stdin.on('error', () => {}); // the backend may exit before reading everything

    // Parse the CGI header block, then stream the body.
    let head = Buffer.alloc(0);
    let headersDone = false;
    let status = 200;
    const held: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => {
      if (headersDone) return writeBody(chunk);
      head = Buffer.concat([head, chunk]);
      let end = head.indexOf('\r\n\r\n');
      let sepLen = 4;
      const lfEnd = head.indexOf('\n\n');
      if (lfEnd !== -1 && (end === -1 || lfEnd < end)) {
        end = lfEnd;
        sepLen = 2;
      }
      if (end === -1) return;
      headersDone = true;
      const headers: Record<string, string> = {};
      for (const line of head.subarray(0, end).toString('latin1').split(/\r?\n/)) {
        const i = line.indexOf(':');
        if (i <= 0) continue;
        const name = line.slice(0, i).trim();
        const value = line.slice(i + 1).trim();
        if (name.toLowerCase() === 'status') status = Number.parseInt(value, 10) || 500;
        else headers[name] = value;
      }
      if (status >= 500 && stderr) headers['x-backend-stderr'] = stderr.replace(/[^\x20-\x7e]/g, ' ').slice(0, 200);
      record(status);
      res.writeHead(status, headers);
      const rest = head.subarray(end + sepLen);
      if (rest.length > 0) writeBody(rest);
    });
    function writeBody(chunk: Buffer) {
      if (res.destroyed) return;
      if (truncate) held.push(chunk);
      else res.write(chunk);
    }
    child.stdout.on('end', () => {
      if (!headersDone) {
        record(502);
        if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' }).end(`bad CGI response\n${stderr}`);
        return;
      }
      if (res.destroyed) return;
      if (truncate) {
        // Send the first half of the body, then drop the connection mid-response.
        const body = Buffer.concat(held);
        res.write(body.subarray(0, Math.floor(body.length / 2)), () => res.socket?.destroy());
        return;
      }
      res.end();
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, options.host ?? '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const baseUrl = `http://${options.host ?? '127.0.0.1'}:${port}`;
  return {
    baseUrl,
    port,
    root,
    requests,
    url: (repo) => `${baseUrl}/${repo.replace(/^\/+/, '')}`,
    failNext(n, mode = 'unavailable') {
      failures = { n, mode };
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

// ---------------------------------------------------------------------------------------------------
// git CLI helpers

export interface Author {
  name: string;
  email: string;
  /** Git date, e.g. '2024-01-02T03:04:05Z' or '1700000000 +0000'. */
  date?: string;
}

export const DEFAULT_AUTHOR: Author = { name: 'Ada Lovelace', email: 'ada@example.com' };

/** A clean environment for the git CLI: no system or user config, fixed identity. */
export function gitEnv(home: string, author: Author = DEFAULT_AUTHOR, committer: Author = author): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: home,
    GIT_CONFIG_NOSYSTEM: '1',
    GIT_CONFIG_GLOBAL: '/dev/null',
    GIT_TERMINAL_PROMPT: '0',
    GIT_AUTHOR_NAME: author.name,
    GIT_AUTHOR_EMAIL: author.email,
    GIT_COMMITTER_NAME: committer.name,
    GIT_COMMITTER_EMAIL: committer.email,
    LC_ALL: 'C',
  };
  if (author.date) env.GIT_AUTHOR_DATE = author.date;
  if (committer.date) env.GIT_COMMITTER_DATE = committer.date;
  return env;
}

const BASE_CONFIG = ['-c', 'init.defaultBranch=main', '-c', 'commit.gpgsign=false', '-c', 'tag.gpgsign=false', '-c', 'core.autocrlf=false'];

/** Run git asynchronously (never execFileSync: the HTTP server may be in this very process). */
export function git(cwd: string, args: string[], env: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(GIT, [...BASE_CONFIG, ...args], { cwd, env, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`git ${args.join(' ')} failed in ${cwd}: ${stderr || err.message}`));
      else resolve(stdout);
    });
  });
}

/** A bare repository under the served root, and a working clone that pushes to it (by path, not HTTP). */
export class TestRepo {
  readonly home: string;

  constructor(
    /** The bare repository (served as `name`). */
    readonly bare: string,
    /** The working clone. */
    readonly work: string,
    /** Name under the server root, e.g. 'fleet.git'. */
    readonly name: string,
    readonly branch: string,
  ) {
    this.home = path.join(path.dirname(work), `.home-${path.basename(work)}`);
    fs.mkdirSync(this.home, { recursive: true });
  }

  git(args: string[], author?: Author, committer?: Author): Promise<string> {
    return git(this.work, args, gitEnv(this.home, author, committer));
  }

  /** Write a file in the working clone (creating folders). */
  write(rel: string, text: string | Buffer): void {
    const abs = path.join(this.work, rel);
    fs.mkdirSync(path.dirname(abs), { recursive: true });
    fs.writeFileSync(abs, text);
  }

  /** Write many files at once: { 'machines/a.yaml': '...' }. */
  writeAll(files: Record<string, string>): void {
    for (const [rel, text] of Object.entries(files)) this.write(rel, text);
  }

  remove(rel: string): void {
    fs.rmSync(path.join(this.work, rel), { recursive: true, force: true });
  }

  rename(from: string, to: string): void {
    fs.mkdirSync(path.dirname(path.join(this.work, to)), { recursive: true });
    fs.renameSync(path.join(this.work, from), path.join(this.work, to));
  }

  /** Copy a directory tree into the working clone at `rel`. */
  copyDir(src: string, rel: string): void {
    fs.cpSync(src, path.join(this.work, rel), { recursive: true });
  }

  /** Stage everything and commit; returns the new commit SHA. */
  async commit(message: string, author: Author = DEFAULT_AUTHOR, committer: Author = author): Promise<string> {
    await this.git(['add', '-A'], author, committer);
    await this.git(['commit', '-q', '--allow-empty', '-m', message], author, committer);
    return this.head();
  }

  async head(): Promise<string> {
    return (await this.git(['rev-parse', 'HEAD'])).trim();
  }

  /** Push the branch (or `ref`) to the bare repository. */
  async push(options: { force?: boolean; ref?: string } = {}): Promise<void> {
    const ref = options.ref ?? `HEAD:refs/heads/${this.branch}`;
    await this.git(['push', '-q', ...(options.force ? ['--force'] : []), 'origin', ref]);
  }

  async commitAndPush(message: string, author?: Author): Promise<string> {
    const sha = await this.commit(message, author);
    await this.push();
    return sha;
  }

  /**
   * Commit `files` (path → text, added or replaced) straight into the bare repository's branch with
   * `git fast-import` (much faster than a work tree for thousands of files), then bring the working
   * clone up to date (unless updateWork: false). Returns the new commit SHA.
   */
  async importFiles(files: Record<string, string>, message: string, options: { author?: Author; updateWork?: boolean } = {}): Promise<string> {
    const author = options.author ?? DEFAULT_AUTHOR;
    const env = gitEnv(this.home, author);
    const ref = `refs/heads/${this.branch}`;
    const parent = (await git(this.bare, ['rev-parse', '--verify', '-q', ref], env).catch(() => '')).trim();
    const when = `${Math.floor(Date.now() / 1000)} +0000`;
    const parts: Buffer[] = [];
    const data = (text: string | Buffer) => {
      const b = Buffer.isBuffer(text) ? text : Buffer.from(text);
      parts.push(Buffer.from(`data ${b.length}\n`), b, Buffer.from('\n'));
    };
    parts.push(Buffer.from(`commit ${ref}\ncommitter ${author.name} <${author.email}> ${when}\n`));
    data(message);
    if (parent) parts.push(Buffer.from(`from ${parent}\n`));
    for (const [rel, text] of Object.entries(files)) {
      parts.push(Buffer.from(`M 100644 inline ${rel}\n`));
      data(text);
    }
    await new Promise<void>((resolve, reject) => {
      const child = spawn(GIT, ['fast-import', '--quiet'], { cwd: this.bare, env, stdio: ['pipe', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('error', reject);
      child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`git fast-import failed: ${stderr}`))));
      child.stdin.end(Buffer.concat(parts));
    });
    if (options.updateWork === false) return (await git(this.bare, ['rev-parse', ref], env)).trim();
    await this.git(['fetch', '-q', 'origin']);
    await this.git(['reset', '-q', '--hard', `origin/${this.branch}`]);
    return this.head();
  }

  /** Create a tag (annotated when a message is given) and push it. */
  async tag(name: string, message?: string): Promise<void> {
    await this.git(message ? ['tag', '-a', name, '-m', message] : ['tag', name]);
    await this.git(['push', '-q', 'origin', `refs/tags/${name}`]);
  }

  /** A fresh checkout of `commit` in a new directory (for comparing against readFleetDir). */
  async checkout(commit: string, dest: string): Promise<string> {
    const env = gitEnv(this.home);
    await git(path.dirname(dest), ['clone', '-q', '--no-checkout', this.bare, dest], env);
    await git(dest, ['checkout', '-q', '--detach', commit], env);
    return dest;
  }
}

/** Create `root/name` as a bare repository and a working clone of it under `workRoot`. */
export async function createRepo(root: string, name: string, workRoot: string, branch = 'main'): Promise<TestRepo> {
  const bare = path.join(root, name);
  const work = path.join(workRoot, name.replace(/\.git$/, '') + '-work');
  fs.mkdirSync(root, { recursive: true });
  fs.mkdirSync(workRoot, { recursive: true });
  const home = path.join(workRoot, '.home');
  fs.mkdirSync(home, { recursive: true });
  const env = gitEnv(home);
  await git(root, ['init', '-q', '--bare', '-b', branch, bare], env);
  await git(workRoot, ['init', '-q', '-b', branch, work], env);
  await git(work, ['remote', 'add', 'origin', bare], env);
  return new TestRepo(bare, work, name, branch);
}

/** A temp dir removed by the returned cleanup. */
export function tempDir(prefix = 'dragonfly-git-'): { dir: string; cleanup: () => void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  return { dir, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}
