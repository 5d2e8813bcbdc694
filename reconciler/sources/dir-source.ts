// The directory source of the GitOps loop: watch a fleet directory with chokidar and emit one snapshot
// per logical change (an editor's save, a `git checkout`, a new rack directory), never one per inotify event.
//
// How:
// - Every watcher event (chokidar's add/change/unlink/addDir/unlinkDir, and its `raw` inotify events, which
//   chokidar reports even when its own throttling or mtime heuristics drop the semantic event) only marks
//   paths dirty and (re)starts a debounce timer. When the directory has been quiet for `debounceMs`, the
//   dirty files are re-read — only those — and compared with the texts kept in memory. A snapshot is emitted
//   only if some text (or some read error) actually differs, so an atomic-rename save (file gone for a
//   microsecond, then back), a multi-chunk write, and a `touch` or a save of identical bytes all collapse
//   into one snapshot or none.
// - Which paths count is exactly readFleetDir's rule (isFleetFile, no dot-entries, no node_modules, regular
//   files only — symlinks are skipped), so the snapshot always equals readFleetDir(root). Editors' temp and
//   backup files (`.x.swp`, `x~`, `4913`, `x.yaml.tmp`, `#x#`, `.#x`) are never fleet files: they are ignored
//   by chokidar (not even watched) and never read.
// - The root disappearing (or being replaced, e.g. a symlink swapped to a new release) is checked on every
//   flush and every `rootCheckMs`: a missing root reports DF_ERR_FLEET_DIR through onError, keeps the last
//   snapshot as current() (no snapshot of mass deletions is emitted), and polls until the root is back; then a
//   new chokidar watcher is started and the whole directory is re-read once.
// - A file that cannot be read is reported in Snapshot.errors (DF_ERR_FILE_READ) and left out of `files`;
//   failing closed on it is the controller's job.
//
// chokidar notes (v5): no globs, so filtering is one `ignored` function; `atomic: false` (its built-in
// atomic mode hard-codes an ignore regexp on the whole path — `~$`, `.swp`, `.subl*.tmp` — that would make
// it skip directories readFleetDir reads, and it delays unlinks by 100 ms: our debounce does that job);
// `ignorePermissionErrors: true` (otherwise a file without the owner-read bit is silently never watched);
// `followSymlinks: false` (readFleetDir skips symlinks); no `awaitWriteFinish`: the debounce, restarted by
// every inotify event of every chunk, already waits for writes to finish, for all files at once, without
// polling each file's size.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { watch, type FSWatcher } from 'chokidar';
import { DragonflyError } from '../../schemas/errors.js';
import { contentRevision } from '../load.js';
import type { SourceFile } from '../parse.js';
import { isFleetFile, isFleetPath, isSkippedName } from './fleet-dir.js';

/** The fleet directory at one moment, as the loop sees it. */
export interface FleetSnapshot {
  /** contentRevision(files): the same value as contentRevision(readFleetDir(root)). */
  readonly revision: string;
  /** Every readable fleet file, sorted by path; paths relative to the root with '/' separators. */
  readonly files: readonly SourceFile[];
  /**
   * Paths added, modified or deleted since the previous snapshot (sorted); a file that became unreadable, or
   * readable again, counts as changed. The first snapshot (from `ready`) lists every file.
   */
  readonly changed: readonly string[];
  /**
   * Files (and sub-directories) that could not be read, as DF_ERR_FILE_READ with `data.path` (relative) and
   * `data.errno`. Such a file is absent from `files` (and from the revision): a snapshot with errors must not
   * be applied as if it were the whole fleet.
   */
  readonly errors: readonly DragonflyError[];
}

export interface WatchFleetDirOptions {
  /** One call per logical change. Exceptions (and rejected promises) are passed to onError. */
  onChange(snapshot: FleetSnapshot): void | Promise<void>;
  /**
   * The directory cannot be watched: DF_ERR_FLEET_DIR when the root disappears or stops being a directory (the
   * watcher keeps polling for it and re-reads everything when it is back), or when chokidar reports an error.
   * Also receives whatever onChange throws.
   */
  onError(error: Error): void;
  /** Quiet time after the last filesystem event before reading changed files (default 50 ms). */
  debounceMs?: number;
  /** Upper bound on the wait under a continuous stream of events (default max(2000, 10 × debounceMs)). */
  maxWaitMs?: number;
  /** How often the root's existence and identity are checked without any event (default 1000 ms). */
  rootCheckMs?: number;
  /**
   * Reads one file (absolute path) as UTF-8. For tests and instrumentation; default fs.readFileSync, in batches
   * that yield to the event loop (10,000 small files: ~0.1 s synchronously, 0.3-0.7 s through the thread pool).
   */
  readFile?: (absPath: string) => string | Promise<string>;
}

