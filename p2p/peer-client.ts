// The scheduler's HTTP API as a downloading peer calls it (docs/p2p.md, "Protocol"; the server side is
// boot/routes-p2p.ts). Every call carries the image's P2P token. What the server answers is checked before it
// is used: the manifest by parseManifest, bitfields by Bitfield.fromBase64, grants by their shape.
import net from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { DragonflyError } from '../schemas/errors.js';
import { Bitfield } from './bitfield.js';
import { parseManifest, type Manifest } from './manifest.js';
import type { GrantResult } from './scheduler.js';

/** A candidate parent from the long poll: its piece server and what it holds. */
export interface ParentInfo {
  readonly id: string;
  readonly url: string;
  readonly load: number;
  readonly have: Bitfield;
}

export type JoinAnswer = { kind: 'joined'; revision: number } | { kind: 'not-distributed' };
export type ParentsAnswer = { kind: 'parents'; revision: number; parents: ParentInfo[] } | { kind: 'unknown' };

/** A call should take no longer than this (the long poll adds its own wait). */
const CALL_TIMEOUT_MS = 10_000;
const ID = /^[a-z0-9][a-z0-9-]{3,63}$/;

export class SchedulerClient {
  readonly base: string;
  readonly #image: string;
  readonly #auth: Record<string, string>;

  constructor(
    server: string,
    readonly sha256: string,
    token: string,
    readonly peerId: string,
  ) {
    this.base = server.replace(/\/+$/, '');
    this.#image = `${this.base}/api/v1/p2p/images/${sha256}`;
    this.#auth = { authorization: `Bearer ${token}` };
  }

  /**
   * The image's manifest, checked against the sha256 (and size) the peer was told. While the seed still reads
   * the image (202), asks again after Retry-After, until `deadline` (performance.now() milliseconds).
   */
  async manifest(opts: { size?: number; deadline: number; signal: AbortSignal }): Promise<Manifest> {
    for (;;) {
      const res = await this.#call('GET', '/manifest', undefined, opts.signal);
      if (res.status === 200) return parseManifest(await res.json(), { sha256: this.sha256, ...(opts.size !== undefined ? { size: opts.size } : {}) });
      if (res.status === 202) {
        await res.body?.cancel();
        const waitMs = Math.min(10_000, Math.max(200, Number(res.headers.get('retry-after') ?? 2) * 1000 || 2000));
        if (performance.now() + waitMs > opts.deadline) {
          throw new DragonflyError('DF_ERR_P2P_SCHEDULER', `the server was still preparing image ${this.sha256} (reading it from its origin) when the wait ran out`, { sha256: this.sha256 });
        }
        await sleep(waitMs, opts.signal);
        continue;
      }
      throw await this.#refusal(res, 'the manifest');
    }
  }

  /** Join the image's swarm (or re-join after the server forgot this peer) with everything held now. */
  async join(url: string, have: Bitfield, signal: AbortSignal): Promise<JoinAnswer> {
    const res = await this.#call('POST', '/peers', { peerId: this.peerId, url, have: have.toBase64() }, signal);
    if (res.status === 200) return { kind: 'joined', revision: integer((await res.json()) as { revision?: unknown }, 'revision') };
    // The image is not distributed (any more): the server restarted, or forgot an idle image. GET the manifest again.
    if (res.status === 404) {
      await res.body?.cancel();
      return { kind: 'not-distributed' };
    }
    throw await this.#refusal(res, 'joining the swarm');
  }

  /** A batch of pieces newly held, and the uploads being served now. False: the server does not know this peer. */
  async have(pieces: number[], uploads: number, signal: AbortSignal): Promise<boolean> {
    const res = await this.#call('POST', `/peers/${this.peerId}/have`, { pieces, uploads: Math.min(1000, uploads) }, signal);
    await res.body?.cancel();
    if (res.status === 204 || res.status === 200) return true;
    if (res.status === 404) return false;
    throw await this.#refusal(res, 'reporting held pieces');
  }

