// Talking to a git remote over HTTP(S), with isomorphic-git: the HTTP client (socket timeout, a HEAD line
// for remotes whose HEAD is dangling), authentication, fetching one ref into the local cache, listing the
// remote's refs, and turning isomorphic-git's and the network's failures into DF_ERR_GIT_* errors.
import fs from 'node:fs';
import git from 'isomorphic-git';
import httpNode from 'isomorphic-git/http/node';
import type { AuthCallback, AuthFailureCallback, HttpClient, ServerRef } from 'isomorphic-git';
import { DragonflyError, type ErrorCode } from '../../schemas/errors.js';
import type { CredentialResolver } from './credentials.js';

/** The name of the remote in the cache repository. */
export const REMOTE = 'origin';

/** What isomorphic-git puts on its errors. */
export interface IsoGitError {
  code?: string;
  message?: string;
  data?: { statusCode?: number; statusMessage?: string; candidates?: string[] };
}

/** Builds the error a git source throws: message and hint redacted, the URL and branch in its data. */
export type GitErrorFactory = (code: ErrorCode, message: string, data?: Record<string, unknown>, hint?: string) => DragonflyError;

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

/** `names` joined with ', ', the first `max` of them when there are more. */
export function listNames(names: string[], max = 10): string {
  return names.length > max ? `${names.slice(0, max).join(', ')}, … (${names.length} in all)` : names.join(', ');
}

export interface GitTransportOptions {
  /** The user's URL as given (trimmed), for telling what kind of URL it is. */
  raw: string;
  /** The URL without credentials (what is fetched). */
  url: string;
  /** The URL for messages: userinfo replaced by ***. */
  displayUrl: string;
  /** The followed branch: its head is the "have" of every fetch. */
  branch: string;
  /** The bare cache repository fetched into. */
  dir: string;
  /** The source's one isomorphic-git cache. */
  cache: object;
  credentials: CredentialResolver;
  /** Socket idle timeout of every HTTP request, in ms. Default 60 000. */
  timeoutMs?: number;
  fail: GitErrorFactory;
}

/** One HTTP(S) remote; the URL is checked (http or https) when it is made. */
export class GitTransport {
  private readonly http: HttpClient;
  private readonly timeoutMs: number;
  /** What the last authentication attempt sent (for the error message). */
  private lastAuthSource: string | null = null;

