// applyPlan against a real LMDB store in a temp dir: one transaction at one new revision, or a refusal
// that names what moved on.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { DragonflyError } from '../schemas/errors.js';
import { validateAgainst } from '../schemas/validate.js';
import type { MachineRecord, Plan, Workflow } from '../schemas/types.js';
import { LmdbStore } from '../store/lmdb.js';
import { APPLIED, AUDIT, EVENTS, MACHINES, machineKey, WORKFLOWS, workflowKey } from '../store/keys.js';
import type { Store, Versioned } from '../store/store.js';
import { applyPlan, staleness, type ApplyContext, type AppliedRevision, type AuditEntry } from './apply.js';
import type { Fleet } from './fleet.js';
import { readObserved } from './observed.js';
import { planFleet } from './plan.js';
import {
  blankHardware,
  buildFleet,
  buildObserved,
  discovered,
  machineRecord,
  macOf,
  registered,
  usedHardware,
  workflowRecord,
  type MachineSketch,
  type RecordSketch,
  type WorkflowSketch,
} from './test-builders.js';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const NOW = new Date('2025-06-01T12:00:00.000Z');
const CTX: ApplyContext = { user: 'alice', source: 'cli', author: 'Bob <bob@example.com>', now: NOW };

const dirs: string[] = [];
const stores: LmdbStore[] = [];

