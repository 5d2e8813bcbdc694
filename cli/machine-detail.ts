// `dragonfly machines NAME|MAC|MEMORABLE-NAME`: one machine in full — identity, hardware report (and an
// unverified one), boot fate and why, desired vs installed, its workflow with per-action progress, power,
// and its recent events. Read from the state store, as the other read-only commands are.
import { bootFateFor } from '../schemas/lifecycle.js';
import { SEEN, type SeenRecord } from '../boot/observe.js';
import { DragonflyError } from '../schemas/errors.js';
import { normalizeMac } from '../schemas/mac.js';
import type { Disk, HardwareReport, MachineRecord, Workflow } from '../schemas/types.js';
import { EVENTS, MACHINES, WORKFLOWS } from '../store/keys.js';
import type { Snapshot } from '../store/store.js';
import { readExistingStore } from './fleet.js';
import type { Io } from './output.js';

/** Events shown per machine: the most recent ones. */
const RECENT_EVENTS = 10;

export interface MachineEvent {
  at: string;
  type: string;
  message: string;
}

export interface MachineDetail {
  name: string;
  memorableName: string;
  mac: string;
  phase: MachineRecord['phase'];
  labels: Record<string, string>;
  source: MachineRecord['source'];
  firstSeen: string | null;
  lastSeen: string | null;
  lastSeenFrom: string | null;
  bootFate: { kind: string; reason: string };
  desired: string | null;
  installed: string | null;
  installedAt: string | null;
  error: string | null;
  errorCode: string | null;
  power: { observed: string | null; intent: string | null };
  hardware: (HardwareReport & { verified: boolean }) | null;
  unverifiedHardware: { at: string; ip: string | null; hardware: HardwareReport } | null;
  workflow: (Pick<Workflow, 'id' | 'state' | 'template' | 'generation' | 'disk' | 'createdAt'> & {
    startedAt: string | null;
    finishedAt: string | null;
    error: string | null;
    claimedFrom: string | null;
    actions: { action: string; state: string; percent: number | null; message: string | null }[];
  }) | null;
  events: MachineEvent[];
}

/** The record a user named: its name in git, its memorable name, or a boot MAC in any notation. */
function findRecord(snap: Snapshot, query: string): MachineRecord | undefined {
  const mac = normalizeMac(query);
  if (mac) return snap.get<MachineRecord>(MACHINES + mac)?.value;
  const lower = query.toLowerCase();
  return snap.list<MachineRecord>(MACHINES).find((r) => r.value.name === query || r.value.memorableName.toLowerCase() === lower)?.value;
}

export function machineDetail(snap: Snapshot, query: string): MachineDetail | undefined {
  const rec = findRecord(snap, query);
  if (!rec) return undefined;
  const wf = rec.workflow ? snap.get<Workflow>(WORKFLOWS + rec.workflow)?.value : undefined;
  const seen = snap.get<SeenRecord>(SEEN + rec.mac)?.value;
  const fate = bootFateFor(rec, wf);
  // Events are keyed by time: walk them newest first and keep this machine's.
  const all = snap.list<{ at: string; type: string; mac?: string; message?: string }>(EVENTS);
  const events: MachineEvent[] = [];
  for (let i = all.length - 1; i >= 0 && events.length < RECENT_EVENTS; i--) {
    const e = all[i]!.value;
    if (e.mac === rec.mac) events.push({ at: e.at, type: e.type, message: e.message ?? '' });
  }
  return {
    name: rec.name ?? rec.memorableName,
    memorableName: rec.memorableName,
    mac: rec.mac,
    phase: rec.phase,
    labels: rec.labels ?? {},
    source: rec.source,
    firstSeen: seen?.firstSeen ?? rec.firstSeen ?? null,
    lastSeen: seen?.lastSeen ?? rec.lastSeen ?? null,
    lastSeenFrom: seen?.ip ?? null,
    bootFate: { kind: fate.kind, reason: fate.reason },
    desired: rec.desired ? `${rec.desired.template}@${rec.desired.generation}` : null,
    installed: rec.installed ? `${rec.installed.template}@${rec.installed.generation}` : null,
    installedAt: rec.installed?.at ?? null,
    error: rec.error ?? null,
    errorCode: rec.errorCode ?? null,
    power: { observed: rec.observedPower ?? null, intent: rec.powerIntent ? `${rec.powerIntent.to} (asked ${rec.powerIntent.at})` : null },
    hardware: rec.hardware ? { ...rec.hardware, verified: rec.hardwareVerified ?? false } : null,
    unverifiedHardware: rec.unverifiedHardware ? { at: rec.unverifiedHardware.at, ip: rec.unverifiedHardware.ip ?? null, hardware: rec.unverifiedHardware.hardware } : null,
    workflow: wf
      ? {
          id: wf.id,
          state: wf.state,
          template: wf.template,
          generation: wf.generation,
          ...(wf.disk ? { disk: wf.disk } : {}),
          createdAt: wf.createdAt,
          startedAt: wf.startedAt ?? null,
          finishedAt: wf.finishedAt ?? null,
          error: wf.error ?? null,
          claimedFrom: wf.claim?.ip ?? null,
          actions: wf.actions.map((a) => ({ action: a.action, state: a.state, percent: a.percent ?? null, message: a.message ?? null })),
        }
      : null,
    events: events.reverse(),
  };
}

