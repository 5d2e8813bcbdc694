// planFleet: the pure heart of Dragonfly. Desired state (git) + observed state (store) → a Plan: data,
// with no I/O, that apply.ts executes and render.ts prints.
import { isDeepStrictEqual } from 'node:util';
import type { Change, HardwareReport, MachineRecord, Note, Plan, Workflow, WorkflowIntent } from '../schemas/types.js';
import { chooseInstallDisk, devicePath } from '../schemas/install-disk.js';
import { isActiveWorkflow, isFailedWorkflow } from '../schemas/lifecycle.js';
import { parseDuration, parseSize } from '../schemas/formats.js';
import type { Fleet, FleetAssignment, FleetMachine, FleetTemplate } from './fleet.js';
import { fingerprint, sha256, type Observed } from './observed.js';
import { substituteDeep } from './variables.js';

export const PLAN_FORMAT_VERSION = '1.0';
const DEFAULT_TIMEOUT = '30m';

export type { Change, Note, Plan };
type MachineRef = Change['machine'];


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

/** What the reason says when apply will cancel a workflow that has not started (see apply.ts). */
function pendingWorkflowCancelled(rec: MachineRecord, observed: Observed, desired: MachineRecord['desired'] | null): string {
  const wf = rec.workflow ? observed.workflows.get(rec.workflow)?.value : undefined;
  if (!wf || wf.state !== 'pending') return '';
  if (desired && desired.template === wf.template && desired.generation === wf.generation) return '';
  return `; cancels workflow ${wf.id} (${wf.template}@${wf.generation}), which has not started`;
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
    if (!rec || rec.phase === 'Discovered' || rec.phase === 'Retired') {
      const reason = !rec
        ? 'declared in git; not seen on the network yet'
        : rec.phase === 'Retired'
          ? 'declared in git again after being retired'
          : `seen by ${rec.source} at ${rec.lastSeen ?? rec.firstSeen ?? 'an earlier boot'}; now declared in git`;
      changes.push({ action: 'register', machine: ref, reason, record: want });
    } else {
      const diff = diffRecord(rec, want);
      if (diff.length > 0) {
        const cancels = pendingWorkflowCancelled(rec, observed, want.desired);
        changes.push({ action: 'update', machine: ref, reason: `git changed ${diff.map((d) => d.path).join(', ')}${cancels}`, diff, record: want });
      }
    }

    // 2. Drift: hardware that disagrees with git is reported, never silently fixed.
    const hw = rec?.hardware;
    if (hw) {
      if (m.spec.disk && !hw.disks.some((d) => devicePath(d) === m.spec.disk)) {
        notes.push({ kind: 'drift', machine: ref, message: `spec.disk ${m.spec.disk} is not among the disks Mage reported (${hw.disks.map(devicePath).join(', ') || 'none'})` });
      }
      const reported = new Set(hw.nics.map((n) => n.mac.toLowerCase().replaceAll('-', ':')));
      for (const mac of m.spec.macs ?? []) {
        if (!reported.has(mac)) notes.push({ kind: 'drift', machine: ref, message: `NIC ${mac} from spec.macs was not in the hardware report` });
      }
    }
    // An unauthenticated report that differs is shown, never planned with (boot/observe.ts recordHardware).
    if (rec?.unverifiedHardware) {
      const u = rec.unverifiedHardware;
      notes.push({
        kind: 'drift',
        machine: ref,
        message: `an unverified hardware report (${u.hardware.disks.length} disks, from ${u.ip ?? 'an unknown address'} at ${u.at}) differs from the stored one; plans use the stored one until a Mage that claimed a workflow reports`,
      });
    }

    // 3. Power: only when a driver has observed the current state, and not twice for one request.
    if (m.spec.power && rec?.observedPower && rec.observedPower !== 'unknown' && rec.observedPower !== m.spec.power) {
      if (rec.powerIntent?.to === m.spec.power) {
        notes.push({ kind: 'in-progress', machine: ref, message: `power ${m.spec.power} requested at ${rec.powerIntent.at}; the driver still reports ${rec.observedPower}` });
      } else {
        changes.push({ action: 'power', machine: ref, reason: `power is ${rec.observedPower}; git asks ${m.spec.power}`, power: { from: rec.observedPower, to: m.spec.power } });
      }
    }

    // 4. Provisioning.
    if (!a || !t) continue;
    const wf = rec?.workflow ? observed.workflows.get(rec.workflow)?.value : undefined;
    const installed = rec?.installed;
    const wanted = `${t.name}@${a.generation}`;
    if (wf && isActiveWorkflow(wf.state)) {
      notes.push({ kind: 'in-progress', machine: ref, message: `workflow ${wf.id} (${wf.template}@${wf.generation}) is ${wf.state}` });
      continue;
    }
    if (installed && installed.generation >= a.generation) {
      if (installed.template !== t.name) {
        notes.push({
          kind: 'drift',
          machine: ref,
          message: `installed ${installed.template}@${installed.generation}, git asks ${wanted}; bump the assignment's generation above ${installed.generation} to reimage`,
        });
      }
      continue;
    }
    if (wf && isFailedWorkflow(wf.state) && wf.generation >= a.generation) {
      notes.push({ kind: 'failed', machine: ref, message: `workflow ${wf.id} ${wf.state}${wf.error ? `: ${wf.error}` : ''}; bump the assignment's generation to retry` });
      continue;
    }
    if (m.spec.netboot === false) {
      notes.push({ kind: 'blocked', machine: ref, message: `${wanted} needs a network boot, but the machine has netboot: false` });
      continue;
    }
    if (!hw) {
      notes.push({ kind: 'waiting-discovery', machine: ref, message: `${wanted} waits for discovery: PXE boot the machine so Mage can report its disks` });
      continue;
    }
    // Fail closed: a disk that Mage did not report has unknown contents; never write to it blindly.
    if (m.spec.disk && !hw.disks.some((d) => devicePath(d) === m.spec.disk)) {
      notes.push({
        kind: 'blocked',
        machine: ref,
        message: `${wanted} not started: spec.disk ${m.spec.disk} was not reported by Mage, and Dragonfly never writes to a disk it has not seen`,
      });
      continue;
    }
    const minBytes = t.spec.image?.size ? parseSize(t.spec.image.size) : 0;
    const disk = m.spec.disk ?? (chooseInstallDisk(hw, minBytes) ? devicePath(chooseInstallDisk(hw, minBytes)!) : undefined);
    if (!disk) {
      notes.push({ kind: 'blocked', machine: ref, message: `no install disk: none of the reported disks is fixed, non-USB and large enough; set spec.disk` });
      continue;
    }
    const wipes = contentsOf(hw, disk);
    const reimage = installed !== undefined || wipes.length > 0;
    if (reimage && m.spec.protected) {
      notes.push({ kind: 'blocked', machine: ref, message: `${wanted} needs a reimage, but the machine is protected: true` });
      continue;
    }
    const counter = rollout.get(a.name)!;
    if (a.maxFailures !== undefined && counter.failures > a.maxFailures) {
      notes.push({ kind: 'blocked', machine: ref, message: `rollout of "${a.name}" stopped: ${counter.failures} workflows failed at generation ${a.generation} (maxFailures ${a.maxFailures})` });
      continue;
    }
    if (a.maxParallel !== undefined && counter.active + counter.started >= a.maxParallel) {
      notes.push({ kind: 'deferred', machine: ref, message: `${wanted} deferred: rollout of "${a.name}" runs at most ${a.maxParallel} at once` });
      continue;
    }
    counter.started++;
    const reason = installed
      ? `generation ${a.generation} > installed ${installed.generation} (${installed.template})`
      : reimage
        ? `first install over a disk that already holds data`
        : `first install of ${wanted}`;
    changes.push({
      action: reimage ? 'reimage' : 'provision',
      machine: ref,
      reason,
      workflow: workflowIntent(m, a, t, disk, reimage, hw),
      ...(reimage ? { wipes: wipes.length > 0 ? wipes : [`${disk}: the installed ${installed?.template ?? 'system'}`] } : {}),
    });
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
      notes.push({ kind: 'unmanaged', machine: refOfRecord(rec), message: `seen by ${rec.source} but not in git; add a Machine with mac ${rec.mac} to manage it` });
      continue;
    }
    const cancels = pendingWorkflowCancelled(rec, observed, null);
    changes.push({ action: 'retire', machine: refOfRecord(rec), reason: `removed from git; its disks are left as they are (never wiped)${cancels}` });
  }

  const fingerprints: Record<string, string> = {};
  const fingerprinted = scope ? [...scope].filter((mac) => inGit.has(mac) || observed.machines.has(mac)) : [...new Set([...inGit, ...observed.machines.keys()])];
  for (const mac of fingerprinted.sort()) fingerprints[mac] = fingerprint(observed, mac);

  const count = (actions: Change['action'][]) => changes.filter((c) => actions.includes(c.action)).length;
  const body = {
    format_version: PLAN_FORMAT_VERSION as '1.0',
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
