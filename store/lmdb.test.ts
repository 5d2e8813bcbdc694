// LmdbStore against the Store contract: revisions, per-key revisions, compare-and-commit, snapshots,
// watches (in-process and across processes), optimistic concurrency across processes, and clean close.
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { LmdbStore } from './lmdb.js';
import type { Change, Versioned } from './store.js';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const DIST_LMDB = path.join(ROOT, 'dist', 'store', 'lmdb.js');

const dirs: string[] = [];
const stores: LmdbStore[] = [];
const children: ChildProcess[] = [];

function tempDir(prefix = 'dragonfly-lmdb-test-'): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  dirs.push(d);
  return d;
}

function openStore(dir: string, pollMs = 50): LmdbStore {
  const s = LmdbStore.open(dir, { pollMs });
  stores.push(s);
  return s;
}

/** Poll until `cond()` holds; fail with `what` after `timeoutMs`. */
async function waitFor(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Resolve with `value` or reject after `ms`: used to prove something does not hang. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
    }),
  ]);
}

/** Write an ESM script that imports the compiled store; returns its path. */
function childScript(body: string): string {
  const file = path.join(tempDir('dragonfly-lmdb-child-'), 'child.mjs');
  fs.writeFileSync(
    file,
    `import fs from 'node:fs';\n` +
      `const { LmdbStore } = await import(${JSON.stringify(pathToFileURL(DIST_LMDB).href)});\n` +
      `const sleep = (ms) => new Promise((r) => setTimeout(r, ms));\n` +
      body,
  );
  return file;
}

interface ChildResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Spawn `node script ...args`; `onLine` sees each stdout line as it arrives. Kills it after `timeoutMs`. */
function runChild(script: string, args: string[], opts: { timeoutMs?: number; onLine?: (line: string) => void } = {}): Promise<ChildResult> {
  const started = Date.now();
  const child = spawn(process.execPath, [script, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let stdout = '';
  let stderr = '';
  let partial = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
    partial += chunk;
    let nl: number;
    while ((nl = partial.indexOf('\n')) >= 0) {
      opts.onLine?.(partial.slice(0, nl));
      partial = partial.slice(nl + 1);
    }
  });
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: Date.now() - started });
    });
  });
}

beforeAll(() => {
  // The child processes import the compiled store. test/global-setup.ts builds it; build here too when
  // this file runs without that setup.
  if (!fs.existsSync(DIST_LMDB)) {
    execFileSync(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json'], { cwd: ROOT, stdio: 'inherit' });
  }
}, 120_000);

afterEach(async () => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const s of stores.splice(0)) await within(s.close(), 10_000, 'store.close()');
});

