// The server's state for one image (issue #13, "Scheduler", inside `dragonfly serve`): which peer holds which
// pieces, which parents each peer should ask, and who may fetch what from the seed/origin. Pure: no I/O and no
// timers; the HTTP layer passes the time in, validates ids and urls, and long-polls on `revision`.
//
// Invariants: a piece goes from the origin to one peer at a time, and again only when no live peer holds it;
// until the image is seeded (every piece has been on some peer) that is all, so a wave that loses peers early
// still finishes; once seeded, origin bytes beyond one copy of the image come out of the byte budget, and with
// `forbidOriginOnceSeeded` there are none (for this wave: once every holder is gone, a late joiner starts a new
// one); a dropped peer is never handed out again for this image; the seed is handed out only for pieces the
// asker was granted; nothing a peer sends (piece numbers, counts, loads) is trusted beyond its range; memory
// per peer is O(pieces / 8).
import { Bitfield } from './bitfield.js';
import { isPieceIndex, type PieceSet } from './piece-set.js';

export interface SchedulerOptions {
  /** The image's size in bytes and the manifest's piece length (the last piece may be shorter). */
  size: number;
  pieceLength: number;
  /** The seed peer: the front of the origin; handed out only for granted pieces. */
  seed: { id: string; url: string };
  /** The image's own URL (the template's), handed out for granted pieces while the seed is gone. */
  originUrl: string;
  /** Concurrent uploads one peer serves before it answers 503 (default 4). */
  uploadCap?: number;
  /** Peers per image; more are refused with `{ kind: 'full' }` (default 10,000). */
  maxPeers?: number;
  /** A peer not heard from for this long is no longer handed out (default 30 s); `sweep()` forgets it. */
  livenessMs?: number;
  /** An origin grant not reported held within this long is released (default 60 s). */
  grantMs?: number;
  /** Once seeded, origin bytes allowed beyond one copy of the image (default 2% of the size, at least two pieces). */
  originBudgetBytes?: number;
  /** Once every piece has been on some peer, refuse the origin entirely (default false). */
  forbidOriginOnceSeeded?: boolean;
  /** Timeout reports from distinct peers that drop a parent (default 3). */
  timeoutsToDrop?: number;
  /** Pieces ahead of a peer's first missing piece that `parentsFor` covers first (default 16, the picker's window). */
  window?: number;
  /** How long a hand-out counts as an upload the parent has not reported yet (default 2 s). */
  handoutMs?: number;
}

/** The parent id that stands for the origin itself (not a valid peer id: the HTTP layer admits none with parentheses). */
export const ORIGIN_PARENT = '(origin)';

export const SCHEDULER_DEFAULTS = {
  uploadCap: 4,
  maxPeers: 10_000,
  livenessMs: 30_000,
  grantMs: 60_000,
  originBudgetFraction: 0.02,
  timeoutsToDrop: 3,
  window: 16,
  handoutMs: 2_000,
  parents: 4,
} as const;

/** A parent handed to a peer; `has` is a live view of what the scheduler knows it holds. */
export interface ParentCandidate extends PieceSet {
  readonly id: string;
  readonly url: string;
  /** Uploads in flight (reported plus recently handed out) ÷ upload cap. */
  readonly load: number;
  readonly atCap: boolean;
}

export type AnnounceResult =
  | { kind: 'joined'; revision: number }
  | { kind: 'updated'; revision: number }
  | { kind: 'full'; maxPeers: number } // the image has as many peers as it may: fetch directly
  | { kind: 'dropped' }; // this peer served a bad piece or timed out: it may not serve this image

export type HaveResult =
  | { kind: 'recorded'; added: number } // pieces newly held
  | { kind: 'unknown' }; // not announced (or forgotten after a restart or silence): announce again

export type GrantResult =
  // parent: the seed, or ORIGIN_PARENT; again: the asker already held this grant (no new origin bytes)
  | { kind: 'granted'; piece: number; bytes: number; parent: string; url: string; fromBudget: boolean; again: boolean }
  | { kind: 'peers'; piece: number } // peers hold it: ask them (parentsFor)
  | { kind: 'wait'; piece: number; holder: string; retryAt: number } // granted to `holder`: wait for it to report
  | { kind: 'refused'; reason: 'unknown-peer' | 'nothing-to-grant' | 'grant-limit' | 'budget' | 'forbidden' };

