// The machine lifecycle, once (DESIGN.md, "Lifecycle"): which workflow states are active or failed, the
// phase a registered machine is in, and the boot fate of a MAC. Pure functions of observed records; the
// planner, the boot server and the CLI all ask here.
import type { MachineRecord, Workflow } from './types.js';

type WorkflowState = Workflow['state'];

/** A workflow that a machine is (or is about to be) running: the machine is Provisioning. */
export function isActiveWorkflow(state: WorkflowState): boolean {
  return state === 'pending' || state === 'running';
}

/** A workflow that ended without installing anything. */
export function isFailedWorkflow(state: WorkflowState): boolean {
  return state === 'failed' || state === 'timed-out';
}

/** The lifecycle phase a registered machine is in, given what git wants and what has happened. */
export function phaseOf(
  rec: Pick<MachineRecord, 'installed' | 'desired'>,
  workflow: Pick<Workflow, 'state' | 'generation'> | undefined,
): MachineRecord['phase'] {
  if (workflow && isActiveWorkflow(workflow.state)) return 'Provisioning';
  const desired = rec.desired;
  if (!desired) return 'Registered';
  const installed = rec.installed;
  if (installed && installed.template === desired.template && installed.generation >= desired.generation) return 'Ready';
  if (workflow && isFailedWorkflow(workflow.state) && workflow.generation >= desired.generation) return 'Error';
  return 'Assigned';
}

export type BootFate =
  | { kind: 'discovery'; reason: string }
  | { kind: 'imaging'; workflow: string; reason: string }
  | { kind: 'localboot'; reason: string };

/** The boot fate of a MAC: what the iPXE script it gets does (docs/api.md, "Boot"). */
export function bootFateFor(rec: MachineRecord | undefined, workflow: Workflow | undefined): BootFate {
  if (!rec) return { kind: 'discovery', reason: 'unknown MAC: boot Mage to report the hardware' };
  if (rec.spec?.netboot === false) return { kind: 'localboot', reason: 'netboot: false' };
  if (workflow && workflow.mac === rec.mac && isActiveWorkflow(workflow.state)) {
    return { kind: 'imaging', workflow: workflow.id, reason: `workflow ${workflow.id} is ${workflow.state}` };
  }
  // Ready, or retired with an OS on its disk: boot that disk, so nothing is reimaged by accident.
  if (rec.phase === 'Ready' || (rec.installed && rec.phase === 'Retired')) {
    return { kind: 'localboot', reason: rec.phase === 'Ready' ? 'provisioned' : 'retired; its installed OS is left as it is' };
  }
  // Error keeps the machine in Mage: its disk may be half written, and Mage keeps reporting.
  return { kind: 'discovery', reason: `${rec.phase}: Mage reports and waits for a workflow` };
}
