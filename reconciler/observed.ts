// The observed state the planner reads: every machine record and workflow, at one store revision.
import { createHash } from 'node:crypto';
import type { MachineRecord, Workflow } from '../schemas/types.js';
import type { Snapshot, Store, Versioned } from '../store/store.js';
import { MACHINES, WORKFLOWS } from '../store/keys.js';

export interface Observed {
  revision: number;
  /** By normalised boot MAC. */
  machines: Map<string, Versioned<MachineRecord>>;
  /** By workflow id. */
  workflows: Map<string, Versioned<Workflow>>;
}

export function observedFrom(snap: Snapshot): Observed {
  return {
    revision: snap.revision,
    machines: new Map(snap.list<MachineRecord>(MACHINES).map((r) => [r.value.mac, r])),
    workflows: new Map(snap.list<Workflow>(WORKFLOWS).map((r) => [r.value.id, r])),
  };
}

export function readObserved(store: Store): Promise<Observed> {
  return store.read(observedFrom);
}

export function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/**
 * What a plan relied on for one machine: the revision of its record and the state of its current
 * workflow; 'absent' when the store has no record. Writers keep volatile data (seen-times, progress)
 * out of the machine record, so a PXE request or a progress report does not make saved plans stale.
 */
export function fingerprint(observed: Observed, mac: string): string {
  const rec = observed.machines.get(mac);
  if (!rec) return 'absent';
  const wfId = rec.value.workflow;
  const wf = wfId ? observed.workflows.get(wfId)?.value : undefined;
  return wf ? `${rec.modRevision}:${wf.id}:${wf.state}` : String(rec.modRevision);
}
