// Shared by commands that read a fleet directory and/or the state store.
import { DragonflyError } from '../schemas/errors.js';
import { LmdbStore, stateDirFrom } from '../store/lmdb.js';
import type { Store } from '../store/store.js';
import { readFleetDir } from '../reconciler/sources/fleet-dir.js';
import { loadFleet } from '../reconciler/load.js';
import { formatDiagnostic, type Diagnostic } from '../reconciler/diagnostics.js';
import type { Fleet } from '../reconciler/fleet.js';
import type { Observed } from '../reconciler/observed.js';
import { readObserved } from '../reconciler/observed.js';
import type { Io } from './output.js';
import { log } from './log.js';
import { progressBar } from './progress.js';

export class InvalidFleetError extends DragonflyError {
  constructor(readonly diagnostics: Diagnostic[]) {
    const errors = diagnostics.filter((d) => d.severity === 'error');
    super(errors[0]!.code, `the fleet has ${errors.length} error${errors.length > 1 ? 's' : ''}`, { diagnostics });
  }
}

export function requireFleetArg(fleet: string | undefined): string {
  if (!fleet) throw new DragonflyError('DF_ERR_USAGE', 'missing --fleet DIR', {}, 'pass --fleet DIR, the directory that holds your fleet YAML');
  return fleet;
}

/** Load and validate; print diagnostics (warnings too) unless json; throw when the fleet is invalid. */
export function loadFleetOrThrow(dir: string, io: Io, json: boolean): Fleet {
  const started = performance.now();
  const files = readFleetDir(dir);
  const bar = progressBar('Loading fleet files');
  const result = loadFleet(files, { onProgress: (done, total) => bar.update(done, total) });
  bar.stop();
  log.info({ dir, files: files.length, ms: Math.round(performance.now() - started), diagnostics: result.diagnostics.length }, 'fleet loaded');
  if (!json) for (const d of result.diagnostics) io.err(formatDiagnostic(d) + '\n');
  if (!result.fleet) throw new InvalidFleetError(result.diagnostics);
  return result.fleet;
}

export function openStore(state: string | undefined): Store {
  return LmdbStore.open(stateDirFrom(state));
}

/** Read from the store in DIR without creating one where none exists (read-only commands). */
export async function readExistingStore<T>(state: string | undefined, read: (store: Store) => Promise<T>, empty: T): Promise<T> {
  const dir = stateDirFrom(state);
  if (!LmdbStore.exists(dir)) return empty;
  const store = LmdbStore.open(dir);
  try {
    return await read(store);
  } finally {
    await store.close();
  }
}

export function readObservedIfAny(state: string | undefined): Promise<Observed> {
  return readExistingStore(state, readObserved, { revision: 0, machines: new Map(), workflows: new Map() });
}
