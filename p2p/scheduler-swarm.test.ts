// A whole swarm, simulated: one scheduler and a picker per peer, time in 50 ms ticks, transfers that take a
// seeded random number of ticks, parents that answer 503 at their upload cap, a seed that serves only what the
// scheduler granted. No sockets, no timers: the same run every time. It checks the wave-level claims
// (origin ≤ 1.02 × the image, every peer completes, bad pieces never accepted) at the level of the pure cores.
import { describe, expect, it } from 'vitest';
import { PiecePicker } from './picker.js';
import { ImageScheduler, ORIGIN_PARENT } from './scheduler.js';
import { prng } from '../test/prng.js';

const MiB = 1 << 20;
const TICK = 50;

interface SwarmOptions {
  peers: number;
  pieces: number;
  rngSeed: number;
  /** Peers whose every upload is corrupt. */
  corrupt?: number[];
  /** At this time, kill this fraction of the peers (and the seed, if asked): they vanish mid-transfer. */
  kill?: { at: number; fraction: number; seed: boolean };
  originBudgetBytes?: number;
  uploadCap?: number;
}

interface Transfer {
  from: string;
  to: string;
  piece: number;
  endsAt: number;
}


function runSwarm(o: SwarmOptions) {
  const rng = prng(o.rngSeed);
  const size = o.pieces * MiB;
  const cap = o.uploadCap ?? 4;
  const sched = new ImageScheduler({
    size,
    pieceLength: MiB,
    seed: { id: 'seed', url: 'http://seed' },
    originUrl: 'http://origin/img',
    livenessMs: 1_500,
    grantMs: 5_000,
    uploadCap: cap,
    ...(o.originBudgetBytes !== undefined ? { originBudgetBytes: o.originBudgetBytes } : {}),
  });
  const ids = Array.from({ length: o.peers }, (_, i) => `peer${i}`);
  const corrupt = new Set((o.corrupt ?? []).map((i) => ids[i]!));
  const pickers = new Map(ids.map((id) => [id, new PiecePicker({ pieces: o.pieces, timeoutMs: 1_000 })]));
  const alive = new Set([...ids, 'seed', ORIGIN_PARENT]); // the origin itself never dies here
  const uploads = new Map<string, number>();
  const transfers: Transfer[] = [];
  const finishedAt = new Map<string, number>();
  const accepted: Array<{ to: string; from: string; piece: number }> = [];
  let originServed = 0;
  let badReceived = 0;
  for (const id of ids) sched.announce(id, `http://${id}`, new Set(), 0);

  const endTransfer = (t: Transfer) => {
    transfers.splice(transfers.indexOf(t), 1);
    uploads.set(t.from, (uploads.get(t.from) ?? 1) - 1);
  };
  const cancel = (reqs: Array<{ piece: number; parent: string }>, to: string) => {
    for (const r of reqs) {
      const t = transfers.find((x) => x.to === to && x.piece === r.piece && x.from === r.parent);
      if (t) endTransfer(t);
    }
  };

  let now = 0;
  for (; now < 600_000; now += TICK) {
    if (o.kill && now === o.kill.at) {
      const victims = ids.filter((id) => !finishedAt.has(id)).sort(() => rng() - 0.5).slice(0, Math.round(o.kill.fraction * o.peers));
      for (const id of victims) alive.delete(id);
      if (o.kill.seed) {
        alive.delete('seed');
        sched.leave('seed'); // serve notices its own seed is gone
      }
    }
    // Transfers that end now: a dead uploader never finishes (the picker times out); a dead receiver is gone.
    for (const t of transfers.filter((x) => x.endsAt <= now)) {
      if (!alive.has(t.from)) continue;
      endTransfer(t);
      if (!alive.has(t.to)) continue;
      const picker = pickers.get(t.to)!;
      if (corrupt.has(t.from)) {
        badReceived++;
        const r = picker.settle({ piece: t.piece, parent: t.from }, { kind: 'bad' }, now);
        if (r.kind === 'blocked') cancel(r.cancel, t.to);
        sched.report(t.to, t.from, t.piece, 'bad', now);
        continue;
      }
      const r = picker.settle({ piece: t.piece, parent: t.from }, { kind: 'ok' }, now);
      if (r.kind === 'accepted') {
        accepted.push({ to: t.to, from: t.from, piece: t.piece });
        cancel(r.cancel, t.to);
        if (sched.have(t.to, [t.piece], now).kind === 'unknown') sched.announce(t.to, `http://${t.to}`, picker, now);
      }
      picker.advance();
      if (picker.done && !finishedAt.has(t.to)) finishedAt.set(t.to, now);
    }
    // Every live peer, in a fresh order each tick: report its load, time out, ask for parents, start requests.
    const order = ids.filter((id) => alive.has(id)).sort(() => rng() - 0.5);
    for (const id of order) {
      const picker = pickers.get(id)!;
      sched.load(id, uploads.get(id) ?? 0, now);
      if (picker.done) continue; // finished peers keep serving
      for (const r of picker.expired(now)) {
        cancel([r], id);
        sched.report(id, r.parent, r.piece, 'timeout', now);
      }
      const parents = sched.parentsFor(id, now);
      for (const r of picker.next(parents, now)) {
        const source = r.parent;
        const busy = source !== ORIGIN_PARENT && (uploads.get(source) ?? 0) >= (source === 'seed' ? 2 * cap : cap);
        if (busy && alive.has(source)) {
          picker.settle(r, { kind: 'busy', retryAfterMs: 200 }, now);
          continue;
        }
        uploads.set(source, (uploads.get(source) ?? 0) + 1);
        if (source === 'seed' || source === ORIGIN_PARENT) originServed += MiB; // counted whole, even if cut short
        transfers.push({ from: source, to: id, piece: r.piece, endsAt: now + TICK * (2 + Math.floor(rng() * 5)) });
      }
      const starved = picker.starved(parents);
      if (starved.length > 0) sched.originGrant(id, starved, now);
    }
    if (ids.every((id) => finishedAt.has(id) || !alive.has(id))) break;
  }
  const survivors = ids.filter((id) => alive.has(id));
  return { sched, size, originServed, finishedAt, survivors, accepted, badReceived, corrupt, now };
}