export interface FleetDirWatcher {
  /** Resolves with the first snapshot once watching; rejects with DF_ERR_FLEET_DIR if the root cannot be read. */
  readonly ready: Promise<FleetSnapshot>;
  /** The latest snapshot (the last one emitted, or the first). Throws before `ready` has resolved. */
  current(): FleetSnapshot;
  /** Stops watching; no callback is called once the returned promise resolves. */
  close(): Promise<void>;
}

/** Files read between two yields to the event loop. */
const READ_BATCH = 256;


/** Would readFleetDir walk into a directory at this relative path ('' is the root)? */
function isFleetDirPath(rel: string): boolean {
  return rel === '' || !rel.split('/').some(isSkippedName);
}

const errnoOf = (e: unknown): string => (e as NodeJS.ErrnoException)?.code ?? String(e);
const isGone = (e: unknown) => ['ENOENT', 'ENOTDIR'].includes(errnoOf(e));

const byPath = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

type Entry = { readonly file: SourceFile; readonly error?: undefined } | { readonly file?: undefined; readonly error: DragonflyError };

function readError(rel: string, e: unknown, what = ''): DragonflyError {
  const errno = errnoOf(e);
  return new DragonflyError('DF_ERR_FILE_READ', `cannot read ${what}${rel}: ${errno}`, { path: rel, errno });
}

function fleetDirError(root: string, e: unknown): DragonflyError {
  if (e instanceof DragonflyError) return e;
  const errno = errnoOf(e);
  const hint =
    errno === 'ENOSPC'
      ? 'the inotify watch limit is reached: raise fs.inotify.max_user_watches (sysctl), one watch per file and directory'
      : undefined;
  return new DragonflyError('DF_ERR_FLEET_DIR', `cannot watch fleet directory ${root}: ${errno}`, { path: root, errno }, hint);
}

function sameEntry(a: Entry | undefined, b: Entry | undefined): boolean {
  if (!a || !b) return a === b;
  if (a.file && b.file) return a.file.text === b.file.text;
  return !!a.error && !!b.error && a.error.data.errno === b.error.data.errno;
}

/** fn over items in order, yielding to the event loop every READ_BATCH items. */
async function forEachBatched<T>(items: Iterable<T>, fn: (item: T) => void | Promise<void>): Promise<void> {
  let n = 0;
  for (const item of items) {
    await fn(item);
    if (++n % READ_BATCH === 0) await new Promise((resolve) => setImmediate(resolve));
  }
}

interface Listing {
  /** Fleet files found under the directory (relative to the root). */
  files: string[];
  /** Sub-directories that could not be listed. */
  dirErrors: Map<string, DragonflyError>;
}

/** The fleet files under `rel` (a directory relative to `absRoot`), readFleetDir's walk without reading. */
async function listTree(absRoot: string, rel: string): Promise<Listing> {
  const out: Listing = { files: [], dirErrors: new Map() };
  const walk = async (relDir: string): Promise<void> => {
    let entries: fs.Dirent[];
    try {
      // readFleetDir never follows a symlinked directory: neither does a rescan of a directory since replaced by one.
      if (relDir === rel && rel !== '' && !(await fsp.lstat(path.join(absRoot, rel))).isDirectory()) return;
      entries = await fsp.readdir(relDir ? path.join(absRoot, relDir) : absRoot, { withFileTypes: true });
    } catch (e) {
      if (relDir === '') throw e;
      if (!isGone(e)) out.dirErrors.set(relDir, readError(relDir, e, 'directory '));
      return;
    }
    const subdirs: string[] = [];
    for (const entry of entries) {
      if (isSkippedName(entry.name)) continue;
      const relPath = relDir ? `${relDir}/${entry.name}` : entry.name;
      if (entry.isDirectory()) subdirs.push(relPath);
      else if (entry.isFile() && isFleetFile(entry.name)) out.files.push(relPath);
    }
    await Promise.all(subdirs.map(walk));
  };
  await walk(rel);
  return out;
}

