// The lifecycle phase a registered machine is in, given what git wants and what has happened.
import type { MachineRecord, Workflow } from '../schemas/types.js';

type Phase = MachineRecord['phase'];

export function phaseOf(
  rec: Pick<MachineRecord, 'installed' | 'desired'>,
  workflow: Pick<Workflow, 'state' | 'generation'> | undefined,
): Phase {
  if (workflow && (workflow.state === 'pending' || workflow.state === 'running')) return 'Provisioning';
  const desired = rec.desired;
  if (!desired) return 'Registered';
  const installed = rec.installed;
  if (installed && installed.template === desired.template && installed.generation >= desired.generation) return 'Ready';
  if (workflow && (workflow.state === 'failed' || workflow.state === 'timed-out') && workflow.generation >= desired.generation) {
    return 'Error';
  }
  return 'Assigned';
}
