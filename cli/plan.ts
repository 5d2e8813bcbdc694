import fs from 'node:fs';
import { planFleet, hasChanges } from '../reconciler/plan.js';
import { renderPlanMarkdown, renderPlanText } from '../reconciler/render.js';
import { loadFleetOrThrow, readObservedIfAny, requireFleetArg } from './fleet.js';
import type { Io } from './output.js';

export const planHelp = `Usage: dragonfly plan --fleet DIR [--state DIR] [--out FILE] [--json | --markdown] [--detailed-exitcode]

Compare the fleet (desired state) with the state store (observed state) and show what apply would do:
  + register / provision    ~ update / power    ! reimage (wipes the disks)    - retire (never wipes)
Waiting for discovery, running workflows, deferred and blocked machines are shown but are not changes.
Plan changes nothing.

  --fleet DIR           the fleet directory
  --state DIR           the state directory (default $DRAGONFLY_STATE or ./.dragonfly)
  --out FILE            save the plan; \`dragonfly apply FILE\` applies exactly it, or refuses it when stale
  --json                print the plan as JSON (format: docs/plan-json.md)
  --markdown            print the plan as Markdown for a pull-request comment
  --detailed-exitcode   exit 0 when there is nothing to change, 2 when there are changes, 1 on error
`;

export async function planCommand(
  opts: { fleet?: string; state?: string; out?: string; json?: boolean; markdown?: boolean; detailedExitcode?: boolean },
  io: Io,
): Promise<number> {
  const fleet = loadFleetOrThrow(requireFleetArg(opts.fleet), io, opts.json === true);
  const observed = await readObservedIfAny(opts.state);
  const plan = planFleet(fleet, observed);
  if (opts.json) io.out(JSON.stringify(plan, null, 2) + '\n');
  else if (opts.markdown) io.out(renderPlanMarkdown(plan));
  else io.out(renderPlanText(plan, { color: io.color }));
  if (opts.out) {
    fs.writeFileSync(opts.out, JSON.stringify(plan, null, 2) + '\n', { mode: 0o600 });
    if (!opts.json && !opts.markdown) io.out(`\nSaved the plan to ${opts.out}. To apply exactly it: dragonfly apply ${opts.out} --fleet ${opts.fleet}${opts.state ? ` --state ${opts.state}` : ''}\n`);
  }
  return opts.detailedExitcode && hasChanges(plan) ? 2 : 0;
}
