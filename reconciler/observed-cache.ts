// The observed state, held in memory and kept current from the store's watch: the GitOps controller plans
// against it instead of reading every record and workflow (readObserved) on each round.
import type { MachineRecord, Workflow } from '../schemas/types.js';
import type { Change, Snapshot, Store } from '../store/store.js';
import { MACHINES, WORKFLOWS } from '../store/keys.js';
import { observedFrom, type Observed } from './observed.js';

/**
 * Called after the cache took in a batch of store changes. `macs`: the machines whose record or current
 * workflow changed (affectedMachines' observedChanged). `assignments`: the assignments of the workflows
 * that changed, whose rollout counters may have moved (affectedMachines' rollouts).
 */
export type ObservedListener = (macs: Set<string>, assignments: Set<string>) => void;

/** The workflow fields the planner reads; a write that changes none of them (progress) is not reported. */
function plannerSees(a: Workflow | undefined, b: Workflow | undefined): boolean {
  if (!a || !b) return a !== b;
  return (
    a.state !== b.state ||
    a.error !== b.error ||
    a.generation !== b.generation ||
    a.template !== b.template ||
    a.assignment !== b.assignment ||
    a.mac !== b.mac
  );
}

export class ObservedCache {
  private observed: Observed;
  /** Maps that current() handed out: copied before the next change, so that a snapshot never changes. */
  private readonly handedOut = new WeakSet<Map<string, unknown>>();
  private lastError: unknown;
  /** Workflow id → MAC of the record whose current workflow it is. */
  private readonly owner = new Map<string, string>();
  private pending = new Set<string>();
  private scheduled = false;
  /** Batches are taken in one after the other: a slow read never lets an older snapshot win. */
  private chain: Promise<void> = Promise.resolve();
  private readonly listeners = new Set<ObservedListener>();
  private readonly unwatch: (() => void)[] = [];
  private closed = false;

  private constructor(
    private readonly store: Store,
    initial: Observed,
  ) {
    this.observed = initial;
    for (const [mac, r] of initial.machines) if (r.value.workflow) this.owner.set(r.value.workflow, mac);
  }

  /** Read the whole observed state once, then follow the store's changes (other processes' too). */
  static async open(store: Store): Promise<ObservedCache> {
    const cache = new ObservedCache(store, await store.read(observedFrom));
    const from = cache.observed.revision;
    cache.follow(from);
    return cache;
  }

  private follow(from: number): void {
    for (const prefix of [MACHINES, WORKFLOWS]) this.unwatch.push(this.store.watch(prefix, from, (changes) => this.changed(changes), () => void this.resync()));
  }

  /**
   * The store compacted changes a watch had not delivered (another process wrote faster than it was
   * followed): look at every record again, old and new, and follow from now. Listeners hear of every MAC.
   */
  private async resync(): Promise<void> {
    if (this.closed) return;
    for (const u of this.unwatch.splice(0)) u();
    const { revision, keys } = await this.store.read((snap) => ({
      revision: snap.revision,
      keys: [...snap.list(MACHINES), ...snap.list(WORKFLOWS)].map((r) => r.key),
    }));
    if (this.closed) return;
    const all = [...keys, ...[...this.observed.machines.keys()].map((m) => MACHINES + m), ...[...this.observed.workflows.keys()].map((w) => WORKFLOWS + w)];
    this.follow(revision);
    this.changed(all.map((key) => ({ key, revision, type: 'put' as const })));
  }

  /**
   * The observed state as of the last change taken in: every record and workflow, as readObserved would
   * return them (machines in key order), at store revision `revision`. The object never changes: a
   * later change makes a new one. A write the watch has not delivered yet (another process's commit
   * arrives within the store's poll interval) shows up with its notification; apply re-checks what a
   * plan relied on, so a cache that lags can make a plan stale, never wrong.
   */
  current(): Observed {
    this.handedOut.add(this.observed.machines);
    this.handedOut.add(this.observed.workflows);
    return this.observed;
  }

