// The per-image scheduler on its own: peers are ids, holdings are sets, time is a number.
import { describe, expect, it } from 'vitest';
import { ImageScheduler, ORIGIN_PARENT, type SchedulerOptions } from './scheduler.js';

const MiB = 1 << 20;
const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);
const none = new Set<number>();
const all = (n: number) => new Set(range(0, n));

/** 64 pieces of 1 MiB, seed `seed`; defaults otherwise. */
function scheduler(options: Partial<SchedulerOptions> = {}): ImageScheduler {
  return new ImageScheduler({ size: 64 * MiB, pieceLength: MiB, seed: { id: 'seed', url: 'http://seed' }, originUrl: 'http://images.lan/img.raw', ...options });
}

function join(s: ImageScheduler, id: string, holdings: Set<number> = none, now = 0) {
  return s.announce(id, `http://${id}`, holdings, now);
}

describe('ImageScheduler: origin grants', () => {
  it('a grant whose holder went silent (killed outright) frees its piece after the liveness timeout, not the grant timeout', () => {
    const s = scheduler({ livenessMs: 30_000, grantMs: 60_000 });
    join(s, 'killed', none, 0);
    join(s, 'survivor', none, 0);
    expect(s.originGrant('killed', [0], 1)).toMatchObject({ kind: 'granted', piece: 0 });
    s.touch('survivor', 20_000);
    expect(s.originGrant('survivor', [0], 20_000)).toMatchObject({ kind: 'wait', holder: 'killed' });
    s.touch('survivor', 31_000);
    expect(s.originGrant('survivor', [0], 31_000)).toMatchObject({ kind: 'granted', piece: 0 });
  });

  it('a fleet of 50 peers starting together gets distinct first pieces from the origin: no back-to-source storm', () => {
    const s = scheduler();
    const ids = range(0, 50).map((i) => `peer${i}`);
    for (const id of ids) join(s, id);
    const granted = new Map<number, string>();
    const waits: string[] = [];
    for (const id of ids) {
      const r = s.originGrant(id, range(0, 16), 1); // every peer starves for its whole first window
      if (r.kind === 'granted') {
        expect(granted.has(r.piece)).toBe(false);
        granted.set(r.piece, id);
        expect(r).toMatchObject({ parent: 'seed', url: 'http://seed', bytes: MiB, fromBudget: false });
      } else {
        expect(r.kind).toBe('wait');
        waits.push(id);
      }
    }
    // one piece each (16 window pieces over 50 peers), every window piece exactly once
    expect([...granted.keys()].sort((a, b) => a - b)).toEqual(range(0, 16));
    expect(new Set(granted.values()).size).toBe(16);
    expect(waits).toHaveLength(34);
    expect(s.stats().originBytes).toBe(16 * MiB);

    // a refused peer is told whom to wait for
    const r = s.originGrant('peer49', [3], 2);
    expect(r).toEqual({ kind: 'wait', piece: 3, holder: granted.get(3), retryAt: 1 + 60_000 });
    // once the grantee reports the piece, the others are sent to it, not to the origin
    s.have(granted.get(3)!, [3], 3);
    expect(s.originGrant('peer49', [3], 4)).toEqual({ kind: 'peers', piece: 3 });
    const parents = s.parentsFor('peer49', 4);
    expect(parents.some((p) => p.id === granted.get(3) && p.has(3))).toBe(true);
  });

  it('asking again for a grant one holds costs nothing; a lone peer may take a whole window at once', () => {
    const s = scheduler();
    join(s, 'solo');
    const granted = range(0, 17).map(() => s.originGrant('solo', range(0, 17), 0));
    expect(granted.slice(0, 16).map((g) => g.kind === 'granted' && !g.again && g.piece)).toEqual(range(0, 16));
    // at its limit (the window), piece 16 is not granted; the answer repeats a grant it holds
    expect(granted[16]).toMatchObject({ kind: 'granted', piece: 0, again: true });
    expect(s.originGrant('solo', [16], 0)).toEqual({ kind: 'refused', reason: 'grant-limit' });
    expect(s.originGrant('solo', [5], 1)).toMatchObject({ kind: 'granted', piece: 5, fromBudget: false, again: true });
    expect(s.stats().originGrants).toBe(16);
    expect(s.stats().originBytes).toBe(16 * MiB);
  });

  it('before the image is seeded, a lost first copy is granted again; once seeded, only within the byte budget', () => {
    const s = scheduler({ size: 4 * MiB, originBudgetBytes: MiB + MiB / 2 }); // room for one more piece, not two
    for (const id of ['a', 'b', 'c', 'd']) join(s, id);
    join(s, 'keeper', new Set([3])); // the wave goes on: somebody still holds something
    expect(s.originGrant('a', [0], 0).kind).toBe('granted');
    s.have('a', [0], 1);
    s.leave('a'); // the only holder reboots before the wave is seeded
    expect(s.originGrant('b', [0], 2)).toMatchObject({ kind: 'granted', piece: 0, fromBudget: false });
    s.have('b', [0], 2);
    for (const piece of [1, 2]) {
      expect(s.originGrant('b', [piece], 3)).toMatchObject({ kind: 'granted', fromBudget: false });
      s.have('b', [piece], 3);
    }
    expect(s.seeded).toBe(true);
    s.leave('b'); // now the only holder of everything goes
    expect(s.originGrant('c', [0], 4)).toMatchObject({ kind: 'granted', piece: 0, fromBudget: true });
    expect(s.originGrant('d', [1], 4)).toEqual({ kind: 'refused', reason: 'budget' });
    expect(s.stats()).toMatchObject({ originBytes: 5 * MiB, originBudgetLeft: MiB / 2, wave: 1 });
  });

  it('the default budget is 2% of the image beyond one copy, at least two pieces: at 256 MiB still ≤ 1.02 × the image', () => {
    const s = scheduler({ size: 256 * MiB, pieceLength: 4 * MiB }); // 64 pieces; 2% is 5.12 MiB, two pieces 8 MiB
    join(s, 'keeper', new Set([63])); // holds one piece through it all: one wave
    let now = 0;
    for (let round = 0; round < 5; round++) {
      // every round a fresh peer fetches everything from the origin, then vanishes with it
      const id = `r${round}`;
      join(s, id, none, now);
      s.touch('keeper', now);
      for (let piece = 0; piece < 64; piece++) {
        const g = s.originGrant(id, [piece], now);
        if (g.kind === 'granted') s.have(id, [piece], now);
      }
      s.leave(id);
      now += 1000;
    }
    const { originBytes } = s.stats();
    expect(originBytes).toBe(63 * 4 * MiB + 8 * MiB); // one copy (but the keeper's piece), two pieces out of the budget
    expect(originBytes).toBeLessThanOrEqual(1.02 * 256 * MiB);
  });

  it('a late joiner after the early finishers rebooted starts a new wave: the whole image from the origin', () => {
    const s = scheduler({ size: 4 * MiB, forbidOriginOnceSeeded: true });
    join(s, 'early', all(4));
    join(s, 'late', none, 1);
    expect(s.seeded).toBe(true);
    expect(s.originGrant('late', [0], 1)).toEqual({ kind: 'peers', piece: 0 });
    s.leave('early'); // finished and rebooted
    const grants = range(0, 4).map((piece) => s.originGrant('late', [piece], 2));
    expect(grants.map((g) => g.kind)).toEqual(['granted', 'granted', 'granted', 'granted']);
    expect(s.stats()).toMatchObject({ wave: 2, originBytes: 4 * MiB, seeded: false });
  });

  it('an expired grant is released: another peer may take the piece', () => {
    const s = scheduler({ grantMs: 1000 });
    join(s, 'slow');
    join(s, 'other');
    expect(s.originGrant('slow', [0], 0).kind).toBe('granted');
    expect(s.originGrant('other', [0], 999).kind).toBe('wait');
    s.touch('slow', 1000);
    expect(s.originGrant('other', [0], 1000)).toMatchObject({ kind: 'granted', piece: 0, fromBudget: false });
    expect(s.stats().originBytes).toBe(2 * MiB); // both count: the slow peer may have read part of it
  });

  it('forbidOriginOnceSeeded refuses the origin once every piece has been on a peer, even after holders leave', () => {
    const s = scheduler({ size: 4 * MiB, forbidOriginOnceSeeded: true, originBudgetBytes: 100 * MiB });
    join(s, 'a');
    join(s, 'b');
    for (const piece of range(0, 3)) {
      expect(s.originGrant('a', [piece], 0).kind).toBe('granted');
      s.have('a', [piece], 0);
    }
    expect(s.seeded).toBe(false);
    expect(s.originGrant('b', [3], 0).kind).toBe('granted');
    s.have('b', [3], 0);
    expect(s.seeded).toBe(true);
    s.leave('a');
    expect(s.originGrant('b', [0], 1)).toEqual({ kind: 'refused', reason: 'forbidden' });
    // without the switch, the same case is served from the budget
    const lenient = scheduler({ size: 4 * MiB, originBudgetBytes: 100 * MiB });
    join(lenient, 'a', all(4));
    join(lenient, 'b');
    lenient.leave('a');
    expect(lenient.originGrant('b', [0], 1)).toMatchObject({ kind: 'granted', fromBudget: false });
  });

  it('grants go to the origin itself while the seed is gone, and to the seed again when it is back', () => {
    const s = scheduler();
    join(s, 'p');
    s.leave('seed');
    expect(s.originGrant('p', [0], 0)).toMatchObject({ kind: 'granted', parent: ORIGIN_PARENT, url: 'http://images.lan/img.raw' });
    const parents = s.parentsFor('p', 0);
    expect(parents.map((p) => p.id)).toEqual([ORIGIN_PARENT]);
    expect(parents[0]!.has(0)).toBe(true);
    expect(parents[0]!.has(1)).toBe(false);
    expect(s.announce('seed', 'http://seed2', none, 1).kind).toBe('joined');
    expect(s.originGrant('p', [0], 1)).toMatchObject({ kind: 'granted', parent: 'seed', url: 'http://seed2' });
  });

  it('refuses grants to unknown peers and for pieces that do not exist or the asker holds', () => {
    const s = scheduler();
    expect(s.originGrant('stranger', [0], 0)).toEqual({ kind: 'refused', reason: 'unknown-peer' });
    join(s, 'p', new Set([0]));
    expect(s.originGrant('p', [-1, 64, 1.5, Number.NaN, 0], 0)).toEqual({ kind: 'refused', reason: 'nothing-to-grant' });
    expect(s.stats().originGrants).toBe(0);
  });
});

