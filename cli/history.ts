import type { AuditEntry } from '../reconciler/apply.js';
import type { RejectedRevision } from '../reconciler/controller.js';
import { readExistingStore } from './fleet.js';
import { AUDIT } from '../store/keys.js';
import type { Io } from './output.js';
import { table } from './table.js';

export const historyHelp = `Usage: dragonfly history [--state DIR] [--json] [--limit N]

Every apply, newest last: when, who (and the commit author), fleet revision, plan hash, the store
revision it produced, and what it changed. Revisions the controller refused (invalid) are listed too.
`;

export async function historyCommand(opts: { state?: string; json?: boolean; limit?: string }, io: Io): Promise<number> {
  let entries = await readExistingStore(
    opts.state,
    (store) => store.read((snap) => snap.list<AuditEntry | RejectedRevision>(AUDIT).map((r) => ({ ...r.value, revision: r.modRevision }))),
    [],
  );
  const limit = opts.limit ? Number(opts.limit) : undefined;
  if (limit !== undefined && Number.isInteger(limit) && limit > 0) entries = entries.slice(-limit);
  if (opts.json) {
    io.out(JSON.stringify(entries, null, 2) + '\n');
    return 0;
  }
  if (entries.length === 0) {
    io.out('No applies recorded yet.\n');
    return 0;
  }
  io.out(
    table(
      ['REVISION', 'APPLIED AT', 'BY', 'FLEET REVISION', 'PLAN', 'CHANGES'],
      entries.map((e) => [
        String(e.revision),
        e.at,
        `${e.user}${e.source === 'controller' ? ' (controller)' : ''}${e.author ? ` for ${e.author}` : ''}`,
        e.fleetRevision.length > 19 ? e.fleetRevision.slice(0, 19) + '…' : e.fleetRevision,
        e.outcome === 'rejected' ? '-' : e.planHash.slice(7, 19),
        e.outcome === 'rejected' ? `rejected: ${e.errors.length} error${e.errors.length === 1 ? '' : 's'}` : `+${e.summary.add} ~${e.summary.change} !${e.summary.reimage} -${e.summary.retire}`,
      ]),
    ),
  );
  return 0;
}
