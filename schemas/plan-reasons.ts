// The plan's reason codes and the prose people read for each: one table, as errors.ts is for error codes.
// The planner decides a code and the facts behind it; the words are written here, from those alone, so a
// bot switches on `code` and a person reads `reason` / `message` (docs/plan-json.md lists every code).
import type { Change, ChangeCode, Note, NoteCode, TemplateAtGeneration } from './types.js';
import plan from './plan.schema.json' with { type: 'json' };

export const CHANGE_CODES = plan.$defs.ChangeCode.enum as readonly ChangeCode[];
export const NOTE_CODES = plan.$defs.NoteCode.enum as readonly NoteCode[];

/** The one action each change code is planned with. */
export const CHANGE_ACTION: Record<ChangeCode, Change['action']> = {
  'declared-unseen': 'register',
  'declared-after-discovery': 'register',
  'declared-after-retirement': 'register',
  'git-changed': 'update',
  'power-differs': 'power',
  'first-install': 'provision',
  'first-install-over-data': 'reimage',
  'generation-bumped': 'reimage',
  'removed-from-git': 'retire',
};

/** The one kind each note code is shown under. */
export const NOTE_KIND: Record<NoteCode, Note['kind']> = {
  'awaiting-discovery': 'waiting-discovery',
  'workflow-active': 'in-progress',
  'power-requested': 'in-progress',
  'max-parallel-reached': 'deferred',
  'netboot-disabled': 'blocked',
  'install-disk-not-reported': 'blocked',
  'no-install-disk': 'blocked',
  'machine-protected': 'blocked',
  'max-failures-reached': 'blocked',
  'workflow-failed': 'failed',
  'disk-not-reported': 'drift',
  'nic-not-reported': 'drift',
  'unverified-hardware': 'drift',
  'installed-template-differs': 'drift',
  'not-in-git': 'unmanaged',
};

function at(t: TemplateAtGeneration | undefined): string {
  return t ? `${t.template}@${t.generation}` : '?';
}

/** A change's `reason`: written from its code, its facts and the fields it carries (diff, workflow, power). */
export function changeReason(c: Omit<Change, 'reason'>): string {
  const f = c.facts ?? {};
  const cancels = f.cancels ? `; cancels workflow ${f.cancels.id} (${at(f.cancels)}), which has not started` : '';
  switch (c.code) {
    case 'declared-unseen':
      return 'declared in git; not seen on the network yet';
    case 'declared-after-discovery':
      return `seen by ${f.seen?.source ?? '?'} at ${f.seen?.at ?? 'an earlier boot'}; now declared in git`;
    case 'declared-after-retirement':
      return 'declared in git again after being retired';
    case 'git-changed':
      return `git changed ${(c.diff ?? []).map((d) => d.path).join(', ')}${cancels}`;
    case 'power-differs':
      return `power is ${c.power?.from ?? '?'}; git asks ${c.power?.to ?? '?'}`;
    case 'first-install':
      return `first install of ${at(c.workflow)}`;
    case 'first-install-over-data':
      return 'first install over a disk that already holds data';
    case 'generation-bumped':
      return `generation ${c.workflow?.generation ?? '?'} > installed ${f.installed?.generation ?? '?'} (${f.installed?.template ?? '?'})`;
    case 'removed-from-git':
      return `removed from git; its disks are left as they are (never wiped)${cancels}`;
  }
}

/** A note's `message`: written from its code, its facts and its machine. */
export function noteMessage(n: Omit<Note, 'message'>): string {
  const f = n.facts ?? {};
  const wanted = at(f.wanted);
  const w = f.workflow;
  const r = f.rollout;
  switch (n.code) {
    case 'awaiting-discovery':
      return `${wanted} waits for discovery: PXE boot the machine so Mage can report its disks`;
    case 'workflow-active':
      return `workflow ${w?.id ?? '?'} (${at(w)}) is ${w?.state ?? '?'}`;
    case 'power-requested':
      return `power ${f.power?.to ?? '?'} requested at ${f.power?.at ?? '?'}; the driver still reports ${f.power?.observed ?? '?'}`;
    case 'max-parallel-reached':
      return `${wanted} deferred: rollout of "${r?.assignment ?? '?'}" runs at most ${r?.maxParallel ?? '?'} at once`;
    case 'netboot-disabled':
      return `${wanted} needs a network boot, but the machine has netboot: false`;
    case 'install-disk-not-reported':
      return `${wanted} not started: spec.disk ${f.disk ?? '?'} was not reported by Mage, and Dragonfly never writes to a disk it has not seen`;
    case 'no-install-disk':
      return 'no install disk: none of the reported disks is fixed, non-USB and large enough; set spec.disk';
    case 'machine-protected':
      return `${wanted} needs a reimage, but the machine is protected: true`;
    case 'max-failures-reached':
      return `rollout of "${r?.assignment ?? '?'}" stopped: ${r?.failures ?? '?'} workflows failed at generation ${f.wanted?.generation ?? '?'} (maxFailures ${r?.maxFailures ?? '?'})`;
    case 'workflow-failed':
      return `workflow ${w?.id ?? '?'} ${w?.state ?? 'failed'}${w?.error ? `: ${w.error}` : ''}; bump the assignment's generation to retry`;
    case 'disk-not-reported':
      return `spec.disk ${f.disk ?? '?'} is not among the disks Mage reported (${f.reportedDisks?.join(', ') || 'none'})`;
    case 'nic-not-reported':
      return `NIC ${f.nic ?? '?'} from spec.macs was not in the hardware report`;
    case 'unverified-hardware': {
      const u = f.unverified;
      return `an unverified hardware report (${u?.disks ?? '?'} disks, from ${u?.ip ?? 'an unknown address'} at ${u?.at ?? '?'}) differs from the stored one; plans use the stored one until a Mage that claimed a workflow reports`;
    }
    case 'installed-template-differs':
      return `installed ${at(f.installed)}, git asks ${wanted}; bump the assignment's generation above ${f.installed?.generation ?? '?'} to reimage`;
    case 'not-in-git':
      return `seen by ${f.seen?.source ?? '?'} but not in git; add a Machine with mac ${n.machine?.mac ?? '?'} to manage it`;
  }
}