const under = (key: string, dir: string) => dir === '' || key === dir || key.startsWith(dir + '/');

export function watchFleetDir(root: string, options: WatchFleetDirOptions): FleetDirWatcher {
  return new DirSource(path.resolve(root), options);
}

class DirSource implements FleetDirWatcher {
  readonly ready: Promise<FleetSnapshot>;

  private readonly debounceMs: number;
  private readonly maxWaitMs: number;
  private readonly rootCheckMs: number;
  private readonly readText: (absPath: string) => string | Promise<string>;

  private state: 'starting' | 'watching' | 'missing' | 'closed' = 'starting';
  private watcher: FSWatcher | undefined;
  /** The directory chokidar watches and files are read from: realpath(root) when the watcher started. */
  private realRoot = '';
  /** dev:ino of the root when the watcher started; another value means the root was replaced. */
  private rootId = '';

  private readonly entries = new Map<string, Entry>();
  private dirErrors = new Map<string, DragonflyError>();
  /** Every directory holding a fleet file or an unreadable directory (relative, without the root ''). */
  private knownDirs = new Set<string>();
  private last: FleetSnapshot | undefined;

  private readonly dirtyFiles = new Set<string>();
  private readonly dirtyDirs = new Set<string>();
  private debounceTimer: NodeJS.Timeout | undefined;
  private firstEventAt = 0;
  /** Counts markDirty calls, to tell whether events arrived while the debounce timer was firing. */
  private eventSeq = 0;
  private rootTimer: NodeJS.Timeout | undefined;
  private wantFlush = false;
  private wantCheck = false;
  private busy: Promise<void> | undefined;

  constructor(
    private readonly root: string,
    private readonly options: WatchFleetDirOptions,
  ) {
    this.debounceMs = options.debounceMs ?? 50;
    this.maxWaitMs = options.maxWaitMs ?? Math.max(2000, 10 * this.debounceMs);
    this.rootCheckMs = options.rootCheckMs ?? 1000;
    this.readText = options.readFile ?? ((p) => fs.readFileSync(p, 'utf8'));
    this.ready = this.start();
    this.ready.catch(() => {}); // the caller sees the rejection; an ignored one must not crash the process
  }

  current(): FleetSnapshot {
    if (!this.last) throw new Error('watchFleetDir: current() called before ready');
    return this.last;
  }

  async close(): Promise<void> {
    if (this.state === 'closed') return this.busy;
    this.state = 'closed';
    clearTimeout(this.debounceTimer);
    clearInterval(this.rootTimer);
    await this.stopWatcher();
    await this.busy;
    await this.ready.catch(() => {});
    await this.stopWatcher(); // one a start or restart in flight may have opened meanwhile
  }

  // --- start / restart -------------------------------------------------------------------------------------

  private async start(): Promise<FleetSnapshot> {
    try {
      await this.startWatcher();
      const scan = await this.fullScan();
      if (this.state === 'closed') throw new DragonflyError('DF_ERR_FLEET_DIR', `stopped watching ${this.root}`, { path: this.root });
      for (const [rel, entry] of scan.entries) this.entries.set(rel, entry);
      this.dirErrors = scan.dirErrors;
      this.rebuildKnownDirs();
      this.last = this.snapshot([...this.entries.keys()].sort(byPath));
      this.state = 'watching';
    } catch (e) {
      if (this.state !== 'closed') {
        this.state = 'closed';
        await this.stopWatcher();
      }
      throw fleetDirError(this.root, e);
    }
    this.rootTimer = setInterval(() => this.schedule('check'), this.rootCheckMs);
    this.rootTimer.unref();
    if (this.wantFlush || this.wantCheck) this.pump(); // events that came during the first scan
    return this.last;
  }

  private async statRoot(): Promise<{ id: string } | { error: DragonflyError }> {
    try {
      const st = await fsp.stat(this.root);
      if (!st.isDirectory()) return { error: new DragonflyError('DF_ERR_FLEET_DIR', `${this.root} is not a directory`, { path: this.root }) };
      return { id: `${st.dev}:${st.ino}` };
    } catch (e) {
      const errno = errnoOf(e);
      return { error: new DragonflyError('DF_ERR_FLEET_DIR', `cannot read fleet directory ${this.root}: ${errno}`, { path: this.root, errno }) };
    }
  }