export type ReportResult =
  | { kind: 'dropped' } // the parent is dropped for this image now
  | { kind: 'counted'; reporters: number } // timeouts from this many distinct peers so far
  | { kind: 'ignored'; reason: 'unknown-reporter' | 'unknown-parent' | 'self' | 'seed' | 'bad-piece' };

/** Why a peer was dropped for this image, for operators. */
export interface DropReport {
  readonly parent: string;
  readonly url: string;
  readonly reason: 'bad' | 'timeouts';
  readonly piece: number;
  readonly reporters: readonly string[];
  readonly at: number;
}

export interface SchedulerStats {
  peers: number;
  /** Pieces held by at least one peer other than the seed. */
  piecesHeld: number;
  pieces: number;
  /** Every piece has been on some peer other than the seed. */
  seeded: boolean;
  originBytes: number;
  originGrants: number;
  originBudgetLeft: number;
  /** Waves so far: a new one starts when a peer asks the origin after every holder is gone. */
  wave: number;
  dropped: number;
}

interface PeerState {
  readonly id: string;
  url: string;
  bits: Bitfield;
  lastSeen: number;
  uploads: number;
  handouts: number;
  handoutsAt: number;
  readonly timeoutReporters: Set<string>;
}

interface Grant {
  readonly peer: string;
  readonly at: number;
}

export class ImageScheduler {
  readonly pieces: number;
  readonly size: number;
  readonly pieceLength: number;
  readonly seedId: string;

  private readonly opts: Required<Omit<SchedulerOptions, 'seed' | 'size' | 'pieceLength' | 'originUrl'>>;
  private readonly originUrl: string;
  private readonly peers = new Map<string, PeerState>();
  private readonly seed: PeerState;
  private seedPresent = true;
  private readonly dropped = new Map<string, DropReport>();
  private readonly grants = new Map<number, Grant>();
  /** Pieces ever granted from the origin, and pieces ever held by a peer other than the seed. */
  private everGranted: Bitfield;
  private everHeld: Bitfield;
  private waveCount = 1;
  private rev = 0;
  private originBytesTotal = 0;
  private originGrantCount = 0;
  private budgetSpent = 0;

  constructor(options: SchedulerOptions) {
    if (!(Number.isInteger(options.size) && options.size > 0)) throw new RangeError(`ImageScheduler: size must be a whole number > 0, got ${options.size}`);
    if (!(Number.isInteger(options.pieceLength) && options.pieceLength > 0)) {
      throw new RangeError(`ImageScheduler: pieceLength must be a whole number > 0, got ${options.pieceLength}`);
    }
    this.size = options.size;
    this.pieceLength = options.pieceLength;
    this.pieces = Math.ceil(options.size / options.pieceLength);
    this.seedId = options.seed.id;
    this.originUrl = options.originUrl;
    const d = SCHEDULER_DEFAULTS;
    this.opts = {
      uploadCap: options.uploadCap ?? d.uploadCap,
      maxPeers: options.maxPeers ?? d.maxPeers,
      livenessMs: options.livenessMs ?? d.livenessMs,
      grantMs: options.grantMs ?? d.grantMs,
      // At least two pieces: below ~200 MiB, 2% is less than one piece, and one peer killed while it held the
      // only copy of a piece would leave the rest of its rollout with nowhere to get it from.
      originBudgetBytes: options.originBudgetBytes ?? Math.max(Math.floor(options.size * d.originBudgetFraction), Math.min(options.size, 2 * options.pieceLength)),
      forbidOriginOnceSeeded: options.forbidOriginOnceSeeded ?? false,
      timeoutsToDrop: options.timeoutsToDrop ?? d.timeoutsToDrop,
      window: options.window ?? d.window,
      handoutMs: options.handoutMs ?? d.handoutMs,
    };
    this.seed = this.newPeer(options.seed.id, options.seed.url, 0);
    this.everGranted = new Bitfield(this.pieces);
    this.everHeld = new Bitfield(this.pieces);
  }

  /** Bumped on every change of membership or availability; a long poll waits for it to pass its `rev`. */
  get revision(): number {
    return this.rev;
  }

  changedSince(rev: number): boolean {
    return this.rev > rev;
  }

