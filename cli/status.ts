// `dragonfly status`: what the GitOps controller did last (from the store it shares with `serve`), and
// `dragonfly suspend` / `resume`, which pause and restart applying — also from another process.
import { isActiveWorkflow } from '../schemas/lifecycle.js';
import type { MachineRecord, Workflow } from '../schemas/types.js';
import type { ConditionCode, ControllerStatus } from '../reconciler/controller.js';
import { CONTROLLER_STATUS, CONTROLLER_SUSPENDED, MACHINES, WORKFLOWS } from '../store/keys.js';
import { openStore, readExistingStore } from './fleet.js';
import type { Io } from './output.js';

export const statusHelp = `Usage: dragonfly status [--state DIR] [--json]

What \`dragonfly serve --fleet/--repo\` last did: the controller's condition (a code such as Applied,
RevisionInvalid or Suspended: docs/status.md), the revision applied (commit SHA or content hash), the
newest revision seen and whether it failed validation (with file:line:col), changes that wait (manual
mode, suspended), running and failed workflows, and drift (hardware that disagrees with git, machines
seen on the network but not in git). Exit code 0; 1 when the newest revision is invalid or the last
round failed.
`;

export const suspendHelp = `Usage: dragonfly suspend [--state DIR] [--reason TEXT]
       dragonfly resume [--state DIR]

suspend: the controller of \`dragonfly serve\` on this state keeps validating and planning new revisions,
but applies nothing until \`dragonfly resume\`. Machines keep booting as the store says.
`;

interface SuspendedFlag {
  at: string;
  by: string;
  reason?: string;
}

export interface StatusReport {
  controller: ControllerStatus | null;
  suspended: SuspendedFlag | null;
  workflows: { running: { id: string; machine: string; template: string; state: string }[]; failed: { id: string; machine: string; error: string }[] };
  unmanaged: string[];
}

export async function statusReport(state: string | undefined): Promise<StatusReport> {
  return readExistingStore(
    state,
    (store) =>
      store.read((snap) => {
        const workflows = snap.list<Workflow>(WORKFLOWS).map((w) => w.value);
        const machines = snap.list<MachineRecord>(MACHINES).map((m) => m.value);
        return {
          controller: snap.get<ControllerStatus>(CONTROLLER_STATUS)?.value ?? null,
          suspended: snap.get<SuspendedFlag>(CONTROLLER_SUSPENDED)?.value ?? null,
          workflows: {
            running: workflows.filter((w) => isActiveWorkflow(w.state)).map((w) => ({ id: w.id, machine: w.machine, template: `${w.template}@${w.generation}`, state: w.state })),
            // Only the machine's current workflow: an old failure that a later run fixed is history, not status.
            failed: workflows
              .filter((w) => (w.state === 'failed' || w.state === 'timed-out') && machines.some((m) => m.workflow === w.id && m.phase === 'Error'))
              .map((w) => ({ id: w.id, machine: w.machine, error: w.error ?? w.state })),
          },
          unmanaged: machines.filter((m) => m.phase === 'Discovered').map((m) => `${m.memorableName} (${m.mac})`),
        };
      }),
    { controller: null, suspended: null, workflows: { running: [], failed: [] }, unmanaged: [] },
  );
}

/** The conditions `dragonfly status` exits 1 on. */
const FAILING: ReadonlySet<ConditionCode> = new Set(['RevisionInvalid', 'RevisionUnreadable', 'ApplyFailed']);

