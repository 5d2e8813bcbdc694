// The default Store: an LMDB environment in the state directory. LMDB serialises writers across
// processes with its own lock, so the compare-and-commit inside one write transaction is atomic even
// when `dragonfly serve` and a CLI command share the directory; a killed writer leaves the previous
// committed revision intact (copy-on-write B-tree).
import fs from 'node:fs';
import path from 'node:path';
import { open, type Database, type RootDatabase } from 'lmdb';
import { DragonflyError } from '../schemas/errors.js';
import type { Change, Snapshot, Store, StoreHealth, Txn, TxnResult, Versioned } from './store.js';

interface Stored {
  v: unknown;
  mod: number;
  create: number;
}

export interface LmdbStoreOptions {
  /** How often watchers look for commits made by other processes (ms). In-process commits notify at once. */
  pollMs?: number;
  /** Revisions of the change log kept for watches (default 10,000); older ones are compacted away. */
  retainRevisions?: number;
  /**
   * Commits are refused (DF_ERR_STORE_FULL) while the state directory's filesystem has less free space
   * than this (default 16 MiB): LMDB writes through a memory map, and a write into a page the filesystem
   * cannot back kills the process with SIGBUS instead of failing.
   */
  minFreeBytes?: number;
}

const REVISION = 'revision';
/** The newest revision whose change-log entry was compacted away; watches start after it. */
const COMPACTED = 'compacted';
const FILE = 'state.lmdb';
/** Compaction runs once every this many commits, deleting what fell out of the window since. */
const COMPACT_EVERY = 256;
/** Free space is looked at once a second, or at every commit once it is low (a burst of large commits
 * within one second must not run past the guard). */
const FREE_CHECK_MS = 1000;
const LOW_FREE_BYTES = 256 * 1024 * 1024;
const DEFAULT_MIN_FREE_BYTES = 16 * 1024 * 1024;
/** Change-log entries deleted per compaction at most: an old store's first compaction stays one small transaction. */
const COMPACT_BATCH = 4096;

export function stateDirFrom(explicit: string | undefined, env = process.env): string {
  // An empty value counts as unset: never open a store in the current directory by accident.
  return explicit || env.DRAGONFLY_STATE || './.dragonfly';
}

interface Watcher {
  prefix: string;
  seen: number;
  listener: (c: Change[]) => void;
  onReset?: (oldest: number) => void;
}

function freeBytes(dir: string): number {
  try {
    const s = fs.statfsSync(dir);
    return s.bavail * s.bsize;
  } catch {
    return Number.POSITIVE_INFINITY; // cannot tell: let LMDB say
  }
}

export class LmdbStore implements Store {
  private readonly root: RootDatabase;
  private readonly records: Database<Stored, string>;
  private readonly changes: Database<Change[], number>;
  private readonly meta: Database<number, string>;
  private readonly watchers = new Set<Watcher>();
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly retain: number;
  private readonly minFree: number;
  private free = { checkedAt: 0, bytes: Number.POSITIVE_INFINITY };

  private constructor(private readonly dir: string, private readonly options: LmdbStoreOptions) {
    this.retain = Math.max(1, options.retainRevisions ?? 10_000);
    this.minFree = options.minFreeBytes ?? DEFAULT_MIN_FREE_BYTES;
    // Hardware inventories and workflow state are nobody else's business: the files are 0600.
    const old = process.umask(0o077);
    try {
      this.root = open({ path: path.join(dir, FILE), maxDbs: 8, compression: false });
    } finally {
      process.umask(old);
    }
    for (const f of [FILE, `${FILE}-lock`]) fs.chmodSync(path.join(dir, f), 0o600);
    // Shared msgpack structures: records of one shape decode without re-reading their key list each time.
    this.records = this.root.openDB<Stored, string>({ name: 'records', sharedStructuresKey: Symbol.for('structures') });
    this.changes = this.root.openDB<Change[], number>({ name: 'changes', keyEncoding: 'uint32' });
    this.meta = this.root.openDB<number, string>({ name: 'meta' });
  }