  /** A peer joins (or re-joins after a restart) with everything it holds; its holdings are replaced. */
  announce(peerId: string, url: string, holdings: PieceSet, now: number): AnnounceResult {
    if (peerId === this.seedId) {
      const joined = !this.seedPresent;
      this.seedPresent = true;
      this.seed.url = url;
      this.seed.lastSeen = now;
      this.replaceHoldings(this.seed, holdings);
      this.bump();
      return { kind: joined ? 'joined' : 'updated', revision: this.rev };
    }
    if (this.dropped.has(peerId)) return { kind: 'dropped' };
    let peer = this.peers.get(peerId);
    const joined = !peer;
    if (!peer) {
      if (this.peers.size >= this.opts.maxPeers) return { kind: 'full', maxPeers: this.opts.maxPeers };
      peer = this.newPeer(peerId, url, now);
      this.peers.set(peerId, peer);
    }
    peer.url = url;
    peer.lastSeen = now;
    this.replaceHoldings(peer, holdings);
    this.bump();
    return { kind: joined ? 'joined' : 'updated', revision: this.rev };
  }

  /** A batch of pieces a peer now holds (verified on its side). Out-of-range numbers are ignored. */
  have(peerId: string, pieces: Iterable<number>, now: number): HaveResult {
    const peer = this.peerOrSeed(peerId);
    if (!peer) return { kind: 'unknown' };
    peer.lastSeen = now;
    let added = 0;
    for (const piece of pieces) {
      if (isPieceIndex(piece, this.pieces) && this.addPiece(peer, piece)) added++;
    }
    if (added > 0) this.bump();
    return { kind: 'recorded', added };
  }

  /** The uploads a peer is serving now, as it reports them; clamped to [0, cap]. Orders candidates, wakes nobody. */
  load(peerId: string, uploads: number, now: number): boolean {
    const peer = this.peerOrSeed(peerId);
    if (!peer || !Number.isFinite(uploads)) return false;
    peer.lastSeen = now;
    peer.uploads = Math.min(this.opts.uploadCap, Math.max(0, Math.floor(uploads)));
    peer.handouts = 0; // the report includes whatever the hand-outs became
    return true;
  }

  /** The peer is alive (a long poll, a heartbeat). */
  touch(peerId: string, now: number): boolean {
    const peer = this.peerOrSeed(peerId);
    if (peer) peer.lastSeen = now;
    return peer !== undefined;
  }

  /**
   * The peer's connection went away without a word (its long poll closed before the answer): unless it is
   * heard from again within `graceMs`, it counts as gone, its grants free and it is no longer handed out,
   * instead of after the whole liveness timeout. A peer that only reconnects touches again in time.
   */
  suspect(peerId: string, now: number, graceMs: number): boolean {
    const peer = this.peers.get(peerId);
    if (!peer) return false;
    peer.lastSeen = Math.min(peer.lastSeen, now - this.opts.livenessMs + graceMs);
    return true;
  }

  /** A peer leaves (finished and rebooting, or shut down); its open grants are released. */
  leave(peerId: string): boolean {
    if (peerId === this.seedId) {
      if (!this.seedPresent) return false;
      this.seedPresent = false;
      this.bump();
      return true;
    }
    if (!this.peers.delete(peerId)) return false;
    this.releaseGrantsOf(peerId);
    this.bump();
    return true;
  }

  /** Forget peers not heard from within the liveness timeout; returns their ids. */
  sweep(now: number): string[] {
    const gone = [...this.peers.values()].filter((p) => !this.isAlive(p, now)).map((p) => p.id);
    for (const id of gone) this.leave(id);
    return gone;
  }

