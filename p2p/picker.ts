// Which piece a downloading peer asks which parent for next (issue #13, "Peer"). Pure: no I/O and no timers;
// the caller passes the time in and carries out the requests this returns.
//
// Invariants: a piece is requested only inside the window [write position, write position + window), so the
// bytes reach the disk in order and RAM stays bounded; the piece at the write position goes first whenever
// nobody is fetching it; the rest of the window goes rarest first; a parent that sent one bad piece is never
// asked again; a piece is fetched twice at once only in the endgame (the last few pieces).
import { Bitfield } from './bitfield.js';
import { isPieceIndex, type PieceSet } from './piece-set.js';

/** A parent as the scheduler described it: who, what it holds, and how busy the scheduler believes it is. */
export interface PieceSource extends PieceSet {
  readonly id: string;
  /** Uploads in flight ÷ upload cap, as the scheduler reported or estimated (0 = idle); lower goes first. */
  readonly load?: number;
}

/** One request to start: fetch `piece` from the parent `parent`. */
export interface PieceRequest {
  readonly piece: number;
  readonly parent: string;
}

/** How a request ended. `ok` only after the piece's sha256 matched the manifest. */
export type PieceOutcome =
  | { kind: 'ok' }
  | { kind: 'bad' } // the bytes did not match the manifest's sha256
  | { kind: 'busy'; retryAfterMs: number } // the parent is at its upload cap (503 Retry-After)
  | { kind: 'failed' }; // connection refused or reset, short body: counts against the parent like a timeout

export type SettleResult =
  | { kind: 'accepted'; cancel: PieceRequest[] } // the piece is held now; abort these duplicate requests
  | { kind: 'duplicate' } // already held (an endgame twin won): discard the bytes
  | { kind: 'blocked'; cancel: PieceRequest[] } // the parent is blocklisted; abort its other requests
  | { kind: 'released' } // the slot is free again
  | { kind: 'ignored' }; // not a piece of this image, or a request that was not in flight

export interface PickerOptions {
  /** Pieces in the image (from the manifest). */
  pieces: number;
  /** Pieces ahead of the write position that may be fetched (default 16). */
  window?: number;
  /** Requests in flight to one parent (default 2). */
  perParent?: number;
  /** Requests in flight in all (default 8). */
  maxInFlight?: number;
  /**
   * A request that received nothing for this long is abandoned by `expired()`, and any request after ten times
   * as long: a slow transfer that keeps moving (throttled at either end) is not a dead parent.
   */
  timeoutMs: number;
  /** The endgame starts when at most this many pieces are missing and all of them are in flight (default 4). */
  endgame?: number;
}

interface Flight {
  readonly parent: string;
  readonly startedAt: number;
  /** When bytes last arrived (the start, before any). */
  lastAt: number;
}

/** A request that keeps moving is abandoned only after this many piece timeouts (a parent trickling bytes). */
const MOVING_TIMEOUTS = 10;

export const PICKER_DEFAULTS = { window: 16, perParent: 2, maxInFlight: 8, endgame: 4 } as const;

/** The most requests for one piece at once: the original and one endgame duplicate. */
const ENDGAME_COPIES = 2;

export class PiecePicker {
  readonly pieces: number;
  readonly window: number;
  readonly perParent: number;
  readonly maxInFlight: number;
  readonly timeoutMs: number;
  readonly endgame: number;

  private readonly held: Bitfield;
  private writePos = 0;
  private readonly flights = new Map<number, Flight[]>();
  private flightCount = 0;
  private readonly perParentCount = new Map<string, number>();
  private readonly blocklist = new Set<string>();
  private readonly strikeCount = new Map<string, number>();
  private readonly pausedUntil = new Map<string, number>();

  constructor(options: PickerOptions) {
    this.pieces = positiveInteger('pieces', options.pieces);
    this.window = positiveInteger('window', options.window ?? PICKER_DEFAULTS.window);
    this.perParent = positiveInteger('perParent', options.perParent ?? PICKER_DEFAULTS.perParent);
    this.maxInFlight = positiveInteger('maxInFlight', options.maxInFlight ?? PICKER_DEFAULTS.maxInFlight);
    this.endgame = positiveInteger('endgame', options.endgame ?? PICKER_DEFAULTS.endgame);
    if (!(options.timeoutMs > 0)) throw new RangeError(`PiecePicker: timeoutMs must be > 0, got ${options.timeoutMs}`);
    this.timeoutMs = options.timeoutMs;
    this.held = new Bitfield(this.pieces);
  }