  static open(dir: string, options: LmdbStoreOptions = {}): LmdbStore {
    try {
      fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    } catch (e) {
      throw new DragonflyError('DF_ERR_STORE_OPEN', `cannot open the state store in ${dir}: ${(e as Error).message}`, { path: dir });
    }
    // Before LMDB touches the file: with no room to grow it, LMDB dies with SIGBUS, not an error.
    const need = options.minFreeBytes ?? DEFAULT_MIN_FREE_BYTES;
    const free = freeBytes(dir);
    if (free < need) {
      throw new DragonflyError('DF_ERR_STORE_FULL', `the filesystem of ${dir} has ${free} bytes free; the state store needs at least ${need}`, { path: dir, freeBytes: free });
    }
    try {
      return new LmdbStore(dir, options);
    } catch (e) {
      throw new DragonflyError('DF_ERR_STORE_OPEN', `cannot open the state store in ${dir}: ${(e as Error).message}`, { path: dir });
    }
  }

  /** True when `dir` already holds a store (used by read-only commands to avoid creating one). */
  static exists(dir: string): boolean {
    return fs.existsSync(path.join(dir, FILE));
  }

  async read<T>(fn: (snap: Snapshot) => T): Promise<T> {
    return this.readSync(fn);
  }

  readSync<T>(fn: (snap: Snapshot) => T): T {
    // lmdb-js reuses one read transaction until its next timer tick; a commit that another process has
    // finished since then would be invisible. Start from a fresh snapshot, as etcd would.
    this.root.resetReadTxn();
    const transaction = this.root.useReadTransaction();
    try {
      const records = this.records;
      const revision = this.meta.get(REVISION, { transaction }) ?? 0;
      const toVersioned = <V>(key: string, s: Stored): Versioned<V> => ({
        key,
        value: s.v as V,
        modRevision: s.mod,
        createRevision: s.create,
      });
      return fn({
        revision,
        get<V>(key: string) {
          const s = records.get(key, { transaction });
          return s ? toVersioned<V>(key, s) : undefined;
        },
        count(prefix: string) {
          let n = 0;
          for (const key of records.getKeys({ start: prefix, transaction })) {
            if (!key.startsWith(prefix)) break;
            n++;
          }
          return n;
        },
        list<V>(prefix: string, page: { after?: string; limit?: number } = {}) {
          const out: Versioned<V>[] = [];
          const limit = page.limit ?? Number.POSITIVE_INFINITY;
          // `after` itself is skipped: the range starts at it, inclusive.
          const start = page.after !== undefined && page.after >= prefix ? page.after : prefix;
          for (const { key, value } of records.getRange({ start, transaction })) {
            if (key === page.after) continue;
            if (!key.startsWith(prefix) || out.length >= limit) break;
            out.push(toVersioned<V>(key, value));
          }
          return out;
        },
      });
    } finally {
      transaction.done();
    }
  }

