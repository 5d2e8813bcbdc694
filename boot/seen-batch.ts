// Sightings of known machines, written in one transaction per interval instead of one per request:
// a PXE storm of thousands of machines must not become thousands of commits. Seen-times are
// last-writer-wins, so the batch needs no compare.
import type { Store } from '../store/store.js';
import { SEEN, seenKey, type SeenRecord } from './observe.js';

/** A machine's seen-time is written at most this often: it says "recently", not "this very second". */
const PER_MACHINE_MS = 30_000;
/** Entries per transaction, so a PXE storm never holds the event loop for long. */
const CHUNK = 500;

export class SeenBatch {
  private pending = new Map<string, Omit<SeenRecord, 'firstSeen'>>();
  private written = new Map<string, number>();
  private timer: NodeJS.Timeout;
  private flushing: Promise<void> = Promise.resolve();

  constructor(private readonly store: Store, intervalMs = 1000, private readonly onError: (e: unknown) => void = () => {}) {
    this.timer = setInterval(() => void this.flush(), intervalMs);
    this.timer.unref();
  }

  /** Whether a sighting of `mac` now would be written (cheap: called on every PXE request). */
  wants(mac: string, now = Date.now()): boolean {
    return now - (this.written.get(mac) ?? 0) >= PER_MACHINE_MS;
  }

  add(record: Omit<SeenRecord, 'firstSeen'>, now = Date.now()): void {
    if (!this.wants(record.mac, now)) return;
    if (this.written.size > 200_000) this.written.clear();
    this.written.set(record.mac, now);
    this.pending.set(record.mac, record);
  }

  flush(): Promise<void> {
    if (this.pending.size === 0) return this.flushing;
    const batch = [...this.pending.values()];
    this.pending = new Map();
    this.flushing = this.flushing.then(async () => {
      for (let i = 0; i < batch.length; i += CHUNK) {
        const chunk = batch.slice(i, i + CHUNK);
        try {
          const put = await this.store.read((snap) =>
            chunk.map((s) => {
              const prior = snap.get<SeenRecord>(seenKey(s.mac))?.value;
              return { key: SEEN + s.mac, value: { ...prior, ...s, firstSeen: prior?.firstSeen ?? s.lastSeen } satisfies SeenRecord };
            }),
          );
          await this.store.commit({ put });
        } catch (e) {
          this.onError(e);
        }
        // Let requests in between chunks.
        await new Promise((r) => setImmediate(r));
      }
    });
    return this.flushing;
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.flush();
  }
}
