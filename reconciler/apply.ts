// apply: execute exactly a saved plan against the store, in one transaction, or refuse it as stale.
import { randomBytes } from 'node:crypto';
import { DragonflyError } from '../schemas/errors.js';
import { memorableName, memorableNameWithSuffix } from '../schemas/memorable-name.js';
import type { MachineRecord, Plan, Workflow } from '../schemas/types.js';
import type { Store, Txn, Versioned } from '../store/store.js';
import { APPLIED, AUDIT, EVENTS, logKeys, machineKey, workflowKey } from '../store/keys.js';
import type { Fleet } from './fleet.js';
import { fingerprint, observedFrom, type Observed } from './observed.js';
import { phaseOf } from './phase.js';

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

/** Why a saved plan no longer describes the world; empty when it still does. */
export function staleness(plan: Plan, fleet: Fleet, observed: Observed): string[] {
  const reasons: string[] = [];
  if (plan.fleetRevision !== fleet.revision) {
    reasons.push(`the fleet changed: the plan was made from ${plan.fleetRevision}, the fleet is now ${fleet.revision}`);
  }
  const macs = new Set([...Object.keys(plan.fingerprints), ...observed.machines.keys()]);
  const moved: string[] = [];
  for (const mac of [...macs].sort()) {
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

/** A memorable name no other machine holds; the later of two colliding MACs gets the stable suffix. */
function uniqueMemorableName(mac: string, records: Map<string, MachineRecord>): string {
  const base = memorableName(mac)!;
  const taken = [...records.values()].some((r) => r.mac !== mac && r.memorableName === base);
  return taken ? memorableNameWithSuffix(mac)! : base;
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
function cancelOrphanedWorkflow(rec: MachineRecord, observed: Observed, now: string, cancelled: Versioned<Workflow>[]): void {
  const current = rec.workflow ? observed.workflows.get(rec.workflow) : undefined;
  if (!current || current.value.state !== 'pending' || cancelled.some((c) => c.key === current.key)) return;
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
  cancelled.push({ ...current, value: { ...wf, state: 'failed', error: `cancelled before it started: ${why}`, finishedAt: now } });
  if (rec.phase === 'Provisioning') rec.phase = phaseOf(rec, undefined);
}

/** The transaction that carries out `plan` on top of `observed`. Pure but for ids and time. */
export function planTransaction(plan: Plan, observed: Observed, ctx: ApplyContext): { txn: Txn; workflows: string[] } {
  const at = ctx.now ?? new Date();
  const now = at.toISOString();
  const records = new Map([...observed.machines].map(([mac, r]) => [mac, r.value]));
  const touched = new Set<string>();
  const workflows: Workflow[] = [];
  const cancelled: Versioned<Workflow>[] = [];
  const events: { type: string; mac: string; machine: string; message: string }[] = [];

  for (const c of plan.changes) {
    const mac = c.machine.mac;
    const existing = records.get(mac);
    let rec: MachineRecord =
      existing ??
      ({ mac, memorableName: uniqueMemorableName(mac, records), phase: 'Registered', source: 'git' } satisfies MachineRecord);
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
        const wf = rec.workflow ? (workflows.find((w) => w.id === rec.workflow) ?? observed.workflows.get(rec.workflow)?.value) : undefined;
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
          ...(intent.image ? { image: intent.image as Workflow['image'] } : {}),
          ...(intent.timeoutSeconds ? { timeoutSeconds: intent.timeoutSeconds } : {}),
          createdAt: now,
          actions: intent.actions.map((a) => ({ action: a.action, params: a.params, state: 'pending' as const })),
        };
        workflows.push(wf);
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
    events.push({ type: `machine.${c.action}`, mac, machine: rec.name ?? rec.memorableName, message: c.reason });
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
    workflows: workflows.map((w) => w.id),
  };
  const applied: AppliedRevision = { revision: plan.fleetRevision, planHash: plan.hash, at: now, user: ctx.user };
  const [auditKey] = logKeys(AUDIT, at, 1) as [string];
  const eventKeys = logKeys(EVENTS, at, events.length);

  const txn: Txn = {
    // Everything this apply read about a machine must still hold when it commits.
    compare: [
      ...[...touched].map((mac) => ({ key: machineKey(mac), modRevision: observed.machines.get(mac)?.modRevision ?? 0 })),
      ...workflows.map((w) => ({ key: workflowKey(w.id), modRevision: 0 })),
      ...cancelled.map((w) => ({ key: w.key, modRevision: w.modRevision })),
      { key: auditKey, modRevision: 0 },
      ...eventKeys.map((key) => ({ key, modRevision: 0 })),
    ],
    put: [
      ...[...touched].map((mac) => ({ key: machineKey(mac), value: records.get(mac) })),
      ...workflows.map((w) => ({ key: workflowKey(w.id), value: w })),
      ...cancelled.map((w) => ({ key: w.key, value: w.value })),
      { key: APPLIED, value: applied },
      { key: auditKey, value: audit },
      ...events.map((e, i) => ({ key: eventKeys[i]!, value: { at: now, ...e } })),
    ],
  };
  return { txn, workflows: workflows.map((w) => w.id) };
}

/** Apply exactly `plan`: refuse it when stale, otherwise write everything at one new store revision. */
export async function applyPlan(store: Store, plan: Plan, fleet: Fleet, ctx: ApplyContext): Promise<ApplyResult> {
  const { observed, txn, workflows } = await store.read((snap) => {
    const observed = observedFrom(snap);
    const reasons = staleness(plan, fleet, observed);
    if (reasons.length > 0) throw staleError(reasons);
    return { observed, ...planTransaction(plan, observed, ctx) };
  });
  const result = await store.commit(txn);
  if (!result.ok) {
    const now = await store.read(observedFrom);
    const reasons = staleness(plan, fleet, now);
    throw staleError(reasons.length > 0 ? reasons : [`another process wrote ${result.conflicts.join(', ')} while applying (store revision ${observed.revision} → ${result.revision})`]);
  }
  return { revision: result.revision, workflows };
}