afterEach(async () => {
  for (const s of stores.splice(0)) await s.close();
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

function openStore(): { store: LmdbStore; dir: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dragonfly-apply-test-'));
  dirs.push(dir);
  const store = LmdbStore.open(dir);
  stores.push(store);
  return { store, dir };
}

/** Write records and workflows as the boot server and earlier applies would have, in one commit. */
async function seed(store: Store, machines: RecordSketch[], workflows: WorkflowSketch[] = []): Promise<number> {
  const r = await store.commit({
    put: [
      ...machines.map((s) => ({ key: machineKey(s.mac), value: machineRecord(s) })),
      ...workflows.map((w) => ({ key: workflowKey(w.id), value: workflowRecord(w) })),
    ],
  });
  if (!r.ok) throw new Error(`seed failed: ${r.conflicts.join(', ')}`);
  return r.revision;
}

async function planNow(store: Store, fleet: Fleet): Promise<Plan> {
  return planFleet(fleet, await readObserved(store), { now: NOW });
}

function list<T>(store: Store, prefix: string): Promise<Versioned<T>[]> {
  return store.read((snap) => snap.list<T>(prefix));
}

async function record(store: Store, mac: string): Promise<Versioned<MachineRecord>> {
  const r = await store.read((snap) => snap.get<MachineRecord>(machineKey(mac)));
  if (!r) throw new Error(`no record for ${mac}`);
  return r;
}

/** The error applyPlan rejects with; fails the test when it resolves. */
async function refusal(p: Promise<unknown>): Promise<DragonflyError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(DragonflyError);
  return e as DragonflyError;
}

const web = (n: number, extra: Partial<MachineSketch> = {}): MachineSketch => ({ name: `web-0${n}`, mac: macOf(n), labels: { role: 'web' }, ...extra });
const WEB = { name: 'web', template: 'ubuntu-24.04' };

describe('applyPlan', () => {
  /**
   * web-01: unseen → register; web-02: registered with blank disks → provision; web-03: no assignment →
   * register; web-04: removed from git → retire; web-05: Ready, powered off, git asks on → power.
   */
  async function scenario() {
    const { store } = openStore();
    const old = buildFleet({ machines: [web(2), web(4), web(5, { power: 'on' })], assignments: [WEB] });
    const fleet = buildFleet({ machines: [web(1), web(2), web(3, { labels: { role: 'spare' } }), web(5, { power: 'on' })], assignments: [WEB] });
    const seeded = await seed(store, [
      registered(old, 'web-02', { hardware: blankHardware(macOf(2)) }),
      registered(old, 'web-04', { hardware: usedHardware(macOf(4)), installed: { template: 'ubuntu-24.04', generation: 1 } }),
      registered(old, 'web-05', { hardware: usedHardware(macOf(5)), installed: { template: 'ubuntu-24.04', generation: 1 }, observedPower: 'off' }),
    ]);
    const plan = await planNow(store, fleet);
    return { store, fleet, plan, seeded };
  }

  it('writes records, workflows, fleet/applied, one audit entry and events, all at one new revision', async () => {
    const { store, fleet, plan, seeded } = await scenario();
    expect(plan.changes.map((c) => [c.action, c.machine.name])).toEqual([
      ['register', 'web-01'],
      ['provision', 'web-02'],
      ['register', 'web-03'],
      ['power', 'web-05'],
      ['retire', 'web-04'],
    ]);

    const result = await applyPlan(store, plan, fleet, CTX);
    expect(result.revision).toBe(seeded + 1);
    expect(result.workflows).toHaveLength(1);
    const wfId = result.workflows[0]!;
    expect(wfId).toMatch(/^wf-web-02-g1-[0-9a-f]{6}$/);

    // Machine records.
    const r1 = await record(store, macOf(1));
    expect(r1.value).toEqual({
      mac: macOf(1),
      memorableName: 'CensusAbleQualityParent',
      phase: 'Assigned',
      source: 'git',
      name: 'web-01',
      spec: { mac: macOf(1) },
      labels: { role: 'web' },
      desired: { assignment: 'web', template: 'ubuntu-24.04', generation: 1 },
    });
    expect(r1.createRevision).toBe(result.revision);
    const r3 = await record(store, macOf(3));
    expect(r3.value).toMatchObject({ name: 'web-03', phase: 'Registered', labels: { role: 'spare' } });
    expect(r3.value).not.toHaveProperty('desired');
    const r2 = await record(store, macOf(2));
    expect(r2.value).toMatchObject({ name: 'web-02', phase: 'Provisioning', workflow: wfId, hardware: blankHardware(macOf(2)) });
    const r4 = await record(store, macOf(4));
    expect(r4.value).toMatchObject({ name: 'web-04', phase: 'Retired', installed: { template: 'ubuntu-24.04', generation: 1 } });
    expect(r4.value).not.toHaveProperty('desired');
    const r5 = await record(store, macOf(5));
    expect(r5.value).toMatchObject({ name: 'web-05', phase: 'Ready', powerIntent: { to: 'on', at: NOW.toISOString() } });

    // The workflow, exactly as the plan said, pending with every action pending.
    const intent = plan.changes[1]!.workflow!;
    const workflows = await list<Workflow>(store, WORKFLOWS);
    expect(workflows.map((w) => w.key)).toEqual([workflowKey(wfId)]);
    expect(workflows[0]!.value).toEqual({
      id: wfId,
      mac: macOf(2),
      machine: 'web-02',
      assignment: 'web',
      template: 'ubuntu-24.04',
      generation: 1,
      state: 'pending',
      reimage: false,
      disk: '/dev/nvme0n1',
      diskIdentity: { sizeBytes: 500e9, serial: null, wwn: null },
      image: intent.image,
      timeoutSeconds: 1800,
      createdAt: NOW.toISOString(),
      actions: intent.actions.map((a) => ({ action: a.action, params: a.params, state: 'pending' })),
    });
    expect(workflows[0]!.value.actions.find((a) => a.action === 'writefile')!.params).toMatchObject({ content: 'web-02\n' });

    // What was applied, by whom, from which commit and plan.
    const applied = await store.read((snap) => snap.get<AppliedRevision>(APPLIED));
    expect(applied!.value).toEqual({ revision: fleet.revision, planHash: plan.hash, at: NOW.toISOString(), user: 'alice' });
    const audit = await list<AuditEntry>(store, AUDIT);
    expect(audit).toHaveLength(1);
    expect(audit[0]!.value).toEqual({
      at: NOW.toISOString(),
      user: 'alice',
      source: 'cli',
      author: 'Bob <bob@example.com>',
      fleetRevision: fleet.revision,
      planHash: plan.hash,
      storeRevision: seeded,
      summary: plan.summary,
      outcome: 'applied',
      workflows: [wfId],
    });
    const events = await list<{ type: string; mac: string; machine: string; message: string; at: string }>(store, EVENTS);
    // One event per change (their order is checked on its own below).
    const byMachine = (a: string[], b: string[]) => (a.join() < b.join() ? -1 : 1);
    expect(events.map((e) => [e.value.type, e.value.machine, e.value.mac, e.value.message, e.value.at]).sort(byMachine)).toEqual(
      plan.changes.map((c) => [`machine.${c.action}`, c.machine.name, c.machine.mac, c.reason, NOW.toISOString()]).sort(byMachine),
    );

    // One revision for everything written, and nothing else written at it.
    const all = await store.read((snap) => [
      ...snap.list<unknown>(MACHINES),
      ...snap.list<unknown>(WORKFLOWS),
      ...snap.list<unknown>(AUDIT),
      ...snap.list<unknown>(EVENTS),
      snap.get<unknown>(APPLIED)!,
    ]);
    const written = all.filter((v) => v.modRevision === result.revision).map((v) => v.key);
    expect(new Set(all.map((v) => v.modRevision))).toEqual(new Set([result.revision]));
    expect(written).toHaveLength(5 + 1 + 1 + 1 + 5); // machines, workflow, audit, fleet/applied, events
    expect(await store.read((snap) => snap.revision)).toBe(result.revision);

    // What apply writes is what the boot server and Mage will read: it must satisfy the record schemas.
    for (const m of await list<MachineRecord>(store, MACHINES)) expect([m.key, validateAgainst('machineRecord', m.value)]).toEqual([m.key, []]);
    for (const w of workflows) expect(validateAgainst('workflow', w.value)).toEqual([]);
  });

  it('events of one apply list in the order of the plan changes', async () => {
    // Twelve machines: a random order would pass by chance once in 479,001,600 runs.
    const { store } = openStore();
    const numbers = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
    const fleet = buildFleet({ machines: numbers.map((n) => ({ name: `node-${n}`, mac: macOf(n) })) });
    const plan = await planNow(store, fleet);
    expect(plan.changes.map((c) => c.machine.name)).toEqual(numbers.map((n) => `node-${n}`));
    await applyPlan(store, plan, fleet, CTX);
    const events = await list<{ machine: string }>(store, EVENTS);
    expect(events.map((e) => e.value.machine)).toEqual(numbers.map((n) => `node-${n}`));
  });

  it('after apply, planning again shows nothing left to register or provision (apply writes what plan expects)', async () => {
    const { store } = openStore();
    const fleet = buildFleet({ machines: [web(1), web(2), web(3, { labels: { role: 'spare' } })], assignments: [WEB] });
    await seed(store, [discovered(macOf(2), { hardware: blankHardware(macOf(2)) })]);
    const plan = await planNow(store, fleet);
    expect(plan.changes.map((c) => [c.action, c.machine.name])).toEqual([
      ['register', 'web-01'],
      ['register', 'web-02'],
      ['provision', 'web-02'],
      ['register', 'web-03'],
    ]);
    const result = await applyPlan(store, plan, fleet, CTX);
    const r2 = await record(store, macOf(2));
    expect(r2.value).toMatchObject({ name: 'web-02', phase: 'Provisioning', source: 'pxe', workflow: result.workflows[0] });

    const again = await planNow(store, fleet);
    expect(again.changes).toEqual([]);
    expect(again.notes.map((n) => [n.kind, n.machine?.name])).toEqual([
      ['waiting-discovery', 'web-01'],
      ['in-progress', 'web-02'],
    ]);
  });

  it('refuses the same plan applied twice as stale, and writes nothing', async () => {
    const { store, fleet, plan } = await scenario();
    await applyPlan(store, plan, fleet, CTX);
    const revision = await store.read((snap) => snap.revision);

    const e = await refusal(applyPlan(store, plan, fleet, CTX));
    expect(e.code).toBe('DF_ERR_PLAN_STALE');
    expect(e.message).toContain('stale');
    expect(e.message).toContain('web-01 (52:54:00:ab:cd:01) appeared');
    expect(e.status).toBe(409);
    expect(await store.read((snap) => snap.revision)).toBe(revision);
    expect(await list(store, WORKFLOWS)).toHaveLength(1);
    expect(await list(store, AUDIT)).toHaveLength(1);
  });

  it('refuses a plan made before another apply changed a machine, naming the machine', async () => {
    const { store } = openStore();
    const fleet = buildFleet({ machines: [web(2)], assignments: [WEB] });
    await seed(store, [registered(fleet, 'web-02', { hardware: blankHardware(macOf(2)) })]);
    const first = await planNow(store, fleet);
    const second = await planNow(store, fleet);
    await applyPlan(store, second, fleet, CTX);

    const e = await refusal(applyPlan(store, first, fleet, CTX));
    expect(e.code).toBe('DF_ERR_PLAN_STALE');
    expect(e.message).toContain('stale');
    expect(e.message).toContain('web-02 (52:54:00:ab:cd:02) changed');
    // One workflow: the refused plan did not start a second one.
    expect(await list(store, WORKFLOWS)).toHaveLength(1);
  });

  it('refuses a plan made before another process changed a machine, naming the machine', async () => {
    const { store, dir } = openStore();
    const fleet = buildFleet({ machines: [web(2)], assignments: [WEB] });
    await seed(store, [registered(fleet, 'web-02', { hardware: blankHardware(macOf(2)) })]);
    const plan = await planNow(store, fleet);

    // Mage reports new hardware through another process sharing the state directory.
    const changed = machineRecord(registered(fleet, 'web-02', { hardware: usedHardware(macOf(2)) }));
    const script = `
      const { LmdbStore } = await import(${JSON.stringify(pathToFileURL(path.join(ROOT, 'dist/store/lmdb.js')).href)});
      const store = LmdbStore.open(${JSON.stringify(dir)});
      const r = await store.commit({ put: [{ key: ${JSON.stringify(machineKey(macOf(2)))}, value: ${JSON.stringify(changed)} }] });
      await store.close();
      if (!r.ok) process.exit(3);
    `;
    execFileSync(process.execPath, ['--input-type=module', '-e', script], { stdio: 'pipe' });

    const e = await refusal(applyPlan(store, plan, fleet, CTX));
    expect(e.code).toBe('DF_ERR_PLAN_STALE');
    expect(e.message).toContain('stale');
    expect(e.message).toContain('web-02 (52:54:00:ab:cd:02) changed');
    expect(await list(store, WORKFLOWS)).toEqual([]);
    expect(await list(store, AUDIT)).toEqual([]);
  });

  it('refuses a plan when a write lands between its check and its commit, naming the machine', async () => {
    const { store } = openStore();
    const fleet = buildFleet({ machines: [web(2)], assignments: [WEB] });
    await seed(store, [registered(fleet, 'web-02', { hardware: blankHardware(macOf(2)) })]);
    const plan = await planNow(store, fleet);
    const before = await store.read((snap) => snap.revision);

    // A store whose next commit is overtaken by another writer of the same record.
    const racing: Store = {
      read: (fn) => store.read(fn),
      commit: async (txn) => {
        await seed(store, [registered(fleet, 'web-02', { hardware: usedHardware(macOf(2)) })]);
        return store.commit(txn);
      },
      watch: (prefix, from, listener) => store.watch(prefix, from, listener),
      oldestRevision: () => store.oldestRevision(),
      health: () => store.health(),
      close: () => store.close(),
    };
    const e = await refusal(applyPlan(racing, plan, fleet, CTX));
    expect(e.code).toBe('DF_ERR_PLAN_STALE');
    expect(e.message).toContain('web-02 (52:54:00:ab:cd:02) changed');
    // Only the other writer's commit landed.
    expect(await store.read((snap) => snap.revision)).toBe(before + 1);
    expect(await list(store, WORKFLOWS)).toEqual([]);
    expect(await list(store, AUDIT)).toEqual([]);
    expect(await store.read((snap) => snap.get(APPLIED))).toBeUndefined();
  });

  it('refuses a plan when a machine appeared in the store since', async () => {
    const { store } = openStore();
    const fleet = buildFleet({ machines: [web(1)], assignments: [WEB] });
    const plan = await planNow(store, fleet);
    await seed(store, [discovered(macOf(9))]);
    const e = await refusal(applyPlan(store, plan, fleet, CTX));
    expect(e.code).toBe('DF_ERR_PLAN_STALE');
    expect(e.message).toContain('CensusAbleQualityPatrol (52:54:00:ab:cd:09) appeared');
  });

  it('refuses a plan made from another fleet revision: "fleet changed"', async () => {
    const { store } = openStore();
    const fleet = buildFleet({ machines: [web(1)], assignments: [WEB] });
    const edited = buildFleet({ machines: [web(1, { labels: { role: 'web', rack: 'r9' } })], assignments: [WEB] });
    expect(edited.revision).not.toBe(fleet.revision);
    const plan = await planNow(store, fleet);

    const e = await refusal(applyPlan(store, plan, edited, CTX));
    expect(e.code).toBe('DF_ERR_PLAN_STALE');
    expect(e.message).toContain('stale');
    expect(e.message).toContain('fleet changed');
    expect(e.message).toContain(fleet.revision);
    expect(e.message).toContain(edited.revision);
    expect(await store.read((snap) => snap.revision)).toBe(0);
  });
});

describe('applyPlan: workflows that have not started', () => {
  async function pendingFor(fleetNow: Fleet) {
    const { store } = openStore();
    const before = buildFleet({ machines: [web(1)], assignments: [WEB] });
    const wf = { id: 'wf-web-01-g1-aaaaaa', mac: macOf(1), assignment: 'web', template: 'ubuntu-24.04', generation: 1, state: 'pending' as const };
    await seed(store, [registered(before, 'web-01', { hardware: blankHardware(macOf(1)), workflow: wf.id, phase: 'Provisioning' })], [wf]);
    const plan = await planNow(store, fleetNow);
    await applyPlan(store, plan, fleetNow, CTX);
    const after = await store.read((snap) => snap.get<Workflow>(workflowKey(wf.id)));
    return { plan, wf: after!.value, rec: (await record(store, macOf(1))).value };
  }

  it('are cancelled when the machine leaves git, so it is never imaged for them', async () => {
    const { plan, wf, rec } = await pendingFor(buildFleet({ machines: [web(2)], assignments: [WEB] }));
    expect(plan.changes.find((c) => c.action === 'retire')!.reason).toContain('cancels workflow wf-web-01-g1-aaaaaa (ubuntu-24.04@1), which has not started');
    expect(wf).toMatchObject({ state: 'failed', error: 'cancelled before it started: the machine left git', finishedAt: NOW.toISOString() });
    expect(rec.phase).toBe('Retired');
  });

  it('are cancelled when the assignment goes away', async () => {
    const { plan, wf, rec } = await pendingFor(buildFleet({ machines: [web(1)] }));
    expect(plan.changes.map((c) => c.action)).toEqual(['update']);
    expect(wf).toMatchObject({ state: 'failed', error: 'cancelled before it started: the machine is no longer assigned' });
    expect(rec.phase).toBe('Registered');
  });

  it('are kept when what git asks is unchanged', async () => {
    const { wf } = await pendingFor(buildFleet({ machines: [web(1, { labels: { role: 'web', rack: 'r9' } })], assignments: [WEB] }));
    expect(wf.state).toBe('pending');
  });
});

describe('applyPlan: memorable names', () => {
  it('the later of two MACs that share a memorable name gets the stable suffix', async () => {
    const { store } = openStore();
    // 12:54:00:ab:cd:01 differs from 52:54:00:ab:cd:01 only in its top 4 bits.
    const fleet = buildFleet({ machines: [{ name: 'a-01', mac: macOf(1) }, { name: 'b-01', mac: '12:54:00:ab:cd:01' }] });
    await applyPlan(store, await planNow(store, fleet), fleet, CTX);
    expect((await record(store, macOf(1))).value.memorableName).toBe('CensusAbleQualityParent');
    expect((await record(store, '12:54:00:ab:cd:01')).value.memorableName).toBe('CensusAbleQualityParent1');
  });
});

describe('staleness', () => {
  it('is empty for a fresh plan', async () => {
    const { store } = openStore();
    const fleet = buildFleet({ machines: [web(1), web(2)], assignments: [WEB] });
    await seed(store, [registered(fleet, 'web-02', { hardware: blankHardware(macOf(2)) }), discovered(macOf(9))]);
    const observed = await readObserved(store);
    const plan = planFleet(fleet, observed, { now: NOW });
    expect(staleness(plan, fleet, observed)).toEqual([]);
    expect(staleness(plan, fleet, await readObserved(store))).toEqual([]);
  });

  it('ignores a write that does not change what the plan relied on', async () => {
    const { store } = openStore();
    const fleet = buildFleet({ machines: [web(2)], assignments: [WEB] });
    await seed(store, [registered(fleet, 'web-02', { hardware: blankHardware(macOf(2)) })]);
    const plan = await planNow(store, fleet);
    // An audit entry or any key outside machines/ and workflows/ moves the revision, not the fingerprints.
    await store.commit({ put: [{ key: APPLIED, value: { revision: 'x', planHash: 'y', at: NOW.toISOString(), user: 'z' } }] });
    expect(staleness(plan, fleet, await readObserved(store))).toEqual([]);
  });

  it('names each reason: fleet changed, machine changed, workflow state moved on, machine disappeared', () => {
    const fleet = buildFleet({ machines: [web(1), web(2)], assignments: [WEB] });
    const wf: WorkflowSketch = { id: 'wf-1', mac: macOf(1), state: 'running', assignment: 'web', template: 'ubuntu-24.04', generation: 1, modRevision: 3 };
    const observed = buildObserved({
      machines: [registered(fleet, 'web-01', { workflow: 'wf-1', modRevision: 3 }), registered(fleet, 'web-02', { modRevision: 4 })],
      workflows: [wf],
    });
    const plan = planFleet(fleet, observed, { now: NOW });
    expect(staleness(plan, fleet, observed)).toEqual([]);

    const later = buildObserved({
      revision: 9,
      machines: [registered(fleet, 'web-01', { workflow: 'wf-1', modRevision: 3 })],
      workflows: [{ ...wf, state: 'failed', modRevision: 9 }],
    });
    const other = { ...fleet, revision: 'sha256:' + '1'.repeat(64) };
    const reasons = staleness(plan, other, later);
    expect(reasons).toHaveLength(2);
    expect(reasons[0]).toBe(`the fleet changed: the plan was made from ${fleet.revision}, the fleet is now ${other.revision}`);
    expect(reasons[1]).toMatch(/^the store moved on from revision 4 to 9: /);
    expect(reasons[1]).toContain(`web-01 (${macOf(1)}) changed`);
    expect(reasons[1]).toContain(`${macOf(2)}) disappeared`);
  });
});