afterAll(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

const keysOf = (vs: Versioned[]) => vs.map((v) => v.key);

describe('revisions', () => {
  it('starts at revision 0 and increases by exactly 1 per successful commit', async () => {
    const store = openStore(tempDir());
    expect(await store.read((s) => s.revision)).toBe(0);
    for (let i = 1; i <= 5; i++) {
      const r = await store.commit({ put: [{ key: `k/${i}`, value: i }] });
      expect(r).toEqual({ ok: true, revision: i });
      expect(await store.read((s) => s.revision)).toBe(i);
    }
    // A failed commit does not consume a revision; the next successful one is exactly +1.
    const failed = await store.commit({ compare: [{ key: 'k/1', modRevision: 0 }], put: [{ key: 'k/9', value: 9 }] });
    expect(failed.ok).toBe(false);
    expect(failed.revision).toBe(5);
    expect(await store.commit({ put: [{ key: 'k/6', value: 6 }] })).toEqual({ ok: true, revision: 6 });
  });

  it('gives every put and delete of one commit the same modRevision', async () => {
    const store = openStore(tempDir());
    await store.commit({ put: [{ key: 'a', value: 1 }, { key: 'b', value: 2 }, { key: 'gone', value: 0 }] });
    const changes: Change[] = [];
    const stop = store.watch('', 1, (c) => changes.push(...c));
    const r = await store.commit({
      put: [{ key: 'a', value: 10 }, { key: 'c', value: 30 }, { key: 'd', value: 40 }],
      delete: ['gone'],
    });
    expect(r).toEqual({ ok: true, revision: 2 });
    const snap = await store.read((s) => ({ a: s.get('a'), b: s.get('b'), c: s.get('c'), d: s.get('d'), gone: s.get('gone') }));
    expect(snap.a!.modRevision).toBe(2);
    expect(snap.c!.modRevision).toBe(2);
    expect(snap.d!.modRevision).toBe(2);
    expect(snap.b!.modRevision).toBe(1); // untouched
    expect(snap.gone).toBeUndefined();
    await waitFor(() => changes.length >= 4, 'the watch to report revision 2');
    stop();
    expect(changes).toEqual([
      { revision: 2, key: 'a', type: 'put' },
      { revision: 2, key: 'c', type: 'put' },
      { revision: 2, key: 'd', type: 'put' },
      { revision: 2, key: 'gone', type: 'delete' },
    ]);
  });

  it('keeps createRevision across updates and sets modRevision to the updating commit', async () => {
    const store = openStore(tempDir());
    await store.commit({ put: [{ key: 'other', value: 0 }] }); // revision 1
    await store.commit({ put: [{ key: 'm/1', value: { v: 1 } }] }); // revision 2
    await store.commit({ put: [{ key: 'other', value: 1 }] }); // revision 3
    await store.commit({ put: [{ key: 'm/1', value: { v: 2 } }] }); // revision 4
    await store.commit({ put: [{ key: 'm/1', value: { v: 3 } }] }); // revision 5
    expect(await store.read((s) => s.get('m/1'))).toEqual({ key: 'm/1', value: { v: 3 }, modRevision: 5, createRevision: 2 });
    // Deleted then created again: a new life, as in etcd.
    await store.commit({ delete: ['m/1'] }); // 6
    await store.commit({ put: [{ key: 'm/1', value: { v: 4 } }] }); // 7
    expect(await store.read((s) => s.get('m/1'))).toEqual({ key: 'm/1', value: { v: 4 }, modRevision: 7, createRevision: 7 });
  });
});

describe('compare-and-commit', () => {
  it('succeeds when every compare holds (absent key with 0, present key with its modRevision)', async () => {
    const store = openStore(tempDir());
    expect(await store.commit({ compare: [{ key: 'x', modRevision: 0 }], put: [{ key: 'x', value: 1 }] })).toEqual({ ok: true, revision: 1 });
    expect(await store.commit({ compare: [{ key: 'x', modRevision: 1 }, { key: 'y', modRevision: 0 }], put: [{ key: 'x', value: 2 }, { key: 'y', value: 1 }] })).toEqual({
      ok: true,
      revision: 2,
    });
    expect(await store.read((s) => [s.get('x')!.value, s.get('y')!.value])).toEqual([2, 1]);
  });

  it('fails with ok:false, names the conflicting keys and writes nothing', async () => {
    const store = openStore(tempDir());
    await store.commit({ put: [{ key: 'x', value: 'x1' }, { key: 'y', value: 'y1' }, { key: 'z', value: 'z1' }] }); // 1
    await store.commit({ put: [{ key: 'y', value: 'y2' }] }); // 2: y's modRevision is now 2
    const before = await store.read((s) => ({ revision: s.revision, all: s.list('') }));
    const changes: Change[] = [];
    store.watch('', before.revision, (c) => changes.push(...c));

    // x must not exist (it does); y at modRevision 1 is stale (it is 2); z holds (1); w must not exist (holds).
    const r = await store.commit({
      compare: [
        { key: 'x', modRevision: 0 },
        { key: 'y', modRevision: 1 },
        { key: 'z', modRevision: 1 },
        { key: 'w', modRevision: 0 },
      ],
      put: [{ key: 'x', value: 'BAD' }, { key: 'y', value: 'BAD' }, { key: 'w', value: 'BAD' }],
      delete: ['z'],
    });
    expect(r.ok).toBe(false);
    expect(r.revision).toBe(2);
    expect(r.ok === false && [...r.conflicts].sort()).toEqual(['x', 'y']);

    // Only one guard failing is enough to write nothing.
    const r2 = await store.commit({ compare: [{ key: 'z', modRevision: 1 }, { key: 'y', modRevision: 1 }], put: [{ key: 'new', value: 'BAD' }] });
    expect(r2).toEqual({ ok: false, revision: 2, conflicts: ['y'] });

    const after = await store.read((s) => ({ revision: s.revision, all: s.list('') }));
    expect(after).toEqual(before);
    expect(keysOf(after.all)).toEqual(['x', 'y', 'z']);
    expect(after.all.map((v) => v.value)).toEqual(['x1', 'y2', 'z1']);
    // Nothing is reported to watchers either; the next good commit is exactly revision 3.
    expect(await store.commit({ put: [{ key: 'after', value: 1 }] })).toEqual({ ok: true, revision: 3 });
    await waitFor(() => changes.length > 0, 'the watch to report revision 3');
    expect(changes).toEqual([{ revision: 3, key: 'after', type: 'put' }]);
  });

  it('fails a guard on a deleted key unless it asks for 0', async () => {
    const store = openStore(tempDir());
    await store.commit({ put: [{ key: 'k', value: 1 }] }); // 1
    await store.commit({ delete: ['k'] }); // 2
    expect(await store.commit({ compare: [{ key: 'k', modRevision: 1 }], put: [{ key: 'k', value: 2 }] })).toEqual({ ok: false, revision: 2, conflicts: ['k'] });
    expect(await store.commit({ compare: [{ key: 'k', modRevision: 0 }], put: [{ key: 'k', value: 3 }] })).toEqual({ ok: true, revision: 3 });
  });
});

describe('read', () => {
  it('lists by prefix in key order and stops at the end of the prefix', async () => {
    const store = openStore(tempDir());
    await store.commit({
      put: ['b/1', 'a/2', 'a', 'a/1', 'a0', 'ab', 'a/1/x', '0'].map((key) => ({ key, value: key })),
    });
    const got = await store.read((s) => ({ a: keysOf(s.list('a/')), b: keysOf(s.list('b/')), none: s.list('c/'), all: keysOf(s.list('')) }));
    expect(got.a).toEqual(['a/1', 'a/1/x', 'a/2']);
    expect(got.b).toEqual(['b/1']);
    expect(got.none).toEqual([]);
    expect(got.all).toEqual(['0', 'a', 'a/1', 'a/1/x', 'a/2', 'a0', 'ab', 'b/1']);
  });

  it('gives a consistent snapshot even while this process commits', async () => {
    const store = openStore(tempDir());
    await store.commit({ put: [{ key: 'p/1', value: 'old' }, { key: 'p/2', value: 'old' }] });
    let inner: Promise<unknown> | undefined;
    const seen = await store.read((s) => {
      const first = { revision: s.revision, p1: s.get('p/1')?.value, list: s.list('p/').map((v) => v.value) };
      // The commit runs while the snapshot is open; the snapshot must not see it.
      inner = store.commit({ put: [{ key: 'p/1', value: 'new' }, { key: 'p/3', value: 'new' }], delete: ['p/2'] });
      const second = { revision: s.revision, p1: s.get('p/1')?.value, list: s.list('p/').map((v) => v.value) };
      return { first, second };
    });
    expect(await inner).toEqual({ ok: true, revision: 2 });
    expect(seen.first).toEqual({ revision: 1, p1: 'old', list: ['old', 'old'] });
    expect(seen.second).toEqual(seen.first);
    expect(await store.read((s) => ({ revision: s.revision, keys: keysOf(s.list('p/')) }))).toEqual({ revision: 2, keys: ['p/1', 'p/3'] });
  });

  it('gives a consistent snapshot while another process commits', async () => {
    const dir = tempDir();
    const store = openStore(dir);
    await store.commit({ put: [{ key: 'p/1', value: 'old' }] });
    const script = childScript(`
const s = LmdbStore.open(process.argv[2]);
const r = await s.commit({ put: [{ key: 'p/1', value: 'new' }, { key: 'p/2', value: 'new' }] });
await s.close();
console.log(JSON.stringify(r));
`);
    // The other process commits (spawnSync: to completion) while this snapshot is open.
    const seen = await store.read((s) => {
      const first = { revision: s.revision, list: s.list('p/').map((v) => v.value), p2: s.get('p/2') };
      const r = spawnSync(process.execPath, [script, dir], { cwd: ROOT, encoding: 'utf8', timeout: 30_000 });
      const second = { revision: s.revision, list: s.list('p/').map((v) => v.value), p2: s.get('p/2') };
      return { first, second, child: r };
    });
    expect(seen.child.status, seen.child.stderr).toBe(0);
    expect(JSON.parse(seen.child.stdout)).toEqual({ ok: true, revision: 2 });
    expect(seen.first).toEqual({ revision: 1, list: ['old'], p2: undefined });
    expect(seen.second).toEqual(seen.first);
    // A later event-loop turn sees the other process's commit.
    await new Promise((r) => setTimeout(r, 0));
    expect(await store.read((s) => ({ revision: s.revision, list: s.list('p/').map((v) => v.value) }))).toEqual({ revision: 2, list: ['new', 'new'] });
  });

  it('a read that starts after another process has committed sees that commit', async () => {
    const dir = tempDir();
    const store = openStore(dir);
    await store.commit({ put: [{ key: 'p/1', value: 'old' }] });
    const script = childScript(`
const s = LmdbStore.open(process.argv[2]);
const r = await s.commit({ put: [{ key: 'p/1', value: 'new' }] });
await s.close();
console.log(JSON.stringify(r));
`);
    expect(await store.read((s) => s.revision)).toBe(1);
    // The other process's commit has completed (spawnSync waited for it) before the next read starts:
    // that read must see it, as a read after a completed write does in etcd.
    const child = spawnSync(process.execPath, [script, dir], { cwd: ROOT, encoding: 'utf8', timeout: 30_000 });
    expect(child.status, child.stderr).toBe(0);
    expect(JSON.parse(child.stdout)).toEqual({ ok: true, revision: 2 });
    expect(await store.read((s) => ({ revision: s.revision, p1: s.get('p/1')?.value }))).toEqual({ revision: 2, p1: 'new' });
  });
});

describe('watch', () => {
  it('delivers earlier changes after fromRevision, then new commits, only under the prefix', async () => {
    const store = openStore(tempDir());
    await store.commit({ put: [{ key: 'm/1', value: 1 }, { key: 'w/1', value: 1 }] }); // 1
    await store.commit({ put: [{ key: 'm/2', value: 2 }] }); // 2
    await store.commit({ put: [{ key: 'w/2', value: 2 }] }); // 3
    await store.commit({ put: [{ key: 'm/1', value: 11 }], delete: ['m/2'] }); // 4
    await store.commit({ put: [{ key: 'mx', value: 0 }] }); // 5: not under 'm/'

    const batches: Change[][] = [];
    const all = () => batches.flat();
    const stop = store.watch('m/', 1, (c) => batches.push(c));
    await waitFor(() => all().length >= 3, 'the backlog after revision 1');
    expect(all()).toEqual([
      { revision: 2, key: 'm/2', type: 'put' },
      { revision: 4, key: 'm/1', type: 'put' },
      { revision: 4, key: 'm/2', type: 'delete' },
    ]);

    await store.commit({ put: [{ key: 'w/3', value: 3 }] }); // 6: other prefix
    await store.commit({ put: [{ key: 'm/3', value: 3 }] }); // 7
    await waitFor(() => all().length >= 4, 'the in-process commit at revision 7');
    await store.commit({ put: [{ key: 'm/4', value: 4 }], delete: ['w/1'] }); // 8
    await waitFor(() => all().length >= 5, 'the in-process commit at revision 8');
    expect(all().slice(3)).toEqual([
      { revision: 7, key: 'm/3', type: 'put' },
      { revision: 8, key: 'm/4', type: 'put' },
    ]);
    expect(all().every((c) => c.key.startsWith('m/'))).toBe(true);
    expect(batches.every((b) => b.length > 0)).toBe(true);

    // After stop, nothing more arrives; a later watcher from the head sees only what follows.
    stop();
    const later: Change[] = [];
    const stop2 = store.watch('m/', 8, (c) => later.push(...c));
    await store.commit({ put: [{ key: 'm/5', value: 5 }] }); // 9
    await waitFor(() => later.length >= 1, 'the second watcher');
    stop2();
    expect(later).toEqual([{ revision: 9, key: 'm/5', type: 'put' }]);
    expect(all()).toHaveLength(5);
  });

  it('delivers from revision 0 everything under the prefix', async () => {
    const store = openStore(tempDir());
    await store.commit({ put: [{ key: 'a/1', value: 1 }] });
    await store.commit({ put: [{ key: 'b/1', value: 1 }] });
    await store.commit({ put: [{ key: 'a/2', value: 1 }] });
    const got: Change[] = [];
    const stop = store.watch('a/', 0, (c) => got.push(...c));
    await waitFor(() => got.length >= 2, 'the backlog from 0');
    stop();
    expect(got).toEqual([
      { revision: 1, key: 'a/1', type: 'put' },
      { revision: 3, key: 'a/2', type: 'put' },
    ]);
  });

  it('sees commits made by another process', async () => {
    const dir = tempDir();
    const store = openStore(dir, 50);
    await store.commit({ put: [{ key: 'm/0', value: 0 }] }); // 1
    const got: Change[] = [];
    const stop = store.watch('m/', 1, (c) => got.push(...c));
    const script = childScript(`
const s = LmdbStore.open(process.argv[2]);
const out = [];
out.push(await s.commit({ put: [{ key: 'm/1', value: 1 }, { key: 'other/1', value: 1 }] }));
out.push(await s.commit({ put: [{ key: 'other/2', value: 2 }] }));
out.push(await s.commit({ put: [{ key: 'm/2', value: 2 }], delete: ['m/0'] }));
await s.close();
console.log(JSON.stringify(out));
`);
    const r = await runChild(script, [dir]);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual([
      { ok: true, revision: 2 },
      { ok: true, revision: 3 },
      { ok: true, revision: 4 },
    ]);
    await waitFor(() => got.length >= 3, 'the watcher to see the other process commits (pollMs 50)');
    stop();
    expect(got).toEqual([
      { revision: 2, key: 'm/1', type: 'put' },
      { revision: 4, key: 'm/2', type: 'put' },
      { revision: 4, key: 'm/0', type: 'delete' },
    ]);
    expect(await store.read((s) => ({ revision: s.revision, keys: keysOf(s.list('m/')) }))).toEqual({ revision: 4, keys: ['m/1', 'm/2'] });
  });

  it('sees another process commit while the watcher process is idle (no commit of its own)', async () => {
    const dir = tempDir();
    const store = openStore(dir, 50);
    const got: Change[] = [];
    store.watch('', 0, (c) => got.push(...c));
    // A child that commits one key per line it is told to, so the parent sees each commit arrive alone.
    const script = childScript(`
const s = LmdbStore.open(process.argv[2]);
for (let i = 1; i <= 3; i++) {
  await s.commit({ put: [{ key: 'k/' + i, value: i }] });
  console.log('committed ' + i);
  while (!fs.existsSync(process.argv[3] + '.' + i)) await sleep(5);
}
await s.close();
`);
    const flag = path.join(tempDir(), 'ack');
    const lines: string[] = [];
    const done = runChild(script, [dir, flag], { onLine: (l) => lines.push(l) });
    for (let i = 1; i <= 3; i++) {
      await waitFor(() => got.length >= i, `the watcher to see commit ${i} from the other process`);
      expect(got[i - 1]).toEqual({ revision: i, key: `k/${i}`, type: 'put' });
      fs.writeFileSync(`${flag}.${i}`, '');
    }
    const r = await done;
    expect(r.code, r.stderr).toBe(0);
    expect(lines).toEqual(['committed 1', 'committed 2', 'committed 3']);
    expect(got).toHaveLength(3);
  });
});

describe('several processes', () => {
  it('two processes incrementing one counter with compare-and-set end at exactly 200', async () => {
    const dir = tempDir();
    const store = openStore(dir);
    await store.commit({ put: [{ key: 'counter', value: 0 }] }); // 1
    const go = path.join(tempDir(), 'go');
    const script = childScript(`
const [dir, go, n] = [process.argv[2], process.argv[3], Number(process.argv[4])];
const s = LmdbStore.open(dir);
console.log('ready');
while (!fs.existsSync(go)) await sleep(1);
let conflicts = 0;
let commits = 0;
for (let i = 0; i < n; i++) {
  for (;;) {
    const cur = await s.read((snap) => snap.get('counter'));
    // Widen the window between the read and the commit so the two processes really interleave.
    await new Promise((r) => setImmediate(r));
    const r = await s.commit({
      compare: [{ key: 'counter', modRevision: cur ? cur.modRevision : 0 }],
      put: [{ key: 'counter', value: (cur ? cur.value : 0) + 1 }, { key: 'log/' + process.pid + '/' + i, value: cur ? cur.value : 0 }],
    });
    if (r.ok) { commits++; break; }
    if (!r.conflicts.includes('counter')) throw new Error('conflict without the counter: ' + JSON.stringify(r));
    if (++conflicts > 100000) throw new Error('no progress: 100000 conflicts (stale reads?)');
  }
}
await s.close();
console.log(JSON.stringify({ commits, conflicts }));
`);
    let ready = 0;
    const runs = [0, 1].map(() => runChild(script, [dir, go, '100'], { timeoutMs: 60_000, onLine: (l) => l === 'ready' && ready++ }));
    await waitFor(() => ready === 2, 'both processes to open the store', 20_000);
    fs.writeFileSync(go, '');
    const results = await Promise.all(runs);
    for (const r of results) expect(r.code, r.stderr).toBe(0);
    const stats = results.map((r) => JSON.parse(r.stdout.trim().split('\n').pop()!) as { commits: number; conflicts: number });
    console.log(`counter: commits ${stats.map((s) => s.commits).join('+')}, conflicts retried ${stats.map((s) => s.conflicts).join('+')}`);
    expect(stats.map((s) => s.commits)).toEqual([100, 100]);

    const end = await store.read((s) => ({ counter: s.get<number>('counter')!, log: s.list<number>('log/'), revision: s.revision }));
    expect(end.counter.value).toBe(200);
    expect(end.revision).toBe(201); // 1 initial + 200 successful commits; conflicts consumed no revision
    expect(end.counter.modRevision).toBe(201);
    // Every increment read a distinct previous value: no lost update, no double count.
    expect(end.log.map((v) => v.value).sort((a, b) => a - b)).toEqual(Array.from({ length: 200 }, (_, i) => i));
  });

  it('opens one state dir from two instances in one process and from another process at once', async () => {
    const dir = tempDir();
    const a = openStore(dir);
    const b = openStore(dir);
    expect(await a.commit({ put: [{ key: 'k', value: 'a' }] })).toEqual({ ok: true, revision: 1 });
    expect(await b.read((s) => s.get('k'))).toEqual({ key: 'k', value: 'a', modRevision: 1, createRevision: 1 });
    expect(await b.commit({ compare: [{ key: 'k', modRevision: 1 }], put: [{ key: 'k', value: 'b' }] })).toEqual({ ok: true, revision: 2 });
    expect(await a.read((s) => s.get('k')?.value)).toBe('b');

    // Another process opens the same directory while both instances are open.
    const script = childScript(`
const s = LmdbStore.open(process.argv[2]);
const before = await s.read((snap) => ({ revision: snap.revision, k: snap.get('k') }));
const r = await s.commit({ compare: [{ key: 'k', modRevision: 2 }], put: [{ key: 'k', value: 'child' }] });
await s.close();
console.log(JSON.stringify({ before, r }));
`);
    const r = await runChild(script, [dir]);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ before: { revision: 2, k: { key: 'k', value: 'b', modRevision: 2, createRevision: 1 } }, r: { ok: true, revision: 3 } });
    expect(await a.read((s) => [s.revision, s.get('k')?.value])).toEqual([3, 'child']);

    // Closing one instance leaves the other working.
    await within(b.close(), 10_000, 'closing the second instance');
    expect(await a.commit({ put: [{ key: 'k', value: 'a again' }] })).toEqual({ ok: true, revision: 4 });
    expect(await a.read((s) => s.get('k')?.value)).toBe('a again');
  });
});