  /**
   * Up to `k` parents for `peerId`: live, not dropped, never the asker, holding pieces it lacks. Each piece of
   * the asker's window (from its first missing piece) gets its least loaded holder first, then the least
   * loaded of the rest fill up; a parent at its cap is handed out only for a piece nobody else can give.
   * The seed (or, while it is gone, the origin as ORIGIN_PARENT) comes last, and only when the asker holds
   * origin grants: its `has` answers for those alone.
   */
  parentsFor(peerId: string, now: number, k: number = SCHEDULER_DEFAULTS.parents): ParentCandidate[] {
    const asker = this.peers.get(peerId);
    const lacks = (piece: number) => !asker || !asker.bits.has(piece);
    let frontier = 0;
    while (frontier < this.pieces && !lacks(frontier)) frontier++;
    if (frontier === this.pieces) return [];

    const live = [...this.peers.values()].filter((p) => p.id !== peerId && p.bits.count() > 0 && this.isAlive(p, now));
    const rank = new Map(live.map((p) => [p, { uploads: this.estimatedUploads(p, now), tie: tieBreak(peerId, p.id) }]));
    const better = (a: PeerState, b: PeerState) => {
      const ra = rank.get(a)!;
      const rb = rank.get(b)!;
      return ra.uploads - rb.uploads || ra.tie - rb.tie;
    };
    const chosen: PeerState[] = [];
    const picked = new Set<PeerState>();
    const choose = (p: PeerState) => {
      chosen.push(p);
      picked.add(p);
    };

    // Cover the window: each lacked piece's least loaded holder (below cap if any holder is).
    const end = Math.min(this.pieces, frontier + this.opts.window);
    for (let piece = frontier; piece < end && chosen.length < k; piece++) {
      if (!lacks(piece) || chosen.some((p) => p.bits.has(piece))) continue;
      let best: PeerState | undefined;
      for (const p of live) if (p.bits.has(piece) && (!best || better(p, best) < 0)) best = p;
      if (best) choose(best);
    }
    // Fill with the least loaded below cap that hold anything the asker lacks.
    if (chosen.length < k) {
      const rest = live.filter((p) => !picked.has(p) && rank.get(p)!.uploads < this.opts.uploadCap && this.holdsAnyLacked(p, lacks));
      rest.sort(better);
      for (const p of rest.slice(0, k - chosen.length)) choose(p);
    }

    const out = chosen.map((p) => this.candidate(p, now));
    for (const p of chosen) this.countHandout(p, now);
    const granted = this.grantsOf(peerId, now);
    if (granted.size > 0) out.push({ ...this.originSource(), load: 0, atCap: false, has: (piece) => granted.has(piece) });
    return out;
  }

  /**
   * May `peerId` fetch one of `pieces` (its starved pieces, most urgent first) from the seed/origin? Grants the
   * first it may: only a piece no live peer holds, to one peer at a time, at most `window / live peers` open
   * grants per peer (so the first fetches spread). Once the image is seeded, a piece fetched before comes out of
   * the byte budget, and with `forbidOriginOnceSeeded` nothing is granted at all. Otherwise says why not for the
   * first piece asked: peers hold it, it is granted to another peer (wait for it), or a refusal.
   */
  originGrant(peerId: string, pieces: readonly number[], now: number): GrantResult {
    const asker = this.peers.get(peerId);
    if (!asker) return { kind: 'refused', reason: 'unknown-peer' };
    asker.lastSeen = now;
    this.endWaveIfEmpty(now);
    let held: GrantResult | undefined; // a grant the asker already holds: said again only if nothing new is granted
    let answer: GrantResult | undefined;
    for (const piece of pieces) {
      if (!isPieceIndex(piece, this.pieces) || asker.bits.has(piece)) continue;
      const decision = this.grantDecision(asker, piece, now);
      if (decision.kind === 'granted' && !decision.again) return decision;
      if (decision.kind === 'granted') held ??= decision;
      else answer ??= decision;
    }
    return held ?? answer ?? { kind: 'refused', reason: 'nothing-to-grant' };
  }

  /**
   * `reporterId` got a bad piece from `parentId`, or timed out on it. A bad piece drops the parent for this
   * image at once; timeouts drop it once distinct peers have reported `timeoutsToDrop` of them. The seed is
   * never dropped (it verified what it serves; a hostile report must not cut the fleet off the origin).
   */
  report(reporterId: string, parentId: string, piece: number, kind: 'bad' | 'timeout', now: number): ReportResult {
    const reporter = this.peers.get(reporterId);
    if (!reporter) return { kind: 'ignored', reason: 'unknown-reporter' };
    reporter.lastSeen = now;
    if (reporterId === parentId) return { kind: 'ignored', reason: 'self' };
    if (parentId === this.seedId) return { kind: 'ignored', reason: 'seed' };
    if (!isPieceIndex(piece, this.pieces)) return { kind: 'ignored', reason: 'bad-piece' };
    const parent = this.peers.get(parentId);
    if (!parent) return { kind: 'ignored', reason: 'unknown-parent' };
    if (kind === 'timeout') {
      parent.timeoutReporters.add(reporterId);
      if (parent.timeoutReporters.size < this.opts.timeoutsToDrop) return { kind: 'counted', reporters: parent.timeoutReporters.size };
    }
    const reporters = kind === 'bad' ? [reporterId] : [...parent.timeoutReporters];
    this.drop({ parent: parentId, url: parent.url, reason: kind === 'bad' ? 'bad' : 'timeouts', piece, reporters, at: now });
    return { kind: 'dropped' };
  }

