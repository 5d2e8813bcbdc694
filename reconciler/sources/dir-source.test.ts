// The directory source against real files in a temp dir and a real chokidar: one snapshot per logical change.
// No timed assertions: events are awaited with a generous deadline, and "exactly one" / "none" are checked
// after a quiet period.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DragonflyError } from '../../schemas/errors.js';
import { watchFleetDir, type FleetDirWatcher, type FleetSnapshot, type WatchFleetDirOptions } from './dir-source.js';
import { readFleetDir } from './fleet-dir.js';
import { contentRevision } from '../load.js';

const QUIET_MS = 400;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitFor(condition: () => boolean, what: string, deadlineMs = 20_000): Promise<void> {
  const end = Date.now() + deadlineMs;
  while (!condition()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

const tmpDirs: string[] = [];
const watchers: FleetDirWatcher[] = [];

afterEach(async () => {
  await Promise.all(watchers.splice(0).map((w) => w.close()));
  for (const dir of tmpDirs.splice(0)) {
    fs.chmodSync(dir, 0o755);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

function tempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dragonfly-dir-source-'));
  tmpDirs.push(dir);
  return dir;
}

const machine = (name: string, mac: string, extra = '') =>
  `apiVersion: dragonfly.computer/v1\nkind: Machine\nmetadata: {name: ${name}}\nspec:\n  mac: ${mac}\n${extra}`;

/** A small fleet, with files readFleetDir skips lying around. */
function makeFleet(): string {
  const root = tempDir();
  const write = (rel: string, text: string) => {
    fs.mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
    fs.writeFileSync(path.join(root, rel), text);
  };
  write('templates.yaml', 'apiVersion: dragonfly.computer/v1\nkind: Template\nmetadata: {name: t}\nspec: {actions: []}\n');
  write('machines/rack1/web-01.yaml', machine('web-01', '52:54:00:ab:cd:01'));
  write('machines/rack1/web-02.yml', machine('web-02', '52:54:00:ab:cd:02'));
  write('machines/rack2/db-01.yaml', machine('db-01', '52:54:00:ab:cd:03'));
  write('README.md', '# not a fleet file\n');
  write('.hidden.yaml', 'ignored: true\n');
  write('.git/config.yaml', 'ignored: true\n');
  write('node_modules/pkg/x.yaml', 'ignored: true\n');
  write('machines/rack1/web-01.yaml~', 'backup\n');
  return root;
}

interface Harness {
  root: string;
  watcher: FleetDirWatcher;
  events: FleetSnapshot[];
  errors: Error[];
  first: FleetSnapshot;
  /** Relative paths passed to readFile, in order. */
  reads: string[];
}

async function watchRoot(root: string, options: Partial<WatchFleetDirOptions> = {}): Promise<Harness> {
  const events: FleetSnapshot[] = [];
  const errors: Error[] = [];
  const reads: string[] = [];
  const readFile = options.readFile ?? ((p: string) => fs.readFileSync(p, 'utf8'));
  const realRoot = fs.realpathSync(root);
  const watcher = watchFleetDir(root, {
    onChange: (s) => void events.push(s),
    onError: (e) => void errors.push(e),
    ...options,
    readFile: (abs) => {
      reads.push(path.relative(realRoot, abs).split(path.sep).join('/'));
      return readFile(abs);
    },
  });
  watchers.push(watcher);
  const first = await watcher.ready;
  return { root, watcher, events, errors, first, reads };
}

/** After each event, the snapshot is exactly what a full read of the directory gives. */
function expectInSync(h: Harness): void {
  const disk = readFleetDir(h.root);
  const current = h.watcher.current();
  expect(current.files).toEqual(disk);
  expect(current.revision).toBe(contentRevision(disk));
  expect(current.errors).toEqual([]);
}

/** Waits for the n-th event, then for a quiet period, and checks that no further event came. */
async function expectEvents(h: Harness, n: number): Promise<FleetSnapshot> {
  if (n > 0) await waitFor(() => h.events.length >= n, `${n} event(s)`);
  await sleep(QUIET_MS);
  expect(h.events.length, `events: ${JSON.stringify(h.events.map((e) => e.changed))}`).toBe(n);
  expect(h.errors).toEqual([]);
  if (n > 0) expect(h.watcher.current()).toBe(h.events[n - 1]);
  expectInSync(h);
  return h.events[n - 1]!;
}

describe('watchFleetDir', () => {
  it('starts with the same files and revision as readFleetDir, and emits nothing while nothing changes', async () => {
    const h = await watchRoot(makeFleet());
    expect(h.first.files.map((f) => f.path)).toEqual(['machines/rack1/web-01.yaml', 'machines/rack1/web-02.yml', 'machines/rack2/db-01.yaml', 'templates.yaml']);
    expect(h.first.changed).toEqual(h.first.files.map((f) => f.path));
    expect(h.watcher.current()).toBe(h.first);
    await expectEvents(h, 0);
  });

  it('an in-place edit → one event', async () => {
    const h = await watchRoot(makeFleet());
    fs.writeFileSync(path.join(h.root, 'machines/rack1/web-01.yaml'), machine('web-01', '52:54:00:ab:cd:01', '  disk: /dev/sdb\n'));
    const s = await expectEvents(h, 1);
    expect(s.changed).toEqual(['machines/rack1/web-01.yaml']);
    expect(s.revision).not.toBe(h.first.revision);
  });

  it("an atomic-rename save as vim does it → one event", async () => {
    const h = await watchRoot(makeFleet());
    const dir = path.join(h.root, 'machines/rack1');
    const file = path.join(dir, 'web-02.yml');
    fs.writeFileSync(path.join(dir, '.web-02.yml.swp'), 'swap');
    fs.writeFileSync(path.join(dir, '4913'), ''); // vim's probe: can I create files here?
    fs.unlinkSync(path.join(dir, '4913'));
    fs.renameSync(file, `${file}~`);
    fs.writeFileSync(file, machine('web-02', '52:54:00:ab:cd:02', '  protected: true\n'));
    fs.unlinkSync(`${file}~`);
    fs.writeFileSync(path.join(dir, '.web-02.yml.swp'), 'swap, later');
    const s = await expectEvents(h, 1);
    expect(s.changed).toEqual(['machines/rack1/web-02.yml']);
    fs.unlinkSync(path.join(dir, '.web-02.yml.swp'));
    await expectEvents(h, 1);
  });

  it.each([
    ['web-01.yaml.tmp', 'a `file.yaml.tmp`'],
    ['.web-01.yaml.tmp-8f3a', 'a hidden `.file.tmp-XXXX`'],
  ])('a save that renames %s over the target → one event (%s)', async (tmp) => {
    const h = await watchRoot(makeFleet());
    const dir = path.join(h.root, 'machines/rack1');
    fs.writeFileSync(path.join(dir, tmp), machine('web-01', '52:54:00:ab:cd:01', '  netboot: false\n'));
    fs.renameSync(path.join(dir, tmp), path.join(dir, 'web-01.yaml'));
    const s = await expectEvents(h, 1);
    expect(s.changed).toEqual(['machines/rack1/web-01.yaml']);
  });

  it('a file written in three chunks 20 ms apart → one event with the whole text', async () => {
    const h = await watchRoot(makeFleet());
    const text = machine('db-01', '52:54:00:ab:cd:03', '  disk: /dev/nvme0n1\n  power: on\n');
    const chunks = [text.slice(0, 30), text.slice(30, 70), text.slice(70)];
    const fd = fs.openSync(path.join(h.root, 'machines/rack2/db-01.yaml'), 'w');
    for (const [i, chunk] of chunks.entries()) {
      if (i > 0) await sleep(20);
      fs.writeSync(fd, chunk);
    }
    fs.closeSync(fd);
    const s = await expectEvents(h, 1);
    expect(s.changed).toEqual(['machines/rack2/db-01.yaml']);
    expect(s.files.find((f) => f.path === 'machines/rack2/db-01.yaml')?.text).toBe(text);
  });

  it('a process stalled longer than the debounce in the middle of a multi-chunk write → still one event', async () => {
    const h = await watchRoot(makeFleet());
    const text = machine('db-01', '52:54:00:ab:cd:03', '  disk: /dev/sdc\n');
    const fd = fs.openSync(path.join(h.root, 'machines/rack2/db-01.yaml'), 'w');
    fs.writeSync(fd, text.slice(0, 30));
    await sleep(20); // the watcher sees the first chunk and arms its debounce timer
    const until = Date.now() + 250;
    while (Date.now() < until); // the event loop stalls past the debounce…
    fs.writeSync(fd, text.slice(30, 70)); // …and this chunk's event is still queued when the timer fires
    await sleep(20);
    fs.writeSync(fd, text.slice(70));
    fs.closeSync(fd);
    const s = await expectEvents(h, 1);
    expect(s.files.find((f) => f.path === 'machines/rack2/db-01.yaml')?.text).toBe(text);
  });

  it('a touch, or a save of the same bytes, → no event', async () => {
    const h = await watchRoot(makeFleet());
    const file = path.join(h.root, 'templates.yaml');
    const later = new Date(Date.now() + 60_000);
    fs.utimesSync(file, later, later);
    fs.writeFileSync(file, fs.readFileSync(file));
    const tmp = path.join(h.root, 'machines/rack2/db-01.yaml.tmp');
    fs.copyFileSync(path.join(h.root, 'machines/rack2/db-01.yaml'), tmp);
    fs.renameSync(tmp, path.join(h.root, 'machines/rack2/db-01.yaml'));
    await expectEvents(h, 0);
  });

  it('temp, backup and non-yaml files → no event, and they are never read', async () => {
    const h = await watchRoot(makeFleet());
    const junk = ['notes.txt', 'x.yaml~', '.x.yaml.swp', '.x.yaml.swx', 'x.yaml.tmp', '4913', '#x.yaml#', '.#x.yaml', 'machines/.draft.yaml', 'node_modules/y.yaml', '.git/HEAD.yaml'];
    for (const rel of junk) {
      fs.mkdirSync(path.dirname(path.join(h.root, rel)), { recursive: true });
      fs.writeFileSync(path.join(h.root, rel), 'junk: true\n');
    }
    fs.mkdirSync(path.join(h.root, '.cache/deep'), { recursive: true });
    fs.writeFileSync(path.join(h.root, '.cache/deep/z.yaml'), 'junk: true\n');
    await expectEvents(h, 0);
    for (const rel of junk) fs.rmSync(path.join(h.root, rel));
    await expectEvents(h, 0);
    expect(h.reads.filter((r) => !h.first.files.some((f) => f.path === r))).toEqual([]);
  });

  it('a new sub-directory with a file → one event that lists it', async () => {
    const h = await watchRoot(makeFleet());
    fs.mkdirSync(path.join(h.root, 'machines/rack3'));
    fs.writeFileSync(path.join(h.root, 'machines/rack3/db-02.yaml'), machine('db-02', '52:54:00:ab:cd:04'));
    const s = await expectEvents(h, 1);
    expect(s.changed).toEqual(['machines/rack3/db-02.yaml']);
  });

  it('a new nested directory tree created at once → one event that lists every file', async () => {
    const h = await watchRoot(makeFleet());
    fs.mkdirSync(path.join(h.root, 'sites/par/rack9'), { recursive: true });
    fs.writeFileSync(path.join(h.root, 'sites/par/rack9/a.yaml'), machine('a', '52:54:00:00:00:0a'));
    fs.writeFileSync(path.join(h.root, 'sites/par/b.yaml'), machine('b', '52:54:00:00:00:0b'));
    const s = await expectEvents(h, 1);
    expect(s.changed).toEqual(['sites/par/b.yaml', 'sites/par/rack9/a.yaml']);
  });

  it('a deleted file → one event', async () => {
    const h = await watchRoot(makeFleet());
    fs.unlinkSync(path.join(h.root, 'machines/rack2/db-01.yaml'));
    const s = await expectEvents(h, 1);
    expect(s.changed).toEqual(['machines/rack2/db-01.yaml']);
    expect(s.files.map((f) => f.path)).not.toContain('machines/rack2/db-01.yaml');
  });

  it('a deleted directory → one event that lists each of its files', async () => {
    const h = await watchRoot(makeFleet());
    fs.rmSync(path.join(h.root, 'machines/rack1'), { recursive: true });
    const s = await expectEvents(h, 1);
    expect(s.changed).toEqual(['machines/rack1/web-01.yaml', 'machines/rack1/web-02.yml']);
  });

  it('many files changed at once (a git checkout) → one event', async () => {
    const h = await watchRoot(makeFleet());
    for (let i = 0; i < 40; i++) {
      const hex = i.toString(16).padStart(2, '0');
      fs.writeFileSync(path.join(h.root, `machines/rack2/m-${hex}.yaml`), machine(`m-${hex}`, `52:54:00:00:01:${hex}`));
    }
    fs.unlinkSync(path.join(h.root, 'machines/rack1/web-01.yaml'));
    const s = await expectEvents(h, 1);
    expect(s.changed).toHaveLength(41);
  });

  it('edits after earlier events are seen too: one event each', async () => {
    const h = await watchRoot(makeFleet());
    const file = path.join(h.root, 'templates.yaml');
    for (let i = 1; i <= 3; i++) {
      fs.appendFileSync(file, `# edit ${i}\n`);
      await expectEvents(h, i);
    }
    expect(new Set(h.events.map((e) => e.revision)).size).toBe(3);
  });

  it('a file that cannot be read → the snapshot still comes, with DF_ERR_FILE_READ for that file', async () => {
    const denied = new Set<string>();
    const h = await watchRoot(makeFleet(), {
      readFile: async (abs) => {
        if (denied.has(path.basename(abs))) throw Object.assign(new Error(`EACCES: permission denied, open '${abs}'`), { code: 'EACCES' });
        return fs.readFileSync(abs, 'utf8');
      },
    });
    denied.add('db-01.yaml');
    fs.appendFileSync(path.join(h.root, 'machines/rack2/db-01.yaml'), '# edited\n');
    await waitFor(() => h.events.length === 1, 'the snapshot with an error');
    const s = h.events[0]!;
    expect(s.changed).toEqual(['machines/rack2/db-01.yaml']);
    expect(s.files.map((f) => f.path)).not.toContain('machines/rack2/db-01.yaml');
    expect(s.errors).toHaveLength(1);
    expect(s.errors[0]).toBeInstanceOf(DragonflyError);
    expect(s.errors[0]!.code).toBe('DF_ERR_FILE_READ');
    expect(s.errors[0]!.data).toMatchObject({ path: 'machines/rack2/db-01.yaml', errno: 'EACCES' });
    expect(s.revision).toBe(contentRevision(readFleetDir(h.root).filter((f) => f.path !== 'machines/rack2/db-01.yaml')));
    // Still unreadable after another write: same state, no new event.
    fs.appendFileSync(path.join(h.root, 'machines/rack2/db-01.yaml'), '# again\n');
    await sleep(QUIET_MS);
    expect(h.events).toHaveLength(1);
    // Readable again.
    denied.clear();
    fs.appendFileSync(path.join(h.root, 'machines/rack2/db-01.yaml'), '# fixed\n');
    const fixed = await expectEvents(h, 2);
    expect(fixed.changed).toEqual(['machines/rack2/db-01.yaml']);
  });

  it('the root disappearing → DF_ERR_FLEET_DIR and no snapshot; when it comes back, one snapshot of it', async () => {
    const h = await watchRoot(makeFleet(), { rootCheckMs: 100 });
    fs.rmSync(h.root, { recursive: true });
    await waitFor(() => h.errors.length >= 1, 'an error');
    await sleep(QUIET_MS);
    expect(h.errors).toHaveLength(1);
    expect(h.errors[0]).toBeInstanceOf(DragonflyError);
    expect((h.errors[0] as DragonflyError).code).toBe('DF_ERR_FLEET_DIR');
    expect(h.events).toHaveLength(0);
    expect(h.watcher.current()).toBe(h.first);

    fs.mkdirSync(path.join(h.root, 'machines/rack1'), { recursive: true });
    fs.writeFileSync(path.join(h.root, 'machines/rack1/web-01.yaml'), machine('web-01', '52:54:00:ab:cd:01'));
    fs.writeFileSync(path.join(h.root, 'new.yaml'), machine('new', '52:54:00:ab:cd:09'));
    h.errors.length = 0;
    const back = await expectEvents(h, 1);
    expect(back.changed).toEqual(['machines/rack1/web-02.yml', 'machines/rack2/db-01.yaml', 'new.yaml', 'templates.yaml']);
    // And it is watched again.
    fs.appendFileSync(path.join(h.root, 'new.yaml'), '  power: off\n');
    expect((await expectEvents(h, 2)).changed).toEqual(['new.yaml']);
  });

  it('a root that is a symlink swapped to another directory (a release switch) → one snapshot of the new one', async () => {
    const base = tempDir();
    const v1 = makeFleet();
    const v2 = makeFleet();
    fs.writeFileSync(path.join(v2, 'templates.yaml'), 'apiVersion: dragonfly.computer/v1\nkind: Template\nmetadata: {name: t2}\nspec: {actions: []}\n');
    const link = path.join(base, 'current');
    fs.symlinkSync(v1, link);
    const h = await watchRoot(link, { rootCheckMs: 100 });
    fs.symlinkSync(v2, `${link}.new`);
    fs.renameSync(`${link}.new`, link);
    const s = await expectEvents(h, 1);
    expect(s.changed).toEqual(['templates.yaml']);
    fs.appendFileSync(path.join(v2, 'templates.yaml'), '# v2 edit\n');
    await expectEvents(h, 2);
  });

  it('a missing root → ready rejects with DF_ERR_FLEET_DIR', async () => {
    const root = path.join(tempDir(), 'nope');
    const watcher = watchFleetDir(root, { onChange: () => {}, onError: () => {} });
    watchers.push(watcher);
    await expect(watcher.ready).rejects.toMatchObject({ code: 'DF_ERR_FLEET_DIR' });
    expect(() => watcher.current()).toThrow();
  });

  it('an onChange that throws is reported through onError, and watching goes on', async () => {
    const errors: Error[] = [];
    const seen: FleetSnapshot[] = [];
    const root = makeFleet();
    const watcher = watchFleetDir(root, {
      onChange: (s) => {
        seen.push(s);
        throw new Error('consumer failed');
      },
      onError: (e) => void errors.push(e),
    });
    watchers.push(watcher);
    await watcher.ready;
    fs.appendFileSync(path.join(root, 'templates.yaml'), '# 1\n');
    await waitFor(() => errors.length === 1, 'the error');
    expect(errors[0]!.message).toBe('consumer failed');
    fs.appendFileSync(path.join(root, 'templates.yaml'), '# 2\n');
    await waitFor(() => seen.length === 2, 'the second snapshot');
  });

  it('close() stops events', async () => {
    const h = await watchRoot(makeFleet());
    await h.watcher.close();
    fs.appendFileSync(path.join(h.root, 'templates.yaml'), '# after close\n');
    await sleep(QUIET_MS);
    expect(h.events).toHaveLength(0);
  });
});

describe('watchFleetDir at 10,000 files', () => {
  // Measured and printed, not asserted: how long one saved file takes to reach onChange. Asserted: the save
  // re-reads one file, not the fleet.
  it.each([
    ['100 directories of 100 files', (i: number) => `machines/rack${String(Math.floor(i / 100)).padStart(2, '0')}/m-${i}.yaml`],
    ['one flat directory', (i: number) => `machines/m-${i}.yaml`],
  ])('a one-file change in a 10,000-file fleet (%s) re-reads one file', async (layout, name) => {
    const root = tempDir();
    const N = 10_000;
    for (let i = 0; i < N; i++) {
      const rel = name(i);
      if (i % 100 === 0) fs.mkdirSync(path.join(root, path.dirname(rel)), { recursive: true });
      const hex = i.toString(16).padStart(4, '0');
      fs.writeFileSync(path.join(root, rel), machine(`m-${i}`, `52:54:00:01:${hex.slice(0, 2)}:${hex.slice(2)}`, '  labels: {role: web}\n'));
    }
    let t0 = performance.now();
    const h = await watchRoot(root);
    const readyMs = performance.now() - t0;
    expect(h.first.files).toHaveLength(N);
    expect(h.reads).toHaveLength(N);

    const target = path.join(root, name(4242));
    const timings: number[] = [];
    for (let round = 1; round <= 3; round++) {
      await sleep(1200); // let chokidar's per-directory re-read throttle (1 s) expire between rounds
      h.reads.length = 0;
      t0 = performance.now();
      fs.appendFileSync(target, `# round ${round}\n`);
      await waitFor(() => h.events.length === round, `event ${round}`);
      timings.push(performance.now() - t0);
      expect(h.events[round - 1]!.changed).toEqual([name(4242)]);
      expect(h.reads).toEqual([name(4242)]);
    }
    await sleep(QUIET_MS);
    expect(h.events).toHaveLength(3);
    expectInSync(h);
    console.log(
      `[dir-source] ${N} files, ${layout}: ready (watch + first full read) ${readyMs.toFixed(0)} ms; ` +
        `one-file save → onChange ${timings.map((t) => t.toFixed(0)).join(' / ')} ms (debounce 100 ms included)`,
    );
  });
});
