// Workflow timeouts: a running workflow that outlives its template's `timeout` is marked timed-out and
// its machine goes to Error. A report that arrives later is refused (observe.ts), so a slow Mage never
// resurrects it. The clock starts when Mage fetches the workflow: a machine that has not booted yet
// has not started installing.
import type { Workflow } from '../schemas/types.js';
import { WORKFLOWS } from '../store/keys.js';
import type { Store } from '../store/store.js';
import { finishWorkflow, WorkflowStateError } from './workflow-progress.js';

const DEFAULT_TIMEOUT_SECONDS = 30 * 60;

export function deadlineOf(wf: Workflow): number | undefined {
  if (wf.state !== 'running' || !wf.startedAt) return undefined;
  return Date.parse(wf.startedAt) + (wf.timeoutSeconds ?? DEFAULT_TIMEOUT_SECONDS) * 1000;
}

function describe(seconds: number): string {
  return seconds % 3600 === 0 ? `${seconds / 3600}h` : seconds % 60 === 0 ? `${seconds / 60}m` : `${seconds}s`;
}

/** Time out every running workflow past its deadline; returns the ids it timed out. */
export async function expireWorkflows(store: Store, now = new Date()): Promise<string[]> {
  const due = await store.read((snap) =>
    snap
      .list<Workflow>(WORKFLOWS)
      .map((r) => r.value)
      .filter((wf) => (deadlineOf(wf) ?? Infinity) <= now.getTime()),
  );
  const expired: string[] = [];
  for (const wf of due) {
    const seconds = wf.timeoutSeconds ?? DEFAULT_TIMEOUT_SECONDS;
    try {
      const after = await finishWorkflow(
        store,
        wf.id,
        { state: 'timed-out', error: `timed out: still running ${describe(seconds)} after Mage started it` },
        now,
        (current) => (deadlineOf(current) ?? Infinity) <= now.getTime(),
      );
      if (after?.state === 'timed-out') expired.push(wf.id);
    } catch (e) {
      // It ended on its own between the read and the write: nothing to do.
      if (!(e instanceof WorkflowStateError)) throw e;
    }
  }
  return expired;
}