  private async startWatcher(): Promise<void> {
    const st = await this.statRoot();
    if ('error' in st) throw st.error;
    this.rootId = st.id;
    const realRoot = await fsp.realpath(this.root);
    this.realRoot = realRoot;
    const relOf = (p: string): string | undefined => {
      const rel = path.relative(realRoot, p);
      if (rel === '..' || rel.startsWith('../') || path.isAbsolute(rel)) return undefined;
      return path.sep === '/' ? rel : rel.split(path.sep).join('/');
    };
    const watcher = watch(realRoot, {
      ignoreInitial: true,
      atomic: false,
      followSymlinks: false,
      ignorePermissionErrors: true,
      ignored: (p: string, stats?: fs.Stats) => {
        const rel = relOf(p);
        if (rel === undefined || rel === '') return false;
        if (rel.split('/').some(isSkippedName)) return true;
        if (!stats) return false; // chokidar asks again with stats before watching anything
        if (stats.isDirectory()) return false;
        if (stats.isFile()) return !isFleetFile(path.basename(p));
        return true; // symlinks, sockets, FIFOs: readFleetDir skips them
      },
    });
    this.watcher = watcher;
    const mine = () => this.watcher === watcher && this.state !== 'closed';
    watcher.on('all', (event, p) => {
      if (!mine()) return;
      const rel = relOf(p);
      if (rel === undefined) return;
      if (event === 'addDir' || event === 'unlinkDir') {
        if (rel === '') this.schedule('check'); // chokidar saw the root itself go
        else if (isFleetDirPath(rel)) this.markDirty(undefined, rel);
      } else if (isFleetPath(rel)) this.markDirty(rel);
    });
    // Raw inotify events: one per chunk written, also for events chokidar's semantic layer drops (its 50 ms
    // change throttle, its atime/mtime heuristic). A file watcher reports (event, basename, {watchedPath: file}),
    // a directory watcher (event, child name, {watchedPath: dir}).
    watcher.on('raw', (_event, evPath, details) => {
      if (!mine()) return;
      const watched = (details as { watchedPath?: string } | undefined)?.watchedPath;
      if (typeof watched !== 'string') return;
      // A file watcher (or a directory's event about itself) names the watched path's own basename; a
      // directory watcher names a child. Both readings are taken when they cannot be told apart.
      const candidates: (string | undefined)[] = [];
      if (!evPath || evPath === path.basename(watched)) candidates.push(relOf(path.resolve(watched)));
      if (evPath) candidates.push(relOf(path.resolve(watched, evPath)));
      let fleet = false;
      for (const rel of candidates) {
        if (rel === undefined) continue;
        if (isFleetPath(rel)) {
          this.markDirty(rel);
          fleet = true;
        } else if (this.knownDirs.has(rel)) {
          this.markDirty(undefined, rel); // a directory with fleet files was chmod-ed, moved or replaced
          fleet = true;
        }
      }
      // Not a fleet file (an editor's swap file, or the root itself going away): only make sure a root check
      // runs soon, without postponing a pending flush.
      if (!fleet) this.poke();
    });
    watcher.on('error', (e) => {
      if (mine()) this.report(fleetDirError(this.root, e));
    });
    await new Promise<void>((resolve) => watcher.once('ready', resolve));
    if (this.state === 'closed') {
      await this.stopWatcher();
      throw new DragonflyError('DF_ERR_FLEET_DIR', `stopped watching ${this.root}`, { path: this.root });
    }
  }

  private async stopWatcher(): Promise<void> {
    const w = this.watcher;
    this.watcher = undefined;
    if (w) await w.close();
  }

  private async fullScan(): Promise<{ entries: Map<string, Entry>; dirErrors: Map<string, DragonflyError> }> {
    const listing = await listTree(this.realRoot, '');
    const entries = new Map<string, Entry>();
    await forEachBatched(listing.files, async (rel) => {
      const entry = await this.readOne(rel, true);
      if (entry && entry !== 'dir') entries.set(rel, entry);
    });
    return { entries, dirErrors: listing.dirErrors };
  }

  // --- events → one flush ----------------------------------------------------------------------------------

