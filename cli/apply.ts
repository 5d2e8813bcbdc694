import fs from 'node:fs';
import os from 'node:os';
import readline from 'node:readline';
import { DragonflyError } from '../schemas/errors.js';
import { validateAgainst } from '../schemas/validate.js';
import type { Plan } from '../schemas/types.js';
import { applyPlan } from '../reconciler/apply.js';
import { readObserved } from '../reconciler/observed.js';
import { PLAN_FORMAT_VERSION, planFleet } from '../reconciler/plan.js';
import { renderPlanText, summaryLine, NO_CHANGES } from '../reconciler/render.js';
import { loadFleetOrThrow, openStore, requireFleetArg } from './fleet.js';
import type { Io } from './output.js';
import { log } from './log.js';

export const applyHelp = `Usage: dragonfly apply [PLAN_FILE] --fleet DIR [--state DIR] [--auto-approve]

With PLAN_FILE (written by \`dragonfly plan --out\`): apply exactly that plan, without asking (the saved
plan is the approval). A plan is refused as stale when the fleet files, or any machine it relied on,
changed since it was made.
Without PLAN_FILE: plan, show the plan, and ask for "yes" (--auto-approve skips the question, for CI).

Everything is written in one transaction, with an audit entry (fleet revision, plan hash, user, time):
the store holds either the old state or the new one, never a mix.

  --fleet DIR       the fleet directory
  --state DIR       the state directory (default $DRAGONFLY_STATE or ./.dragonfly)
  --auto-approve    do not ask
`;

function readPlanFile(file: string): Plan {
  let value: unknown;
  try {
    value = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new DragonflyError('DF_ERR_PLAN_FILE', `cannot read plan ${file}: ${(e as Error).message}`, { file });
  }
  const version = (value as { format_version?: unknown })?.format_version;
  if (typeof version === 'string' && version.split('.')[0] !== PLAN_FORMAT_VERSION.split('.')[0]) {
    throw new DragonflyError('DF_ERR_PLAN_FILE', `plan ${file} has format_version ${version}; this dragonfly reads ${PLAN_FORMAT_VERSION}`, { file });
  }
  const errors = validateAgainst('plan', value);
  if (errors.length > 0) {
    throw new DragonflyError('DF_ERR_PLAN_FILE', `${file} is not a Dragonfly plan: ${errors[0]!.instancePath || '/'} ${errors[0]!.message}`, { file });
  }
  return value as Plan;
}

async function confirm(io: Io): Promise<boolean> {
  io.err('\nDo you want to perform these actions?\n  Only "yes" will be accepted.\n\n  Enter a value: ');
  const rl = readline.createInterface({ input: process.stdin, terminal: false });
  const answer = await new Promise<string>((resolve) => {
    rl.once('line', resolve);
    rl.once('close', () => resolve(''));
  });
  rl.close();
  return answer.trim() === 'yes';
}

export function currentUser(): string {
  if (process.env.DRAGONFLY_USER) return process.env.DRAGONFLY_USER;
  try {
    return os.userInfo().username;
  } catch {
    return process.env.USER ?? 'unknown';
  }
}

export async function applyCommand(
  opts: { planFile?: string; fleet?: string; state?: string; autoApprove?: boolean },
  io: Io,
): Promise<number> {
  const fleet = loadFleetOrThrow(requireFleetArg(opts.fleet), io, false);
  const store = openStore(opts.state);
  try {
    let plan: Plan;
    if (opts.planFile) {
      plan = readPlanFile(opts.planFile);
    } else {
      plan = planFleet(fleet, await readObserved(store));
      io.out(renderPlanText(plan, { color: io.color }));
      if (plan.changes.length === 0) return 0;
      if (!opts.autoApprove && !(await confirm(io))) {
        throw new DragonflyError('DF_ERR_APPLY_ABORTED', 'apply cancelled: nothing was changed');
      }
    }
    if (plan.changes.length === 0) {
      io.out(`${NO_CHANGES}\n`);
      return 0;
    }
    const result = await applyPlan(store, plan, fleet, { user: currentUser(), source: 'cli' });
    log.info({ revision: result.revision, planHash: plan.hash, fleetRevision: plan.fleetRevision, workflows: result.workflows.length }, 'plan applied');
    io.out(`\nApply complete! ${summaryLine(plan).replace(/^Plan: /, 'Resources: ')} Store revision ${result.revision}.\n`);
    if (result.workflows.length > 0) io.out(`Workflows created: ${result.workflows.join(', ')}\n`);
    return 0;
  } finally {
    await store.close();
  }
}
