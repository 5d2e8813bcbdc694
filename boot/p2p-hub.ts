// The P2P scheduler inside `dragonfly serve`: one ImageScheduler per image being distributed, the seed that
// fronts each image's origin, and the long polls that carry availability to peers (never busy polling).
// The HTTP side is routes-p2p.ts; the decisions are p2p/scheduler.ts (pure).
import type { Manifest } from '../p2p/manifest.js';
import { ImageScheduler } from '../p2p/scheduler.js';
import type { Workflow } from '../schemas/types.js';
import { WORKFLOWS } from '../store/keys.js';
import type { Store } from '../store/store.js';
import { withServerUrl } from './server-url.js';

/** What the hub needs of the seed peer (p2p/seed.ts fits). */
export interface P2pSeed {
  prepare(image: { url: string; sha256: string }): Promise<Manifest>;
  manifest(sha256: string): Manifest | undefined;
  piece(sha256: string, index: number): Promise<Buffer>;
}

export interface P2pHubOptions {
  store: Store;
  seed: P2pSeed;
  /** This server as peers reach it: the seed's pieces are served at SERVER/p2p/SHA256/pieces/I. */
  serverUrl: string;
  /** Images distributed at once; beyond it the least recently used idle one is forgotten (default 64). */
  maxImages?: number;
  /** Held long polls per image (default 10,000: one per peer). */
  maxWaiters?: number;
  /**
   * How long a peer whose long poll closed unanswered (killed, or its link cut) keeps its grants and its
   * place as a parent before it counts as gone, unless it polls again (default 3 s).
   */
  abandonGraceMs?: number;
  now?: () => number;
}

export const SEED_ID = 'seed';

interface ImageState {
  sha256: string;
  url: string;
  manifest: Manifest;
  scheduler: ImageScheduler;
  waiters: Set<() => void>;
  usedAt: number;
  /** Peers whose long polls closed unanswered, and when their grace ends. */
  suspects: Map<string, number>;
  /** One timer per image: it sweeps when the first suspect's grace has run out. */
  recheck?: NodeJS.Timeout;
}

export type ManifestAnswer = { kind: 'ready'; manifest: Manifest } | { kind: 'preparing' } | { kind: 'failed'; error: unknown } | { kind: 'unknown' };

export class P2pHub {
  private readonly images = new Map<string, ImageState>();
  private readonly preparing = new Map<string, Promise<unknown>>();
  private readonly failed = new Map<string, unknown>();
  private readonly now: () => number;
  private closed = false;
  private unwatch: (() => void) | undefined;
  private sweeper: NodeJS.Timeout | undefined;

  constructor(private readonly opts: P2pHubOptions) {
    this.now = opts.now ?? Date.now;
  }

  /**
   * Preheat: a workflow that appears pending with an image starts the seed on that image at once, before
   * the first machine asks (whether the controller or `dragonfly apply` in another process wrote it).
   */
  async start(): Promise<void> {
    // Peers killed outright never leave: forget the silent ones, so they are no longer handed out as parents.
    this.sweeper = setInterval(() => {
      for (const state of this.images.values()) if (state.scheduler.sweep(this.now()).length > 0) this.wake(state);
    }, 5_000);
    this.sweeper.unref();
    const from = await this.opts.store.read((s) => s.revision);
    const follow = (rev: number) => {
      if (this.closed) return;
      this.unwatch = this.opts.store.watch(
        WORKFLOWS,
        rev,
        (changes) => {
          const keys = changes.filter((c) => c.type === 'put').map((c) => c.key);
          if (keys.length === 0) return;
          void this.opts.store
            .read((snap) => keys.map((k) => snap.get<Workflow>(k)?.value))
            .then((wfs) => {
              for (const wf of wfs) if (wf?.state === 'pending' && wf.image) void this.preheat(this.imageOf(wf.image)).catch(() => {});
            });
        },
        // Changes were compacted away: what they held is preheated when a peer asks for its manifest.
        () => void this.opts.store.read((s) => s.revision).then(follow, () => {}),
      );
    };
    follow(from);
  }

