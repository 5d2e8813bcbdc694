// How the boot server writes to the store: each write is an optimistic transaction retried on conflict, so
// several servers (or a server and a CLI apply) can share a store; what it did is an event in the log.
import { EVENTS, logKeys } from '../store/keys.js';
import type { Snapshot, Store, Txn } from '../store/store.js';

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

/** An entry of the event log, keyed by time (store/keys.ts logKeys). */
export function event(at: Date, value: Record<string, unknown>): { key: string; value: unknown } {
  return { key: logKeys(EVENTS, at, 1)[0]!, value: { at: at.toISOString(), ...value } };
}
