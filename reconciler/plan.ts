// planFleet: the pure heart of Dragonfly. Desired state (git) + observed state (store) → a Plan: data,
// with no I/O, that apply.ts executes and render.ts prints.
import { isDeepStrictEqual } from 'node:util';
import type { Change, ChangeCode, Facts, HardwareReport, MachineRecord, Note, NoteCode, Plan, Workflow, WorkflowIntent } from '../schemas/types.js';
import { chooseInstallDisk, devicePath } from '../schemas/install-disk.js';
import { isActiveWorkflow, isFailedWorkflow } from '../schemas/lifecycle.js';
import { CHANGE_ACTION, changeReason, NOTE_KIND, noteMessage } from '../schemas/plan-reasons.js';
import { parseDuration, parseSize } from '../schemas/formats.js';
import type { Fleet, FleetAssignment, FleetMachine, FleetTemplate } from './fleet.js';
import { fingerprint, sha256, type Observed } from './observed.js';
import { substituteDeep } from './variables.js';

export const PLAN_FORMAT_VERSION = '1.1';
const DEFAULT_TIMEOUT = '30m';

export type { Change, Note, Plan };
type MachineRef = Change['machine'];

/** A change: its action follows from its code, and its reason is written from the code and the data. */
function change(code: ChangeCode, machine: MachineRef, data: Omit<Change, 'action' | 'machine' | 'code' | 'reason'> = {}): Change {
  const action = CHANGE_ACTION[code];
  return { action, machine, code, reason: changeReason({ action, machine, code, ...data }), ...data };
}

/** A note: its kind follows from its code, and its message is written from the code and the facts. */
function note(code: NoteCode, machine: MachineRef, facts: Facts): Note {
  const kind = NOTE_KIND[code];
  return { kind, code, machine, message: noteMessage({ kind, code, machine, facts }), facts };
}

function refOf(m: FleetMachine): MachineRef {
  return { name: m.name, mac: m.mac, memorableName: m.memorableName };
}

function refOfRecord(r: MachineRecord): MachineRef {
  return { name: r.name ?? r.memorableName, mac: r.mac, memorableName: r.memorableName };
}

/** The machine fields git decides, as apply writes them into the record. */
function desiredRecord(m: FleetMachine, a: FleetAssignment | undefined) {
  return {
    name: m.name,
    spec: m.spec,
    labels: m.labels,
    desired: a ? { assignment: a.name, template: a.template, generation: a.generation } : null,
  };
}

function diffRecord(rec: MachineRecord, want: ReturnType<typeof desiredRecord>): NonNullable<Change['diff']> {
  const diff: NonNullable<Change['diff']> = [];
  const cmp = (path: string, before: unknown, after: unknown) => {
    if (!isDeepStrictEqual(before ?? null, after ?? null)) diff.push({ path, before: before ?? null, after: after ?? null });
  };
  cmp('name', rec.name, want.name);
  cmp('labels', rec.labels ?? {}, want.labels);
  const specKeys = new Set([...Object.keys(rec.spec ?? {}), ...Object.keys(want.spec)]);
  for (const k of [...specKeys].sort()) cmp(`spec.${k}`, (rec.spec as Record<string, unknown> | undefined)?.[k], (want.spec as unknown as Record<string, unknown>)[k]);
  cmp('assignment', rec.desired ?? null, want.desired);
  return diff;
}

/** What is on the install disk today, and would be lost: partitions and filesystems, named. */
function contentsOf(hw: HardwareReport, disk: string): string[] {
  const d = hw.disks.find((x) => devicePath(x) === disk || `/dev/${x.name}` === disk);
  if (!d) return [];
  // Fail closed: a disk whose table Mage could not read may hold anything; it is not "blank".
  if (d.table === undefined && !d.fstype && !(d.partitions?.length)) return [`${disk}: contents unknown (Mage could not read the disk)`];
  const parts = (d.partitions ?? []).map(
    (p) => `${p.name}${p.fstype ? ` (${p.fstype}${p.label ? ` "${p.label}"` : ''})` : ''}`,
  );
  if (d.fstype) parts.push(`${d.name} (${d.fstype} on the whole disk)`);
  return parts.map((p) => `${disk}: ${p}`);
}