  /** The long poll: candidate parents once the image's state moved past `since` (or after `waitS` seconds). */
  async parents(since: number | undefined, waitS: number, pieces: number, signal: AbortSignal): Promise<ParentsAnswer> {
    const query = since === undefined ? `?wait=0` : `?since=${Math.max(0, since)}&wait=${waitS}`;
    const res = await this.#call('GET', `/peers/${this.peerId}/parents${query}`, undefined, signal, CALL_TIMEOUT_MS + waitS * 1000);
    if (res.status === 404) {
      await res.body?.cancel();
      return { kind: 'unknown' };
    }
    if (res.status !== 200) throw await this.#refusal(res, 'asking for parents');
    const body = (await res.json()) as { revision?: unknown; parents?: unknown };
    const revision = integer(body, 'revision');
    if (!Array.isArray(body.parents)) throw malformed('parents');
    const parents: ParentInfo[] = [];
    for (const p of body.parents.slice(0, 64) as Array<Record<string, unknown>>) {
      // Only what a parent must be: an id the API admits, an http URL, a bitfield of this image's pieces.
      if (typeof p?.peerId !== 'string' || !ID.test(p.peerId) || typeof p.url !== 'string' || !/^https?:\/\//.test(p.url) || typeof p.have !== 'string') continue;
      const load = typeof p.load === 'number' && Number.isFinite(p.load) ? p.load : 0;
      parents.push({ id: p.peerId, url: p.url.replace(/\/+$/, ''), load, have: Bitfield.fromBase64(p.have, pieces) });
    }
    return { kind: 'parents', revision, parents };
  }

  /** May this peer fetch one of these starved pieces (most urgent first) from the seed? */
  async origin(pieces: number[], signal: AbortSignal): Promise<GrantResult> {
    const res = await this.#call('POST', `/peers/${this.peerId}/origin`, { pieces: pieces.slice(0, 64) }, signal);
    if (res.status === 404) {
      await res.body?.cancel();
      return { kind: 'refused', reason: 'unknown-peer' };
    }
    if (res.status !== 200) throw await this.#refusal(res, 'asking for an origin grant');
    const g = (await res.json()) as GrantResult;
    if (g?.kind === 'granted' && (typeof g.url !== 'string' || !/^https?:\/\//.test(g.url) || typeof g.parent !== 'string' || !Number.isInteger(g.piece))) throw malformed('grant');
    if (!['granted', 'peers', 'wait', 'refused'].includes(g?.kind)) throw malformed('grant');
    return g;
  }

  /** A parent sent a bad piece, or timed out: the scheduler drops it at once, or after several reporters. */
  async report(parent: string, piece: number, kind: 'bad' | 'timeout', signal: AbortSignal): Promise<void> {
    if (!ID.test(parent)) return; // the origin itself ("(origin)") is nobody the scheduler drops
    const res = await this.#call('POST', `/peers/${this.peerId}/report`, { parent, piece, kind }, signal);
    await res.body?.cancel();
  }

  /** Leave the swarm (done lingering, or stopped). */
  async leave(signal: AbortSignal): Promise<void> {
    const res = await this.#call('DELETE', `/peers/${this.peerId}`, undefined, signal, 2_000);
    await res.body?.cancel();
  }

  async #call(method: string, path: string, body: unknown, signal: AbortSignal, timeoutMs = CALL_TIMEOUT_MS): Promise<Response> {
    try {
      return await fetch(this.#image + path, {
        method,
        headers: body === undefined ? this.#auth : { ...this.#auth, 'content-type': 'application/json' },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        signal: AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]),
      });
    } catch (e) {
      if (signal.aborted) throw signal.reason;
      throw new DragonflyError('DF_ERR_P2P_SCHEDULER', `${this.base} cannot be reached: ${causeOf(e)}`, { server: this.base });
    }
  }

  /** A typed error for an answer the peer cannot go on from. */
  async #refusal(res: Response, what: string): Promise<DragonflyError> {
    const said = await res
      .json()
      .then((b: { error?: { code?: unknown; message?: unknown } }) => b?.error)
      .catch(() => undefined);
    const code = typeof said?.code === 'string' ? said.code : undefined;
    const message = typeof said?.message === 'string' ? said.message.slice(0, 300) : `HTTP ${res.status}`;
    const data = { server: this.base, status: res.status, ...(code ? { serverCode: code } : {}) };
    if (res.status === 401) return new DragonflyError('DF_ERR_UNAUTHORIZED', `${this.base} refused ${what}: ${message}`, data, "pass the image's P2P token (--token-file or DRAGONFLY_P2P_TOKEN), which the server gives the peers of this image");
    // Not distributed (no workflow names it), the seed failed to read it, the swarm is full, or this peer was dropped.
    if ([403, 404, 502, 503].includes(res.status)) return new DragonflyError('DF_ERR_P2P_UNAVAILABLE', `${this.base} does not distribute image ${this.sha256} to this peer (${what}): ${message}`, data);
    return new DragonflyError('DF_ERR_P2P_SCHEDULER', `${this.base} answered HTTP ${res.status} to ${what}: ${message}`, data);
  }
}

/**
 * The local address of a TCP connection to `server`: the address the server sees this peer calling from (the
 * scheduler admits a piece server only there). IPv4 only: the API's peer URLs are http://IPV4:PORT.
 */
export async function localAddressTowards(server: string, signal: AbortSignal): Promise<string> {
  const url = new URL(server);
  const port = Number(url.port || (url.protocol === 'https:' ? 443 : 80));
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const address = await new Promise<string>((resolve, reject) => {
    const socket = net.connect({ host, port, family: 4, timeout: CALL_TIMEOUT_MS });
    const done = (e?: Error) => {
      signal.removeEventListener('abort', onAbort);
      const local = socket.localAddress;
      socket.destroy();
      if (e) reject(e);
      else resolve(local ?? '');
    };
    const onAbort = () => done(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    socket.once('connect', () => done());
    socket.once('timeout', () => done(new Error('connection timed out')));
    socket.once('error', (e) => done(e));
  }).catch((e: unknown) => {
    if (signal.aborted) throw signal.reason;
    throw new DragonflyError('DF_ERR_P2P_SCHEDULER', `${server} cannot be reached: ${causeOf(e)}`, { server });
  });
  const v4 = address.replace(/^::ffff:/, '');
  if (!net.isIPv4(v4)) throw new DragonflyError('DF_ERR_P2P_SCHEDULER', `this peer reaches ${server} from ${address}, not an IPv4 address: P2P peers announce http://IPV4:PORT`, { server }, 'give --listen IPV4:PORT, or reach the server over IPv4');
  return v4;
}

/** Resolves after `ms`; rejects with the signal's reason when it aborts first. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return delay(ms, undefined, signal ? { signal } : {}).catch((e: unknown) => {
    throw signal?.reason ?? e;
  });
}

function integer(body: Record<string, unknown> | undefined, field: string): number {
  const v = body?.[field];
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) throw malformed(field);
  return v;
}

function malformed(what: string): DragonflyError {
  return new DragonflyError('DF_ERR_P2P_SCHEDULER', `the server's answer has no usable ${what}`);
}

/** fetch() hides the socket's error in `cause`. */
export function causeOf(e: unknown): string {
  const err = e as { message?: string; cause?: { code?: string; message?: string } };
  return err?.cause?.code ?? err?.cause?.message ?? err?.message ?? String(e);
}
