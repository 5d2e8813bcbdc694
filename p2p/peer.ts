// The downloading peer (issue #13 §4; docs/p2p.md): fetches one image from the other peers of its swarm and
// the seed, serving what it holds while it downloads, and for a bounded while after (§5: a machine that
// finished keeps serving until the rest of its rollout no longer asks, then leaves and reboots).
//
// Steps: the manifest from the server (checked against the sha256 the caller was told); a piece server over
// the output; join; then, driven by events and a local tick (never by polling the server): the long poll keeps
// the parent list current, the picker (p2p/picker.ts) starts requests to parents, starved pieces are asked of
// the scheduler for an origin grant, held pieces are reported in batches. Every piece is verified against the
// manifest before it is written, served or handed on; the whole image's sha256 is checked at the end.
import { randomBytes } from 'node:crypto';
import { DragonflyError } from '../schemas/errors.js';
import { Bitfield } from './bitfield.js';
import { pieceRange, usesP2p, type Manifest } from './manifest.js';
import { localAddressTowards, SchedulerClient, sleep, type ParentInfo } from './peer-client.js';
import { fetchPiece, type PieceFetchResult } from './peer-fetch.js';
import { openSink, type ImageOutput, type ImageSink } from './peer-output.js';
import { PICKER_DEFAULTS, PiecePicker, type PickerOptions, type PieceRequest, type PieceSource } from './picker.js';
import { startPieceServer, type PieceServer, type PieceServerStats } from './piece-server.js';
import type { PieceStore } from './piece-store.js';
import type { TokenBucket } from './rate.js';
import { ORIGIN_PARENT, type GrantResult } from './scheduler.js';

export type { ImageOutput };

export interface PeerLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface PeerProgress {
  pieces: number;
  /** Pieces verified and kept. */
  piecesDone: number;
  size: number;
  bytesDone: number;
  /** Bytes of kept pieces by where they came from: other peers, the server's seed, the image's own URL. */
  bytesFromPeers: number;
  bytesFromSeed: number;
  bytesFromOrigin: number;
}

export interface FetchImageOptions {
  /** The `dragonfly serve` URL (scheduler and seed). */
  server: string;
  /** The image's sha256, as the template names it. */
  sha256: string;
  /** The template's size, when known: the manifest must agree. */
  size?: number;
  /** The image's P2P token (boot/tokens.ts p2pToken): for the scheduler, the seed and every peer's piece server. */
  token: string;
  output: ImageOutput;
  /** Where this peer's piece server listens; default: the local address of a connection to the server, any port. */
  listen?: { host: string; port: number };
  uploadRate?: TokenBucket;
  downloadRate?: TokenBucket;
  /** Uploads at once before 503 Retry-After (default 4, the scheduler's cap). */
  maxUploads?: number;
  /** A piece request older than this is abandoned and counted against its parent (default 30 s). */
  pieceTimeoutMs?: number;
  /** After the image is whole, keep serving for at most this long (default 0). */
  lingerMs?: number;
  /** …but leave sooner once no peer has asked for a piece for this long (default 5 s). */
  lingerIdleMs?: number;
  /** Fail (DF_ERR_P2P_STALLED) when no piece arrived for this long (default 120 s). */
  stallMs?: number;
  /** How long the seed may take to read the image before the first manifest (default 30 min). */
  prepareTimeoutMs?: number;
  /**
   * The image's own URL. With `fallback`, a piece that no peer holds and for which the scheduler refuses the
   * origin (its byte budget is spent, or the origin is forbidden once seeded) is fetched from there directly
   * with a Range request, after `fallbackAfterMs` (default 10 s); it is verified like any other piece.
   */
  origin?: { url: string; fallback?: boolean; fallbackAfterMs?: number };
  picker?: Partial<Pick<PickerOptions, 'window' | 'perParent' | 'maxInFlight' | 'endgame'>>;
  peerId?: string;
  signal?: AbortSignal;
  log?: PeerLog;
  onProgress?: (p: PeerProgress) => void;
  /** The manifest, before anything is written: throwing here (the image cannot fit) ends the fetch with that error. */
  onManifest?: (m: Manifest) => void;
  /**
   * The image is whole, verified and final; the promise of fetchImage resolves only after the linger. A caller
   * that goes on meanwhile (Mage's next actions) ends the linger early with `signal`.
   */
  onWhole?: (p: PeerProgress) => void;
  /** Wraps the store the piece server serves (tests serve corrupt pieces through it). */
  wrapServedStore?: (store: PieceStore) => PieceStore;
}

