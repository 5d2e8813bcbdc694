import type { MachineRecord, Workflow } from '../schemas/types.js';
import type { Observed } from '../reconciler/observed.js';
import { readObservedIfAny } from './fleet.js';
import type { Io } from './output.js';
import { table } from './table.js';

export const machinesHelp = `Usage: dragonfly machines [NAME|MAC|MEMORABLE-NAME] [--state DIR] [--json]

Machines in the state store: name, memorable name, boot MAC, phase, template@generation (installed, or
desired → when it differs), and when the machine was last seen on the network.

With a machine (its name, its memorable name, or a boot MAC in any notation): that machine in full — its
hardware report (and any unverified one, which plans never use), its boot fate and why, desired vs
installed, its workflow with per-action progress and who claimed it, power, and its recent events.
`;

export interface MachineRow {
  name: string;
  memorableName: string;
  mac: string;
  phase: MachineRecord['phase'];
  template: string | null;
  installed: string | null;
  desired: string | null;
  workflow: { id: string; state: Workflow['state'] } | null;
  lastSeen: string | null;
}

export function machineRows(observed: Observed): MachineRow[] {
  return [...observed.machines.values()]
    .map(({ value: r }) => {
      const installed = r.installed ? `${r.installed.template}@${r.installed.generation}` : null;
      const desired = r.desired ? `${r.desired.template}@${r.desired.generation}` : null;
      const wf = r.workflow ? observed.workflows.get(r.workflow)?.value : undefined;
      return {
        name: r.name ?? r.memorableName,
        memorableName: r.memorableName,
        mac: r.mac,
        phase: r.phase,
        template: installed && desired && installed !== desired ? `${installed} → ${desired}` : (installed ?? desired),
        installed,
        desired,
        workflow: wf ? { id: wf.id, state: wf.state } : null,
        lastSeen: r.lastSeen ?? null,
      };
    })
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

export async function machinesCommand(opts: { state?: string; json?: boolean }, io: Io): Promise<number> {
  const rows = machineRows(await readObservedIfAny(opts.state));
  if (opts.json) {
    io.out(JSON.stringify(rows, null, 2) + '\n');
    return 0;
  }
  if (rows.length === 0) {
    io.out('No machines in the store yet. Apply a fleet, or PXE boot a machine against `dragonfly serve`.\n');
    return 0;
  }
  io.out(
    table(
      ['NAME', 'MEMORABLE NAME', 'MAC', 'PHASE', 'TEMPLATE', 'LAST SEEN'],
      rows.map((r) => [r.name, r.memorableName, r.mac, r.phase, r.template ?? '-', r.lastSeen ?? 'never']),
    ),
  );
  return 0;
}
