// What the boot server writes to the store: machines seen on the network, hardware reports, workflow
// progress. Each write is an optimistic transaction retried on conflict, so several servers (or a
// server and a CLI apply) can share a store.
import { isDeepStrictEqual } from 'node:util';
import { memorableName, memorableNameWithSuffix } from '../schemas/memorable-name.js';
import type { ActionReport, FinishReport, HardwareReport, MachineRecord, Workflow } from '../schemas/types.js';
import { EVENTS, logKeys, machineKey, workflowKey } from '../store/keys.js';
import type { Snapshot, Store, Txn } from '../store/store.js';

export const SEEN = 'seen/';
export const seenKey = (mac: string) => SEEN + mac;

/** Seen-times and what iPXE said about itself; apart from the machine record so plans do not go stale. */
export interface SeenRecord {
  mac: string;
  firstSeen: string;
  lastSeen: string;
  source: 'pxe' | 'agent';
  ip?: string;
  arch?: string;
  platform?: string;
  uuid?: string;
}

export class ConflictError extends Error {}

/** Run `build` against a fresh snapshot and commit what it returns; retry when another writer won. */
export async function mutate<T>(store: Store, build: (snap: Snapshot) => { txn?: Txn; result: T }, attempts = 8): Promise<T> {
  for (let i = 0; i < attempts; i++) {
    const { txn, result } = await store.read(build);
    if (!txn) return result;
    const r = await store.commit(txn);
    if (r.ok) return result;
  }
  throw new ConflictError('the store kept changing under this write');
}

/**
 * The name comes from the low 44 bits of the MAC, so only the 15 MACs that differ in the top 4 bits can
 * hold the same one: 15 lookups, not a scan of every machine (which cost 123 ms per new MAC at 50,000).
 */
function uniqueMemorableName(snap: Snapshot, mac: string): string {
  const base = memorableName(mac)!;
  const taken = Array.from({ length: 16 }, (_, d) => d.toString(16) + mac.slice(1)).some(
    (other) => other !== mac && snap.get<MachineRecord>(machineKey(other))?.value.memorableName === base,
  );
  return taken ? memorableNameWithSuffix(mac)! : base;
}

function event(at: Date, value: Record<string, unknown>): { key: string; value: unknown } {
  return { key: logKeys(EVENTS, at, 1)[0]!, value: { at: at.toISOString(), ...value } };
}

/**
 * A machine was seen (a PXE request, an agent report). An unknown MAC becomes a Discovered machine at
 * once, with its memorable name; `createAllowed: false` (a flood from one source) only refreshes seen-times.
 */
export async function recordSeen(
  store: Store,
  mac: string,
  info: Omit<SeenRecord, 'mac' | 'firstSeen' | 'lastSeen'>,
  opts: { now?: Date; createAllowed?: boolean } = {},
): Promise<{ created: boolean; record?: MachineRecord }> {
  const at = opts.now ?? new Date();
  const now = at.toISOString();
  return mutate(store, (snap) => {
    const rec = snap.get<MachineRecord>(machineKey(mac));
    const seen = snap.get<SeenRecord>(seenKey(mac));
    const nextSeen: SeenRecord = { ...(seen?.value ?? { firstSeen: now }), ...info, mac, lastSeen: now };
    const put: { key: string; value: unknown }[] = [{ key: seenKey(mac), value: nextSeen }];
    const compare = [{ key: seenKey(mac), modRevision: seen?.modRevision ?? 0 }];
    let created: MachineRecord | undefined;
    if (!rec && opts.createAllowed !== false) {
      created = { mac, memorableName: uniqueMemorableName(snap, mac), phase: 'Discovered', source: info.source };
      put.push({ key: machineKey(mac), value: created }, event(at, { type: 'machine.discovered', mac, machine: created.memorableName, message: `seen by ${info.source}${info.ip ? ` from ${info.ip}` : ''}` }));
      compare.push({ key: machineKey(mac), modRevision: 0 });
    }
    return { txn: { compare, put }, result: { created: created !== undefined, record: created ?? rec?.value } };
  });
}

/**
 * Mage's hardware report at registration, which anyone on the boot network can send. The first report of a
 * machine is stored as its hardware (trusted on first use: before it, nothing is known at all). After that
 * a report that differs is kept apart as `unverifiedHardware`, shown as drift and never used for planning;
 * only the finish of a claimed workflow replaces the stored hardware (finishWorkflow). An unverified report
 * makes an event at most once per UNVERIFIED_EVENT_MS per machine: alternating forgeries must not fill the log.
 */
export async function recordHardware(store: Store, mac: string, hardware: HardwareReport, ip: string | undefined, now = new Date()): Promise<MachineRecord> {
  await recordSeen(store, mac, { source: 'agent', ...(ip ? { ip } : {}) }, { now });
  return mutate(store, (snap) => {
    const rec = snap.get<MachineRecord>(machineKey(mac))!;
    const name = rec.value.name ?? rec.value.memorableName;
    if (rec.value.hardware === undefined) {
      const value: MachineRecord = { ...rec.value, hardware, hardwareVerified: false };
      return {
        txn: {
          compare: [{ key: rec.key, modRevision: rec.modRevision }],
          put: [{ key: rec.key, value }, event(now, { type: 'machine.hardware', mac, machine: name, verified: false, message: `${hardware.disks.length} disks, ${hardware.nics.length} NICs` })],
        },
        result: value,
      };
    }
    if (isDeepStrictEqual(rec.value.hardware, hardware) || isDeepStrictEqual(rec.value.unverifiedHardware?.hardware, hardware)) return { result: rec.value };
    const prior = rec.value.unverifiedHardware;
    const value: MachineRecord = { ...rec.value, unverifiedHardware: { hardware, at: now.toISOString(), ...(ip ? { ip } : {}) } };
    const put: { key: string; value: unknown }[] = [{ key: rec.key, value }];
    if (!prior || now.getTime() - Date.parse(prior.at) >= UNVERIFIED_EVENT_MS) {
      put.push(
        event(now, {
          type: 'machine.hardware-unverified',
          mac,
          machine: name,
          ...(ip ? { ip } : {}),
          message: `a hardware report from ${ip ?? 'an unknown address'} differs from the stored one and comes from no claimed workflow: kept apart, not used for planning`,
        }),
      );
    }
    return { txn: { compare: [{ key: rec.key, modRevision: rec.modRevision }], put }, result: value };
  });
}

/** An unverified report becomes an event at most this often per machine (the record still shows the newest). */
const UNVERIFIED_EVENT_MS = 10 * 60_000;

export class WorkflowStateError extends Error {
  constructor(readonly workflow: Workflow, message: string) {
    super(message);
  }
}

const ACTIVE = new Set<Workflow['state']>(['pending', 'running']);

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
    if (!ACTIVE.has(wf.value.state)) throw new WorkflowStateError(wf.value, `workflow ${id} is ${wf.value.state}`);
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
    if (!ACTIVE.has(wf.value.state)) throw new WorkflowStateError(wf.value, `workflow ${id} is ${wf.value.state}`);
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
    if (!ACTIVE.has(wf.value.state)) throw new WorkflowStateError(wf.value, `workflow ${id} is ${wf.value.state}`);
    if (!condition(wf.value)) return { result: wf.value };
    const at = now.toISOString();
    const value: Workflow = {
      ...wf.value,
      state: report.state,
      finishedAt: at,
      ...(report.error ? { error: report.error } : {}),
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
          : { ...rec.value, phase: 'Error', error: report.error ?? 'workflow failed' };
      if (report.state === 'succeeded') delete next.error;
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
