// Who may add a machine to the store. Anyone on the boot network can name any MAC, so a new MAC becomes a
// Discovered machine only within a per-source budget and while the store holds fewer Discovered machines
// than a global cap; a sighting over either is remembered in memory only (bounded), never committed.
import type { MachineRecord } from '../schemas/types.js';
import { MACHINES, machineKey } from '../store/keys.js';
import type { Store } from '../store/store.js';
import { WindowLimiter } from './limiter.js';

export interface DiscoveryGateOptions {
  /** New MACs per source address per minute (default 60). */
  perMinute?: number;
  /** Discovered machines (seen, not in git) the store may hold (default 10,000). */
  maxDiscovered?: number;
  /** Refused sightings remembered in memory (default 10,000). */
  maxStrays?: number;
}

export type DiscoveryVerdict = 'ok' | 'rate' | 'full';

export interface Stray {
  mac: string;
  ip: string;
  lastSeen: string;
  count: number;
}

export class DiscoveryGate {
  private readonly limiter: WindowLimiter;
  private readonly maxDiscovered: number;
  private readonly maxStrays: number;
  /** MACs whose record is in phase Discovered, kept current from the store's watch. */
  private readonly discovered = new Set<string>();
  private readonly strays = new Map<string, Stray>();
  private stopWatch: (() => void) | undefined;
  private closed = false;

  constructor(private readonly store: Store, opts: DiscoveryGateOptions = {}) {
    this.limiter = new WindowLimiter(opts.perMinute ?? 60);
    this.maxDiscovered = opts.maxDiscovered ?? 10_000;
    this.maxStrays = opts.maxStrays ?? 10_000;
  }

  /** Count the Discovered machines once, then follow the changes to machine records. */
  async start(): Promise<void> {
    const read = (snap: Parameters<Parameters<Store['read']>[0]>[0]) => {
      this.discovered.clear();
      for (const r of snap.list<MachineRecord>(MACHINES)) if (r.value.phase === 'Discovered') this.discovered.add(r.value.mac);
      return snap.revision;
    };
    const revision = this.store.readSync ? this.store.readSync(read) : await this.store.read(read);
    if (this.closed) return;
    const follow = (from: number) => {
      this.stopWatch = this.store.watch(
        MACHINES,
        from,
        (changes) => {
          const macs = changes.map((c) => c.key.slice(MACHINES.length));
          const apply = (snap: Parameters<Parameters<Store['read']>[0]>[0]) => {
            for (const mac of macs) {
              if (snap.get<MachineRecord>(machineKey(mac))?.value.phase === 'Discovered') this.discovered.add(mac);
              else this.discovered.delete(mac);
            }
          };
          if (this.store.readSync) this.store.readSync(apply);
          else void this.store.read(apply);
        },
        // Compacted past us (cannot happen within one process's LMDB window, but a networked store may): count again.
        () => void this.start(),
      );
    };
    follow(revision);
  }

  /** May a new MAC seen from `ip` be recorded now? Takes one from the source's budget. */
  admit(ip: string): DiscoveryVerdict {
    if (this.discovered.size >= this.maxDiscovered) return 'full';
    return this.limiter.take(ip) ? 'ok' : 'rate';
  }

  /** A sighting that was not recorded: kept in memory for the operator, the oldest forgotten first. */
  stray(mac: string, ip: string, now = new Date()): void {
    const prior = this.strays.get(mac);
    this.strays.delete(mac);
    this.strays.set(mac, { mac, ip, lastSeen: now.toISOString(), count: (prior?.count ?? 0) + 1 });
    if (this.strays.size > this.maxStrays) this.strays.delete(this.strays.keys().next().value!);
  }

  get discoveredCount(): number {
    return this.discovered.size;
  }

  get strayCount(): number {
    return this.strays.size;
  }

  close(): void {
    this.closed = true;
    this.stopWatch?.();
  }
}