  private markDirty(file: string | undefined, dir?: string): void {
    if (file !== undefined) this.dirtyFiles.add(file);
    if (dir !== undefined) this.dirtyDirs.add(dir);
    this.eventSeq++;
    const now = Date.now();
    if (this.debounceTimer === undefined) this.firstEventAt = now;
    clearTimeout(this.debounceTimer);
    const delay = Math.max(0, Math.min(this.debounceMs, this.firstEventAt + this.maxWaitMs - now));
    this.debounceTimer = setTimeout(() => this.onQuiet(), delay);
  }

  private poke(): void {
    if (this.debounceTimer !== undefined) return;
    this.firstEventAt = Date.now();
    this.debounceTimer = setTimeout(() => this.onQuiet(), this.debounceMs);
  }

  private onQuiet(): void {
    // Timers run before I/O in each turn of the event loop: if the process was stalled (CPU starvation, a
    // long synchronous task), events that already happened may still be queued. Let one poll phase deliver
    // them before deciding that the directory is quiet.
    const seq = this.eventSeq;
    setImmediate(() => {
      if (this.state === 'closed') return;
      if (this.eventSeq !== seq && Date.now() < this.firstEventAt + this.maxWaitMs) return; // markDirty re-armed the timer
      clearTimeout(this.debounceTimer);
      this.debounceTimer = undefined;
      this.schedule('flush');
    });
  }

  private schedule(what: 'flush' | 'check'): void {
    if (what === 'flush') this.wantFlush = true;
    else this.wantCheck = true;
    if (this.state === 'watching' || this.state === 'missing') this.pump();
  }

  /** Runs checks and flushes one at a time. */
  private pump(): void {
    if (this.busy) return;
    this.busy = (async () => {
      try {
        while (this.state !== 'closed' && (this.wantFlush || this.wantCheck)) {
          const flush = this.wantFlush;
          this.wantFlush = this.wantCheck = false;
          try {
            await this.step(flush);
          } catch (e) {
            this.report(e instanceof Error ? e : new Error(String(e)));
          }
        }
      } finally {
        this.busy = undefined;
      }
    })();
  }

  private async step(flush: boolean): Promise<void> {
    const root = await this.statRoot();
    if (this.state === 'closed') return;
    if ('error' in root) {
      if (this.state !== 'missing') await this.enterMissing(root.error);
      return;
    }
    if (this.state === 'missing' || root.id !== this.rootId) {
      await this.restart();
      return;
    }
    if (flush) await this.flushDirty();
  }

  private async enterMissing(error: DragonflyError): Promise<void> {
    this.state = 'missing';
    clearTimeout(this.debounceTimer);
    this.debounceTimer = undefined;
    this.dirtyFiles.clear();
    this.dirtyDirs.clear();
    await this.stopWatcher();
    this.report(error);
  }

  /** The root came back, or is another directory now: watch it anew and re-read everything once. */
  private async restart(): Promise<void> {
    await this.stopWatcher();
    this.dirtyFiles.clear();
    this.dirtyDirs.clear();
    let scan: Awaited<ReturnType<DirSource['fullScan']>>;
    try {
      await this.startWatcher();
      scan = await this.fullScan();
    } catch (e) {
      if (this.state === 'closed') return;
      await this.stopWatcher();
      if (this.state !== 'missing') await this.enterMissing(fleetDirError(this.root, e));
      return;
    }
    if (this.state === 'closed') return;
    this.state = 'watching';
    const updates = new Map<string, Entry | undefined>();
    for (const rel of this.entries.keys()) if (!scan.entries.has(rel)) updates.set(rel, undefined);
    for (const [rel, entry] of scan.entries) updates.set(rel, entry);
    this.apply(updates, scan.dirErrors);
  }