  /** The error of the last failed read of changed keys, if any (they are read again with the next change). */
  get error(): unknown {
    return this.lastError;
  }

  /**
   * Returns a function that removes the listener. Listeners run after the cache took the batch in (so
   * current() already shows it). A listener that throws does so as an uncaught exception, as an
   * EventEmitter listener would; the cache goes on.
   */
  onChange(listener: ObservedListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  close(): void {
    this.closed = true;
    for (const u of this.unwatch.splice(0)) u();
    this.listeners.clear();
  }

  private changed(changes: Change[]): void {
    if (this.closed) return;
    for (const c of changes) this.pending.add(c.key);
    // One commit notifies the machines/ and the workflows/ watch apart: take both in one batch.
    if (!this.scheduled) {
      this.scheduled = true;
      this.chain = this.chain.then(() => this.refresh());
    }
  }

  private async refresh(): Promise<void> {
    this.scheduled = false;
    if (this.closed || this.pending.size === 0) return;
    const keys = this.pending;
    this.pending = new Set();
    let result: { macs: Set<string>; assignments: Set<string> };
    try {
      const apply = (snap: Snapshot) => this.take(snap, keys);
      result = this.store.readSync ? this.store.readSync(apply) : await this.store.read(apply);
    } catch (e) {
      if (this.closed) return;
      // Keep the keys for the next notification rather than lose them.
      for (const k of keys) this.pending.add(k);
      this.lastError = e;
      return;
    }
    this.lastError = undefined;
    if (this.closed || (result.macs.size === 0 && result.assignments.size === 0)) return;
    for (const listener of [...this.listeners]) {
      try {
        listener(result.macs, result.assignments);
      } catch (e) {
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }

  /** Read the changed keys in one snapshot and make the next Observed. */
  private take(snap: Snapshot, keys: Set<string>): { macs: Set<string>; assignments: Set<string> } {
    const macs = new Set<string>();
    const assignments = new Set<string>();
    const before = this.observed;
    let machines = before.machines;
    let workflows = before.workflows;
    const own = <M extends Map<string, unknown>>(map: M): M => (this.handedOut.has(map) ? (new Map(map) as M) : map);
    let added = false;
    for (const key of keys) {
      if (key.startsWith(MACHINES)) {
        const mac = key.slice(MACHINES.length);
        const now = snap.get<MachineRecord>(key);
        const old = machines.get(mac);
        if (now?.modRevision === old?.modRevision) continue; // seen already (or absent both times)
        machines = own(machines);
        if (old?.value.workflow && this.owner.get(old.value.workflow) === mac) this.owner.delete(old.value.workflow);
        if (now) {
          if (!old) added = true;
          machines.set(mac, now);
          if (now.value.workflow) this.owner.set(now.value.workflow, mac);
        } else machines.delete(mac);
        macs.add(mac);
      } else if (key.startsWith(WORKFLOWS)) {
        const id = key.slice(WORKFLOWS.length);
        const now = snap.get<Workflow>(key);
        const old = workflows.get(id);
        if (now?.modRevision === old?.modRevision) continue;
        workflows = own(workflows);
        if (now) workflows.set(id, now);
        else workflows.delete(id);
        if (!plannerSees(old?.value, now?.value)) continue;
        for (const wf of [old?.value, now?.value]) {
          if (!wf) continue;
          macs.add(wf.mac);
          assignments.add(wf.assignment);
        }
        const owner = this.owner.get(id);
        if (owner) macs.add(owner);
      }
    }
    // readObserved lists machines in key order, and the planner lists retirements in that order.
    if (added) machines = new Map([...machines].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)));
    const revision = Math.max(snap.revision, before.revision);
    const changed = machines !== before.machines || workflows !== before.workflows || macs.size > 0 || assignments.size > 0;
    // A new object whenever something moved: an Observed that was handed out stays as it was.
    if (changed || revision !== before.revision) this.observed = { revision, machines, workflows };
    return { macs, assignments };
  }
}

