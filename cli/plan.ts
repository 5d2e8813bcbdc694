import fs from 'node:fs';
import { DragonflyError } from '../schemas/errors.js';
import { formatDiagnostic } from '../reconciler/diagnostics.js';
import { branchPlan, diffResources, reviewHasChanges, reviewOfPlan, summarize, type BranchReview } from '../reconciler/fleet-diff.js';
import { loadFleet } from '../reconciler/load.js';
import { planFleet, hasChanges } from '../reconciler/plan.js';
import { renderBranchMarkdown, renderBranchText, renderPlanMarkdown, renderPlanText } from '../reconciler/render.js';
import { InvalidFleetError, loadFleetOrThrow, readObservedIfAny, requireFleetArg } from './fleet.js';
import type { Io } from './output.js';

export const planHelp = `Usage: dragonfly plan --fleet DIR [--state DIR] [--out FILE] [--json | --markdown] [--detailed-exitcode]
       dragonfly plan (--fleet DIR | --repo URL) --base REF --head REF [--path SUBDIR] [--state DIR]
                      [--json | --markdown] [--detailed-exitcode]

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

Reviewing a branch (--base REF --head REF): plan both commits against the same store and show only
what the branch changes: the changes of HEAD that BASE would not make identically (a machine that is
not registered yet on BASE too is not the branch's doing), what BASE would do and HEAD no longer does,
and the Machines, Templates and Assignments the branch adds, changes or removes. An invalid HEAD exits 1
with its errors at file:line:col (in the Markdown too). With --detailed-exitcode, 2 means the branch
changes what apply would do. Guide: docs/pull-requests.md.

  --fleet DIR           read BASE and HEAD from the local git clone that holds DIR (git CLI); REF is
                        anything git rev-parse understands (origin/main, HEAD, a SHA)
  --repo URL            read them from the http(s) git repository URL (cached under STATE/review/git/)
  --base REF, --head REF  the two revisions (a branch, a tag or a commit)
  --path SUBDIR         the fleet folder: inside the repository with --repo, inside DIR with --fleet
  --git-credentials-file FILE   for --repo: first line user:password or a token (else
                        DRAGONFLY_GIT_USERNAME / DRAGONFLY_GIT_PASSWORD or DRAGONFLY_GIT_TOKEN)
`;

export async function planCommand(
  opts: BranchPlanOptions,
  io: Io,
): Promise<number> {
  if (isBranchPlan(opts)) return branchPlanCommand(opts, io);
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

export interface BranchPlanOptions {
  fleet?: string;
  repo?: string;
  path?: string;
  base?: string;
  head?: string;
  state?: string;
  out?: string;
  json?: boolean;
  markdown?: boolean;
  detailedExitcode?: boolean;
  credentialsFile?: string;
}

/** True when `plan` was asked to review a branch rather than plan a directory. */
export function isBranchPlan(opts: BranchPlanOptions): boolean {
  return opts.base !== undefined || opts.head !== undefined || opts.repo !== undefined || opts.path !== undefined || opts.credentialsFile !== undefined;
}

/**
 * `plan --base REF --head REF`: both commits planned against the same observed state; only what the
 * branch changes is reported (reconciler/fleet-diff.ts decides what that is).
 */
export async function branchPlanCommand(opts: BranchPlanOptions, io: Io): Promise<number> {
  if (opts.base === undefined || opts.head === undefined) {
    throw new DragonflyError('DF_ERR_USAGE', 'a branch plan needs both --base REF and --head REF', {}, 'dragonfly plan --fleet . --base origin/main --head HEAD --markdown');
  }
  if (opts.out !== undefined) {
    throw new DragonflyError('DF_ERR_USAGE', '--out cannot be used with --base/--head: a branch plan is for review, not for apply', {}, 'merge the branch, then `dragonfly plan --out FILE` on the merged fleet');
  }
  if (opts.json && opts.markdown) throw new DragonflyError('DF_ERR_USAGE', '--json and --markdown cannot be used together', {}, 'choose one output format');
  // Imported here: only --base/--head read git revisions, and isomorphic-git is a tenth of a cold start.
  const { openRevisions } = await import('../reconciler/sources/revisions.js');
  const source = await openRevisions(opts);
  const baseCommit = await source.resolve(opts.base);
  const headCommit = await source.resolve(opts.head);
  const [baseFiles, headFiles] = await Promise.all([source.files(baseCommit, true), source.files(headCommit, false)]);
  const headResult = loadFleet(headFiles!, { revision: headCommit });
  const baseResult = loadFleet(baseFiles ?? [], { revision: baseCommit });
  const resources = diffResources(baseFiles ?? [], headFiles!);
  const review: BranchReview = {
    format_version: '1.0',
    base: { ref: opts.base, commit: baseCommit, valid: baseResult.fleet !== undefined },
    head: { ref: opts.head, commit: headCommit, valid: headResult.fleet !== undefined },
    path: source.path,
    storeRevision: 0,
    summary: summarize([]),
    changes: [],
    notes: [],
    withdrawn: [],
    unchanged: 0,
    resources,
    diagnostics: headResult.diagnostics,
    ...(baseResult.fleet ? {} : { baseErrors: baseResult.diagnostics.filter((d) => d.severity === 'error').length }),
  };

  if (!headResult.fleet) {
    // Fail closed, and say why where the reviewer looks: the errors at file:line:col.
    if (opts.json) {
      io.out(JSON.stringify(review, null, 2) + '\n');
      return 1;
    }
    for (const d of headResult.diagnostics) io.err(formatDiagnostic(d) + '\n');
    if (opts.markdown) {
      io.out(renderBranchMarkdown(review));
      return 1;
    }
    throw new InvalidFleetError(headResult.diagnostics);
  }
  if (!opts.json) for (const d of headResult.diagnostics) io.err(formatDiagnostic(d) + '\n');

  const observed = await readObservedIfAny(opts.state);
  const now = new Date();
  const headPlan = planFleet(headResult.fleet, observed, { now });
  const basePlan = baseResult.fleet ? planFleet(baseResult.fleet, observed, { now }) : undefined;
  Object.assign(review, reviewOfPlan(branchPlan(basePlan, headPlan), observed.revision));
  if (opts.json) io.out(JSON.stringify(review, null, 2) + '\n');
  else if (opts.markdown) io.out(renderBranchMarkdown(review));
  else io.out(renderBranchText(review, { color: io.color }));
  return opts.detailedExitcode && reviewHasChanges(review) ? 2 : 0;
}