export interface FetchImageResult extends PeerProgress {
  peerId: string;
  /** The piece server's URL as announced (undefined for a one-piece image: nothing to share). */
  url: string | undefined;
  manifest: Manifest;
  /** Pieces refused because their sha256 was not the manifest's, and requests abandoned after the piece timeout. */
  badPieces: number;
  timeouts: number;
  /** Bytes received and discarded: endgame twins. */
  duplicateBytes: number;
  /** The scheduler dropped this peer for the image: it finished from the seed alone, serving nothing. */
  dropped: boolean;
  /** Start to the whole image verified, start to the first piece kept, and the time spent serving after. */
  downloadMs: number;
  firstPieceMs: number;
  lingerMs: number;
  /** What this peer's piece server served. */
  served: PieceServerStats;
}

export const PEER_DEFAULTS = {
  pieceTimeoutMs: 30_000,
  lingerMs: 0,
  lingerIdleMs: 5_000,
  stallMs: 120_000,
  prepareTimeoutMs: 30 * 60_000,
  fallbackAfterMs: 10_000,
} as const;

/** Piece timeouts a peer waits for the holder of a granted piece before it reports the holder. */
const GRANT_WAIT_TIMEOUTS = 3;
/** Local housekeeping: timeouts, 503 pauses ending, held-piece batches, load reports, the stall check. */
const TICK_MS = 250;
/** Held pieces are reported in batches: this many, or whatever is held after HAVE_DELAY_MS. */
const HAVE_BATCH = 8;
const HAVE_DELAY_MS = 250;
/** Seconds the server holds a long poll; below its 30 s liveness window, so the poll alone keeps this peer alive. */
const POLL_WAIT_S = 20;
/** A parent that failed this many requests in a row rests this long (not asked, not counted as a holder). */
const REST_AFTER_FAILURES = 3;
const REST_MS = 5_000;

type SourceKind = 'peer' | 'seed' | 'origin';

interface Grant {
  url: string;
  kind: SourceKind;
  pieces: Set<number>;
  /** Every piece: a dropped peer finishes from the seed alone. */
  all?: boolean;
}

const NO_STATS: PieceServerStats = { uploading: 0, piecesServed: 0, bytesServed: 0, refusedAtCap: 0, cut: 0 };

/** Fetches an image over P2P into `output`; resolves once it is whole, verified, final, and the linger is over. */
export async function fetchImage(opts: FetchImageOptions): Promise<FetchImageResult> {
  const sha256 = opts.sha256.toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(sha256)) throw new DragonflyError('DF_ERR_SHA256', `not a sha256: ${JSON.stringify(opts.sha256.slice(0, 80))}`);
  opts.signal?.throwIfAborted();
  const stop = new AbortController();
  const onAbort = () => stop.abort(opts.signal!.reason);
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  const started = performance.now();
  try {
    const client = new SchedulerClient(opts.server, sha256, opts.token, opts.peerId ?? `peer-${randomBytes(8).toString('hex')}`);
    const deadline = started + (opts.prepareTimeoutMs ?? PEER_DEFAULTS.prepareTimeoutMs);
    const manifest = await client.manifest({ deadline, signal: stop.signal, ...(opts.size !== undefined ? { size: opts.size } : {}) });
    opts.onManifest?.(manifest);
    return await new PeerRun(opts, client, manifest, stop, started).run();
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
    stop.abort();
  }
}

class PeerRun {
  readonly n: number;
  readonly picker: PiecePicker;
  sink!: ImageSink;
  server: PieceServer | undefined;
  url: string | undefined;

  /** Candidate parents from the last long-poll answer. */
  parents = new Map<string, ParentInfo>();
  parentsSeen = 0;
  /** Pieces the scheduler granted from the seed (or the origin), by the parent id it named. */
  readonly grants = new Map<string, Grant>();
  readonly flights = new Map<string, AbortController>();
  readonly failures = new Map<string, { count: number; at: number; reported: boolean }>();
  /** Since when this peer has been told to wait for a piece granted to another ("piece\0holder"). */
  readonly waits = new Map<string, { since: number; reported: boolean }>();
  /** Pieces kept by the sink (servable), and not yet reported to the scheduler. */
  readonly kept: Bitfield;
  haveQueue: number[] = [];
  haveTimer: NodeJS.Timeout | undefined;
  haveBusy = false;
  reportedUploads = 0;
  lastLoadReport = 0;
  needAnnounce = false;
  announcing: Promise<boolean> | undefined;
  joined = false;
  dropped = false;
  delivering = false;

