// The piece server every peer runs (docs/p2p.md, "Protocol"): GET /p2p/:sha256/pieces/:index answers the bytes
// of a piece the peer holds, 404 when it does not, and 503 with Retry-After at the upload cap — the hard cap on
// concurrent uploads per peer of issue #13, which keeps a popular parent from being overloaded.
//
// The provisioning network is hostile, so: the path is matched byte for byte as sent (no percent-decoding, no
// dot segments, the index a plain decimal below the piece count); connections are capped in number, and each
// has a deadline to deliver its next request; an upload whose client stops reading is cut after stallTimeoutMs;
// a client that leaves mid-piece frees its slot at once; no request, however malformed, throws out of here.
// Node's own headersTimeout is set too, but Node 20 sweeps it from a list that misses connections
// (boot/connection-guard.ts saw it), so the deadline is our own timer.
import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { DragonflyError, ERRORS, type ErrorCode } from '../schemas/errors.js';
import type { PieceStore } from './piece-store.js';
import type { TokenBucket } from './rate.js';

export interface PieceServerOptions {
  /** Address to listen on; `url` is built from it, so a peer listening on 0.0.0.0 announces its own address. */
  host: string;
  /** 0 picks a free port. */
  port: number;
  /** The one image this peer serves (64 hex digits; paths must spell it in lower case). */
  sha256: string;
  store: PieceStore;
  /** Uploads at once; one more is answered 503 with Retry-After: 1 (default 4). */
  maxUploads?: number;
  /**
   * The image's P2P token (boot/tokens.ts p2pToken), which the server gives the peers of an image: when set, a
   * request must carry `Authorization: Bearer TOKEN` (401 otherwise), as the seed's piece route requires, so
   * that only the swarm spends this peer's upload slots.
   */
  token?: string;
  /** Paces every upload of this peer together (chunks of at most 64 KiB, each awaiting its tokens). */
  uploadRate?: TokenBucket;
  /** pino-compatible: read failures and cut uploads. */
  log?: { warn(obj: object, msg: string): void };
  /** An upload whose client accepts no bytes for this long is cut (default 15 s). */
  stallTimeoutMs?: number;
  /** Open connections; more are dropped on accept (default 128). */
  maxConnections?: number;
  /** Time a connection has to deliver its request headers, the first or the next (default 10 s). */
  headersTimeoutMs?: number;
  /** Idle time allowed between requests on a kept-alive connection (default 5 s). */
  keepAliveTimeoutMs?: number;
}

export interface PieceServerStats {
  /** Requests holding an upload slot now (reading or sending a piece). */
  uploading: number;
  /** Pieces sent to their last byte (GET only). */
  piecesServed: number;
  /** Body bytes handed to clients, cut uploads included. */
  bytesServed: number;
  /** Requests answered 503 at the upload cap. */
  refusedAtCap: number;
  /** Uploads ended before their last byte: the client left or stalled, or the server closed. */
  cut: number;
}

export interface PieceServer {
  /** http://HOST:PORT, with the port actually bound. */
  url: string;
  port: number;
  stats(): PieceServerStats;
  /** Stops listening, cuts uploads in flight, closes every connection; resolves once the socket is closed. */
  close(): Promise<void>;
}

export const PIECE_SERVER_DEFAULTS = {
  maxUploads: 4,
  stallTimeoutMs: 15_000,
  maxConnections: 128,
  headersTimeoutMs: 10_000,
  keepAliveTimeoutMs: 5_000,
} as const;

/** Anything shaped like the piece route: other methods on it are 405, other paths 404. */
const PIECE_ROUTE = /^\/p2p\/[^/]*\/pieces\/[^/]*$/;
/** The one spelling accepted: lower-case hex, and a decimal index without sign, leading zero or suffix. */
const PIECE_PATH = /^\/p2p\/([0-9a-f]{64})\/pieces\/(0|[1-9][0-9]{0,14})$/;
const SHA256 = /^[0-9a-f]{64}$/;
const MAX_CHUNK = 64 * 1024;