  async commit(txn: Txn): Promise<TxnResult> {
    this.checkFree();
    let result: TxnResult;
    try {
      result = this.commitSync(txn);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOSPC' || /MDB_MAP_FULL|No space left/i.test((e as Error).message)) {
        this.free = { checkedAt: 0, bytes: 0 };
        throw new DragonflyError('DF_ERR_STORE_FULL', `cannot write the state store in ${this.dir}: the disk is full`, { path: this.dir });
      }
      throw e;
    }
    if (result.ok) this.notify();
    return result;
  }

  health(): StoreHealth {
    // Asked rarely (/healthz): always look, and let the commits that follow see it too.
    this.free = { checkedAt: Date.now(), bytes: freeBytes(this.dir) };
    return this.free.bytes >= this.minFree ? { writable: true } : { writable: false, reason: `disk full: ${this.free.bytes} bytes free in ${this.dir}, need ${this.minFree}` };
  }

  async oldestRevision(): Promise<number> {
    return this.meta.get(COMPACTED) ?? 0;
  }

  private refreshFree(): void {
    const now = Date.now();
    // Low on space: look every time, so the first commit after space is freed goes through.
    if (now - this.free.checkedAt < FREE_CHECK_MS && this.free.bytes >= LOW_FREE_BYTES + this.minFree) return;
    this.free = { checkedAt: now, bytes: freeBytes(this.dir) };
  }

  private checkFree(): void {
    this.refreshFree();
    if (this.free.bytes < this.minFree) {
      throw new DragonflyError('DF_ERR_STORE_FULL', `cannot write the state store in ${this.dir}: ${this.free.bytes} bytes free, ${this.minFree} needed`, { path: this.dir });
    }
  }

  private commitSync(txn: Txn): TxnResult {
    // The callback must not return a promise: lmdb-js would then finish the transaction asynchronously.
    let result: TxnResult = { ok: false, revision: 0, conflicts: [] };
    this.root.transactionSync(() => {
      const current = this.meta.get(REVISION) ?? 0;
      const conflicts = (txn.compare ?? [])
        .filter((c) => (this.records.get(c.key)?.mod ?? 0) !== c.modRevision)
        .map((c) => c.key);
      if (conflicts.length > 0) {
        result = { ok: false, revision: current, conflicts };
        return;
      }
      const revision = current + 1;
      const changes: Change[] = [];
      for (const { key, value } of txn.put ?? []) {
        const prior = this.records.get(key);
        this.records.put(key, { v: value, mod: revision, create: prior?.create ?? revision });
        changes.push({ revision, key, type: 'put' });
      }
      for (const key of txn.delete ?? []) {
        if (this.records.get(key) === undefined) continue;
        this.records.remove(key);
        changes.push({ revision, key, type: 'delete' });
      }
      this.changes.put(revision, changes);
      this.meta.put(REVISION, revision);
      if (revision % COMPACT_EVERY === 0) this.compact(revision);
      result = { ok: true, revision };
    });
    return result;
  }

  /** Inside the write transaction: drop change-log entries that fell out of the window. */
  private compact(revision: number): void {
    const floor = revision - this.retain;
    const compacted = this.meta.get(COMPACTED) ?? 0;
    if (floor <= compacted) return;
    let upTo = compacted;
    for (const key of this.changes.getKeys({ start: compacted + 1, end: floor + 1, limit: COMPACT_BATCH })) {
      this.changes.remove(key);
      upTo = key;
    }
    // Whatever is left below the floor goes in the next compactions.
    this.meta.put(COMPACTED, upTo === compacted ? floor : Math.min(floor, upTo));
  }

  watch(prefix: string, fromRevision: number, listener: (changes: Change[]) => void, onReset?: (oldest: number) => void): () => void {
    const compacted = this.meta.get(COMPACTED) ?? 0;
    if (fromRevision < compacted && !onReset) {
      throw new DragonflyError('DF_ERR_STORE_COMPACTED', `revision ${fromRevision} is older than the store keeps (changes after ${compacted})`, { oldest: compacted });
    }
    const w: Watcher = { prefix, seen: fromRevision, listener, ...(onReset ? { onReset } : {}) };
    this.watchers.add(w);
    queueMicrotask(() => this.deliver(w));
    if (!this.timer) {
      this.timer = setInterval(() => this.notify(), this.options.pollMs ?? 200);
      this.timer.unref();
    }
    return () => {
      this.watchers.delete(w);
      if (this.watchers.size === 0 && this.timer) {
        clearInterval(this.timer);
        this.timer = undefined;
      }
    };
  }

  private notify(): void {
    if (this.closed) return;
    this.root.resetReadTxn(); // see read(): look at the latest commit, whichever process made it
    for (const w of this.watchers) this.deliver(w);
  }

  private deliver(w: Watcher): void {
    if (this.closed || !this.watchers.has(w)) return;
    const head = this.meta.get(REVISION) ?? 0;
    if (head <= w.seen) return;
    const compacted = this.meta.get(COMPACTED) ?? 0;
    if (w.seen < compacted) {
      // Changes it has not seen are gone: it cannot go on without a gap. It ends; its user re-lists.
      // Never thrown from here (a commit or the poll timer would carry it): every watch of ours has onReset.
      this.watchers.delete(w);
      w.onReset?.(compacted);
      return;
    }
    const out: Change[] = [];
    for (const { value } of this.changes.getRange({ start: w.seen + 1, end: head + 1 })) {
      for (const c of value) if (c.key.startsWith(w.prefix)) out.push(c);
    }
    w.seen = head;
    if (out.length > 0) w.listener(out);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.watchers.clear();
    await this.root.close();
  }
}