  /**
   * The image's manifest, preparing it first when the server knows the image (a workflow names it, or it
   * was preheated): the seed reads the origin once, verifying it against the template's sha256.
   */
  async manifestFor(sha256: string): Promise<ManifestAnswer> {
    const state = this.images.get(sha256);
    if (state) return { kind: 'ready', manifest: state.manifest };
    if (this.preparing.has(sha256)) return { kind: 'preparing' };
    const image = await this.imageNamed(sha256);
    if (!image) return this.failed.has(sha256) ? { kind: 'failed', error: this.failed.get(sha256) } : { kind: 'unknown' };
    void this.preheat(image);
    return this.images.has(sha256) ? { kind: 'ready', manifest: this.images.get(sha256)!.manifest } : { kind: 'preparing' };
  }

  /** Starts the seed on an image before the first machine asks (an apply that creates workflows, or by hand). */
  preheat(image: { url: string; sha256: string }): Promise<unknown> {
    const running = this.preparing.get(image.sha256);
    if (running) return running;
    if (this.images.has(image.sha256)) return Promise.resolve(this.images.get(image.sha256)!.manifest);
    this.failed.delete(image.sha256);
    const p = this.opts.seed
      .prepare(image)
      .then((manifest) => {
        if (!this.closed) this.adopt(image, manifest);
        return manifest;
      })
      .catch((e: unknown) => {
        // Bounded like everything else: the oldest failures are forgotten (a later ask tries again).
        if (this.failed.size >= 256) this.failed.delete(this.failed.keys().next().value!);
        this.failed.set(image.sha256, e);
        throw e;
      })
      .finally(() => this.preparing.delete(image.sha256));
    this.preparing.set(image.sha256, p);
    p.catch(() => {}); // the failure is kept in `failed` for the next ask
    return p;
  }

  /** The scheduler of a ready image (undefined while it is prepared or when unknown). */
  scheduler(sha256: string): ImageScheduler | undefined {
    const state = this.images.get(sha256);
    if (state) state.usedAt = this.now();
    return state?.scheduler;
  }

  /** Wakes the image's long polls when `change` moved the scheduler's revision. */
  mutate<T>(sha256: string, change: (s: ImageScheduler) => T): T | undefined {
    const state = this.images.get(sha256);
    if (!state) return undefined;
    state.usedAt = this.now();
    const before = state.scheduler.revision;
    const result = change(state.scheduler);
    if (state.scheduler.revision !== before) this.wake(state);
    return result;
  }

