// apply: execute exactly a saved plan against the store, in one transaction, or refuse it as stale.
import { randomBytes } from 'node:crypto';
import { DragonflyError } from '../schemas/errors.js';
import { memorableName, memorableNameWithSuffix } from '../schemas/memorable-name.js';
import type { ChangeCode, MachineRecord, Plan, Workflow } from '../schemas/types.js';
import type { Snapshot, Store, Txn, Versioned } from '../store/store.js';
import { APPLIED, AUDIT, EVENTS, logKeys, machineKey, workflowKey } from '../store/keys.js';
import { normalizeMac } from '../schemas/mac.js';
import type { Fleet } from './fleet.js';
import { fingerprint, observedFrom, type Observed } from './observed.js';
import { phaseOf } from '../schemas/lifecycle.js';

export interface ApplyContext {
  /** Who applies: a user name, or "controller". */
  user: string;
  source: 'cli' | 'controller';
  /** Commit author, when the fleet comes from git. */
  author?: string;
  now?: Date;
}

export interface AuditEntry {
  at: string;
  user: string;
  source: ApplyContext['source'];
  author?: string;
  fleetRevision: string;
  planHash: string;
  storeRevision: number;
  summary: Plan['summary'];
  outcome: 'applied';
  workflows: string[];
}

export interface AppliedRevision {
  revision: string;
  planHash: string;
  at: string;
  user: string;
}

export interface ApplyResult {
  revision: number;
  workflows: string[];
}

/**
 * Why a saved plan no longer describes the world; empty when it still does.
 *
 * A plan of the whole fleet is stale when the fleet revision moved, or when any machine's fingerprint
 * (record revision, current workflow and its state) differs, a machine appeared or one disappeared.
 *
 * A scoped plan (plan.scope) is checked against the fleet revision and the fingerprints of its scope
 * only: a machine outside the scope that changed does not make it stale. Why that is safe:
 *  - Its changes are about scoped machines only, and its apply reads and writes nothing else; the
 *    transaction guards every record it writes, so a write that lands after this check refuses it too.
 *  - Planning a scoped machine reads the fleet (checked by revision), the machine's record and current
 *    workflow (checked by fingerprint), and the rollout counters of its assignment, which count every
 *    workflow of the assignment, in or out of the scope:
 *    · active (maxParallel) grows only when an apply creates a workflow, and apply does that together with
 *      writing the record of a machine of that assignment. With maxParallel, every machine of the
 *      assignment is in the scope (affectedMachines), so that write makes this plan stale. (Unless that
 *      apply came from another fleet revision where other machines belong to the assignment: the
 *      controller and a CLI apply of another commit, racing, can overrun maxParallel between them; they
 *      would also keep rewriting each other's records.)
 *    · a counter that drops (a workflow ended) makes this plan more cautious than a new one, never less;
 *      the same store change makes the controller plan that assignment again (ObservedCache reports the
 *      workflow's assignment; affectedMachines takes in all its machines).
 *    · failures (maxFailures) can grow by a report from a machine outside the scope between planning
 *      and applying (a machine that left the assignment, or any machine of an assignment without
 *      maxParallel). This plan then still starts its own machines of that assignment, as a plan made a
 *      moment before the report would have; the next round stops the rollout. (A full plan does not
 *      see a failure of a workflow that is no machine's current one either.)
 *  - A machine outside the scope keeps the plan it had. Its changes, if any, are not in this plan; the
 *    store change or the commit that moved it makes the controller plan it in a round of its own.
 */
export function staleness(plan: Plan, fleet: Fleet, observed: Observed): string[] {
  const reasons: string[] = [];
  if (plan.fleetRevision !== fleet.revision) {
    reasons.push(`the fleet changed: the plan was made from ${plan.fleetRevision}, the fleet is now ${fleet.revision}`);
  }
  const macs = plan.scope ?? [...new Set([...Object.keys(plan.fingerprints), ...observed.machines.keys()])].sort();
  const moved: string[] = [];
  for (const mac of macs) {
    const before = plan.fingerprints[mac] ?? 'absent';
    if (fingerprint(observed, mac) !== before) {
      const rec = observed.machines.get(mac)?.value;
      moved.push(`${rec?.name ?? rec?.memorableName ?? mac} (${mac})${before === 'absent' ? ' appeared' : rec ? ' changed' : ' disappeared'}`);
    }
  }
  if (moved.length > 0) {
    reasons.push(
      `the store moved on from revision ${plan.storeRevision} to ${observed.revision}: ${moved.slice(0, 10).join(', ')}${moved.length > 10 ? ` and ${moved.length - 10} more` : ''}`,
    );
  }
  return reasons;
}

function staleError(reasons: string[]): DragonflyError {
  return new DragonflyError('DF_ERR_PLAN_STALE', `the saved plan is stale: ${reasons.join('; ')}`, { reasons });
}