  /** The requests to start now, given the parents the scheduler offers (in its order: least loaded first). */
  next(parents: readonly PieceSource[], now: number): PieceRequest[] {
    const out: PieceRequest[] = [];
    const usable = this.usableParents(parents, now);
    const start = (piece: number): boolean => {
      if (this.flightCount >= this.maxInFlight) return false;
      const parent = this.bestParentFor(piece, usable);
      if (!parent) return false;
      this.startFlight(piece, parent.id, now);
      out.push({ piece, parent: parent.id });
      return true;
    };

    // The write position blocks the disk: it goes first whenever nobody is fetching it.
    const head = this.writePos;
    if (head < this.pieces && !this.held.has(head) && !this.flights.has(head)) start(head);

    // The rest of the window, rarest first (rarity = parents that hold it), ties to the lowest index.
    const holders = this.holderParents(parents);
    const ranked: Array<{ piece: number; rarity: number }> = [];
    for (const piece of this.windowPieces()) {
      if (this.held.has(piece) || this.flights.has(piece)) continue;
      const rarity = holders.filter((p) => p.has(piece)).length;
      if (rarity > 0) ranked.push({ piece, rarity });
    }
    ranked.sort((a, b) => a.rarity - b.rarity || a.piece - b.piece);
    // A head nobody could serve keeps one slot free, so it starts the moment a parent offers it.
    const headWaits = head < this.pieces && !this.held.has(head) && !this.flights.has(head) && this.maxInFlight > 1;
    const limit = this.maxInFlight - (headWaits ? 1 : 0);
    for (const { piece } of ranked) {
      if (this.flightCount >= limit) break;
      start(piece);
    }

    // Endgame: every missing piece is in flight and only a few are left: ask a second parent for each.
    const missing = this.pieces - this.held.count();
    if (missing > 0 && missing <= this.endgame && this.flights.size === missing) {
      for (const piece of [...this.flights.keys()].sort((a, b) => a - b)) {
        if ((this.flights.get(piece)?.length ?? 0) < ENDGAME_COPIES) start(piece);
      }
    }
    return out;
  }

  /** Record how a request ended (see PieceOutcome). An `ok` piece is accepted even after it expired. */
  settle(request: PieceRequest, outcome: PieceOutcome, now: number): SettleResult {
    const { piece, parent } = request;
    if (!isPieceIndex(piece, this.pieces)) return { kind: 'ignored' };
    switch (outcome.kind) {
      case 'ok': {
        this.endFlight(piece, parent);
        if (this.held.has(piece)) return { kind: 'duplicate' };
        this.held.set(piece);
        const cancel = (this.flights.get(piece) ?? []).map((f) => ({ piece, parent: f.parent }));
        for (const c of cancel) this.endFlight(piece, c.parent);
        return { kind: 'accepted', cancel };
      }
      case 'bad':
        this.endFlight(piece, parent);
        return { kind: 'blocked', cancel: this.block(parent) };
      case 'busy':
        if (!this.endFlight(piece, parent)) return { kind: 'ignored' };
        this.pausedUntil.set(parent, now + Math.max(0, outcome.retryAfterMs));
        return { kind: 'released' };
      case 'failed':
        if (!this.endFlight(piece, parent)) return { kind: 'ignored' };
        this.strike(parent);
        return { kind: 'released' };
    }
  }

  /** Bytes of a request arrived: it is moving (see `timeoutMs`). */
  moving(r: PieceRequest, now: number): void {
    const f = this.flights.get(r.piece)?.find((x) => x.parent === r.parent);
    if (f) f.lastAt = now;
  }

  /**
   * Abandon the requests that stalled for a piece timeout, or that took ten: their slots are free and each
   * counts against its parent.
   */
  expired(now: number): PieceRequest[] {
    const out: PieceRequest[] = [];
    for (const [piece, list] of this.flights) {
      for (const f of list) if (now - f.lastAt >= this.timeoutMs || now - f.startedAt >= MOVING_TIMEOUTS * this.timeoutMs) out.push({ piece, parent: f.parent });
    }
    for (const r of out) {
      this.endFlight(r.piece, r.parent);
      this.strike(r.parent);
    }
    return out;
  }

  /** Never ask this parent again (for this image); returns its requests in flight, to abort. */
  block(parentId: string): PieceRequest[] {
    this.blocklist.add(parentId);
    const cancel: PieceRequest[] = [];
    for (const [piece, list] of this.flights) {
      if (list.some((f) => f.parent === parentId)) cancel.push({ piece, parent: parentId });
    }
    for (const c of cancel) this.endFlight(c.piece, c.parent);
    return cancel;
  }

  isBlocked(parentId: string): boolean {
    return this.blocklist.has(parentId);
  }

  /** Timeouts and failures charged to a parent; a parent with fewer goes first. */
  strikes(parentId: string): number {
    return this.strikeCount.get(parentId) ?? 0;
  }