  private async flushDirty(): Promise<void> {
    const updates = new Map<string, Entry | undefined>();
    const dirErrors = new Map(this.dirErrors);
    // Reading may find directories where files were expected (and the reverse): loop until settled.
    for (let round = 0; round < 8 && (this.dirtyFiles.size > 0 || this.dirtyDirs.size > 0); round++) {
      const files = new Set(this.dirtyFiles);
      const dirs = [...this.dirtyDirs].sort(byPath).filter((d, i, all) => !all.slice(0, i).some((p) => under(d, p)));
      this.dirtyFiles.clear();
      this.dirtyDirs.clear();
      for (const dir of dirs) {
        for (const rel of this.entries.keys()) if (under(rel, dir)) files.add(rel);
        const listing = await listTree(this.realRoot, dir);
        for (const rel of listing.files) files.add(rel);
        for (const key of [...dirErrors.keys()]) if (under(key, dir)) dirErrors.delete(key);
        for (const [key, err] of listing.dirErrors) dirErrors.set(key, err);
      }
      await forEachBatched(files, async (rel) => {
        const entry = await this.readOne(rel);
        if (entry === 'dir') {
          this.dirtyDirs.add(rel);
          updates.set(rel, undefined);
        } else updates.set(rel, entry);
      });
      if (this.state === 'closed') return;
    }
    // Files that vanished because the root itself went away are not deletions: check before applying.
    const root = await this.statRoot();
    if (this.state === 'closed') return;
    if ('error' in root || root.id !== this.rootId) {
      this.schedule('check');
      return;
    }
    this.apply(updates, dirErrors);
  }

  /** Reads one fleet file: its entry, undefined if it is gone (or not a regular file), 'dir' if it is a directory. */
  private async readOne(rel: string, listedAsFile = false): Promise<Entry | undefined | 'dir'> {
    const abs = path.join(this.realRoot, rel);
    try {
      if (!listedAsFile) {
        const st = fs.lstatSync(abs);
        if (st.isDirectory()) return 'dir';
        if (!st.isFile()) return undefined;
      }
      return { file: Object.freeze({ path: rel, text: await this.readText(abs) }) };
    } catch (e) {
      if (isGone(e)) return undefined;
      if (errnoOf(e) === 'EISDIR') return 'dir';
      return { error: readError(rel, e) };
    }
  }

  private apply(updates: Map<string, Entry | undefined>, dirErrors: Map<string, DragonflyError>): void {
    const changed: string[] = [];
    let keysChanged = false;
    for (const [rel, entry] of updates) {
      const before = this.entries.get(rel);
      if (sameEntry(before, entry)) continue;
      changed.push(rel);
      keysChanged ||= !before || !entry;
      if (entry) this.entries.set(rel, entry);
      else this.entries.delete(rel);
    }
    const errorsBefore = errorsKey(this.dirErrors);
    this.dirErrors = dirErrors;
    const errorsChanged = errorsKey(dirErrors) !== errorsBefore;
    if (keysChanged || errorsChanged) this.rebuildKnownDirs();
    if (changed.length === 0 && !errorsChanged) return;
    this.emit(this.snapshot(changed.sort(byPath)));
  }

  private rebuildKnownDirs(): void {
    const dirs = new Set<string>();
    for (const key of [...this.entries.keys(), ...this.dirErrors.keys()]) {
      for (let i = key.lastIndexOf('/'); i > 0; i = key.lastIndexOf('/', i - 1)) {
        const dir = key.slice(0, i);
        if (dirs.has(dir)) break;
        dirs.add(dir);
      }
    }
    for (const key of this.dirErrors.keys()) dirs.add(key);
    this.knownDirs = dirs;
  }

  private snapshot(changed: string[]): FleetSnapshot {
    const files: SourceFile[] = [];
    const errors: DragonflyError[] = [];
    for (const entry of this.entries.values()) {
      if (entry.file) files.push(entry.file);
      else errors.push(entry.error);
    }
    errors.push(...this.dirErrors.values());
    files.sort((a, b) => byPath(a.path, b.path));
    errors.sort((a, b) => byPath(String(a.data.path), String(b.data.path)));
    return Object.freeze({
      revision: contentRevision(files),
      files: Object.freeze(files),
      changed: Object.freeze(changed),
      errors: Object.freeze(errors),
    });
  }

  private emit(snapshot: FleetSnapshot): void {
    if (this.state === 'closed') return;
    this.last = snapshot;
    try {
      const result = this.options.onChange(snapshot);
      if (result && typeof result.then === 'function') result.then(undefined, (e: unknown) => this.report(e));
    } catch (e) {
      this.report(e);
    }
  }

  private report(e: unknown): void {
    if (this.state === 'closed') return;
    try {
      this.options.onError(e instanceof Error ? e : new Error(String(e)));
    } catch {
      // an onError that throws must not stop the watcher
    }
  }
}

function errorsKey(dirErrors: Map<string, DragonflyError>): string {
  return [...dirErrors].map(([k, e]) => `${k}\0${String(e.data.errno)}`).sort().join('\n');
}
