// ObservedCache against a real LMDB store in a temp dir: it follows commits of its own store object, of
// another LmdbStore on the same directory, and of another process, and always equals readObserved.
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import type { MachineRecord, Workflow } from '../schemas/types.js';
import { LmdbStore } from '../store/lmdb.js';
import { APPLIED, machineKey, workflowKey } from '../store/keys.js';
import type { Store, Versioned } from '../store/store.js';
import { applyPlan } from './apply.js';
import { ObservedCache } from './observed-cache.js';
import { disposables } from './test-disposables.js';
import { readObserved, type Observed } from './observed.js';
import { planFleet } from './plan.js';
import { blankHardware, buildFleet, discovered, machineRecord, macOf, workflowRecord, type WorkflowSketch } from './test-builders.js';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const NOW = new Date('2025-06-01T12:00:00.000Z');

const { tempDir, defer } = disposables('dragonfly-observed-cache-test');

function openStore(dir?: string, pollMs = 20): { store: LmdbStore; dir: string } {
  dir ??= tempDir('state');
  const store = LmdbStore.open(dir, { pollMs });
  defer(() => store.close());
  return { store, dir };
}

async function openCache(store: Store): Promise<ObservedCache> {
  const cache = await ObservedCache.open(store);
  defer(() => cache.close());
  return cache;
}

/** Every change the cache reports, accumulated; `next()` waits for the next report. */
function recorder(cache: ObservedCache) {
  const macs = new Set<string>();
  const assignments = new Set<string>();
  let waiters: (() => void)[] = [];
  let reports = 0;
  cache.onChange((m, a) => {
    reports++;
    for (const x of m) macs.add(x);
    for (const x of a) assignments.add(x);
    for (const w of waiters.splice(0)) w();
  });
  return {
    macs,
    assignments,
    get reports() {
      return reports;
    },
    next: (timeoutMs = 5000) =>
      new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error('no change reported in time')), timeoutMs);
        waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      }),
    clear() {
      macs.clear();
      assignments.clear();
    },
  };
}

/** Let queued notifications and the cache's reads run. */
const settle = () => new Promise((r) => setImmediate(r));

/** The cache equals what readObserved returns now, machines in the same (key) order. */
async function expectCurrent(cache: ObservedCache, store: Store): Promise<Observed> {
  const fresh = await readObserved(store);
  const cur = cache.current();
  expect(cur.machines).toStrictEqual(fresh.machines);
  expect(cur.workflows).toStrictEqual(fresh.workflows);
  expect([...cur.machines.keys()]).toEqual([...fresh.machines.keys()]);
  expect(cur.revision).toBe(fresh.revision);
  return cur;
}

const wf = (id: string, n: number, state: Workflow['state'], extra: Partial<WorkflowSketch> = {}): Workflow =>
  workflowRecord({ id, mac: macOf(n), state, assignment: 'web', template: 'ubuntu-24.04', generation: 1, ...extra });