describe('close', () => {
  it('resolves in-process, with an active watcher, and is idempotent', async () => {
    const store = LmdbStore.open(tempDir(), { pollMs: 20 });
    const got: Change[] = [];
    store.watch('', 0, (c) => got.push(...c));
    await store.commit({ put: [{ key: 'k', value: 1 }] });
    await waitFor(() => got.length === 1, 'the watcher');
    await expect(within(store.close(), 10_000, 'store.close()')).resolves.toBeUndefined();
    await expect(within(store.close(), 10_000, 'a second store.close()')).resolves.toBeUndefined();
    // A closed store refuses to read instead of touching freed memory.
    await expect(store.read((snap) => snap.revision)).rejects.toThrow();
  });

  it('lets a process that committed, watched and closed exit by itself', async () => {
    const dir = tempDir();
    const script = childScript(`
const s = LmdbStore.open(process.argv[2], { pollMs: 20 });
const seen = [];
s.watch('', 0, (c) => seen.push(...c));
for (let i = 0; i < 10; i++) await s.commit({ compare: [{ key: 'k/' + i, modRevision: 0 }], put: [{ key: 'k/' + i, value: i }], delete: ['k/' + (i - 1)] });
await s.read((snap) => snap.list('k/'));
while (seen.length < 19) await sleep(5);
await s.close();
console.log('closed ' + seen.length);
// no process.exit(): the process must end on its own
`);
    const r = await runChild(script, [dir], { timeoutMs: 20_000 });
    expect(r.signal, `the process did not exit by itself (killed after ${r.ms} ms); stderr: ${r.stderr}`).toBeNull();
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe('closed 19');
    const store = openStore(dir);
    expect(await store.read((s) => [s.revision, keysOf(s.list('k/'))])).toEqual([10, ['k/9']]);
  });
});