export async function startPieceServer(opts: PieceServerOptions): Promise<PieceServer> {
  const o = { ...PIECE_SERVER_DEFAULTS, ...definedOnly(opts) };
  for (const name of Object.keys(PIECE_SERVER_DEFAULTS) as (keyof typeof PIECE_SERVER_DEFAULTS)[]) {
    if (!Number.isSafeInteger(o[name]) || o[name] < 1) throw new RangeError(`startPieceServer: ${name} must be a positive integer, not ${o[name]}`);
  }
  const sha256 = opts.sha256.toLowerCase();
  if (!SHA256.test(sha256)) throw new DragonflyError('DF_ERR_SHA256', `not a sha256: ${JSON.stringify(opts.sha256.slice(0, 80))}`);
  const { store, uploadRate, log } = opts;
  const tokenDigest = opts.token === undefined ? undefined : digest(opts.token);
  const pieces = store.held().length;
  // Small chunks at low rates, so that bytes flow steadily rather than in 64 KiB bursts seconds apart.
  const chunkBytes = uploadRate && Number.isFinite(uploadRate.rate) ? Math.max(4096, Math.min(MAX_CHUNK, Math.floor(uploadRate.rate / 16))) : MAX_CHUNK;

  const counts: PieceServerStats = { uploading: 0, piecesServed: 0, bytesServed: 0, refusedAtCap: 0, cut: 0 };
  const uploads = new Set<AbortController>();
  const connections = new Map<Socket, { inFlight: number; deadline: NodeJS.Timeout | undefined }>();

  const server = createServer({
    maxHeaderSize: 8192,
    headersTimeout: o.headersTimeoutMs,
    requestTimeout: 2 * o.headersTimeoutMs,
    keepAliveTimeout: o.keepAliveTimeoutMs,
    noDelay: true,
  });
  server.maxConnections = o.maxConnections;
  server.maxHeadersCount = 32;

  // Until its next request arrives, a connection holds a descriptor and a place under maxConnections for nothing.
  const arm = (socket: Socket, ms: number) => {
    const c = connections.get(socket);
    if (c) c.deadline = setTimeout(() => socket.destroy(), ms).unref();
  };
  server.on('connection', (socket: Socket) => {
    connections.set(socket, { inFlight: 0, deadline: undefined });
    arm(socket, o.headersTimeoutMs);
    socket.once('close', () => {
      clearTimeout(connections.get(socket)?.deadline);
      connections.delete(socket);
    });
  });

  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const c = connections.get(req.socket);
    if (c) {
      c.inFlight++;
      clearTimeout(c.deadline);
      res.once('close', () => {
        if (--c.inFlight === 0 && !req.socket.destroyed) arm(req.socket, o.keepAliveTimeoutMs + o.headersTimeoutMs);
      });
    }
    answer(req, res).catch((e: unknown) => {
      // A bug, not a client's doing: log it and drop the connection rather than the process.
      log?.warn({ err: String(e), url: req.url?.slice(0, 200) }, 'piece server: request failed');
      res.destroy();
    });
  });
  // After listen, an accept error (EMFILE) is an 'error' event: without a listener it would end the process.
  const onServerError = (e: Error) => log?.warn({ err: e.message }, 'piece server: socket error');

  async function answer(req: IncomingMessage, res: ServerResponse): Promise<void> {
    // req.url is the request target exactly as sent: nothing decoded or normalised.
    const target = req.url ?? '';
    if (!PIECE_ROUTE.test(target)) return fail(res, 404, 'DF_ERR_NOT_FOUND', 'a piece server answers only GET /p2p/SHA256/pieces/INDEX', 'ask for a piece by its image sha256 and index');
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD');
      // 405 (RFC 9110 §15.5.6); the code is the general bad-request one.
      return fail(res, 405, 'DF_ERR_BAD_REQUEST', `${req.method} is not allowed here: only GET and HEAD`, 'fetch pieces with GET (or HEAD)');
    }
    if (tokenDigest && !presents(req, tokenDigest)) {
      res.setHeader('WWW-Authenticate', 'Bearer');
      return fail(res, 401, 'DF_ERR_UNAUTHORIZED', "piece requests need Authorization: Bearer with the image's P2P token", "send the image's P2P token, as for the scheduler's calls");
    }
    if (hasBody(req)) {
      res.shouldKeepAlive = false; // the unread body is not drained: the connection ends with the answer
      return fail(res, 400, 'DF_ERR_BAD_REQUEST', 'a piece request has no body', 'send GET without a body');
    }
    const m = PIECE_PATH.exec(target);
    if (!m) return fail(res, 404, 'DF_ERR_P2P_NO_PIECE', 'not a piece: the image is 64 lower-case hex digits, the piece a decimal index without sign or leading zero');
    if (m[1] !== sha256) return fail(res, 404, 'DF_ERR_P2P_NO_PIECE', `this peer serves image ${sha256} only, not ${m[1]}`);
    const index = Number(m[2]);
    if (index >= pieces) return fail(res, 404, 'DF_ERR_P2P_NO_PIECE', `no piece ${index}: the image has ${pieces}`);
    if (!store.has(index)) return fail(res, 404, 'DF_ERR_P2P_NO_PIECE', `piece ${index} is not held here`);
    if (counts.uploading >= o.maxUploads) {
      counts.refusedAtCap++;
      res.setHeader('Retry-After', '1');
      return fail(res, 503, 'DF_ERR_P2P_BUSY', `${o.maxUploads} uploads are in progress, the most this peer serves at once`);
    }
    counts.uploading++;
    const abort = new AbortController();
    const gone = () => abort.abort(new Error('the client closed the connection'));
    res.once('close', gone);
    uploads.add(abort);
    try {
      await upload(req, res, index, abort.signal);
    } finally {
      counts.uploading--;
      uploads.delete(abort);
      res.off('close', gone);
    }
  }

  async function upload(req: IncomingMessage, res: ServerResponse, index: number, signal: AbortSignal): Promise<void> {
    let bytes: Buffer | undefined;
    try {
      bytes = await store.read(index);
    } catch (e) {
      log?.warn({ piece: index, err: e instanceof Error ? e.message : String(e) }, 'piece server: a held piece cannot be read');
      return fail(res, 500, 'DF_ERR_P2P_PIECE_READ', `piece ${index} cannot be read here`);
    }
    if (signal.aborted) return;
    // Lost between has() and read(): evicted from the RAM window, or changed on the disk.
    if (!bytes) return fail(res, 404, 'DF_ERR_P2P_NO_PIECE', `piece ${index} is no longer held here`);
    res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': bytes.length, 'Cache-Control': 'no-store' });
    if (req.method === 'HEAD') return void res.end();
    try {
      for (let at = 0; at < bytes.length; at += chunkBytes) {
        const part = bytes.subarray(at, at + chunkBytes);
        await uploadRate?.take(part.length, signal);
        if (signal.aborted) throw signal.reason;
        const more = res.write(part);
        counts.bytesServed += part.length;
        if (!more) await until(res, 'drain', signal, o.stallTimeoutMs);
      }
      res.end();
      if (!res.writableFinished) await until(res, 'finish', signal, o.stallTimeoutMs);
      counts.piecesServed++;
    } catch (e) {
      counts.cut++;
      if (e instanceof Stalled) log?.warn({ piece: index, remote: req.socket.remoteAddress, stallTimeoutMs: o.stallTimeoutMs }, 'piece server: upload cut, the client stopped reading');
      res.destroy();
    }
  }

  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(opts.port, opts.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (e) {
    throw new DragonflyError('DF_ERR_SERVE_CONFIG', `the piece server cannot listen on ${opts.host}:${opts.port}: ${(e as Error).message}`, { host: opts.host, port: opts.port }, 'pick another --listen HOST:PORT, or free that port');
  }
  server.on('error', onServerError);
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : opts.port;

  let closed: Promise<void> | undefined;
  return {
    url: `http://${opts.host.includes(':') ? `[${opts.host}]` : opts.host}:${port}`,
    port,
    stats: () => ({ ...counts }),
    close: () =>
      (closed ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const u of uploads) u.abort(new Error('the piece server is closing'));
        for (const socket of connections.keys()) socket.destroy();
      })),
  };
}

