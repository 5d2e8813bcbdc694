// The boot fate of a MAC: a pure function of what the store says about it (DESIGN.md, Lifecycle).
import type { MachineRecord, Workflow } from '../schemas/types.js';

export type BootFate =
  | { kind: 'discovery'; reason: string }
  | { kind: 'imaging'; workflow: string; reason: string }
  | { kind: 'localboot'; reason: string };

export function bootFateFor(rec: MachineRecord | undefined, workflow: Workflow | undefined): BootFate {
  if (!rec) return { kind: 'discovery', reason: 'unknown MAC: boot Mage to report the hardware' };
  if (rec.spec?.netboot === false) return { kind: 'localboot', reason: 'netboot: false' };
  if (workflow && workflow.mac === rec.mac && (workflow.state === 'pending' || workflow.state === 'running')) {
    return { kind: 'imaging', workflow: workflow.id, reason: `workflow ${workflow.id} is ${workflow.state}` };
  }
  // Ready, or retired with an OS on its disk: boot that disk, so nothing is reimaged by accident.
  if (rec.phase === 'Ready' || (rec.installed && rec.phase === 'Retired')) {
    return { kind: 'localboot', reason: rec.phase === 'Ready' ? 'provisioned' : 'retired; its installed OS is left as it is' };
  }
  // Error keeps the machine in Mage: its disk may be half written, and Mage keeps reporting.
  return { kind: 'discovery', reason: `${rec.phase}: Mage reports and waits for a workflow` };
}
