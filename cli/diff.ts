// `dragonfly diff BASE HEAD`: resource-level differences between two revisions of the fleet, read by the
// revision sources that `plan --base --head` shares (reconciler/sources/revisions.ts).
import { DragonflyError } from '../schemas/errors.js';
import { diffResources, type FleetDiff } from '../reconciler/fleet-diff.js';
import { renderFleetDiffText, shortSha } from '../reconciler/render.js';
import { openRevisions, type RevisionOptions } from '../reconciler/sources/revisions.js';
import type { FileChange } from '../reconciler/sources/tree-diff.js';
import type { Io } from './output.js';

export const diffHelp = `Usage: dragonfly diff BASE HEAD [--fleet DIR | --repo URL] [--path SUBDIR] [--state DIR] [--json]

The resource-level differences between two revisions of the fleet: the Machines, Templates and
Assignments that HEAD adds, removes, changes (each changed field, e.g. metadata.labels.rack: r1 → r2)
or moves to another file. Comments, formatting and key order are not changes. Only the files that
differ between the two revisions are read. The state store is not read: to see what the changes
would do to the machines, run \`dragonfly plan --base BASE --head HEAD\`.

  BASE, HEAD      two revisions: branches, tags or commit SHAs; with --fleet, anything git rev-parse
                  understands (origin/main, HEAD~1, v1.2)
  --fleet DIR     read the revisions of the local git clone that holds DIR, with the git command
                  (default: the current directory); the fleet is DIR's folder in the repository
  --repo URL      read them from the http(s) git repository at URL, cached under STATE/review/git/
                  (credentials: DRAGONFLY_GIT_USERNAME and DRAGONFLY_GIT_PASSWORD, or DRAGONFLY_GIT_TOKEN)
  --path SUBDIR   the fleet folder: inside the repository with --repo, inside DIR with --fleet
  --state DIR     the state directory, for the cache of --repo (default $DRAGONFLY_STATE or ./.dragonfly)
  --git-credentials-file FILE   for --repo: first line user:password or a token
  --json          print {base, head, path, files, changes, summary, problems} (fields changed: path,
                  before, after; a side that is missing means the field is not there)
Exit status: 0 (whether or not anything changed), 1 on error.
`;

export interface DiffResult {
  base: { ref: string; commit: string };
  head: { ref: string; commit: string };
  path: string;
  files: FileChange[];
  changes: FleetDiff['changes'];
  summary: FleetDiff['summary'];
  problems: FleetDiff['problems'];
}

export async function diffCommand(opts: RevisionOptions & { refs: string[]; json?: boolean }, io: Io): Promise<number> {
  if (opts.refs.length !== 2) {
    throw new DragonflyError('DF_ERR_USAGE', `diff takes two revisions, BASE and HEAD (got ${opts.refs.length})`, {}, 'dragonfly diff origin/main HEAD');
  }
  const [baseRef, headRef] = opts.refs as [string, string];
  const source = await openRevisions(opts, '.');
  const base = await source.resolve(baseRef);
  const head = await source.resolve(headRef);
  const changed = await source.changedFiles(base, head);
  const diff = diffResources(changed.base, changed.head);
  if (opts.json) {
    const result: DiffResult = {
      base: { ref: baseRef, commit: base },
      head: { ref: headRef, commit: head },
      path: source.path,
      files: changed.paths,
      changes: diff.changes,
      summary: diff.summary,
      problems: diff.problems,
    };
    io.out(JSON.stringify(result, null, 2) + '\n');
    return 0;
  }
  const files = changed.paths.length;
  const header = `Comparing ${shortSha(base)} (${baseRef}) → ${shortSha(head)} (${headRef})${source.path ? ` in ${source.path}/` : ''}: ${files} fleet file${files === 1 ? '' : 's'} changed.`;
  io.out(renderFleetDiffText(diff, header));
  return 0;
}
