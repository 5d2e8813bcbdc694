// Long-poll support for Mage's registration: a discovered machine waiting for git asks with waitSeconds, and
// the server holds the answer until that machine's record changes (an apply gave it a workflow, it was
// retired …) instead of Mage polling every 10 s. One store watch for all waiting machines, not one per
// request: with thousands of machines on the discovery screen, a watch each would rescan the change log
// thousands of times per revision.
import { MACHINES } from '../store/keys.js';
import type { Store } from '../store/store.js';

export class MachineWaiters {
  private readonly waiting = new Map<string, Set<() => void>>();
  private stopWatch: (() => void) | undefined;
  closed = false;

  constructor(private readonly store: Store) {}

  /** Resolves when the record of `mac` changes, after `ms`, or when the server closes (whichever is first). */
  async wait(mac: string, ms: number): Promise<void> {
    if (this.closed || ms <= 0) return;
    await this.ensureWatching();
    await new Promise<void>((resolve) => {
      let set = this.waiting.get(mac);
      if (!set) this.waiting.set(mac, (set = new Set()));
      const wake = () => {
        clearTimeout(timer);
        const s = this.waiting.get(mac);
        s?.delete(wake);
        if (s?.size === 0) this.waiting.delete(mac);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      set.add(wake);
    });
  }

  /** Releases every held request (they answer at once) and stops watching. */
  close(): void {
    this.closed = true;
    this.stopWatch?.();
    this.stopWatch = undefined;
    for (const set of [...this.waiting.values()]) for (const wake of [...set]) wake();
  }

  private async ensureWatching(): Promise<void> {
    if (this.stopWatch) return;
    // From the current revision: a change made before this request was read is already in its answer.
    const from = await this.store.read((snap) => snap.revision);
    if (this.stopWatch || this.closed) return;
    this.stopWatch = this.store.watch(
      MACHINES,
      from,
      (changes) => {
        for (const c of changes) {
          const set = this.waiting.get(c.key.slice(MACHINES.length));
          if (set) for (const wake of [...set]) wake();
        }
      },
      // Changes were compacted away unseen: wake everyone (each re-reads its record) and watch anew.
      () => {
        this.stopWatch = undefined;
        for (const set of [...this.waiting.values()]) for (const wake of [...set]) wake();
      },
    );
  }
}