  constructor(private readonly options: GitTransportOptions) {
    checkHttpUrl(options.raw, options.url, options.displayUrl);
    const timeout = (this.timeoutMs = options.timeoutMs ?? 60_000);
    const headRef = `refs/heads/${options.branch}`;
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

  /** Fetch one remote ref (refs/heads/X or refs/tags/X) into the cache; returns the oid it points to. */
  async fetchRef(remoteRef: string, tags: boolean): Promise<string> {
    const { dir, cache, url, branch } = this.options;
    let res: Awaited<ReturnType<typeof git.fetch>>;
    try {
      res = await git.fetch({
        fs,
        http: this.http,
        gitdir: dir,
        cache,
        url,
        remote: REMOTE,
        // `ref` only serves as the "have" for negotiation: our last synced head.
        ref: `refs/heads/${branch}`,
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

  /** The remote's branches and tags (annotated tags peeled). */
  async listRemoteRefs(): Promise<ServerRef[]> {
    try {
      return await git.listServerRefs({
        http: this.http,
        url: this.options.url,
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
    const found = this.options.credentials.resolve();
    if (!found) {
      this.lastAuthSource = null;
      return undefined;
    }
    this.lastAuthSource = found.source;
    return found.auth;
  };

  private readonly onAuthFailure: AuthFailureCallback = () => ({ cancel: true });

  /** Map an isomorphic-git / network failure to a DF_ERR_GIT_* error. */
  private async networkError(e: unknown, remoteRef: string | null): Promise<DragonflyError> {
    if (e instanceof DragonflyError) return e;
    const { displayUrl, fail } = this.options;
    const err = (e ?? {}) as IsoGitError & { cause?: { code?: string } };
    const where = remoteRef?.startsWith('refs/tags/')
      ? `tag ${remoteRef.slice(10)} of ${displayUrl}`
      : remoteRef
        ? `branch ${remoteRef.replace(/^refs\/heads\//, '')} of ${displayUrl}`
        : `the branches and tags of ${displayUrl}`;
    if (err.code === 'HttpError') {
      const status = err.data?.statusCode ?? 0;
      const statusText = `HTTP ${status}${err.data?.statusMessage ? ' ' + err.data.statusMessage : ''}`;
      if (status === 401 || status === 403) {
        const source = this.lastAuthSource;
        return source
          ? fail('DF_ERR_GIT_AUTH', `${displayUrl} refused the credentials from ${source} (${statusText}) while fetching ${where}`, { status })
          : fail('DF_ERR_GIT_AUTH', `${displayUrl} requires credentials (${statusText}) and none are configured, while fetching ${where}`, { status });
      }
      if (status === 404 || status === 410) {
        return fail('DF_ERR_GIT_REPO', `no git repository at ${displayUrl} (${statusText})`, { status });
      }
      return fail('DF_ERR_GIT_UNREACHABLE', `cannot fetch ${where}: the server answered ${statusText}`, { status });
    }
    if (err.code === 'UserCanceledError') {
      return fail('DF_ERR_GIT_AUTH', `${displayUrl} refused the credentials from ${this.lastAuthSource ?? 'the configuration'} while fetching ${where}`, { status: 401 });
    }
    if (err.code === 'SmartHttpError') {
      return fail('DF_ERR_GIT_REPO', `${displayUrl} did not answer with the git smart HTTP protocol (is it the clone URL of a repository?)`);
    }
    if (err.code === 'NotFoundError' && remoteRef) return this.missingBranch(remoteRef, false);
    if (err.code === 'RemoteCapabilityError') {
      return fail('DF_ERR_GIT_REPO', `${displayUrl} lacks a git capability Dragonfly needs: ${err.message ?? ''}`);
    }
    const sysCode = (err as { code?: string }).code ?? err.cause?.code;
    const cause =
      (sysCode && NET_CAUSES[sysCode] ? `${NET_CAUSES[sysCode]} (${sysCode})` : undefined) ??
      (/timed out/i.test(err.message ?? '') ? `no answer within ${Math.round(this.timeoutMs / 1000)}s` : undefined) ??
      (sysCode && /CERT|TLS|SSL/.test(sysCode) ? `TLS error (${sysCode})` : undefined) ??
      (/aborted|premature|unexpected end|socket hang up/i.test(err.message ?? '') ? 'the connection dropped during the transfer' : undefined) ??
      `${err.message ?? String(e)}`;
    return fail('DF_ERR_GIT_UNREACHABLE', `cannot fetch ${where}: ${cause}`, sysCode ? { cause: sysCode } : {});
  }

  private async missingBranch(remoteRef: string, empty: boolean): Promise<DragonflyError> {
    const { displayUrl, fail } = this.options;
    const name = remoteRef.replace(/^refs\/(heads|tags)\//, '');
    const noun = remoteRef.startsWith('refs/tags/') ? 'tag' : 'branch';
    let known = '';
    if (!empty) {
      try {
        const refs = await this.listRemoteRefs();
        const branches = refs.filter((r) => r.ref.startsWith('refs/heads/')).map((r) => r.ref.slice(11));
        known = branches.length ? ` (branches: ${listNames(branches)})` : ' (it has no branches)';
      } catch {
        known = '';
      }
    }
    const message = empty ? `the repository ${displayUrl} is empty: ${noun} ${name} does not exist` : `${noun} ${name} does not exist in ${displayUrl}${known}`;
    return fail(noun === 'tag' ? 'DF_ERR_GIT_REF' : 'DF_ERR_GIT_BRANCH', message, { ref: name });
  }
}

/** Dragonfly reads repositories over HTTP(S) only: anything else is DF_ERR_GIT_URL, saying what it looks like. */
function checkHttpUrl(raw: string, url: string, displayUrl: string): void {
  const hint = 'use the http(s) clone URL of the repository; for a directory on this machine use --fleet DIR, for a local repository serve it over HTTP (e.g. git http-backend)';
  let parsed: URL | undefined;
  try {
    parsed = new URL(url);
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
    throw new DragonflyError('DF_ERR_GIT_URL', `git URL ${displayUrl} is ${what}`, { url: displayUrl }, hint);
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
