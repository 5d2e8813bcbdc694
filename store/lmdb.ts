// The default Store: an LMDB environment in the state directory. LMDB serialises writers across
// processes with its own lock, so the compare-and-commit inside one write transaction is atomic even
// when `dragonfly serve` and a CLI command share the directory; a killed writer leaves the previous
// committed revision intact (copy-on-write B-tree).
import fs from 'node:fs';
import path from 'node:path';
import { open, type Database, type RootDatabase } from 'lmdb';
import { DragonflyError } from '../schemas/errors.js';
import type { Change, Snapshot, Store, Txn, TxnResult, Versioned } from './store.js';

interface Stored {
  v: unknown;
  mod: number;
  create: number;
}

export interface LmdbStoreOptions {
  /** How often watchers look for commits made by other processes (ms). In-process commits notify at once. */
  pollMs?: number;
}

const REVISION = 'revision';
const FILE = 'state.lmdb';

export function stateDirFrom(explicit: string | undefined, env = process.env): string {
  // An empty value counts as unset: never open a store in the current directory by accident.
  return explicit || env.DRAGONFLY_STATE || './.dragonfly';
}

export class LmdbStore implements Store {
  private readonly root: RootDatabase;
  private readonly records: Database<Stored, string>;
  private readonly changes: Database<Change[], number>;
  private readonly meta: Database<number, string>;
  private readonly watchers = new Set<{ prefix: string; seen: number; listener: (c: Change[]) => void }>();
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  private constructor(dir: string, private readonly options: LmdbStoreOptions) {
    this.root = open({ path: path.join(dir, FILE), maxDbs: 8, compression: false });
    // Shared msgpack structures: records of one shape decode without re-reading their key list each time.
    this.records = this.root.openDB<Stored, string>({ name: 'records', sharedStructuresKey: Symbol.for('structures') });
    this.changes = this.root.openDB<Change[], number>({ name: 'changes', keyEncoding: 'uint32' });
    this.meta = this.root.openDB<number, string>({ name: 'meta' });
  }

  static open(dir: string, options: LmdbStoreOptions = {}): LmdbStore {
    try {
      fs.mkdirSync(dir, { recursive: true });
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
        list<V>(prefix: string) {
          const out: Versioned<V>[] = [];
          for (const { key, value } of records.getRange({ start: prefix, transaction })) {
            if (!key.startsWith(prefix)) break;
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
    const result = this.commitSync(txn);
    if (result.ok) this.notify();
    return result;
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
      result = { ok: true, revision };
    });
    return result;
  }

  watch(prefix: string, fromRevision: number, listener: (changes: Change[]) => void): () => void {
    const w = { prefix, seen: fromRevision, listener };
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

  private deliver(w: { prefix: string; seen: number; listener: (c: Change[]) => void }): void {
    if (this.closed || !this.watchers.has(w)) return;
    const head = this.meta.get(REVISION) ?? 0;
    if (head <= w.seen) return;
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
