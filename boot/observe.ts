// What the boot server learns of machines: sightings on the network (PXE, Mage) and hardware reports.
// Workflow progress is workflow-progress.ts.
import { isDeepStrictEqual } from 'node:util';
import { memorableName, memorableNameWithSuffix } from '../schemas/memorable-name.js';
import type { HardwareReport, MachineRecord } from '../schemas/types.js';
import { machineKey } from '../store/keys.js';
import type { Snapshot, Store } from '../store/store.js';
import { event, mutate } from './store-writes.js';

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