  originAsk: Promise<void> | undefined;
  originHold = { until: 0, parentsSeen: -1 };
  originRefusedAt: number | undefined;

  tick: NodeJS.Timeout | undefined;
  lastProgressAt: number;
  stopping = false;
  completed = false;
  finished!: { resolve: () => void; reject: (e: unknown) => void };
  readonly whole: Promise<void>;

  readonly stats = { bytesFromPeers: 0, bytesFromSeed: 0, bytesFromOrigin: 0, piecesDone: 0, bytesDone: 0, badPieces: 0, timeouts: 0, duplicateBytes: 0 };
  served: PieceServerStats = NO_STATS;
  downloadMs = 0;
  firstPieceMs = 0;
  lingeredMs = 0;
  readonly log: PeerLog | undefined;

  constructor(
    readonly opts: FetchImageOptions,
    readonly client: SchedulerClient,
    readonly manifest: Manifest,
    readonly stop: AbortController,
    readonly started: number,
  ) {
    this.n = manifest.pieces.length;
    this.log = opts.log;
    // Only a stream must take its pieces in order (a decompressor reads them so): a file or disk is written by
    // offset, so its picker goes rarest first over the whole image. A fleet that starts together then holds
    // different pieces at once and trades them, instead of all waiting on the same 16.
    const window = opts.output.kind === 'file' ? this.n : PICKER_DEFAULTS.window;
    this.picker = new PiecePicker({ pieces: this.n, timeoutMs: opts.pieceTimeoutMs ?? PEER_DEFAULTS.pieceTimeoutMs, window, ...opts.picker });
    this.kept = new Bitfield(this.n);
    this.lastProgressAt = performance.now();
    this.whole = new Promise<void>((resolve, reject) => (this.finished = { resolve, reject }));
    this.whole.catch(() => undefined);
    stop.signal.addEventListener('abort', () => this.fail(stop.signal.reason ?? new Error('stopped')), { once: true });
  }

  async run(): Promise<FetchImageResult> {
    this.sink = await openSink(this.opts.output, this.manifest, () => (this.needAnnounce = true));
    let failed = true;
    try {
      if (usesP2p(this.manifest)) await this.swarm();
      else await this.single();
      failed = false;
    } finally {
      await this.shutdown(failed);
    }
    return {
      ...this.progress(),
      peerId: this.client.peerId,
      url: this.url,
      manifest: this.manifest,
      badPieces: this.stats.badPieces,
      timeouts: this.stats.timeouts,
      duplicateBytes: this.stats.duplicateBytes,
      dropped: this.dropped,
      downloadMs: this.downloadMs,
      firstPieceMs: this.firstPieceMs,
      lingerMs: this.lingeredMs,
      served: this.served,
    };
  }