describe('compaction: the change log is a bounded window', () => {
  it('keeps only the last retainRevisions changes; a watch from before them throws or resets', async () => {
    const dir = tempDir();
    const store = LmdbStore.open(dir, { pollMs: 50, retainRevisions: 100 });
    stores.push(store);
    for (let i = 1; i <= 600; i++) await store.commit({ put: [{ key: `k/${i % 7}`, value: i }] });
    // Compaction runs every 256 commits: at 512 it dropped everything up to 512 - 100.
    expect(await store.oldestRevision()).toBe(412);
    let err: unknown;
    try {
      store.watch('', 5, () => {});
    } catch (e) {
      err = e;
    }
    expect((err as { code?: string }).code).toBe('DF_ERR_STORE_COMPACTED');
    // With onReset the watch ends at once and names the oldest revision one may start from.
    const reset = await new Promise<number>((resolve) => store.watch('', 5, () => resolve(-1), resolve));
    expect(reset).toBe(412);
    // From inside the window, every change after it is delivered.
    const seen: Change[] = [];
    store.watch('', 500, (c) => seen.push(...c));
    await waitFor(() => seen.length === 100, 'the 100 changes after 500');
    expect(seen.map((c) => c.revision)).toEqual(Array.from({ length: 100 }, (_, i) => 501 + i));
  });

  it('a store written thousands of times keeps its change log bounded', async () => {
    const dir = tempDir();
    const store = LmdbStore.open(dir, { pollMs: 50, retainRevisions: 300 });
    stores.push(store);
    for (let i = 1; i <= 3000; i++) await store.commit({ put: [{ key: `seen/${i % 50}`, value: { i, at: new Date(i).toISOString() } }] });
    const oldest = await store.oldestRevision();
    expect(oldest).toBeGreaterThanOrEqual(3000 - 300 - 256);
    // The watch from the oldest kept revision replays at most the window.
    const seen: Change[] = [];
    store.watch('', oldest, (c) => seen.push(...c));
    await waitFor(() => seen.at(-1)?.revision === 3000, 'the replay up to the head');
    expect(seen.length).toBeLessThanOrEqual(300 + 256);
  });
});

describe('state files', () => {
  it('are readable by their owner only (hardware inventories are nobody else\'s business)', () => {
    const dir = path.join(tempDir(), 'state');
    openStore(dir);
    expect(fs.statSync(dir).mode & 0o777).toBe(0o700);
    for (const f of fs.readdirSync(dir)) expect(fs.statSync(path.join(dir, f)).mode & 0o077, f).toBe(0);
  });

  it('refuses to open on a filesystem without room, with DF_ERR_STORE_FULL instead of a SIGBUS', () => {
    const dir = tempDir();
    let err: unknown;
    try {
      LmdbStore.open(dir, { minFreeBytes: Number.MAX_SAFE_INTEGER });
    } catch (e) {
      err = e;
    }
    expect((err as { code?: string }).code).toBe('DF_ERR_STORE_FULL');
    expect(fs.existsSync(path.join(dir, 'state.lmdb'))).toBe(false);
  });
});