  /** The peers dropped for this image and why, oldest first. */
  reports(): DropReport[] {
    return [...this.dropped.values()];
  }

  /** What the scheduler believes a peer holds (a live view), or undefined for an unknown peer. */
  holdings(peerId: string): PieceSet | undefined {
    const peer = this.peerOrSeed(peerId);
    return peer && { has: (piece: number) => isPieceIndex(piece, this.pieces) && peer.bits.has(piece) };
  }

  /** Bytes of one piece (the last one may be shorter). */
  pieceBytes(piece: number): number {
    return Math.min(this.pieceLength, this.size - piece * this.pieceLength);
  }

  stats(): SchedulerStats {
    let piecesHeld = 0;
    for (let piece = 0; piece < this.pieces; piece++) {
      for (const p of this.peers.values()) {
        if (p.bits.has(piece)) {
          piecesHeld++;
          break;
        }
      }
    }
    return {
      peers: this.peers.size,
      piecesHeld,
      pieces: this.pieces,
      seeded: this.seeded,
      originBytes: this.originBytesTotal,
      originGrants: this.originGrantCount,
      originBudgetLeft: this.opts.originBudgetBytes - this.budgetSpent,
      wave: this.waveCount,
      dropped: this.dropped.size,
    };
  }

  /** Every piece has been on some peer other than the seed. */
  get seeded(): boolean {
    return this.everHeld.isComplete();
  }

  private grantDecision(asker: PeerState, piece: number, now: number): GrantResult {
    for (const p of this.peers.values()) {
      if (p !== asker && p.bits.has(piece) && this.isAlive(p, now)) return { kind: 'peers', piece };
    }
    const grant = this.liveGrant(piece, now);
    if (grant && grant.peer !== asker.id) return { kind: 'wait', piece, holder: grant.peer, retryAt: grant.at + this.opts.grantMs };
    const bytes = this.pieceBytes(piece);
    const source = this.originSource();
    if (grant) return { kind: 'granted', piece, bytes, parent: source.id, url: source.url, fromBudget: false, again: true };
    if (this.opts.forbidOriginOnceSeeded && this.seeded) return { kind: 'refused', reason: 'forbidden' };
    if (this.grantsOf(asker.id, now).size >= this.grantLimit(now)) return { kind: 'refused', reason: 'grant-limit' };
    // Before the image is seeded, a lost first copy is fetched again freely: the budget guards the seeded wave.
    const fromBudget = this.seeded && this.everGranted.has(piece);
    if (fromBudget) {
      if (this.budgetSpent + bytes > this.opts.originBudgetBytes) return { kind: 'refused', reason: 'budget' };
      this.budgetSpent += bytes;
    }
    this.everGranted.set(piece);
    this.grants.set(piece, { peer: asker.id, at: now });
    this.originBytesTotal += bytes;
    this.originGrantCount++;
    this.bump();
    return { kind: 'granted', piece, bytes, parent: source.id, url: source.url, fromBudget, again: false };
  }

  /** Where granted pieces come from: the seed, or the origin itself while the seed is gone. */
  private originSource(): { id: string; url: string } {
    return this.seedPresent ? { id: this.seed.id, url: this.seed.url } : { id: ORIGIN_PARENT, url: this.originUrl };
  }

  /**
   * When no live peer holds any piece (the wave finished and its machines rebooted), a late joiner starts a new
   * wave: the image is no longer seeded, and the budget and the forbid switch count from nothing again.
   */
  private endWaveIfEmpty(now: number): void {
    if (this.everHeld.count() === 0) return;
    for (const p of this.peers.values()) if (p.bits.count() > 0 && this.isAlive(p, now)) return;
    this.everGranted = new Bitfield(this.pieces);
    this.everHeld = new Bitfield(this.pieces);
    this.budgetSpent = 0;
    this.waveCount++;
  }