function workflowIntent(
  m: FleetMachine,
  a: FleetAssignment,
  t: FleetTemplate,
  disk: string,
  reimage: boolean,
  hw: HardwareReport,
): WorkflowIntent {
  // Mage checks the disk it is about to write against what the report said of it (mage/disk-identity.ts).
  const d = hw.disks.find((x) => devicePath(x) === disk);
  const ctx = {
    machine: { name: m.name, memorableName: m.memorableName, mac: m.mac, labels: m.labels },
    disk,
    ...(t.spec.image ? { imageUrl: t.spec.image.url } : {}),
  };
  return {
    assignment: a.name,
    template: t.name,
    generation: a.generation,
    reimage,
    disk,
    ...(d ? { diskIdentity: { sizeBytes: d.sizeBytes, serial: d.serial ?? null, wwn: d.wwn ?? null } } : {}),
    ...(t.spec.image ? { image: { ...t.spec.image } } : {}),
    timeoutSeconds: parseDuration(t.spec.timeout ?? DEFAULT_TIMEOUT),
    actions: t.spec.actions.map((action) => {
      const [name, params] = Object.entries(action)[0]!;
      return { action: name as WorkflowIntent['actions'][number]['action'], params: substituteDeep(params as object, ctx) };
    }),
  };
}

/** The workflow apply will cancel because it has not started and git no longer asks for it (see apply.ts). */
function pendingWorkflowCancelled(rec: MachineRecord, observed: Observed, desired: MachineRecord['desired'] | null): Facts['cancels'] {
  const wf = rec.workflow ? observed.workflows.get(rec.workflow)?.value : undefined;
  if (!wf || wf.state !== 'pending') return undefined;
  if (desired && desired.template === wf.template && desired.generation === wf.generation) return undefined;
  return { id: wf.id, template: wf.template, generation: wf.generation };
}

function workflowFacts(wf: Workflow): NonNullable<Facts['workflow']> {
  return { id: wf.id, template: wf.template, generation: wf.generation, state: wf.state, ...(wf.error ? { error: wf.error } : {}) };
}

interface RolloutCounter {
  active: number;
  failures: number;
  started: number;
}

export interface PlanOptions {
  now?: Date;
  /**
   * Plan only these machines (boot MACs), e.g. affectedMachines() of a new fleet revision: steps 1–5 and
   * fingerprints run for them alone, and the plan records its scope. Rollout counters stay global (every
   * workflow counts), so for each machine in scope the result equals the full plan's, provided the scope
   * holds every machine of an assignment with maxParallel that has one in scope (rollout order).
   * 'all' or undefined: the whole fleet.
   */
  scope?: ReadonlySet<string> | 'all';
}

