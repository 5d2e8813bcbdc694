// What GET /boot/:mac needs of a known machine — its record, its workflow and the scripts rendered from
// them — held in memory and dropped the moment the store says either changed. The answer depends only on
// those two records and the request, so a rack that PXE boots at once costs one store read and one render
// per machine, not per request.
//
// Coherence: one store watch. A commit made in this process notifies its watchers before the commit
// returns, so no request ever sees an answer older than a write this server made (a claim, an apply). A
// commit made by another process on the same state directory is seen on the store's next poll (200 ms), as
// if the machine had asked that much earlier. A watch that falls behind the store's change window empties
// the cache and starts again from the head.
import type { MachineRecord, Workflow } from '../schemas/types.js';
import { MACHINES, WORKFLOWS } from '../store/keys.js';
import type { Change, Store } from '../store/store.js';

export interface BootEntry {
  rec: MachineRecord;
  wf: Workflow | undefined;
  /** Rendered scripts by iPXE platform ('' when the request named none). */
  scripts: Map<string, string>;
}

/** Enough for every machine a server holds (10,000 discovered plus the fleet); beyond it, oldest out. */
const MAX_ENTRIES = 100_000;
/** Platforms are pcbios and efi; a client that names more gets its answers rendered each time. */
const MAX_SCRIPTS_PER_ENTRY = 4;

export class BootAnswers {
  private readonly entries = new Map<string, BootEntry>();
  /** Workflow id → MAC of the entry that holds it, so a workflow change finds its machine. */
  private readonly macOfWorkflow = new Map<string, string>();
  private stop: (() => void) | undefined;
  private closed = false;

  constructor(private readonly store: Store, private readonly maxEntries = MAX_ENTRIES) {}

  /** Starts following the store; until then nothing is cached. */
  async start(): Promise<void> {
    this.follow(await this.store.read((s) => s.revision));
  }

  close(): void {
    this.closed = true;
    this.stop?.();
    this.stop = undefined;
    this.clear();
  }

  get size(): number {
    return this.entries.size;
  }

  get(mac: string): BootEntry | undefined {
    return this.entries.get(mac);
  }

  /** Remembers what was read for `mac` (only while following: otherwise nothing would drop it). */
  set(mac: string, rec: MachineRecord, wf: Workflow | undefined): BootEntry | undefined {
    if (!this.stop) return undefined;
    if (this.entries.size >= this.maxEntries) this.drop(this.entries.keys().next().value!);
    const entry: BootEntry = { rec, wf, scripts: new Map() };
    this.entries.set(mac, entry);
    if (rec.workflow) this.macOfWorkflow.set(rec.workflow, mac);
    return entry;
  }

  /** The script for `platform`, rendered at most once per entry and platform. */
  script(entry: BootEntry, platform: string, render: () => string): string {
    const held = entry.scripts.get(platform);
    if (held !== undefined) return held;
    const script = render();
    if (entry.scripts.size < MAX_SCRIPTS_PER_ENTRY) entry.scripts.set(platform, script);
    return script;
  }

  private follow(from: number): void {
    if (this.closed) return;
    this.stop = this.store.watch('', from, (changes) => this.invalidate(changes), () => {
      // Changes were compacted before this watch read them: nothing held can be trusted.
      this.stop = undefined;
      this.clear();
      this.store.read((s) => s.revision).then((head) => this.follow(head), () => {});
    });
  }

  private invalidate(changes: Change[]): void {
    for (const c of changes) {
      if (c.key.startsWith(MACHINES)) this.drop(c.key.slice(MACHINES.length));
      else if (c.key.startsWith(WORKFLOWS)) {
        const mac = this.macOfWorkflow.get(c.key.slice(WORKFLOWS.length));
        if (mac !== undefined) this.drop(mac);
      }
    }
  }

  private drop(mac: string): void {
    const entry = this.entries.get(mac);
    if (!entry) return;
    this.entries.delete(mac);
    if (entry.rec.workflow && this.macOfWorkflow.get(entry.rec.workflow) === mac) this.macOfWorkflow.delete(entry.rec.workflow);
  }

  private clear(): void {
    this.entries.clear();
    this.macOfWorkflow.clear();
  }
}