  /**
   * Resolves once the image's state changed after `since`, or after `waitMs`: true when it changed.
   * Returns undefined when the image is unknown or too many polls are held (the caller answers at once).
   */
  waitForChange(sha256: string, since: number, waitMs: number, signal?: AbortSignal): Promise<boolean> | undefined {
    const state = this.images.get(sha256);
    if (!state) return undefined;
    if (state.scheduler.changedSince(since) || waitMs <= 0) return Promise.resolve(state.scheduler.changedSince(since));
    if (state.waiters.size >= (this.opts.maxWaiters ?? 10_000)) return undefined;
    return new Promise<boolean>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        state.waiters.delete(done);
        signal?.removeEventListener('abort', done);
        resolve(state.scheduler.changedSince(since));
      };
      const timer = setTimeout(done, waitMs);
      state.waiters.add(done);
      signal?.addEventListener('abort', done, { once: true });
    });
  }

  /**
   * A peer's long poll closed before its answer: a killed peer, or one whose link went down. Its grants and
   * its place as a parent go after a short grace (the survivors are woken then), not after the liveness
   * timeout; a peer that merely reconnects polls again within the grace and keeps both.
   */
  abandoned(sha256: string, peerId: string): void {
    const state = this.images.get(sha256);
    if (!state || this.closed) return;
    const grace = this.opts.abandonGraceMs ?? 3_000;
    if (!state.scheduler.suspect(peerId, this.now(), grace)) return;
    // Bounded by the scheduler's own peer cap: only known peers get here.
    state.suspects.set(peerId, this.now() + grace + 1);
    this.armRecheck(state);
  }

  /** Sweeps the image when the first suspect's grace ends, then waits for the next one. */
  private armRecheck(state: ImageState): void {
    if (state.recheck || state.suspects.size === 0) return;
    const at = Math.min(...state.suspects.values());
    const timer = setTimeout(() => {
      state.recheck = undefined;
      if (this.closed || this.images.get(state.sha256) !== state) return;
      const now = this.now();
      for (const [id, due] of state.suspects) if (due <= now) state.suspects.delete(id);
      if (state.scheduler.sweep(now).length > 0) this.wake(state);
      this.armRecheck(state);
    }, Math.max(0, at - this.now()));
    timer.unref();
    state.recheck = timer;
  }

  async seedPiece(sha256: string, index: number): Promise<Buffer | undefined> {
    const state = this.images.get(sha256);
    if (!state || !Number.isInteger(index) || index < 0 || index >= state.manifest.pieces.length) return undefined;
    return this.opts.seed.piece(sha256, index);
  }

  /** Every image the hub knows, for operators: being prepared, failed, or distributed (with its swarm's figures). */
  list(): { sha256: string; state: 'preparing' | 'failed' | 'ready'; url?: string; stats?: ReturnType<ImageScheduler['stats']> }[] {
    const out: ReturnType<P2pHub['list']> = [];
    for (const s of this.images.values()) out.push({ sha256: s.sha256, state: 'ready', url: s.url, stats: s.scheduler.stats() });
    for (const sha256 of this.preparing.keys()) out.push({ sha256, state: 'preparing' });
    for (const sha256 of this.failed.keys()) if (!this.preparing.has(sha256) && !this.images.has(sha256)) out.push({ sha256, state: 'failed' });
    return out;
  }

  close(): void {
    this.closed = true;
    this.unwatch?.();
    clearInterval(this.sweeper);
    for (const state of this.images.values()) {
      if (state.recheck) clearTimeout(state.recheck);
      for (const w of [...state.waiters]) w();
    }
    this.images.clear();
  }

  private wake(state: ImageState): void {
    for (const w of [...state.waiters]) w();
  }

  private adopt(image: { url: string; sha256: string }, manifest: Manifest): void {
    const max = this.opts.maxImages ?? 64;
    if (this.images.size >= max) {
      // The least recently used image goes; its peers re-announce if they still want it.
      const oldest = [...this.images.values()].sort((a, b) => a.usedAt - b.usedAt)[0]!;
      for (const w of [...oldest.waiters]) w();
      this.images.delete(oldest.sha256);
    }
    const base = this.opts.serverUrl.replace(/\/+$/, '');
    const scheduler = new ImageScheduler({
      size: manifest.size,
      pieceLength: manifest.pieceLength,
      seed: { id: SEED_ID, url: base },
      originUrl: image.url,
    });
    this.images.set(image.sha256, { sha256: image.sha256, url: image.url, manifest, scheduler, waiters: new Set(), suspects: new Map(), usedAt: this.now() });
  }

  /** A workflow's image as the seed reads it: ${server.url} filled in, the digest in lowercase. */
  private imageOf(image: { url: string; sha256: string }): { url: string; sha256: string } {
    return { url: withServerUrl(image.url, this.opts.serverUrl.replace(/\/+$/, '')), sha256: image.sha256.toLowerCase() };
  }

  /** An image the server may fetch: named by a workflow in the store (so only images a template names). */
  private async imageNamed(sha256: string): Promise<{ url: string; sha256: string } | undefined> {
    return this.opts.store.read((snap) => {
      for (const { value } of snap.list<Workflow>(WORKFLOWS)) {
        if (value.image && value.image.sha256.toLowerCase() === sha256) return this.imageOf(value.image);
      }
      return undefined;
    });
  }
}