export function planFleet(fleet: Fleet, observed: Observed, options: PlanOptions = {}): Plan {
  const scope = options.scope === 'all' ? undefined : options.scope;
  const changes: Change[] = [];
  const notes: Note[] = [];
  const now = (options.now ?? new Date()).toISOString();

  // Rollout counters per assignment: what runs now and what failed at the current generation.
  const rollout = new Map<string, RolloutCounter>();
  for (const a of fleet.assignments.values()) rollout.set(a.name, { active: 0, failures: 0, started: 0 });
  for (const { value: wf } of observed.workflows.values()) {
    const a = fleet.assignments.get(wf.assignment);
    const c = rollout.get(wf.assignment);
    if (!a || !c) continue;
    if (isActiveWorkflow(wf.state)) c.active++;
    else if (isFailedWorkflow(wf.state) && wf.generation === a.generation) c.failures++;
  }

  // The MACs git declares (of the scope, when scoped: only those are looked up below).
  const inGit = new Set<string>();
  for (const m of fleet.machines) {
    if (scope && !scope.has(m.mac)) continue;
    inGit.add(m.mac);
    const ref = refOf(m);
    const rec = observed.machines.get(m.mac)?.value;
    const a = m.assignment ? fleet.assignments.get(m.assignment) : undefined;
    const t = a ? fleet.templates.get(a.template) : undefined;
    const want = desiredRecord(m, a);

    // 1. Registration: git declares the machine; the store learns of it (or of what changed).
    if (!rec) changes.push(change('declared-unseen', ref, { record: want }));
    else if (rec.phase === 'Retired') changes.push(change('declared-after-retirement', ref, { record: want }));
    else if (rec.phase === 'Discovered') {
      const at = rec.lastSeen ?? rec.firstSeen;
      changes.push(change('declared-after-discovery', ref, { facts: { seen: { source: rec.source, ...(at ? { at } : {}) } }, record: want }));
    } else {
      const diff = diffRecord(rec, want);
      if (diff.length > 0) {
        const cancels = pendingWorkflowCancelled(rec, observed, want.desired);
        changes.push(change('git-changed', ref, { ...(cancels ? { facts: { cancels } } : {}), diff, record: want }));
      }
    }

    // 2. Drift: hardware that disagrees with git is reported, never silently fixed.
    const hw = rec?.hardware;
    if (hw) {
      if (m.spec.disk && !hw.disks.some((d) => devicePath(d) === m.spec.disk)) {
        notes.push(note('disk-not-reported', ref, { disk: m.spec.disk, reportedDisks: hw.disks.map(devicePath) }));
      }
      const reported = new Set(hw.nics.map((n) => n.mac.toLowerCase().replaceAll('-', ':')));
      for (const mac of m.spec.macs ?? []) {
        if (!reported.has(mac)) notes.push(note('nic-not-reported', ref, { nic: mac }));
      }
    }
    // An unauthenticated report that differs is shown, never planned with (boot/observe.ts recordHardware).
    if (rec?.unverifiedHardware) {
      const u = rec.unverifiedHardware;
      notes.push(note('unverified-hardware', ref, { unverified: { disks: u.hardware.disks.length, ...(u.ip ? { ip: u.ip } : {}), at: u.at } }));
    }

    // 3. Power: only when a driver has observed the current state, and not twice for one request.
    if (m.spec.power && rec?.observedPower && rec.observedPower !== 'unknown' && rec.observedPower !== m.spec.power) {
      if (rec.powerIntent?.to === m.spec.power) {
        notes.push(note('power-requested', ref, { power: { to: m.spec.power, observed: rec.observedPower, at: rec.powerIntent.at } }));
      } else {
        changes.push(change('power-differs', ref, { power: { from: rec.observedPower, to: m.spec.power } }));
      }
    }

    // 4. Provisioning.
    if (!a || !t) continue;
    const wf = rec?.workflow ? observed.workflows.get(rec.workflow)?.value : undefined;
    const installed = rec?.installed;
    const wanted = { template: t.name, generation: a.generation };
    if (wf && isActiveWorkflow(wf.state)) {
      notes.push(note('workflow-active', ref, { workflow: workflowFacts(wf) }));
      continue;
    }
    if (installed && installed.generation >= a.generation) {
      if (installed.template !== t.name) {
        notes.push(note('installed-template-differs', ref, { installed: { template: installed.template, generation: installed.generation }, wanted }));
      }
      continue;
    }
    if (wf && isFailedWorkflow(wf.state) && wf.generation >= a.generation) {
      notes.push(note('workflow-failed', ref, { workflow: workflowFacts(wf), wanted }));
      continue;
    }
    if (m.spec.netboot === false) {
      notes.push(note('netboot-disabled', ref, { wanted }));
      continue;
    }
    if (!hw) {
      notes.push(note('awaiting-discovery', ref, { wanted }));
      continue;
    }
    // Fail closed: a disk that Mage did not report has unknown contents; never write to it blindly.
    if (m.spec.disk && !hw.disks.some((d) => devicePath(d) === m.spec.disk)) {
      notes.push(note('install-disk-not-reported', ref, { wanted, disk: m.spec.disk }));
      continue;
    }
    const minBytes = t.spec.image?.size ? parseSize(t.spec.image.size) : 0;
    const disk = m.spec.disk ?? (chooseInstallDisk(hw, minBytes) ? devicePath(chooseInstallDisk(hw, minBytes)!) : undefined);
    if (!disk) {
      notes.push(note('no-install-disk', ref, { wanted }));
      continue;
    }
    const wipes = contentsOf(hw, disk);
    const reimage = installed !== undefined || wipes.length > 0;
    if (reimage && m.spec.protected) {
      notes.push(note('machine-protected', ref, { wanted }));
      continue;
    }
    const counter = rollout.get(a.name)!;
    if (a.maxFailures !== undefined && counter.failures > a.maxFailures) {
      notes.push(note('max-failures-reached', ref, { wanted, rollout: { assignment: a.name, failures: counter.failures, maxFailures: a.maxFailures } }));
      continue;
    }
    if (a.maxParallel !== undefined && counter.active + counter.started >= a.maxParallel) {
      notes.push(note('max-parallel-reached', ref, { wanted, rollout: { assignment: a.name, maxParallel: a.maxParallel } }));
      continue;
    }
    counter.started++;
    const workflow = workflowIntent(m, a, t, disk, reimage, hw);
    if (!reimage) changes.push(change('first-install', ref, { workflow }));
    else {
      const lost = { wipes: wipes.length > 0 ? wipes : [`${disk}: the installed ${installed?.template ?? 'system'}`] };
      changes.push(
        installed
          ? change('generation-bumped', ref, { facts: { installed: { template: installed.template, generation: installed.generation } }, workflow, ...lost })
          : change('first-install-over-data', ref, { workflow, ...lost }),
      );
    }
  }

  // 5. Machines the store knows but git does not.
  // In the store's order; a scoped plan with at most one of them looks it up instead of walking the store.
  let unknown: Iterable<{ value: MachineRecord }> = observed.machines.values();
  if (scope) {
    const found = [...scope].filter((mac) => !inGit.has(mac)).flatMap((mac) => observed.machines.get(mac) ?? []);
    if (found.length <= 1) unknown = found;
  }
  for (const { value: rec } of unknown) {
    if (inGit.has(rec.mac) || (scope && !scope.has(rec.mac))) continue;
    if (rec.phase === 'Retired') continue;
    if (rec.phase === 'Discovered') {
      notes.push(note('not-in-git', refOfRecord(rec), { seen: { source: rec.source } }));
      continue;
    }
    const cancels = pendingWorkflowCancelled(rec, observed, null);
    changes.push(change('removed-from-git', refOfRecord(rec), cancels ? { facts: { cancels } } : {}));
  }

  const fingerprints: Record<string, string> = {};
  const fingerprinted = scope ? [...scope].filter((mac) => inGit.has(mac) || observed.machines.has(mac)) : [...new Set([...inGit, ...observed.machines.keys()])];
  for (const mac of fingerprinted.sort()) fingerprints[mac] = fingerprint(observed, mac);

  const count = (actions: Change['action'][]) => changes.filter((c) => actions.includes(c.action)).length;
  const body = {
    format_version: PLAN_FORMAT_VERSION as Plan['format_version'],
    fleetRevision: fleet.revision,
    storeRevision: observed.revision,
    ...(scope ? { scope: [...scope].sort() } : {}),
    fingerprints,
    changes,
    notes,
    summary: {
      add: count(['register', 'provision']),
      change: count(['update', 'power']),
      reimage: count(['reimage']),
      retire: count(['retire']),
      power: count(['power']),
    },
  };
  return { ...body, createdAt: now, hash: planHash(body) };
}

/** The hash that identifies a plan's content (not when it was made). */
export function planHash(plan: Omit<Plan, 'createdAt' | 'hash'> & Partial<Pick<Plan, 'createdAt' | 'hash'>>): string {
  const { createdAt: _c, hash: _h, ...body } = plan;
  // planFleet builds plans with a fixed key order, and JSON files keep it, so plain JSON hashes stably.
  return 'sha256:' + sha256(JSON.stringify(body));
}

export function hasChanges(plan: Plan): boolean {
  return plan.changes.length > 0;
}
