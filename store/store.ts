// The observed-state store, as its users need it: a key/value space with one monotonically increasing
// revision (like etcd), atomic multi-key transactions guarded by per-key revisions (optimistic
// concurrency), consistent snapshots and change notifications. LMDB implements it (lmdb.ts); etcd can too.

export interface Versioned<T = unknown> {
  key: string;
  value: T;
  /** Revision of the transaction that last wrote this key. */
  modRevision: number;
  /** Revision of the transaction that created it. */
  createRevision: number;
}

/** A guard: the key's modRevision must equal this value; 0 means the key must not exist. */
export interface Compare {
  key: string;
  modRevision: number;
}

export interface Txn {
  compare?: Compare[];
  put?: { key: string; value: unknown }[];
  delete?: string[];
}

export type TxnResult = { ok: true; revision: number } | { ok: false; revision: number; conflicts: string[] };

export interface Change {
  revision: number;
  key: string;
  type: 'put' | 'delete';
}

/** A consistent view of the store at one revision. */
export interface Snapshot {
  revision: number;
  get<T>(key: string): Versioned<T> | undefined;
  /** Keys under `prefix` in key order; `after` (a full key) and `limit` read one page without the rest. */
  list<T>(prefix: string, page?: { after?: string; limit?: number }): Versioned<T>[];
  /** How many keys are under `prefix`, without reading their values. */
  count(prefix: string): number;
}

export interface StoreHealth {
  writable: boolean;
  /** Why not, for /healthz. */
  reason?: string;
}

export interface Store {
  /** Run `fn` against one consistent snapshot. */
  read<T>(fn: (snap: Snapshot) => T): Promise<T>;
  /**
   * The same, synchronously, for backends whose reads need no I/O round trip (LMDB's memory map). Hot
   * paths (every PXE request) use it when it is there; a networked backend (etcd) leaves it out.
   */
  readSync?<T>(fn: (snap: Snapshot) => T): T;
  /** Apply every put and delete at one new revision, or nothing if a compare fails. */
  commit(txn: Txn): Promise<TxnResult>;
  /**
   * Calls `listener` with the changes under `prefix` after `fromRevision`, then with every later change,
   * including changes committed by other processes. Returns a function that stops watching.
   *
   * The store keeps a bounded window of changes (compaction). A watch that starts before the window, or
   * falls behind it, cannot deliver every change: it ends and calls `onReset` with the oldest revision it
   * could have started from; the user re-lists and watches again (as a Kubernetes informer does). Without
   * `onReset`, a watch that starts before the window throws DF_ERR_STORE_COMPACTED.
   */
  watch(prefix: string, fromRevision: number, listener: (changes: Change[]) => void, onReset?: (oldest: number) => void): () => void;
  /** The oldest revision a watch may start from (0 when nothing was ever compacted). */
  oldestRevision(): Promise<number>;
  /** Whether writes can succeed now (a full disk makes every commit fail with DF_ERR_STORE_FULL). */
  health(): StoreHealth;
  close(): Promise<void>;
}
