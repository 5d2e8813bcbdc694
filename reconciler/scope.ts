// Which machines a new fleet revision or a store change can affect: the scope of an incremental plan
// (planFleet's `scope` option). Pure; compares what the planner reads, machine by machine.
import { isDeepStrictEqual } from 'node:util';
import type { Fleet, FleetAssignment, FleetMachine, FleetTemplate } from './fleet.js';

/** Per Fleet, its machines by MAC: built once, reused when this fleet is the `before` of the next round. */
const byMacOf = new WeakMap<Fleet, Map<string, FleetMachine>>();

function machinesByMac(fleet: Fleet): Map<string, FleetMachine> {
  let map = byMacOf.get(fleet);
  if (!map) {
    map = new Map();
    for (const m of fleet.machines) map.set(m.mac, m);
    byMacOf.set(fleet, map);
  }
  return map;
}

function sameLabels(a: Record<string, string>, b: Record<string, string>): boolean {
  if (a === b) return true;
  const keys = Object.keys(a);
  if (keys.length !== Object.keys(b).length) return false;
  for (const k of keys) if (a[k] !== b[k]) return false;
  return true;
}

/** What the planner reads of a machine: name, labels, spec, assignment; and its file (the fleet order). */
function sameMachine(a: FleetMachine, b: FleetMachine): boolean {
  return (
    a.name === b.name &&
    a.assignment === b.assignment &&
    a.file === b.file &&
    sameLabels(a.labels, b.labels) &&
    // A FleetLoader hands out the same spec object for an unchanged file: usually no deep comparison.
    (a.spec === b.spec || isDeepStrictEqual(a.spec, b.spec))
  );
}

function sameTemplate(a: FleetTemplate | undefined, b: FleetTemplate | undefined): boolean {
  if (a === b) return true;
  if (!a || !b) return false;
  return a.name === b.name && (a.spec === b.spec || isDeepStrictEqual(a.spec, b.spec));
}

/** What the planner reads of an assignment (its members are compared machine by machine). */
function sameAssignment(before: Fleet, a: FleetAssignment | undefined, after: Fleet, b: FleetAssignment): boolean {
  return (
    a !== undefined &&
    a.template === b.template &&
    a.generation === b.generation &&
    a.maxParallel === b.maxParallel &&
    a.maxFailures === b.maxFailures &&
    sameTemplate(before.templates.get(a.template), after.templates.get(b.template))
  );
}

/**
 * The machines (boot MACs) whose plan can differ between planning `before` and planning `after`, given
 * that the store changed only for `observedChanged` (MACs whose record or current workflow changed) and
 * for the workflows of the assignments in `rollouts` (whose rollout counters may have moved; see
 * ObservedCache.onChange). 'all' when there is no `before`.
 *
 * The scope holds: machines added to or removed from git; machines whose name, labels, spec, file or
 * assignment changed; the machines of an assignment whose template, generation, rollout policy or template
 * spec changed; the MACs in observedChanged; every machine of an assignment in `rollouts` that has a
 * rollout policy (maxParallel or maxFailures: its counters decide their fate); and, so that a rollout's
 * order stays that of a full plan, every machine of an assignment with maxParallel that has a machine
 * in the scope. Planning the scope then gives, for those machines, exactly the full plan's changes and
 * notes; a machine outside it has the same plan as before.
 */
export function affectedMachines(
  before: Fleet | undefined,
  after: Fleet,
  observedChanged: Iterable<string> = [],
  rollouts: Iterable<string> = [],
): Set<string> | 'all' {
  if (!before) return 'all';
  const scope = new Set<string>(observedChanged);

  const afterByMac = machinesByMac(after);
  // The same fleet (a round caused by the store alone): no machine changed in git.
  if (before !== after) {
    const changedAssignments = new Set<string>();
    for (const [name, a] of after.assignments) {
      if (!sameAssignment(before, before.assignments.get(name), after, a)) changedAssignments.add(name);
    }
    const beforeByMac = machinesByMac(before);
    let kept = 0;
    for (const m of after.machines) {
      const b = beforeByMac.get(m.mac);
      if (b) kept++;
      if (!b || !sameMachine(b, m) || (m.assignment !== undefined && changedAssignments.has(m.assignment))) scope.add(m.mac);
    }
    // Removed from git (to be retired). MACs are unique within a fleet: a count tells whether any left.
    if (kept < before.machines.length) {
      for (const m of before.machines) if (!afterByMac.has(m.mac)) scope.add(m.mac);
    }
  }

  // Whole assignments: those whose counters moved, and rollouts in order (maxParallel) with a machine in scope.
  const whole = new Set<string>();
  for (const name of rollouts) {
    const a = after.assignments.get(name);
    if (a && (a.maxParallel !== undefined || a.maxFailures !== undefined)) whole.add(name);
  }
  for (const mac of scope) {
    const name = afterByMac.get(mac)?.assignment;
    if (name !== undefined && !whole.has(name) && after.assignments.get(name)?.maxParallel !== undefined) whole.add(name);
  }
  if (whole.size > 0) {
    for (const m of after.machines) if (m.assignment !== undefined && whole.has(m.assignment)) scope.add(m.mac);
  }
  return scope;
}