const GB = 1e9;
const size = (bytes: number) => (bytes >= 1e12 ? `${(bytes / 1e12).toFixed(1)} TB` : `${(bytes / GB).toFixed(1)} GB`);

function diskLine(d: Disk): string {
  const what = [size(d.sizeBytes), d.rotational ? 'rotational' : 'solid-state', d.transport, d.model, d.serial && `serial ${d.serial}`, d.wwn && `wwn ${d.wwn}`].filter(Boolean).join(', ');
  const parts = d.partitions?.length ? `; ${d.partitions.map((p) => `${p.name}${p.fstype ? ` ${p.fstype}` : ''}${p.label ? ` "${p.label}"` : ''}`).join(', ')}` : d.fstype ? `; ${d.fstype} on the whole disk` : '';
  const table = d.table === 'none' ? ', no partition table' : d.table ? `, ${d.table}` : '';
  return `    ${d.path ?? `/dev/${d.name}`}  ${what}${table}${parts}`;
}

function hardwareLines(hw: HardwareReport): string[] {
  const lines: string[] = [];
  if (hw.cpu?.model || hw.memoryBytes) lines.push(`    ${[hw.cpu?.model, hw.cpu?.threads && `${hw.cpu.threads} threads`, hw.memoryBytes && `${(hw.memoryBytes / 2 ** 30).toFixed(1)} GiB RAM`].filter(Boolean).join(', ')}`);
  if (hw.dmi?.vendor || hw.dmi?.product) lines.push(`    ${[hw.dmi.vendor, hw.dmi.product, hw.dmi.serial && `serial ${hw.dmi.serial}`].filter(Boolean).join(' ')}`);
  for (const d of hw.disks) lines.push(diskLine(d));
  for (const n of hw.nics) lines.push(`    ${n.name ?? '?'}  ${n.mac}${n.link ? ', link up' : ''}${n.speedMbps ? `, ${n.speedMbps} Mb/s` : ''}${n.driver ? `, ${n.driver}` : ''}`);
  return lines;
}

export function renderMachineDetail(m: MachineDetail): string {
  const out: string[] = [];
  out.push(`${m.name} (${m.memorableName})  ${m.mac}`);
  out.push(`  phase:      ${m.phase}${m.error ? ` — ${m.error}${m.errorCode ? ` (${m.errorCode})` : ''}` : ''}`);
  if (Object.keys(m.labels).length) out.push(`  labels:     ${Object.entries(m.labels).sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, v]) => `${k}=${v}`).join(', ')}`);
  out.push(`  boot fate:  ${m.bootFate.kind} (${m.bootFate.reason})`);
  out.push(`  desired:    ${m.desired ?? '-'}`);
  out.push(`  installed:  ${m.installed ?? '-'}${m.installedAt ? ` at ${m.installedAt}` : ''}`);
  out.push(`  seen:       ${m.lastSeen ? `${m.lastSeen}${m.lastSeenFrom ? ` from ${m.lastSeenFrom}` : ''} (first ${m.firstSeen})` : 'never'}; recorded by ${m.source}`);
  out.push(`  power:      ${m.power.observed ?? 'not observed'}${m.power.intent ? `; asked ${m.power.intent}` : ''}`);
  if (m.workflow) {
    const w = m.workflow;
    out.push(`  workflow:   ${w.id} ${w.template}@${w.generation} ${w.state}${w.disk ? ` on ${w.disk}` : ''}${w.claimedFrom ? `, claimed from ${w.claimedFrom}` : ''}${w.error ? ` — ${w.error}` : ''}`);
    for (const [i, a] of w.actions.entries()) {
      const pct = a.percent !== null ? a.percent : a.state === 'succeeded' ? 100 : 0;
      const bar = '#'.repeat(Math.round(pct / 5)).padEnd(20, '.');
      out.push(`    ${i + 1}. ${a.action.padEnd(10)} [${bar}] ${String(Math.round(pct)).padStart(3)}% ${a.state}${a.message ? `  ${a.message}` : ''}`);
    }
  } else out.push('  workflow:   none');
  if (m.hardware) {
    out.push(`  hardware${m.hardware.verified ? ' (verified: reported at the finish of a claimed workflow)' : ' (first report, not yet verified by a claimed workflow)'}:`);
    out.push(...hardwareLines(m.hardware));
  } else out.push('  hardware:   not reported yet (PXE boot the machine so Mage reports it)');
  if (m.unverifiedHardware) {
    out.push(`  unverified hardware report from ${m.unverifiedHardware.ip ?? 'an unknown address'} at ${m.unverifiedHardware.at} (drift; never used for planning):`);
    out.push(...hardwareLines(m.unverifiedHardware.hardware));
  }
  out.push(m.events.length ? '  recent events:' : '  recent events: none');
  for (const e of m.events) out.push(`    ${e.at} ${e.type}: ${e.message}`);
  return out.join('\n') + '\n';
}

export async function machineDetailCommand(opts: { state?: string; json?: boolean; query: string }, io: Io): Promise<number> {
  const detail = await readExistingStore(opts.state, (store) => store.read((snap) => machineDetail(snap, opts.query)), undefined);
  if (!detail) throw new DragonflyError('DF_ERR_NOT_FOUND', `no machine named ${JSON.stringify(opts.query)} in the store (a name, a memorable name, or a boot MAC)`, {}, 'list the machines with `dragonfly machines`');
  io.out(opts.json ? JSON.stringify(detail, null, 2) + '\n' : renderMachineDetail(detail));
  return 0;
}