export async function statusCommand(opts: { state?: string; json?: boolean }, io: Io): Promise<number> {
  const r = await statusReport(opts.state);
  const c = r.controller;
  // A status written before conditions existed has none: judge it by what it recorded.
  const bad = c !== null && (c.condition ? FAILING.has(c.condition.code) : (c.seen !== undefined && !c.seen.valid) || c.error !== undefined);
  if (opts.json) {
    io.out(JSON.stringify(r, null, 2) + '\n');
    return bad ? 1 : 0;
  }
  const lines: string[] = [];
  if (!c) lines.push('No controller has run on this state (start `dragonfly serve --fleet DIR` or `--repo URL`).');
  else {
    lines.push(`Source:    ${c.source} (${c.mode}${r.suspended ? ', SUSPENDED' : ''})`);
    if (c.condition) lines.push(`Condition: ${c.condition.code} since ${c.condition.since}${c.condition.errorCodes ? ` (${c.condition.errorCodes.join(', ')})` : ''}`);
    lines.push(`Applied:   ${c.applied ? `${c.applied.revision}  at ${c.applied.at}${c.applied.author ? `  by ${c.applied.author}` : ''}${c.applied.summary ? `\n           ${c.applied.summary}` : ''}` : 'nothing yet'}`);
    if (c.seen) {
      const same = c.applied?.revision === c.seen.revision;
      lines.push(`Newest:    ${c.seen.revision}  at ${c.seen.at}${c.seen.author ? `  by ${c.seen.author}` : ''}${c.seen.subject ? `  "${c.seen.subject}"` : ''} — ${c.seen.valid ? (same ? 'applied' : 'valid') : 'INVALID: nothing is applied until a valid revision arrives'}`);
      for (const e of c.seen.errors) lines.push(`  ${e}`);
    }
    if (c.error) lines.push(`Last round failed: ${c.error}`);
    if (c.pending.lines.length > 0) {
      lines.push(`Pending (${r.suspended ? 'suspended: `dragonfly resume`' : 'manual: `dragonfly apply`'}): ${c.pending.summary}`);
      for (const l of c.pending.lines) lines.push(`  ${l}`);
    }
    const drift = c.notes.filter((n) => n.kind === 'drift');
    const waiting = c.notes.filter((n) => n.kind === 'deferred' || n.kind === 'blocked' || n.kind === 'failed');
    if (drift.length > 0) {
      lines.push('Drift:');
      for (const n of drift) lines.push(`  ${n.machine}: ${n.message}`);
    }
    if (waiting.length > 0) {
      lines.push('Deferred, blocked or failed:');
      for (const n of waiting) lines.push(`  ${n.machine}: ${n.kind}: ${n.message}`);
    }
    lines.push(`Updated:   ${c.updatedAt} (round ${c.rounds})`);
  }
  if (r.suspended) lines.push(`Suspended at ${r.suspended.at} by ${r.suspended.by}${r.suspended.reason ? `: ${r.suspended.reason}` : ''}`);
  lines.push(`Workflows: ${r.workflows.running.length} running or pending, ${r.workflows.failed.length} failed`);
  for (const w of r.workflows.running) lines.push(`  ${w.machine}: ${w.template} ${w.state} (${w.id})`);
  for (const w of r.workflows.failed) lines.push(`  ${w.machine}: FAILED ${w.error} (${w.id})`);
  if (r.unmanaged.length > 0) lines.push(`Seen but not in git: ${r.unmanaged.join(', ')}`);
  io.out(lines.join('\n') + '\n');
  return bad ? 1 : 0;
}

export async function suspendCommand(opts: { state?: string; reason?: string; resume: boolean }, io: Io): Promise<number> {
  const store = openStore(opts.state);
  try {
    if (opts.resume) {
      await store.commit({ delete: [CONTROLLER_SUSPENDED] });
      io.out('Resumed: the controller applies again.\n');
    } else {
      const flag: SuspendedFlag = { at: new Date().toISOString(), by: process.env.USER ?? 'unknown', ...(opts.reason ? { reason: opts.reason } : {}) };
      await store.commit({ put: [{ key: CONTROLLER_SUSPENDED, value: flag }] });
      io.out('Suspended: the controller validates and plans, but applies nothing until `dragonfly resume`.\n');
    }
    return 0;
  } finally {
    await store.close();
  }
}