  /**
   * Pieces in the window that nobody is fetching and that no parent offered holds, lowest first: the peer
   * asks the scheduler for an origin grant for these (the head of the list blocks the disk soonest).
   */
  starved(parents: readonly PieceSource[]): number[] {
    const holders = this.holderParents(parents);
    const out: number[] = [];
    for (const piece of this.windowPieces()) {
      if (this.held.has(piece) || this.flights.has(piece)) continue;
      if (!holders.some((p) => p.has(piece))) out.push(piece);
    }
    return out;
  }

  /** The held pieces from the write position on, in order: what may be written to the disk now. */
  deliverable(): number[] {
    const out: number[] = [];
    for (let i = this.writePos; i < this.pieces && this.held.has(i); i++) out.push(i);
    return out;
  }

  /** Move the write position past up to `count` deliverable pieces (all by default); returns the new position. */
  advance(count = Number.POSITIVE_INFINITY): number {
    let moved = 0;
    while (moved < count && this.writePos < this.pieces && this.held.has(this.writePos)) {
      this.writePos++;
      moved++;
    }
    return this.writePos;
  }

  /** Whether this peer holds a piece (it may serve it to others). */
  has(piece: number): boolean {
    return isPieceIndex(piece, this.pieces) && this.held.has(piece);
  }

  /** The lowest piece not yet written to the disk. */
  get writePosition(): number {
    return this.writePos;
  }

  get heldPieces(): number {
    return this.held.count();
  }

  get inFlight(): number {
    return this.flightCount;
  }

  /** Every piece is held (it may not all be written yet). */
  get complete(): boolean {
    return this.held.isComplete();
  }

  /** Every piece is written. */
  get done(): boolean {
    return this.writePos === this.pieces;
  }

  /** The parents that may be asked now: not blocklisted, not paused by a 503, under the per-parent cap; once each. */
  private usableParents(parents: readonly PieceSource[], now: number): PieceSource[] {
    const seen = new Set<string>();
    return parents.filter((p) => {
      if (seen.has(p.id) || this.blocklist.has(p.id)) return false;
      seen.add(p.id);
      return (this.pausedUntil.get(p.id) ?? Number.NEGATIVE_INFINITY) <= now;
    });
  }

  /** The parents whose holdings count for rarity and starvation: every known parent not blocklisted, once each. */
  private holderParents(parents: readonly PieceSource[]): PieceSource[] {
    const seen = new Set<string>();
    return parents.filter((p) => !this.blocklist.has(p.id) && !seen.has(p.id) && seen.add(p.id));
  }

  /** The best parent to ask for `piece`: holds it, has a free slot, is not fetching it already; fewest strikes,
   * then least loaded, then fewest of our requests, then the scheduler's order. */
  private bestParentFor(piece: number, usable: readonly PieceSource[]): PieceSource | undefined {
    const fetching = this.flights.get(piece) ?? [];
    let best: PieceSource | undefined;
    let bestKey: number[] = [];
    for (const p of usable) {
      const mine = this.perParentCount.get(p.id) ?? 0;
      if (mine >= this.perParent || !p.has(piece) || fetching.some((f) => f.parent === p.id)) continue;
      const key = [this.strikes(p.id), p.load ?? 0, mine];
      if (!best || lexicographicLess(key, bestKey)) {
        best = p;
        bestKey = key;
      }
    }
    return best;
  }

  private *windowPieces(): Generator<number> {
    const end = Math.min(this.pieces, this.writePos + this.window);
    for (let i = this.writePos; i < end; i++) yield i;
  }

  private startFlight(piece: number, parent: string, now: number): void {
    const list = this.flights.get(piece) ?? [];
    list.push({ parent, startedAt: now, lastAt: now });
    this.flights.set(piece, list);
    this.flightCount++;
    this.perParentCount.set(parent, (this.perParentCount.get(parent) ?? 0) + 1);
  }

  /** Remove the request for `piece` from `parent`, if it is in flight; true when it was. */
  private endFlight(piece: number, parent: string): boolean {
    const list = this.flights.get(piece);
    const i = list?.findIndex((f) => f.parent === parent) ?? -1;
    if (!list || i < 0) return false;
    list.splice(i, 1);
    if (list.length === 0) this.flights.delete(piece);
    this.flightCount--;
    const n = (this.perParentCount.get(parent) ?? 1) - 1;
    if (n > 0) this.perParentCount.set(parent, n);
    else this.perParentCount.delete(parent);
    return true;
  }

  private strike(parent: string): void {
    this.strikeCount.set(parent, this.strikes(parent) + 1);
  }
}

function positiveInteger(name: string, value: number): number {
  if (!Number.isInteger(value) || value < 1) throw new RangeError(`PiecePicker: ${name} must be a whole number ≥ 1, got ${value}`);
  return value;
}

function lexicographicLess(a: readonly number[], b: readonly number[]): boolean {
  for (let i = 0; i < a.length; i++) {
    if (a[i]! !== b[i]!) return a[i]! < b[i]!;
  }
  return false;
}