describe('ImageScheduler: parents', () => {
  it('hands out parents that hold what the asker lacks: never itself, never a dropped peer, never the silent', () => {
    const s = scheduler({ livenessMs: 1000 });
    join(s, 'asker', new Set([0, 1]));
    join(s, 'useless', new Set([0, 1])); // holds only what the asker has
    join(s, 'good', new Set([2, 3]));
    join(s, 'evil', new Set([2, 3]));
    join(s, 'gone', new Set([2, 3]));
    join(s, 'empty');
    s.report('asker', 'evil', 2, 'bad', 0);
    s.touch('asker', 1500);
    s.touch('good', 1500);
    expect(s.parentsFor('asker', 1500).map((p) => p.id)).toEqual(['good']);
    // the silent peer comes back: handed out again
    s.touch('gone', 1600);
    expect(s.parentsFor('asker', 1600).map((p) => p.id).sort()).toEqual(['gone', 'good']);
    // nothing to hand a peer that holds everything
    join(s, 'full', all(64), 1600);
    expect(s.parentsFor('full', 1600)).toEqual([]);
  });

  it('peers that vanish stop being handed out, and sweep forgets them and their grants', () => {
    const s = scheduler({ livenessMs: 1000, grantMs: 100_000 });
    join(s, 'a', all(64), 0);
    join(s, 'b', none, 0);
    join(s, 'c', none, 0);
    expect(s.originGrant('c', [0], 0).kind).toBe('peers');
    s.leave('a');
    expect(s.originGrant('c', [0], 0).kind).toBe('granted');
    join(s, 'd', all(64), 0);
    s.touch('b', 5000);
    expect(s.parentsFor('b', 5000)).toEqual([]); // d and c are silent
    expect(s.sweep(5000).sort()).toEqual(['c', 'd']);
    expect(s.stats().peers).toBe(1);
    expect(s.have('c', [1], 5001)).toEqual({ kind: 'unknown' }); // re-announce
    // c's grant went with it: b may take piece 0
    expect(s.originGrant('b', [0], 5001)).toMatchObject({ kind: 'granted', piece: 0 });
  });

  it('least loaded first, covering the asker window; k at most; a parent at cap only when nobody else has the piece', () => {
    const s = scheduler({ uploadCap: 4 });
    join(s, 'asker');
    join(s, 'busy', all(64));
    join(s, 'half', all(64));
    join(s, 'idle', range(0, 64).filter((p) => p !== 5).reduce((set, p) => set.add(p), new Set<number>()));
    join(s, 'rare', new Set([5]));
    s.load('busy', 4, 0);
    s.load('half', 2, 0);
    s.load('rare', 99, 0); // clamped to the cap
    const parents = s.parentsFor('asker', 0, 3);
    // window 0..15: idle covers 0..4, piece 5 only busy/half/rare (rare and busy at cap, half at 2)
    expect(parents.map((p) => p.id)).toEqual(['idle', 'half']);
    expect(parents.map((p) => p.load)).toEqual([0, 0.5]);
    expect(parents.some((p) => p.atCap)).toBe(false);
    // the only holder of a piece is handed out even at its cap
    const s2 = scheduler();
    join(s2, 'asker');
    join(s2, 'only', new Set([0]));
    join(s2, 'idle', new Set([1]));
    s2.load('only', 4, 0);
    const p2 = s2.parentsFor('asker', 0);
    expect(p2.map((p) => [p.id, p.atCap])).toEqual([
      ['only', true],
      ['idle', false],
    ]);
    // k bounds the list
    const s3 = scheduler();
    for (let i = 0; i < 10; i++) join(s3, `p${i}`, all(64));
    join(s3, 'asker');
    expect(s3.parentsFor('asker', 0, 4)).toHaveLength(4);
    expect(s3.parentsFor('asker', 0, 1)).toHaveLength(1);
  });

  it('hand-outs count as load until the parent reports: askers at once are spread, not all sent to one parent', () => {
    const s = scheduler({ uploadCap: 4 });
    for (let i = 0; i < 8; i++) join(s, `holder${i}`, all(64));
    const first = new Map<string, number>();
    for (let i = 0; i < 40; i++) {
      const id = `asker${i}`;
      join(s, id);
      const [p] = s.parentsFor(id, 0, 1);
      first.set(p!.id, (first.get(p!.id) ?? 0) + 1);
    }
    expect(first.size).toBe(8);
    expect(Math.max(...first.values())).toBe(5); // 40 over 8 parents
    // a report replaces the estimate; old hand-outs fade after handoutMs
    s.load('holder0', 0, 0);
    expect(s.parentsFor('late', 0, 1)[0]!.id).toBe('holder0');
    expect(s.parentsFor('later', 10_000, 8).every((p) => p.load <= 0.25)).toBe(true);
  });

  it('the seed is handed out last and only for the pieces the asker was granted', () => {
    const s = scheduler();
    join(s, 'asker');
    join(s, 'peer', new Set([1]));
    s.have('seed', range(0, 64), 0);
    expect(s.parentsFor('asker', 0).map((p) => p.id)).toEqual(['peer']);
    expect(s.originGrant('asker', [0, 1], 0)).toMatchObject({ kind: 'granted', piece: 0 });
    const parents = s.parentsFor('asker', 0);
    expect(parents.map((p) => p.id)).toEqual(['peer', 'seed']);
    const seed = parents[1]!;
    expect([seed.has(0), seed.has(1)]).toEqual([true, false]);
    s.have('asker', [0], 1); // the grant is fulfilled
    expect(s.parentsFor('asker', 1).map((p) => p.id)).toEqual(['peer']);
  });
});