describe('ObservedCache', () => {
  it('starts as readObserved and follows in-process commits, reading only what changed', async () => {
    const { store } = openStore();
    await store.commit({ put: [{ key: machineKey(macOf(5)), value: machineRecord(discovered(macOf(5))) }] });
    const cache = await openCache(store);
    const rec = recorder(cache);
    await expectCurrent(cache, store);

    // A new machine that sorts before the first: the map keeps key order, as readObserved lists it.
    await store.commit({ put: [{ key: machineKey(macOf(2)), value: machineRecord(discovered(macOf(2))) }] });
    await settle();
    expect([...rec.macs]).toEqual([macOf(2)]);
    expect([...rec.assignments]).toEqual([]);
    await expectCurrent(cache, store);

    // Keys outside machines/ and workflows/ are not taken in, and report nothing.
    const reports = rec.reports;
    await store.commit({ put: [{ key: APPLIED, value: { revision: 'x' } }] });
    await settle();
    expect(rec.reports).toBe(reports);
  });

  it('a snapshot from current() never changes; the next change makes a new one', async () => {
    const { store } = openStore();
    const cache = await openCache(store);
    const before = cache.current();
    const copy = { revision: before.revision, machines: new Map(before.machines), workflows: new Map(before.workflows) };
    await store.commit({ put: [{ key: machineKey(macOf(1)), value: machineRecord(discovered(macOf(1))) }, { key: workflowKey('wf-1'), value: wf('wf-1', 1, 'pending') }] });
    await settle();
    expect(before).toStrictEqual(copy);
    const after = await expectCurrent(cache, store);
    expect(after).not.toBe(before);
    expect(after.machines.size).toBe(1);
  });

  it('maps a workflow change to its machine (workflow.mac and the record that points at it) and its assignment', async () => {
    const { store } = openStore();
    const rec: MachineRecord = { ...machineRecord(discovered(macOf(1), { hardware: blankHardware(macOf(1)) })), workflow: 'wf-1', phase: 'Provisioning' };
    // A workflow whose mac field names another machine than the record that points at it (hand-written data).
    await store.commit({
      put: [
        { key: machineKey(macOf(1)), value: rec },
        { key: workflowKey('wf-1'), value: wf('wf-1', 3, 'pending') },
      ],
    });
    const cache = await openCache(store);
    const r = recorder(cache);

    await store.commit({ put: [{ key: workflowKey('wf-1'), value: { ...wf('wf-1', 3, 'running'), startedAt: NOW.toISOString() } }] });
    await settle();
    expect([...r.macs].sort()).toEqual([macOf(1), macOf(3)]);
    expect([...r.assignments]).toEqual(['web']);
    await expectCurrent(cache, store);

    // Progress only (no field the planner reads): taken in, not reported.
    r.clear();
    const reports = r.reports;
    const running = (await readObserved(store)).workflows.get('wf-1')!.value;
    await store.commit({ put: [{ key: workflowKey('wf-1'), value: { ...running, actions: [{ action: 'image2disk', params: {}, state: 'running', percent: 40 }] } }] });
    await settle();
    expect(r.reports).toBe(reports);
    await expectCurrent(cache, store);

    // Failed: reported, with the assignment whose failure count moved.
    await store.commit({ put: [{ key: workflowKey('wf-1'), value: { ...running, state: 'failed', error: 'disk on fire' } }] });
    await settle();
    expect([...r.macs].sort()).toEqual([macOf(1), macOf(3)]);
    expect([...r.assignments]).toEqual(['web']);
  });

  it('takes in deletions', async () => {
    const { store } = openStore();
    await store.commit({ put: [{ key: machineKey(macOf(1)), value: machineRecord(discovered(macOf(1))) }, { key: workflowKey('wf-1'), value: wf('wf-1', 1, 'failed') }] });
    const cache = await openCache(store);
    const r = recorder(cache);
    await store.commit({ delete: [machineKey(macOf(1)), workflowKey('wf-1')] });
    await settle();
    expect([...r.macs]).toEqual([macOf(1)]);
    expect([...r.assignments]).toEqual(['web']);
    const cur = await expectCurrent(cache, store);
    expect(cur.machines.size).toBe(0);
    expect(cur.workflows.size).toBe(0);
  });

  it('follows commits of another LmdbStore on the same directory (seen at its poll)', async () => {
    const { store, dir } = openStore();
    const cache = await openCache(store);
    const r = recorder(cache);
    const other = openStore(dir).store;
    const next = r.next();
    await other.commit({ put: [{ key: machineKey(macOf(7)), value: machineRecord(discovered(macOf(7))) }] });
    await next;
    expect([...r.macs]).toEqual([macOf(7)]);
    await expectCurrent(cache, store);
  });

  it('resyncs when another writer outran its watch past the compacted change log', async () => {
    const dir = tempDir('state');
    // The cache's store looks for other writers' commits only every 2 s; the other keeps a 10-revision window.
    const slow = LmdbStore.open(dir, { pollMs: 2000, retainRevisions: 10 });
    defer(() => slow.close());
    const cache = await openCache(slow);
    const r = recorder(cache);
    const other = LmdbStore.open(dir, { pollMs: 2000, retainRevisions: 10 });
    defer(() => other.close());
    for (let i = 0; i < 300; i++) await other.commit({ put: [{ key: machineKey(macOf(i % 9)), value: { ...machineRecord(discovered(macOf(i % 9))), error: `round ${i}` } }] });
    expect(await other.oldestRevision()).toBeGreaterThan(0);
    while (!r.macs.has(macOf(8))) await r.next(10_000);
    await expectCurrent(cache, slow);
    expect([...r.macs].sort()).toEqual(Array.from({ length: 9 }, (_, i) => macOf(i)).sort());
  });

  it('follows commits of another process sharing the state directory', async () => {
    const { store, dir } = openStore();
    await store.commit({ put: [{ key: machineKey(macOf(1)), value: machineRecord(discovered(macOf(1))) }] });
    const cache = await openCache(store);
    const r = recorder(cache);
    const next = r.next();
    const script = `
      const { LmdbStore } = await import(${JSON.stringify(pathToFileURL(path.join(ROOT, 'dist/store/lmdb.js')).href)});
      const store = LmdbStore.open(${JSON.stringify(dir)});
      const r = await store.commit({ put: [
        { key: ${JSON.stringify(machineKey(macOf(9)))}, value: ${JSON.stringify(machineRecord(discovered(macOf(9))))} },
        { key: ${JSON.stringify(workflowKey('wf-9'))}, value: ${JSON.stringify(wf('wf-9', 9, 'pending', { assignment: 'db' }))} },
      ] });
      await store.close();
      if (!r.ok) process.exit(3);
    `;
    execFileSync(process.execPath, ['--input-type=module', '-e', script], { stdio: 'pipe' });
    await next;
    await settle();
    expect([...r.macs]).toEqual([macOf(9)]);
    expect([...r.assignments]).toEqual(['db']);
    await expectCurrent(cache, store);
  });

  it('plans from the cache equal plans from readObserved across applies', async () => {
    const { store } = openStore();
    const web = (n: number) => ({ name: `web-0${n}`, mac: macOf(n), labels: { role: 'web' } });
    const fleet = buildFleet({ machines: [web(1), web(2), web(3)], assignments: [{ name: 'web', template: 'ubuntu-24.04', maxParallel: 1 }] });
    await store.commit({
      put: [1, 2].map((n) => ({ key: machineKey(macOf(n)), value: machineRecord(discovered(macOf(n), { hardware: blankHardware(macOf(n)) })) })),
    });
    const cache = await openCache(store);
    for (let round = 0; round < 3; round++) {
      const fromCache = planFleet(fleet, cache.current(), { now: NOW });
      expect(fromCache).toStrictEqual(planFleet(fleet, await readObserved(store), { now: NOW }));
      if (fromCache.changes.length > 0) await applyPlan(store, fromCache, fleet, { user: 'test', source: 'controller', now: NOW });
      await settle();
      await expectCurrent(cache, store);
    }
  });

  it('with a store that reads asynchronously (no readSync), batches are taken in one after the other', async () => {
    const { store: lmdb } = openStore();
    let delay = 30;
    // A networked store: a read sees the store as it was when it was made, and answers after a while;
    // every other read answers sooner than the one before it (an older snapshot must not win).
    const store: Store = {
      read: async (fn) => {
        const d = (delay = delay === 30 ? 0 : 30);
        const frozen = lmdb.readSync((snap) => ({ revision: snap.revision, all: snap.list<unknown>('') }));
        await new Promise((r) => setTimeout(r, d));
        const byKey = new Map(frozen.all.map((v) => [v.key, v]));
        return fn({
          revision: frozen.revision,
          get: <T>(key: string) => byKey.get(key) as Versioned<T> | undefined,
          count: (prefix: string) => frozen.all.filter((v) => v.key.startsWith(prefix)).length,
          list: <T>(prefix: string, page: { after?: string; limit?: number } = {}) =>
            frozen.all.filter((v) => v.key.startsWith(prefix) && (page.after === undefined || v.key > page.after)).slice(0, page.limit) as Versioned<T>[],
        });
      },
      commit: (txn) => lmdb.commit(txn),
      watch: (prefix, from, listener) => lmdb.watch(prefix, from, listener),
      oldestRevision: () => lmdb.oldestRevision(),
      health: () => lmdb.health(),
      close: () => lmdb.close(),
    };
    const cache = await openCache(store);
    const r = recorder(cache);
    for (let i = 1; i <= 6; i++) {
      await store.commit({ put: [{ key: machineKey(macOf(1)), value: { ...machineRecord(discovered(macOf(1))), lastSeen: `2025-01-0${i}T00:00:00.000Z` } }] });
      await new Promise((res) => setTimeout(res, 5));
    }
    while (cache.current().machines.get(macOf(1))?.value.lastSeen !== '2025-01-06T00:00:00.000Z') await r.next();
    await new Promise((res) => setTimeout(res, 100));
    await expectCurrent(cache, lmdb);
  });

  it('close() stops following the store', async () => {
    const { store } = openStore();
    const cache = await ObservedCache.open(store);
    const r = recorder(cache);
    const before = cache.current();
    cache.close();
    await store.commit({ put: [{ key: machineKey(macOf(1)), value: machineRecord(discovered(macOf(1))) }] });
    await settle();
    expect(r.reports).toBe(0);
    expect(cache.current()).toBe(before);
  });
});