  /** An image of one piece: nothing to share, so the piece comes from the seed directly. */
  private async single(): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const r = await fetchPiece({ manifest: this.manifest, index: 0, url: this.client.base, token: this.opts.token, ...this.bucket(), signal: this.stop.signal });
      if (r.kind === 'ok') {
        this.count(0, 'seed');
        await this.sink.put(0, r.bytes);
        await this.sink.deliver(0);
        break;
      }
      if (r.kind === 'aborted') throw this.stop.signal.reason;
      if (attempt >= 5) throw new DragonflyError('DF_ERR_P2P_STALLED', `the seed did not give the image's one piece after ${attempt} attempts (${r.kind === 'busy' ? 'busy' : r.why})`, { sha256: this.manifest.sha256 });
      await sleep(1000, this.stop.signal);
    }
    await this.finishWhole();
  }

  private async swarm(): Promise<void> {
    const o = this.opts;
    // The announced URL must be on the address the server sees this peer calling from (the scheduler checks).
    const wildcard = !o.listen || o.listen.host === '0.0.0.0' || o.listen.host === '';
    const announceHost = wildcard ? await localAddressTowards(this.client.base, this.stop.signal) : o.listen!.host;
    const served = o.wrapServedStore ? o.wrapServedStore(this.sink.store) : this.sink.store;
    this.server = await startPieceServer({
      host: o.listen?.host || announceHost,
      port: o.listen?.port ?? 0,
      sha256: this.manifest.sha256,
      store: served,
      token: o.token,
      ...(o.maxUploads !== undefined ? { maxUploads: o.maxUploads } : {}),
      ...(o.uploadRate ? { uploadRate: o.uploadRate } : {}),
      ...(o.log ? { log: o.log } : {}),
    });
    this.url = `http://${announceHost}:${this.server.port}`;
    if (!(await this.announce())) throw new DragonflyError('DF_ERR_P2P_SCHEDULER', `${this.client.base} could not be told about this peer`);
    this.log?.info({ peerId: this.client.peerId, url: this.url, pieces: this.n, pieceLength: this.manifest.pieceLength }, 'peer: joined the swarm');
    void this.pollParents();
    this.tick = setInterval(() => this.onTick(), TICK_MS);
    this.pump();
    await this.whole;
    await this.finishWhole();
    await this.linger();
  }

  /** The whole image is delivered: its sha256 once more, the last batch reported, the output made final. */
  private async finishWhole(): Promise<void> {
    const digest = this.sink.digest();
    if (digest !== this.manifest.sha256) {
      throw new DragonflyError('DF_ERR_IMAGE_SHA256', `every piece matched the manifest, but the whole image hashes to ${digest}, not ${this.manifest.sha256}`, { expected: this.manifest.sha256, actual: digest });
    }
    this.completed = true;
    await this.flushHave();
    await this.sink.commit();
    this.downloadMs = performance.now() - this.started;
    this.opts.onProgress?.(this.progress());
    this.log?.info({ ...this.progress(), ms: Math.round(this.downloadMs) }, 'peer: image complete and verified');
    this.opts.onWhole?.(this.progress());
  }

  /** Keep serving while others still ask, up to lingerMs; an abort ends it early (the image is already final). */
  private async linger(): Promise<void> {
    const lingerMs = this.opts.lingerMs ?? PEER_DEFAULTS.lingerMs;
    const idleMs = this.opts.lingerIdleMs ?? PEER_DEFAULTS.lingerIdleMs;
    if (lingerMs <= 0 || this.dropped || !this.server) return;
    const start = performance.now();
    let lastActive = start;
    let lastServed = this.server.stats().piecesServed;
    while (performance.now() - start < lingerMs && !this.opts.signal?.aborted) {
      await sleep(Math.min(TICK_MS, lingerMs - (performance.now() - start)), this.opts.signal).catch(() => undefined);
      if (!this.server) break; // dropped meanwhile: nothing more to serve
      const s = this.server.stats();
      const now = performance.now();
      if (s.uploading > 0 || s.piecesServed !== lastServed) {
        lastActive = now;
        lastServed = s.piecesServed;
      } else if (now - lastActive >= idleMs) break;
    }
    this.lingeredMs = performance.now() - start;
  }

  private async shutdown(failed: boolean): Promise<void> {
    this.stopping = true;
    clearInterval(this.tick);
    clearTimeout(this.haveTimer);
    for (const c of this.flights.values()) c.abort();
    this.stop.abort();
    if (this.joined && !this.dropped) await this.client.leave(AbortSignal.timeout(2_000)).catch(() => undefined);
    await this.closeServer();
    await this.sink.close(failed);
  }

  private async closeServer(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.served = server.stats();
    this.server = undefined;
    await server.close();
  }

  private fail(e: unknown): void {
    if (this.completed) return;
    this.stopping = true;
    this.finished.reject(e);
  }

  // ---- the picker: which piece from which parent ----

  /** Start whatever the picker says may start now; ask for origin grants for what nobody holds. */
  private pump(): void {
    if (this.stopping || this.picker.complete) return;
    const now = performance.now();
    for (const r of this.picker.expired(now)) {
      this.flights.get(flightKey(r))?.abort();
      this.stats.timeouts++;
      this.noteFailure(r, now, true);
    }
    const sources = this.sources(now);
    for (const r of this.picker.next(sources, now)) this.startFetch(r, sources);
    this.askOrigin(sources, now);
  }

  /** The parents the picker may use: the long poll's (minus resting ones) and the granted seed/origin. */
  private sources(now: number): Array<PieceSource & { url: string; kind: SourceKind }> {
    const out = new Map<string, PieceSource & { url: string; kind: SourceKind }>();
    for (const p of this.parents.values()) {
      if (this.isResting(p.id, now)) continue;
      // The scheduler names the seed too (for this peer's grants): its bytes count as the seed's.
      out.set(p.id, { id: p.id, url: p.url, kind: p.url === this.client.base ? 'seed' : 'peer', load: p.load, has: (i) => p.have.has(i) });
    }
    for (const [id, g] of this.grants) {
      // The scheduler lists the seed among the parents too, for the pieces granted: the local grants are the same.
      out.set(id, { id, url: g.url, kind: g.kind, load: 0, has: (i) => g.all === true || g.pieces.has(i) });
    }
    return [...out.values()];
  }

  private startFetch(r: PieceRequest, sources: ReadonlyArray<{ id: string; url: string; kind: SourceKind }>): void {
    const source = sources.find((s) => s.id === r.parent)!;
    const abort = new AbortController();
    this.flights.set(flightKey(r), abort);
    void fetchPiece({
      manifest: this.manifest,
      index: r.piece,
      url: source.url,
      range: source.kind === 'origin',
      token: this.opts.token,
      ...this.bucket(),
      signal: AbortSignal.any([abort.signal, this.stop.signal]),
      onBytes: () => this.picker.moving(r, performance.now()),
    }).then((result) => {
      if (this.flights.get(flightKey(r)) === abort) this.flights.delete(flightKey(r));
      this.onFetched(r, source.kind, result);
    });
  }

  private onFetched(r: PieceRequest, kind: SourceKind, result: PieceFetchResult): void {
    if (this.stopping || result.kind === 'aborted') return;
    const now = performance.now();
    switch (result.kind) {
      case 'ok': {
        this.failures.delete(r.parent);
        const settled = this.picker.settle(r, { kind: 'ok' }, now);
        if (settled.kind === 'accepted') {
          for (const c of settled.cancel) this.flights.get(flightKey(c))?.abort();
          this.keep(r.piece, result.bytes, kind);
        } else if (settled.kind === 'duplicate') this.stats.duplicateBytes += result.bytes.length;
        break;
      }
      case 'bad': {
        // The first bad piece blocklists the parent here and drops it at the scheduler; the piece goes elsewhere.
        this.stats.badPieces++;
        this.log?.warn({ parent: r.parent, piece: r.piece, why: result.why }, 'peer: a parent sent a bad piece: blocklisted and reported');
        const settled = this.picker.settle(r, { kind: 'bad' }, now);
        if (settled.kind === 'blocked') for (const c of settled.cancel) this.flights.get(flightKey(c))?.abort();
        this.grants.get(r.parent)?.pieces.delete(r.piece);
        if (kind === 'peer') void this.client.report(r.parent, r.piece, 'bad', this.stop.signal).catch(() => undefined);
        break;
      }
      case 'busy':
        this.picker.settle(r, { kind: 'busy', retryAfterMs: result.retryAfterMs }, now);
        break;
      case 'failed':
        if (this.picker.settle(r, { kind: 'failed' }, now).kind !== 'ignored') this.noteFailure(r, now, false);
        break;
    }
    this.pump();
  }

  /** A verified piece: to the sink, then reported held and, in turn, delivered. */
  private keep(piece: number, bytes: Buffer, kind: SourceKind): void {
    this.lastProgressAt = performance.now();
    this.originHold.until = 0; // a grant may have been fulfilled: the next starved piece may be granted now
    this.count(piece, kind);
    for (const g of this.grants.values()) g.pieces.delete(piece);
    for (const key of this.waits.keys()) if (key.startsWith(`${piece}\u0000`)) this.waits.delete(key);
    this.sink.put(piece, bytes).then(
      () => {
        this.kept.set(piece);
        this.queueHave(piece);
        this.opts.onProgress?.(this.progress());
        void this.deliverInOrder();
      },
      (e: unknown) => this.fail(e),
    );
  }

  private count(piece: number, kind: SourceKind): void {
    if (this.stats.piecesDone === 0) this.firstPieceMs = performance.now() - this.started;
    const { length } = pieceRange(this.manifest, piece);
    this.stats.piecesDone++;
    this.stats.bytesDone += length;
    if (kind === 'peer') this.stats.bytesFromPeers += length;
    else if (kind === 'seed') this.stats.bytesFromSeed += length;
    else this.stats.bytesFromOrigin += length;
  }

  /** Hands kept pieces on from the write position, one at a time, and moves the picker's window with them. */
  private async deliverInOrder(): Promise<void> {
    if (this.delivering) return;
    this.delivering = true;
    try {
      while (!this.stopping && this.picker.writePosition < this.n && this.kept.has(this.picker.writePosition)) {
        await this.sink.deliver(this.picker.writePosition);
        this.picker.advance(1);
      }
    } catch (e) {
      this.fail(e);
    } finally {
      this.delivering = false;
    }
    if (this.picker.done) this.finished.resolve();
    else this.pump();
  }

  private noteFailure(r: PieceRequest, now: number, timedOut: boolean): void {
    const f = this.failures.get(r.parent) ?? { count: 0, at: now, reported: false };
    f.count++;
    f.at = now;
    this.failures.set(r.parent, f);
    // A timeout, or requests refused or cut twice in a row: the scheduler drops a parent several peers report.
    const source = this.parents.get(r.parent);
    if (source && !this.grants.has(r.parent) && !f.reported && (timedOut || f.count >= 2)) {
      f.reported = true;
      void this.client.report(r.parent, r.piece, 'timeout', this.stop.signal).catch(() => undefined);
    }
  }

  private isResting(id: string, now: number): boolean {
    const f = this.failures.get(id);
    return f !== undefined && f.count >= REST_AFTER_FAILURES && now - f.at < REST_MS;
  }

  private bucket(): { bucket?: TokenBucket } {
    return this.opts.downloadRate ? { bucket: this.opts.downloadRate } : {};
  }

  // ---- the scheduler: origin grants, held pieces, membership ----

  /** Pieces of the window no parent holds: ask the scheduler whether this peer may fetch one from the seed. */
  private askOrigin(sources: readonly PieceSource[], now: number): void {
    if (this.originAsk || !this.joined || this.dropped) return;
    if (now < this.originHold.until && this.parentsSeen === this.originHold.parentsSeen) return;
    const starved = this.picker.starved(sources);
    if (starved.length === 0) return;
    this.originAsk = this.client
      .origin(starved, this.stop.signal)
      .then((g) => this.onGrant(g, starved, performance.now()))
      .catch((e: unknown) => {
        if (!this.stopping) this.log?.warn({ err: (e as Error).message }, 'peer: asking for an origin grant failed');
        this.hold(performance.now(), 1_000);
      })
      .finally(() => {
        this.originAsk = undefined;
        this.pump();
      });
  }

  private onGrant(g: GrantResult, starved: number[], now: number): void {
    switch (g.kind) {
      case 'granted': {
        const grant = this.grants.get(g.parent) ?? { url: g.url.replace(/\/+$/, ''), kind: g.parent === ORIGIN_PARENT ? 'origin' : 'seed', pieces: new Set<number>() };
        grant.url = g.url.replace(/\/+$/, '');
        grant.pieces.add(g.piece);
        this.grants.set(g.parent, grant);
        this.originRefusedAt = undefined;
        // Not held: the next pump asks again at once, for the next starved piece (the scheduler caps grants per peer).
        return;
      }
      case 'peers': // the long poll will name the holder
        return this.hold(now, 2_000);
      case 'wait': // granted to another peer: it reports the piece held, or the grant runs out
        this.waitedOn(g.piece, g.holder, now);
        return this.hold(now, Math.min(5_000, this.picker.timeoutMs / 2, Math.max(250, g.retryAt - Date.now())));
      case 'refused':
        if (g.reason === 'unknown-peer') {
          void this.reannounce();
          return this.hold(now, 1_000);
        }
        if (g.reason === 'budget' || g.reason === 'forbidden') return this.refusedOrigin(starved[0]!, now, g.reason);
        return this.hold(now, 2_000); // grant-limit (released when a piece arrives), nothing-to-grant
    }
  }

  /**
   * A grant holder fetches its piece from the seed, which may be slow (the seed's uplink shared by a whole
   * rollout starting at once). One that keeps the swarm waiting for several piece timeouts is reported as
   * timing out on it: the scheduler drops it once several waiters say so, which frees the piece for another
   * grant. A holder that died is found sooner by the server itself (its long poll closed, or its silence).
   */
  private waitedOn(piece: number, holder: string, now: number): void {
    const key = `${piece}\u0000${holder}`;
    const w = this.waits.get(key) ?? { since: now, reported: false };
    this.waits.set(key, w);
    if (w.reported || now - w.since < GRANT_WAIT_TIMEOUTS * this.picker.timeoutMs) return;
    w.reported = true;
    this.log?.warn({ piece, holder, waitedMs: Math.round(now - w.since) }, 'peer: the peer granted a piece has not delivered it in time: reported');
    void this.client.report(holder, piece, 'timeout', this.stop.signal).catch(() => undefined);
  }

  /** The scheduler will not let the origin be read again for this piece: wait for peers, or, if allowed, fetch it directly. */
  private refusedOrigin(piece: number, now: number, reason: string): void {
    const origin = this.opts.origin;
    if (this.originRefusedAt === undefined) {
      this.originRefusedAt = now;
      if (!origin?.fallback) this.log?.warn({ piece, reason }, `peer: no peer holds piece ${piece} and the scheduler refuses it from the seed (${reason}): waiting for a peer that gets it`);
    }
    const after = origin?.fallbackAfterMs ?? PEER_DEFAULTS.fallbackAfterMs;
    if (origin?.fallback && now - this.originRefusedAt >= after) {
      this.log?.warn({ piece, reason }, 'peer: no peer holds a piece and the scheduler refuses the origin: fetching it from the image URL');
      const grant = this.grants.get(ORIGIN_PARENT) ?? { url: origin.url, kind: 'origin' as const, pieces: new Set<number>() };
      grant.pieces.add(piece);
      this.grants.set(ORIGIN_PARENT, grant);
    }
    this.hold(now, 1_000);
  }

  /** No origin asks until `ms` passed or the parent list changed. */
  private hold(now: number, ms: number): void {
    this.originHold = { until: now + ms, parentsSeen: this.parentsSeen };
  }

  /** Join, or join again with everything held (the server forgot this peer, or the RAM window evicted pieces). */
  private reannounce(): Promise<boolean> {
    return (this.announcing ??= this.announce().finally(() => (this.announcing = undefined)));
  }

  private async announce(): Promise<boolean> {
    if (!this.url || this.dropped) return false;
    try {
      for (let attempt = 0; attempt < 3; attempt++) {
        const held = this.sink.store.held();
        this.needAnnounce = false;
        const answer = await this.client.join(this.url, held, this.stop.signal);
        if (answer.kind === 'joined') {
          if (this.joined) this.log?.info({ peerId: this.client.peerId, held: held.count() }, 'peer: joined the swarm again');
          this.joined = true;
          this.haveQueue = this.haveQueue.filter((i) => !held.has(i));
          return true;
        }
        // The server no longer distributes the image (it restarted): its manifest prepares it again.
        const again = await this.client.manifest({ deadline: performance.now() + (this.opts.prepareTimeoutMs ?? PEER_DEFAULTS.prepareTimeoutMs), signal: this.stop.signal });
        if (again.pieces.join() !== this.manifest.pieces.join() || again.size !== this.manifest.size) {
          throw new DragonflyError('DF_ERR_P2P_MANIFEST', `refused piece manifest: the server's manifest of image ${this.manifest.sha256} changed during the download`);
        }
      }
      return false;
    } catch (e) {
      if (this.stopping) return false;
      if (e instanceof DragonflyError && e.code === 'DF_ERR_P2P_UNAVAILABLE' && e.data.status === 403) {
        this.becomeDropped();
        return false;
      }
      if (e instanceof DragonflyError && e.code === 'DF_ERR_P2P_SCHEDULER') {
        this.log?.warn({ err: e.message }, 'peer: the scheduler cannot be reached; going on with the parents known');
        return false;
      }
      this.fail(e);
      return false;
    }
  }

  /**
   * The scheduler dropped this peer for the image (one bad piece reported, or timeouts from several peers): it
   * serves nothing more, and finishes from the seed alone, every piece still verified.
   */
  private becomeDropped(): void {
    if (this.dropped) return;
    this.dropped = true;
    this.log?.warn({ peerId: this.client.peerId }, 'peer: the scheduler dropped this peer for this image; serving nothing, finishing from the seed');
    void this.closeServer();
    this.parents.clear();
    this.grants.clear();
    this.grants.set('seed', { url: this.client.base, kind: 'seed', pieces: new Set(), all: true });
    this.pump();
  }

  /** The long poll: the parent list, current within one change of the image's state. Backs off when the server is away. */
  private async pollParents(): Promise<void> {
    let since: number | undefined;
    let backoff = 0;
    while (!this.stopping && !this.dropped) {
      try {
        const answer = await this.client.parents(since, POLL_WAIT_S, this.n, this.stop.signal);
        if (answer.kind === 'unknown') {
          since = undefined;
          if (await this.reannounce()) continue;
          throw new DragonflyError('DF_ERR_P2P_SCHEDULER', 'could not join again');
        }
        since = answer.revision;
        backoff = 0;
        if (this.dropped) return;
        this.parents = new Map(answer.parents.map((p) => [p.id, p]));
        this.parentsSeen++;
        this.pump();
      } catch (e) {
        if (this.stopping || this.dropped) return;
        if (e instanceof DragonflyError && (e.code === 'DF_ERR_UNAUTHORIZED' || e.code === 'DF_ERR_P2P_UNAVAILABLE')) return this.fail(e);
        backoff = Math.min(5_000, backoff ? backoff * 2 : 250);
        this.log?.warn({ err: (e as Error).message, retryMs: backoff }, 'peer: the parent list cannot be fetched');
        await sleep(backoff, this.stop.signal).catch(() => undefined);
      }
    }
  }

  private queueHave(piece: number): void {
    if (this.dropped) return;
    this.haveQueue.push(piece);
    if (this.haveQueue.length >= HAVE_BATCH) void this.flushHave();
    else this.haveTimer ??= setTimeout(() => void this.flushHave(), HAVE_DELAY_MS);
  }

  /** Reports the held pieces queued (and the uploads in progress); a peer the server forgot joins again. */
  private async flushHave(): Promise<void> {
    clearTimeout(this.haveTimer);
    this.haveTimer = undefined;
    if (this.haveBusy || !this.joined || this.dropped || !this.server) return;
    const batch = this.haveQueue.splice(0, 512);
    const uploads = this.server.stats().uploading;
    this.haveBusy = true;
    try {
      const known = await this.client.have(batch, uploads, this.stop.signal);
      this.reportedUploads = uploads;
      this.lastLoadReport = performance.now();
      if (!known) await this.reannounce();
    } catch (e) {
      if (this.stopping && !this.completed) return;
      this.haveQueue.unshift(...batch); // the next tick sends them again
      this.log?.warn({ err: (e as Error).message }, 'peer: held pieces could not be reported');
    } finally {
      this.haveBusy = false;
    }
    if (this.haveQueue.length >= HAVE_BATCH) await this.flushHave();
  }

  private onTick(): void {
    const now = performance.now();
    if (!this.completed && !this.picker.complete && now - this.lastProgressAt > (this.opts.stallMs ?? PEER_DEFAULTS.stallMs)) {
      return this.fail(
        new DragonflyError('DF_ERR_P2P_STALLED', `no piece of image ${this.manifest.sha256} arrived for ${Math.round((now - this.lastProgressAt) / 1000)} s (${this.stats.piecesDone} of ${this.n} held, ${this.parents.size} parents known)`, {
          sha256: this.manifest.sha256,
          piecesDone: this.stats.piecesDone,
          pieces: this.n,
        }),
      );
    }
    if (this.needAnnounce && this.joined) void this.reannounce();
    const uploads = this.server?.stats().uploading ?? 0;
    if (this.haveQueue.length > 0 && !this.haveTimer) void this.flushHave();
    else if (uploads !== this.reportedUploads && now - this.lastLoadReport >= 2 * TICK_MS) void this.flushHave();
    this.pump();
  }

  private progress(): PeerProgress {
    const s = this.stats;
    return { pieces: this.n, piecesDone: s.piecesDone, size: this.manifest.size, bytesDone: s.bytesDone, bytesFromPeers: s.bytesFromPeers, bytesFromSeed: s.bytesFromSeed, bytesFromOrigin: s.bytesFromOrigin };
  }
}

function flightKey(r: PieceRequest): string {
  return `${r.piece}\u0000${r.parent}`;
}
