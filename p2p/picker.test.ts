// The piece picker on its own: parents are plain objects, time is a number, requests are data.
import { describe, expect, it } from 'vitest';
import { PiecePicker, type PieceRequest, type PieceSource } from './picker.js';

/** A parent holding `pieces` ('all' for every piece). */
function parent(id: string, pieces: number[] | 'all', load = 0): PieceSource {
  const set = pieces === 'all' ? undefined : new Set(pieces);
  return { id, load, has: (p) => (set ? set.has(p) : p >= 0) };
}

const ok = { kind: 'ok' } as const;
const bad = { kind: 'bad' } as const;
const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);
const pieces = (reqs: PieceRequest[]) => reqs.map((r) => r.piece);

describe('PiecePicker', () => {
  it('asks for the write position first, then the window rarest first, ties to the lowest index', () => {
    const picker = new PiecePicker({ pieces: 6, window: 6, perParent: 10, maxInFlight: 10, timeoutMs: 1000 });
    const parents = [parent('A', 'all'), parent('B', [1, 2, 3]), parent('C', [2, 3]), parent('D', [3])];
    // rarity: 1 → 2 holders, 2 → 3, 3 → 4, 4 and 5 → 1 (A alone)
    const reqs = picker.next(parents, 0);
    expect(pieces(reqs)).toEqual([0, 4, 5, 1, 2, 3]);
    // each piece goes to the holder with the fewest of our requests: A is busy with 0, 4, 5
    expect(reqs.map((r) => r.parent)).toEqual(['A', 'A', 'A', 'B', 'C', 'D']);
  });

  it('never asks beyond the window ahead of the write position; the window moves as pieces are written', () => {
    const picker = new PiecePicker({ pieces: 40, window: 4, perParent: 10, maxInFlight: 10, timeoutMs: 1000 });
    const parents = [parent('A', 'all')];
    expect(pieces(picker.next(parents, 0))).toEqual([0, 1, 2, 3]);
    expect(picker.next(parents, 1)).toEqual([]);
    // 2 arrives first: nothing is writable until 0 is
    picker.settle({ piece: 2, parent: 'A' }, ok, 2);
    expect(picker.deliverable()).toEqual([]);
    expect(picker.next(parents, 2)).toEqual([]); // the window is still 0..3
    picker.settle({ piece: 0, parent: 'A' }, ok, 3);
    expect(picker.deliverable()).toEqual([0]);
    // not written yet: the window has not moved
    expect(picker.next(parents, 3)).toEqual([]);
    expect(picker.advance()).toBe(1);
    expect(pieces(picker.next(parents, 4))).toEqual([4]);
    picker.settle({ piece: 1, parent: 'A' }, ok, 5);
    expect(picker.deliverable()).toEqual([1, 2]);
    expect(picker.advance(1)).toBe(2);
    expect(picker.advance()).toBe(3);
    expect(pieces(picker.next(parents, 6))).toEqual([5, 6]);
  });

  it('keeps the total and per-parent caps, spreading requests over parents', () => {
    const picker = new PiecePicker({ pieces: 100, timeoutMs: 1000 }); // defaults: window 16, 2 per parent, 8 in all
    const parents = range(0, 10).map((i) => parent(`P${i}`, 'all'));
    const reqs = picker.next(parents, 0);
    expect(reqs).toHaveLength(8);
    const perParent = new Map<string, number>();
    for (const r of reqs) perParent.set(r.parent, (perParent.get(r.parent) ?? 0) + 1);
    expect(Math.max(...perParent.values())).toBe(1); // ten idle parents: one request each before doubling up
    expect(picker.next(parents, 1)).toEqual([]);
    expect(picker.inFlight).toBe(8);

    const one = new PiecePicker({ pieces: 100, timeoutMs: 1000 });
    expect(one.next([parent('A', 'all')], 0)).toHaveLength(2); // per-parent cap
  });

  it('prefers the least loaded parent the scheduler describes', () => {
    const picker = new PiecePicker({ pieces: 4, window: 4, timeoutMs: 1000 });
    const reqs = picker.next([parent('busy', 'all', 0.75), parent('idle', 'all', 0)], 0);
    expect(reqs[0]).toEqual({ piece: 0, parent: 'idle' });
  });

  it('rarest first spreads a fleet: pickers that see different holders ask for different pieces', () => {
    // A pool of 20 peers holding parts of the first window: the first pieces common (everyone fetched its head
    // first), the rest rare; 50 pickers each see 4 of them. Fetching in order, most would ask for pieces 1 and 2.
    const pool = range(0, 20).map((j) => parent(`pool${j}`, [...(j % 5 ? [1, 2, 3] : []), 4 + ((j * 7) % 12), 4 + ((j * 5 + 3) % 12)]));
    const asked = new Map<number, number>();
    const inOrder = new Map<number, number>();
    for (let i = 0; i < 50; i++) {
      const picker = new PiecePicker({ pieces: 64, timeoutMs: 1000, maxInFlight: 3 });
      const view = range(0, 4).map((m) => pool[(i * 3 + m * 7) % pool.length]!);
      const reqs = picker.next(view, 0);
      // nobody holds piece 0 yet (its slot is kept): each picker's first request is the rarest piece in its view
      const rarity = (p: number) => new Set(view.filter((v) => v.has(p)).map((v) => v.id)).size;
      const available = range(1, 16).filter((p) => rarity(p) > 0);
      const rarest = Math.min(...available.map(rarity));
      expect(rarity(reqs[0]!.piece)).toBe(rarest);
      for (const r of reqs) asked.set(r.piece, (asked.get(r.piece) ?? 0) + 1);
      for (const p of available.slice(0, reqs.length)) inOrder.set(p, (inOrder.get(p) ?? 0) + 1);
    }
    const share = (m: Map<number, number>) => Math.max(...m.values()) / [...m.values()].reduce((a, b) => a + b, 0);
    // fetched in order, the fleet would ask for pieces 1 and 2 only; rarest first it asks for 7 different ones
    expect(inOrder.size).toBe(2);
    expect(asked.size).toBeGreaterThanOrEqual(7);
    expect(share(asked)).toBeLessThan(share(inOrder));
  });

  it('keeps a slot for a write position nobody holds, and asks for it the moment a parent has it', () => {
    const picker = new PiecePicker({ pieces: 64, timeoutMs: 1000 });
    const others = range(0, 8).map((i) => parent(`P${i}`, range(1, 64)));
    const first = picker.next(others, 0);
    expect(first).toHaveLength(7); // one slot kept for piece 0
    expect(pieces(first)).not.toContain(0);
    expect(picker.starved(others)).toEqual([0]);
    const withHead = [...others, parent('H', [0], 1)]; // loaded, but the only holder
    expect(picker.next(withHead, 1)).toEqual([{ piece: 0, parent: 'H' }]);
    expect(picker.starved(withHead)).toEqual([]);
  });

  it('asks for the write position again first after its request times out, from another parent', () => {
    const picker = new PiecePicker({ pieces: 64, timeoutMs: 1000, maxInFlight: 4 });
    const parents = [parent('A', 'all'), parent('B', 'all')];
    expect(picker.next(parents, 0)[0]).toEqual({ piece: 0, parent: 'A' });
    picker.settle({ piece: 1, parent: 'B' }, ok, 10); // B delivered one; A is silent
    expect(picker.expired(999)).toEqual([]);
    const expired = picker.expired(1000);
    expect(expired).toContainEqual({ piece: 0, parent: 'A' });
    expect(picker.strikes('A')).toBe(expired.filter((r) => r.parent === 'A').length);
    const again = picker.next(parents, 1001);
    expect(again[0]).toEqual({ piece: 0, parent: 'B' }); // B has no strikes
  });

  it('a request that keeps receiving bytes is not timed out (throttled is not dead), until ten piece timeouts', () => {
    const picker = new PiecePicker({ pieces: 64, timeoutMs: 1000, maxInFlight: 1 });
    const parents = [parent('A', 'all')];
    const r = picker.next(parents, 0)[0]!;
    for (let t = 900; t < 9_900; t += 900) {
      picker.moving(r, t);
      expect(picker.expired(t + 899)).toEqual([]);
    }
    // Still moving at 9.9 s, but a parent that trickles a piece for ten timeouts is given up.
    picker.moving(r, 9_950);
    expect(picker.expired(10_000)).toEqual([r]);
    expect(picker.strikes('A')).toBe(1);
  });

  it('duplicates requests only in the endgame, for the last few pieces, to other parents', () => {
    const picker = new PiecePicker({ pieces: 10, window: 10, perParent: 2, maxInFlight: 8, timeoutMs: 1000 });
    const parents = ['A', 'B', 'C', 'D', 'E', 'F'].map((id) => parent(id, 'all'));
    const first = picker.next(parents, 0);
    expect(pieces(first).sort((a, b) => a - b)).toEqual(range(0, 8));
    picker.settle({ piece: 0, parent: first.find((r) => r.piece === 0)!.parent }, ok, 1);
    picker.settle({ piece: 1, parent: first.find((r) => r.piece === 1)!.parent }, ok, 1);
    const more = picker.next(parents, 2);
    expect(pieces(more).sort()).toEqual([8, 9]); // 8 missing, all in flight: no duplicates yet
    expect(picker.next(parents, 2)).toEqual([]);
    for (const p of [2, 3, 4]) picker.settle({ piece: p, parent: [...first, ...more].find((r) => r.piece === p)!.parent }, ok, 3);
    // 5 missing, all in flight: still not the endgame (it starts at 4)
    expect(picker.next(parents, 3)).toEqual([]);
    picker.settle({ piece: 5, parent: first.find((r) => r.piece === 5)!.parent }, ok, 4);
    const dups = picker.next(parents, 4);
    expect(pieces(dups)).toEqual([6, 7, 8, 9]);
    const originals = [...first, ...more];
    for (const d of dups) expect(d.parent).not.toBe(originals.find((r) => r.piece === d.piece)!.parent);
    expect(picker.next(parents, 4)).toEqual([]); // one duplicate each, no more
    // the first copy to arrive wins; the twin is to be aborted, and a late twin is a duplicate
    const twin = originals.find((r) => r.piece === 6)!;
    const won = picker.settle(dups[0]!, ok, 5);
    expect(won).toEqual({ kind: 'accepted', cancel: [twin] });
    expect(picker.settle(twin, ok, 6)).toEqual({ kind: 'duplicate' });
  });

  it('blocklists a parent on its first bad piece, aborts its other requests, and fetches the piece elsewhere', () => {
    const picker = new PiecePicker({ pieces: 16, timeoutMs: 1000 });
    const parents = [parent('evil', 'all'), parent('good', 'all', 0.5)];
    const reqs = picker.next(parents, 0);
    const evil = reqs.filter((r) => r.parent === 'evil');
    expect(evil).toHaveLength(2);
    const result = picker.settle(evil[0]!, bad, 1);
    expect(result).toEqual({ kind: 'blocked', cancel: [evil[1]] });
    expect(picker.isBlocked('evil')).toBe(true);
    expect(picker.has(evil[0]!.piece)).toBe(false);
    // good is at its per-parent cap; once it frees a slot, the bad piece goes to it, never to evil
    const goodReqs = reqs.filter((r) => r.parent === 'good');
    for (const r of goodReqs) picker.settle(r, ok, 2);
    const next = picker.next(parents, 3);
    expect(next.map((r) => r.parent)).toEqual(['good', 'good']);
    expect(pieces(next)).toContain(evil[0]!.piece);
    // evil alone holds a piece: it is starved, not asked of evil
    const onlyEvil = new PiecePicker({ pieces: 4, timeoutMs: 1000 });
    onlyEvil.block('evil');
    expect(onlyEvil.next([parent('evil', 'all')], 0)).toEqual([]);
    expect(onlyEvil.starved([parent('evil', 'all')])).toEqual([0, 1, 2, 3]);
    // a verified piece that still arrives from a blocklisted parent is accepted: trust comes from the sha256
    expect(picker.settle({ piece: evil[1]!.piece, parent: 'evil' }, ok, 4).kind).toBe('accepted');
  });

  it('a parent at its cap (503) is paused until its Retry-After, and its slot is free', () => {
    const picker = new PiecePicker({ pieces: 16, timeoutMs: 1000 });
    const parents = [parent('A', 'all')];
    const [r0, r1] = picker.next(parents, 0);
    expect(picker.settle(r0!, { kind: 'busy', retryAfterMs: 500 }, 10)).toEqual({ kind: 'released' });
    expect(picker.settle(r0!, { kind: 'busy', retryAfterMs: 500 }, 10)).toEqual({ kind: 'ignored' }); // not in flight
    expect(picker.inFlight).toBe(1);
    expect(picker.next(parents, 200)).toEqual([]);
    expect(picker.next(parents, 510)).toEqual([{ piece: r0!.piece, parent: 'A' }]);
    expect(picker.strikes('A')).toBe(0); // busy is not a fault
    picker.settle(r1!, { kind: 'failed' }, 520);
    expect(picker.strikes('A')).toBe(1);
  });

  it('a timed-out parent goes behind parents without strikes', () => {
    const picker = new PiecePicker({ pieces: 16, timeoutMs: 100, perParent: 1, maxInFlight: 1 });
    const parents = [parent('slow', 'all'), parent('other', 'all', 0.5)];
    expect(picker.next(parents, 0)).toEqual([{ piece: 0, parent: 'slow' }]);
    expect(picker.expired(100)).toEqual([{ piece: 0, parent: 'slow' }]);
    expect(picker.inFlight).toBe(0);
    expect(picker.next(parents, 101)).toEqual([{ piece: 0, parent: 'other' }]);
    // a late but verified piece from the timed-out request is still welcome
    expect(picker.settle({ piece: 0, parent: 'slow' }, ok, 150)).toEqual({ kind: 'accepted', cancel: [{ piece: 0, parent: 'other' }] });
  });

  it('starved lists window pieces no parent holds and nobody fetches, lowest first', () => {
    const picker = new PiecePicker({ pieces: 32, window: 8, timeoutMs: 1000 });
    const parents = [parent('A', [1, 3, 20])];
    expect(picker.starved(parents)).toEqual([0, 2, 4, 5, 6, 7]);
    picker.next(parents, 0);
    expect(picker.starved([])).toEqual([0, 2, 4, 5, 6, 7]); // 1 and 3 are in flight
  });

  it('ignores what does not belong to this image and de-duplicates parents', () => {
    const picker = new PiecePicker({ pieces: 4, timeoutMs: 1000 });
    expect(picker.settle({ piece: -1, parent: 'A' }, ok, 0)).toEqual({ kind: 'ignored' });
    expect(picker.settle({ piece: 4, parent: 'A' }, ok, 0)).toEqual({ kind: 'ignored' });
    expect(picker.settle({ piece: 1.5, parent: 'A' }, ok, 0)).toEqual({ kind: 'ignored' });
    expect(picker.heldPieces).toBe(0);
    const a = parent('A', 'all');
    expect(picker.next([a, a, a], 0)).toHaveLength(2); // one parent, however often it is listed
    expect(() => new PiecePicker({ pieces: 0, timeoutMs: 1 })).toThrow(RangeError);
    expect(() => new PiecePicker({ pieces: 4, timeoutMs: 0 })).toThrow(RangeError);
    expect(() => new PiecePicker({ pieces: 4, window: 1.5, timeoutMs: 1 })).toThrow(RangeError);
  });

  it('runs to completion: every piece held and written in order', () => {
    const picker = new PiecePicker({ pieces: 50, timeoutMs: 1000 });
    const parents = ['A', 'B', 'C'].map((id) => parent(id, 'all'));
    const written: number[] = [];
    for (let t = 0; !picker.done && t < 1000; t++) {
      for (const r of picker.next(parents, t)) picker.settle(r, ok, t);
      written.push(...picker.deliverable());
      picker.advance();
    }
    expect(picker.done && picker.complete).toBe(true);
    expect(written).toEqual(range(0, 50));
  });
});