  /** Open grants one peer may hold: the window shared out over the live peers, so the first fetches spread. */
  private grantLimit(now: number): number {
    let live = 0;
    for (const p of this.peers.values()) if (this.isAlive(p, now)) live++;
    return Math.max(1, Math.ceil(this.opts.window / Math.max(1, live)));
  }

  private liveGrant(piece: number, now: number): Grant | undefined {
    const g = this.grants.get(piece);
    if (!g) return undefined;
    // A holder not heard from within the liveness timeout (killed outright) frees its piece at once, not after grantMs.
    const holder = this.peers.get(g.peer);
    if (now - g.at < this.opts.grantMs && holder && this.isAlive(holder, now)) return g;
    this.grants.delete(piece);
    return undefined;
  }

  private grantsOf(peerId: string, now: number): Set<number> {
    const out = new Set<number>();
    for (const [piece, g] of this.grants) if (g.peer === peerId && this.liveGrant(piece, now)) out.add(piece);
    return out;
  }

  private releaseGrantsOf(peerId: string): void {
    for (const [piece, g] of this.grants) if (g.peer === peerId) this.grants.delete(piece);
  }

  private drop(report: DropReport): void {
    this.peers.delete(report.parent);
    this.releaseGrantsOf(report.parent);
    this.dropped.set(report.parent, report);
    // Bounded like the peers: the oldest record goes first (that id could announce again).
    if (this.dropped.size > this.opts.maxPeers) this.dropped.delete(this.dropped.keys().next().value!);
    this.bump();
  }

  private candidate(p: PeerState, now: number): ParentCandidate {
    const uploads = this.estimatedUploads(p, now);
    return {
      id: p.id,
      url: p.url,
      load: uploads / this.opts.uploadCap,
      atCap: uploads >= this.opts.uploadCap,
      has: (piece) => isPieceIndex(piece, this.pieces) && p.bits.has(piece),
    };
  }

  /** Reported uploads plus hand-outs since (each may become an upload before the next report). */
  private estimatedUploads(p: PeerState, now: number): number {
    const recent = now - p.handoutsAt < this.opts.handoutMs ? p.handouts : 0;
    return Math.min(this.opts.uploadCap, p.uploads + recent);
  }

  private countHandout(p: PeerState, now: number): void {
    if (now - p.handoutsAt >= this.opts.handoutMs) p.handouts = 0;
    p.handouts++;
    p.handoutsAt = now;
  }

  private holdsAnyLacked(p: PeerState, lacks: (piece: number) => boolean): boolean {
    for (let piece = 0; piece < this.pieces; piece++) if (p.bits.has(piece) && lacks(piece)) return true;
    return false;
  }

  private isAlive(p: PeerState, now: number): boolean {
    return now - p.lastSeen <= this.opts.livenessMs;
  }

  private peerOrSeed(peerId: string): PeerState | undefined {
    if (peerId === this.seedId) return this.seedPresent ? this.seed : undefined;
    return this.peers.get(peerId);
  }

  private newPeer(id: string, url: string, now: number): PeerState {
    return {
      id,
      url,
      bits: new Bitfield(this.pieces),
      lastSeen: now,
      uploads: 0,
      handouts: 0,
      handoutsAt: Number.NEGATIVE_INFINITY,
      timeoutReporters: new Set(),
    };
  }

  private replaceHoldings(peer: PeerState, holdings: PieceSet): void {
    peer.bits = new Bitfield(this.pieces);
    for (let piece = 0; piece < this.pieces; piece++) if (holdings.has(piece)) this.addPiece(peer, piece);
  }

  /** Mark a piece held; true when it is new. A non-seed holder fulfils the piece's grant and may seed the image. */
  private addPiece(peer: PeerState, piece: number): boolean {
    if (peer.bits.has(piece)) return false;
    peer.bits.set(piece);
    if (peer === this.seed) return true;
    if (this.grants.get(piece)?.peer === peer.id) this.grants.delete(piece);
    this.everHeld.set(piece);
    return true;
  }

  private bump(): void {
    this.rev++;
  }
}

/** A stable pseudo-random order per asker (FNV-1a), so equally loaded parents are not all handed out alike. */
function tieBreak(asker: string, parent: string): number {
  let h = 0x811c9dc5;
  const s = `${asker}\u0000${parent}`;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}