describe('a simulated swarm (scheduler + pickers)', () => {
  const seeds = [1, 2, 3, 4, 5, 6, 7, 8];

  it('20 peers starting together: all complete, each piece leaves the origin once (≤ 1.02 × the image)', () => {
    for (const rngSeed of seeds) {
      const run = runSwarm({ peers: 20, pieces: 64, rngSeed });
      expect(run.finishedAt.size).toBe(20);
      const ratio = run.originServed / run.size;
      if (rngSeed === 1) console.log(`swarm: 20 peers, 64 pieces: origin ${ratio.toFixed(3)} × image, last peer done at ${run.now} ms`);
      expect(ratio).toBeLessThanOrEqual(1.02);
      expect(run.sched.stats()).toMatchObject({ originGrants: 64, originBytes: run.size }); // no back-to-source storm
      // the rest moved peer to peer: 20 copies, one from the origin
      const fromPeers = run.accepted.filter((a) => a.from !== 'seed' && a.from !== ORIGIN_PARENT).length;
      expect(fromPeers).toBe(19 * 64);
    }
  });

  it('a peer that serves corrupt pieces: caught, dropped at once, never accepted from; everyone completes', () => {
    for (const rngSeed of seeds) {
      const run = runSwarm({ peers: 20, pieces: 64, rngSeed, corrupt: [3] });
      expect(run.finishedAt.size).toBe(20);
      expect(run.accepted.filter((a) => run.corrupt.has(a.from))).toEqual([]);
      expect(run.badReceived).toBeGreaterThan(0);
      expect(run.sched.reports()).toMatchObject([{ parent: 'peer3', reason: 'bad' }]);
      // first copies the dropped peer held are fetched again; that is all the origin serves beyond one copy
      expect(run.originServed).toBe(run.sched.stats().originBytes);
    }
  });

  it('kill 20% of the peers and the seed halfway: every survivor finishes, from the others or the origin', () => {
    for (const rngSeed of seeds) {
      const run = runSwarm({ peers: 20, pieces: 64, rngSeed, kill: { at: 2_000, fraction: 0.2, seed: true } });
      expect(run.survivors.length).toBeLessThan(20);
      for (const id of run.survivors) expect(run.finishedAt.has(id)).toBe(true);
      // the lost first copies, and pieces the dying seed was sending, come from the origin again
      expect(run.originServed / run.size).toBeLessThan(1.15);
      if (rngSeed === 1) {
        console.log(`kill: ${20 - run.survivors.length} peers and the seed at 2 s; origin ${(run.originServed / run.size).toFixed(3)} × image, done at ${run.now} ms`);
      }
    }
  });
});