/** Waiting for the client to take bytes timed out. */
class Stalled extends Error {}

/** Resolves on `event`; rejects when the upload is aborted, or with Stalled after `ms`. */
function until(res: ServerResponse, event: 'drain' | 'finish', signal: AbortSignal, ms: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const settle = (err?: unknown) => {
      clearTimeout(timer);
      res.off(event, onEvent);
      signal.removeEventListener('abort', onAbort);
      if (err === undefined) resolve();
      else reject(err);
    };
    const onEvent = () => settle();
    const onAbort = () => settle(signal.reason);
    const timer = setTimeout(() => settle(new Stalled()), ms);
    res.once(event, onEvent);
    signal.addEventListener('abort', onAbort, { once: true });
    if (signal.aborted) onAbort();
  });
}

function fail(res: ServerResponse, status: number, code: ErrorCode, message: string, hint: string = ERRORS[code].hint): void {
  const body = JSON.stringify({ error: { code, message, hint } });
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

/** Constant-time comparison of digests, so neither the token's length nor its prefix leaks through timing. */
function presents(req: IncomingMessage, expected: Buffer): boolean {
  const m = /^bearer +(\S+) *$/i.exec(req.headers.authorization ?? '');
  return m !== null && timingSafeEqual(digest(m[1]!), expected);
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}

function hasBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
