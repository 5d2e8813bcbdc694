// The event log is bounded: the oldest events beyond a maximum are deleted, a chunk per transaction, so a
// server that runs for a year (or a flood of reports) holds a bounded store. Event keys sort by time
// (store/keys.ts logKeys), so the oldest are the first under the prefix.
import { EVENTS } from '../store/keys.js';
import type { Store } from '../store/store.js';

/** Keys deleted per transaction: small enough never to hold the event loop or the writer lock for long. */
const CHUNK = 1000;

/** Delete the oldest events beyond `max`; returns how many were deleted. */
export async function trimEvents(store: Store, max: number): Promise<number> {
  let deleted = 0;
  for (;;) {
    const oldest = await store.read((snap) => {
      const excess = snap.count(EVENTS) - max;
      return excess > 0 ? snap.list(EVENTS, { limit: Math.min(excess, CHUNK) }).map((r) => r.key) : [];
    });
    if (oldest.length === 0) return deleted;
    const r = await store.commit({ delete: oldest });
    if (!r.ok) return deleted;
    deleted += oldest.length;
    await new Promise((res) => setImmediate(res));
  }
}