describe('ImageScheduler: reports, bounds, revisions', () => {
  it('a bad piece drops the parent at once: never handed out again, listed for operators, cannot re-announce', () => {
    const s = scheduler();
    join(s, 'victim');
    join(s, 'evil', all(64));
    join(s, 'honest', new Set([3]));
    expect(s.report('victim', 'evil', 3, 'bad', 7)).toEqual({ kind: 'dropped' });
    expect(s.parentsFor('victim', 8).map((p) => p.id)).toEqual(['honest']);
    expect(s.reports()).toEqual([{ parent: 'evil', url: 'http://evil', reason: 'bad', piece: 3, reporters: ['victim'], at: 7 }]);
    expect(join(s, 'evil', all(64), 9)).toEqual({ kind: 'dropped' });
    expect(s.have('evil', [1], 9)).toEqual({ kind: 'unknown' });
    expect(s.stats().dropped).toBe(1);
  });

  it('timeouts drop a parent only after reports from distinct peers', () => {
    const s = scheduler({ timeoutsToDrop: 3 });
    join(s, 'slow', all(64));
    for (const id of ['a', 'b', 'c']) join(s, id);
    expect(s.report('a', 'slow', 0, 'timeout', 1)).toEqual({ kind: 'counted', reporters: 1 });
    expect(s.report('a', 'slow', 1, 'timeout', 2)).toEqual({ kind: 'counted', reporters: 1 }); // same reporter
    expect(s.report('a', 'slow', 2, 'timeout', 3)).toEqual({ kind: 'counted', reporters: 1 });
    expect(s.report('b', 'slow', 0, 'timeout', 4)).toEqual({ kind: 'counted', reporters: 2 });
    expect(s.parentsFor('c', 5).map((p) => p.id)).toEqual(['slow']);
    expect(s.report('c', 'slow', 0, 'timeout', 6)).toEqual({ kind: 'dropped' });
    expect(s.parentsFor('c', 7)).toEqual([]);
    expect(s.reports()[0]).toMatchObject({ parent: 'slow', reason: 'timeouts', reporters: ['a', 'b', 'c'] });
  });

  it('ignores reports it cannot act on, and never drops the seed on a peer word', () => {
    const s = scheduler();
    join(s, 'a');
    join(s, 'b', all(64));
    expect(s.report('stranger', 'b', 0, 'bad', 0)).toEqual({ kind: 'ignored', reason: 'unknown-reporter' });
    expect(s.report('a', 'a', 0, 'bad', 0)).toEqual({ kind: 'ignored', reason: 'self' });
    expect(s.report('a', 'seed', 0, 'bad', 0)).toEqual({ kind: 'ignored', reason: 'seed' });
    expect(s.report('a', 'nobody', 0, 'bad', 0)).toEqual({ kind: 'ignored', reason: 'unknown-parent' });
    expect(s.report('a', 'b', 64, 'bad', 0)).toEqual({ kind: 'ignored', reason: 'bad-piece' });
    expect(s.report('a', 'b', -1, 'bad', 0)).toEqual({ kind: 'ignored', reason: 'bad-piece' });
    expect(s.stats().dropped).toBe(0);
    expect(s.originGrant('a', [0], 0).kind).toBe('peers');
  });

  it('holds the cap on peers with a typed refusal; a leaver makes room', () => {
    const s = scheduler({ maxPeers: 3 });
    for (const id of ['a', 'b', 'c']) expect(join(s, id).kind).toBe('joined');
    expect(join(s, 'd')).toEqual({ kind: 'full', maxPeers: 3 });
    expect(join(s, 'a', new Set([1])).kind).toBe('updated'); // re-announce after a server restart
    expect(s.have('d', [1], 0)).toEqual({ kind: 'unknown' });
    s.leave('b');
    expect(join(s, 'd').kind).toBe('joined');
    expect(s.stats().peers).toBe(3);
    // the seed is not counted
    expect(s.announce('seed', 'http://seed', none, 0).kind).toBe('updated');
  });

  it('never trusts piece numbers: out-of-range, negative and fractional pieces are ignored', () => {
    const s = scheduler();
    join(s, 'p');
    expect(s.have('p', [-1, 64, 1e9, 2.5, Number.NaN, Number.POSITIVE_INFINITY, 3, 3], 0)).toEqual({ kind: 'recorded', added: 1 });
    const view = s.holdings('p')!;
    expect(range(0, 64).filter((i) => view.has(i))).toEqual([3]);
    expect(view.has(-1) || view.has(64)).toBe(false);
    expect(s.stats().piecesHeld).toBe(1);
    expect(s.load('p', Number.NaN, 0)).toBe(false);
    expect(s.load('p', -5, 0)).toBe(true);
    // a hostile holdings object is asked only about real pieces
    const asked: number[] = [];
    s.announce('q', 'http://q', { has: (i) => (asked.push(i), true) }, 0);
    expect(asked).toEqual(range(0, 64));
  });

  it('bumps the revision on every change of membership or availability, and only then', () => {
    const s = scheduler();
    let rev = s.revision;
    const changed = () => {
      const c = s.changedSince(rev);
      rev = s.revision;
      return c;
    };
    join(s, 'a');
    expect(changed()).toBe(true);
    s.have('a', [1], 0);
    expect(changed()).toBe(true);
    s.have('a', [1, 99], 0); // nothing new
    expect(changed()).toBe(false);
    s.load('a', 2, 0);
    s.touch('a', 1);
    s.parentsFor('a', 1);
    expect(changed()).toBe(false);
    join(s, 'b', all(64));
    s.report('a', 'b', 0, 'bad', 2);
    expect(changed()).toBe(true);
    s.originGrant('a', [0], 3); // a grant changes what the seed offers a
    expect(changed()).toBe(true);
    s.leave('a');
    expect(changed()).toBe(true);
    expect(s.leave('a')).toBe(false);
    expect(changed()).toBe(false);
  });

  it('counts the pieces held anywhere and the last piece short', () => {
    const s = new ImageScheduler({ size: 10 * MiB + 5, pieceLength: MiB, seed: { id: 'seed', url: 'u' }, originUrl: 'o' });
    expect(s.pieces).toBe(11);
    expect(s.pieceBytes(10)).toBe(5);
    join(s, 'a', new Set([0, 1]));
    join(s, 'b', new Set([1, 10]));
    s.have('seed', range(0, 11), 0); // the seed's holdings do not count as on a peer
    expect(s.stats()).toMatchObject({ peers: 2, piecesHeld: 3, pieces: 11, seeded: false });
    expect(s.originGrant('a', [10], 0).kind).toBe('peers');
    expect(s.originGrant('a', [9], 0)).toMatchObject({ kind: 'granted', bytes: MiB });
    expect(() => new ImageScheduler({ size: 0, pieceLength: 1, seed: { id: 's', url: 'u' }, originUrl: 'o' })).toThrow(RangeError);
  });
});
