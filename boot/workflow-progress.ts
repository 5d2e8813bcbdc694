// A workflow's life as Mage reports it: claimed (pending → running), each action's progress, the finish
// (the machine Ready with what it installed, or Error); and the sweeper's or an admin's ending of it.
import { isDeepStrictEqual } from 'node:util';
import { isActiveWorkflow } from '../schemas/lifecycle.js';
import type { ActionReport, FinishReport, MachineRecord, Workflow } from '../schemas/types.js';
import { machineKey, workflowKey } from '../store/keys.js';
import type { Store } from '../store/store.js';
import { event, mutate } from './store-writes.js';

export class WorkflowStateError extends Error {
  constructor(readonly workflow: Workflow, message: string) {
    super(message);
  }
}


/** Someone else's Mage claimed the workflow first: the token alone is worth nothing now. */
export class WorkflowClaimedError extends Error {
  constructor(readonly workflow: Workflow) {
    super(`workflow ${workflow.id} was claimed by another Mage at ${workflow.claim?.at ?? '?'} (see the workflow.claimed event)`);
  }
}

/**
 * Mage claims its workflow (pending → running), binding it to the sha256 of a secret of its own and to the
 * address it claims from; every later call needs both. A workflow is claimed once: whoever claims first
 * wins (docs/security.md), and the claim is an event an operator sees.
 */
export async function claimWorkflow(store: Store, id: string, claim: { secretSha256: string; ip: string }, now = new Date()): Promise<Workflow | undefined> {
  return mutate(store, (snap) => {
    const wf = snap.get<Workflow>(workflowKey(id));
    if (!wf) return { result: undefined };
    if (!isActiveWorkflow(wf.value.state)) throw new WorkflowStateError(wf.value, `workflow ${id} is ${wf.value.state}`);
    // The same Mage asking again (its first answer was lost): the claim stands, answer it again.
    if (wf.value.claim && wf.value.claim.secretSha256 === claim.secretSha256 && wf.value.claim.ip === claim.ip) return { result: wf.value };
    if (wf.value.claim || wf.value.state !== 'pending') throw new WorkflowClaimedError(wf.value);
    const at = now.toISOString();
    const value: Workflow = { ...wf.value, state: 'running', startedAt: at, claim: { at, ip: claim.ip, secretSha256: claim.secretSha256 } };
    return {
      txn: {
        compare: [{ key: wf.key, modRevision: wf.modRevision }],
        put: [
          { key: wf.key, value },
          event(now, { type: 'workflow.claimed', workflow: id, mac: value.mac, machine: value.machine, ip: claim.ip, message: `claimed by the Mage at ${claim.ip}` }),
          event(now, { type: 'workflow.running', workflow: id, mac: value.mac, machine: value.machine, message: `${value.template}@${value.generation} started` }),
        ],
      },
      result: value,
    };
  });
}

/** Log lines an event keeps: the newest that fit, so a chatty (or hostile) action cannot fill the store. */
const EVENT_LOG_BYTES = 16 * 1024;

function boundedLog(lines: string[]): string[] {
  const kept: string[] = [];
  let bytes = 0;
  for (let i = lines.length - 1; i >= 0; i--) {
    bytes += lines[i]!.length + 1;
    if (bytes > EVENT_LOG_BYTES) {
      kept.unshift(`… ${i + 1} earlier line${i === 0 ? '' : 's'} not kept`);
      break;
    }
    kept.unshift(lines[i]!);
  }
  return kept;
}