/**
 * Who holds which memorable name, built once per transaction (a plan registers up to the whole fleet).
 * A memorable name derives from the MAC's low 44 bits, so only MACs that differ in their first hex digit
 * can hold the same one: a scoped apply reads those records only (see scopedObserved).
 */
class MemorableNames {
  private readonly holders = new Map<string, string[]>();

  constructor(records: Iterable<MachineRecord>) {
    for (const r of records) this.add(r);
  }

  add(r: MachineRecord): void {
    const list = this.holders.get(r.memorableName);
    if (list) list.push(r.mac);
    else this.holders.set(r.memorableName, [r.mac]);
  }

  /** A memorable name no other machine holds; the later of two colliding MACs gets the stable suffix. */
  unique(mac: string): string {
    const base = memorableName(mac)!;
    const taken = this.holders.get(base)?.some((m) => m !== mac) ?? false;
    return taken ? memorableNameWithSuffix(mac)! : base;
  }
}

function workflowId(name: string, generation: number): string {
  const slug = name.toLowerCase().replace(/[^a-z0-9-]+/g, '-').slice(0, 50);
  return `wf-${slug}-g${generation}-${randomBytes(3).toString('hex')}`;
}

/**
 * A workflow that has not started yet must not outlive what git asks: when its machine is retired or its
 * desired template/generation changes, it is cancelled (failed, with the reason) so that the boot server
 * never images the machine for it. A running workflow is left to finish or time out: its disks are
 * already being written.
 */
function cancelOrphanedWorkflow(rec: MachineRecord, observed: Observed, now: string, cancelled: Map<string, Versioned<Workflow>>): void {
  const current = rec.workflow ? observed.workflows.get(rec.workflow) : undefined;
  if (!current || current.value.state !== 'pending' || cancelled.has(current.key)) return;
  const wf = current.value;
  const d = rec.desired;
  const why =
    rec.phase === 'Retired'
      ? 'the machine left git'
      : !d
        ? 'the machine is no longer assigned'
        : d.template !== wf.template || d.generation !== wf.generation
          ? `git now asks for ${d.template}@${d.generation}`
          : undefined;
  if (!why) return;
  cancelled.set(current.key, { ...current, value: { ...wf, state: 'failed', error: `cancelled before it started: ${why}`, finishedAt: now } });
  if (rec.phase === 'Provisioning') rec.phase = phaseOf(rec, undefined);
}

/** The transaction that carries out `plan` on top of `observed`. Pure but for ids and time. */
export function planTransaction(plan: Plan, observed: Observed, ctx: ApplyContext): { txn: Txn; workflows: string[] } {
  const at = ctx.now ?? new Date();
  const now = at.toISOString();
  const records = new Map<string, MachineRecord>();
  for (const [mac, r] of observed.machines) records.set(mac, r.value);
  let names: MemorableNames | undefined; // only a plan that creates a record needs it
  const touched = new Set<string>();
  const workflows = new Map<string, Workflow>();
  const cancelled = new Map<string, Versioned<Workflow>>();
  const events: { type: string; mac: string; machine: string; code: ChangeCode; message: string }[] = [];

  for (const c of plan.changes) {
    const mac = c.machine.mac;
    let rec = records.get(mac);
    if (!rec) {
      names ??= new MemorableNames(records.values());
      rec = { mac, memorableName: names.unique(mac), phase: 'Registered', source: 'git' } satisfies MachineRecord;
      names.add(rec);
    }
    rec = { ...rec };
    switch (c.action) {
      case 'register':
      case 'update': {
        const r = c.record!;
        rec.name = r.name!;
        rec.spec = r.spec as MachineRecord['spec'];
        rec.labels = r.labels ?? {};
        if (r.desired) rec.desired = r.desired;
        else delete rec.desired;
        const wf = rec.workflow ? (workflows.get(rec.workflow) ?? observed.workflows.get(rec.workflow)?.value) : undefined;
        rec.phase = phaseOf(rec, wf);
        break;
      }
      case 'provision':
      case 'reimage': {
        const intent = c.workflow!;
        const wf: Workflow = {
          id: workflowId(rec.name ?? rec.memorableName, intent.generation),
          mac,
          machine: rec.name ?? c.machine.name,
          assignment: intent.assignment,
          template: intent.template,
          generation: intent.generation,
          state: 'pending',
          reimage: intent.reimage,
          ...(intent.disk ? { disk: intent.disk } : {}),
          ...(intent.diskIdentity ? { diskIdentity: intent.diskIdentity } : {}),
          ...(intent.image ? { image: intent.image as Workflow['image'] } : {}),
          ...(intent.timeoutSeconds ? { timeoutSeconds: intent.timeoutSeconds } : {}),
          createdAt: now,
          actions: intent.actions.map((a) => ({ action: a.action, params: a.params, state: 'pending' as const })),
        };
        workflows.set(wf.id, wf);
        rec.workflow = wf.id;
        rec.phase = 'Provisioning';
        delete rec.error;
        break;
      }
      case 'retire':
        rec.phase = 'Retired';
        delete rec.desired;
        break;
      case 'power':
        rec.powerIntent = { to: c.power!.to, at: now };
        break;
    }
    cancelOrphanedWorkflow(rec, observed, now, cancelled);
    records.set(mac, rec);
    touched.add(mac);
    events.push({ type: `machine.${c.action}`, mac, machine: rec.name ?? rec.memorableName, code: c.code, message: c.reason });
  }

  const storeRevision = observed.revision;
  const audit: AuditEntry = {
    at: now,
    user: ctx.user,
    source: ctx.source,
    ...(ctx.author ? { author: ctx.author } : {}),
    fleetRevision: plan.fleetRevision,
    planHash: plan.hash,
    storeRevision,
    summary: plan.summary,
    outcome: 'applied',
    workflows: [...workflows.keys()],
  };
  const applied: AppliedRevision = { revision: plan.fleetRevision, planHash: plan.hash, at: now, user: ctx.user };
  const [auditKey] = logKeys(AUDIT, at, 1) as [string];
  const eventKeys = logKeys(EVENTS, at, events.length);

  const txn: Txn = {
    // Everything this apply read about a machine must still hold when it commits.
    compare: [
      ...[...touched].map((mac) => ({ key: machineKey(mac), modRevision: observed.machines.get(mac)?.modRevision ?? 0 })),
      ...[...workflows.keys()].map((id) => ({ key: workflowKey(id), modRevision: 0 })),
      ...[...cancelled.values()].map((w) => ({ key: w.key, modRevision: w.modRevision })),
      { key: auditKey, modRevision: 0 },
      ...eventKeys.map((key) => ({ key, modRevision: 0 })),
    ],
    put: [
      ...[...touched].map((mac) => ({ key: machineKey(mac), value: records.get(mac) })),
      ...[...workflows.values()].map((w) => ({ key: workflowKey(w.id), value: w })),
      ...[...cancelled.values()].map((w) => ({ key: w.key, value: w.value })),
      { key: APPLIED, value: applied },
      { key: auditKey, value: audit },
      ...events.map((e, i) => ({ key: eventKeys[i]!, value: { at: now, ...e } })),
    ],
  };
  return { txn, workflows: [...workflows.keys()] };
}