/** Progress of one action. A report for an ended workflow is refused: a late Mage never resurrects it. */
export async function reportAction(store: Store, id: string, index: number, report: ActionReport, now = new Date()): Promise<Workflow | undefined> {
  return mutate(store, (snap) => {
    const wf = snap.get<Workflow>(workflowKey(id));
    if (!wf) return { result: undefined };
    if (!isActiveWorkflow(wf.value.state)) throw new WorkflowStateError(wf.value, `workflow ${id} is ${wf.value.state}`);
    const action = wf.value.actions[index];
    if (!action) throw new WorkflowStateError(wf.value, `workflow ${id} has no action ${index}`);
    const actions = wf.value.actions.map((a, i) =>
      i === index
        ? {
            ...a,
            state: report.state,
            ...(report.percent !== undefined ? { percent: report.percent } : {}),
            ...(report.bytes !== undefined ? { bytes: report.bytes } : {}),
            ...(report.message !== undefined ? { message: report.message } : {}),
          }
        : a,
    );
    const value: Workflow = { ...wf.value, state: 'running', startedAt: wf.value.startedAt ?? now.toISOString(), actions };
    const put = [{ key: wf.key, value }];
    // Progress is frequent: only state changes and log lines become events.
    if (report.state !== action.state || (report.log?.length ?? 0) > 0) {
      put.push(
        event(now, {
          type: 'workflow.action',
          workflow: id,
          mac: value.mac,
          machine: value.machine,
          action: action.action,
          index,
          state: report.state,
          ...(report.percent !== undefined ? { percent: report.percent } : {}),
          ...(report.rate !== undefined ? { rate: report.rate } : {}),
          message: report.message ?? `${action.action} ${report.state}`,
          ...(report.log?.length ? { log: boundedLog(report.log) } : {}),
        }) as { key: string; value: Workflow },
      );
    }
    return { txn: { compare: [{ key: wf.key, modRevision: wf.modRevision }], put }, result: value };
  });
}

/** The end of a workflow: the machine becomes Ready with what it installed, or goes to Error. */
export async function finishWorkflow(
  store: Store,
  id: string,
  report: FinishReport | { state: 'timed-out'; error: string },
  now = new Date(),
  /** Only finish it if this still holds when the transaction runs (the sweeper re-checks its deadline). */
  condition: (wf: Workflow) => boolean = () => true,
): Promise<Workflow | undefined> {
  return mutate(store, (snap) => {
    const wf = snap.get<Workflow>(workflowKey(id));
    if (!wf) return { result: undefined };
    if (!isActiveWorkflow(wf.value.state)) throw new WorkflowStateError(wf.value, `workflow ${id} is ${wf.value.state}`);
    if (!condition(wf.value)) return { result: wf.value };
    const at = now.toISOString();
    const value: Workflow = {
      ...wf.value,
      state: report.state,
      finishedAt: at,
      ...(report.error ? { error: report.error } : {}),
      ...('code' in report && report.code ? { errorCode: report.code } : {}),
    };
    const rec = snap.get<MachineRecord>(machineKey(value.mac));
    const compare = [{ key: wf.key, modRevision: wf.modRevision }];
    const put: { key: string; value: unknown }[] = [{ key: wf.key, value }];
    if (rec && rec.value.workflow === id) {
      const next: MachineRecord =
        report.state === 'succeeded'
          ? {
              ...rec.value,
              phase: 'Ready',
              installed: { template: value.template, generation: value.generation, ...(value.image ? { imageSha256: value.image.sha256 } : {}), at },
            }
          : { ...rec.value, phase: 'Error', error: report.error ?? 'workflow failed', ...('code' in report && report.code ? { errorCode: report.code } : {}) };
      if (report.state === 'succeeded') delete next.error;
      if (report.state === 'succeeded' || !('code' in report && report.code)) delete next.errorCode;
      // The claimant's report of what the workflow left: the one report that replaces the stored hardware.
      if ('hardware' in report && report.hardware) {
        if (!isDeepStrictEqual(rec.value.hardware, report.hardware)) {
          put.push(event(now, { type: 'machine.hardware', mac: value.mac, machine: value.machine, verified: true, message: `${report.hardware.disks.length} disks, ${report.hardware.nics.length} NICs, reported by the Mage that ran ${id}` }));
        }
        next.hardware = report.hardware;
        next.hardwareVerified = true;
        delete next.unverifiedHardware;
      }
      put.push({ key: rec.key, value: next });
      compare.push({ key: rec.key, modRevision: rec.modRevision });
    }
    put.push(
      event(now, {
        type: `workflow.${report.state}`,
        workflow: id,
        mac: value.mac,
        machine: value.machine,
        message: report.state === 'succeeded' ? `${value.template}@${value.generation} installed` : `${report.state}: ${report.error ?? 'no reason given'}`,
      }),
    );
    return { txn: { compare, put }, result: value };
  });
}