/**
 * What a scoped plan's apply reads: the records of the MACs in its scope and their current workflows
 * (what their fingerprints and the transaction need), and, for a MAC that gets a new record, the records
 * that could hold its memorable name. Not every record of the store: its cost follows the scope.
 */
export function scopedObserved(snap: Snapshot, plan: Plan): Observed {
  const scope = new Set(plan.scope);
  const outside = plan.changes.find((c) => !scope.has(c.machine.mac));
  if (outside) {
    throw new DragonflyError('DF_ERR_PLAN_FILE', `the plan changes ${outside.machine.name} (${outside.machine.mac}), which is outside its scope`, {
      mac: outside.machine.mac,
    });
  }
  const machines = new Map<string, Versioned<MachineRecord>>();
  const workflows = new Map<string, Versioned<Workflow>>();
  const read = (mac: string) => {
    const rec = snap.get<MachineRecord>(machineKey(mac));
    if (!rec) return undefined;
    machines.set(rec.value.mac, rec);
    const id = rec.value.workflow;
    const wf = id ? snap.get<Workflow>(workflowKey(id)) : undefined;
    if (wf) workflows.set(wf.value.id, wf);
    return rec;
  };
  for (const mac of plan.scope ?? []) {
    if (read(mac) || normalizeMac(mac) !== mac) continue;
    // A new record: the MACs that differ only in the first hex digit share its memorable name.
    for (const digit of '0123456789abcdef') if (digit !== mac[0] && !machines.has(digit + mac.slice(1))) read(digit + mac.slice(1));
  }
  return { revision: snap.revision, machines, workflows };
}

/** Apply exactly `plan`: refuse it when stale, otherwise write everything at one new store revision. */
export async function applyPlan(store: Store, plan: Plan, fleet: Fleet, ctx: ApplyContext): Promise<ApplyResult> {
  const observe = plan.scope ? (snap: Snapshot) => scopedObserved(snap, plan) : observedFrom;
  const { observed, txn, workflows } = await store.read((snap) => {
    const observed = observe(snap);
    const reasons = staleness(plan, fleet, observed);
    if (reasons.length > 0) throw staleError(reasons);
    return { observed, ...planTransaction(plan, observed, ctx) };
  });
  const result = await store.commit(txn);
  if (!result.ok) {
    const now = await store.read(observe);
    const reasons = staleness(plan, fleet, now);
    throw staleError(reasons.length > 0 ? reasons : [`another process wrote ${result.conflicts.join(', ')} while applying (store revision ${observed.revision} → ${result.revision})`]);
  }
  return { revision: result.revision, workflows };
}
