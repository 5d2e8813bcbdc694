import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRepo, startGitHttp, tempDir, type GitHttpServer, type TestRepo } from '../../test/git-http.js';
import { DragonflyError } from '../../schemas/errors.js';
import { readFleetDir } from './fleet-dir.js';
import { sanitizeUrl } from './credentials.js';
import { GitSource, gitCacheDir, type GitSourceOptions } from './git-source.js';

const FLEET_EXAMPLE = path.join(path.dirname(new URL(import.meta.url).pathname), '..', '..', 'fleet.example');

const machine = (name: string, mac: string) =>
  `apiVersion: dragonfly.computer/v1\nkind: Machine\nmetadata: {name: ${name}}\nspec: {mac: "${mac}"}\n`;

/** The DragonflyError thrown by `p` (fails the test when `p` resolves). */
async function rejection(p: Promise<unknown>): Promise<DragonflyError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(DragonflyError);
    return e as DragonflyError;
  }
  throw new Error('expected a rejection');
}

let tmp: { dir: string; cleanup: () => void };
let server: GitHttpServer;
let n = 0;

beforeAll(async () => {
  tmp = tempDir();
  server = await startGitHttp({ root: path.join(tmp.dir, 'served') });
});
afterAll(async () => {
  await server?.close();
  tmp?.cleanup();
});

async function newRepo(branch = 'main'): Promise<TestRepo> {
  return createRepo(server.root, `repo${++n}.git`, path.join(tmp.dir, 'work'), branch);
}

function source(repo: TestRepo, options: Partial<GitSourceOptions> = {}, srv: GitHttpServer = server): GitSource {
  return new GitSource({ url: srv.url(repo.name), dir: path.join(tmp.dir, 'cache', `c${++n}`), env: {}, ...options });
}

describe('GitSource: clone, fetch and files', () => {
  it('clones on first sync and lists the fleet files at the head, skipping what readFleetDir skips', async () => {
    const repo = await newRepo();
    repo.writeAll({
      'machines/web-01.yaml': machine('web-01', '52:54:00:00:00:01'),
      'machines/db.yml': machine('db', '52:54:00:00:00:02'),
      'a.yaml': machine('a', '52:54:00:00:00:03'),
      '.hidden.yaml': 'x: 1\n',
      '.github/workflows/ci.yaml': 'on: push\n',
      'node_modules/pkg/x.yaml': 'x: 1\n',
      'README.md': '# fleet\n',
      'deep/er/still/m.yaml': machine('m', '52:54:00:00:00:04'),
    });
    const head = await repo.commitAndPush('initial fleet');
    const src = source(repo);
    const r = await src.sync();
    expect(r).toEqual({ commit: head, previous: null, changed: true, forced: false, cloned: true });
    const files = await src.files(r.commit);
    expect(files.map((f) => f.path)).toEqual(['a.yaml', 'deep/er/still/m.yaml', 'machines/db.yml', 'machines/web-01.yaml']);
    expect(files[3]!.text).toBe(machine('web-01', '52:54:00:00:00:01'));

    // A second sync with nothing new: same head, not changed, no new pack written.
    const packs = fs.readdirSync(path.join(src.dir, 'objects/pack')).length;
    expect(await src.sync()).toEqual({ commit: head, previous: head, changed: false, forced: false, cloned: false });
    expect(fs.readdirSync(path.join(src.dir, 'objects/pack')).length).toBe(packs);

    // A new GitSource on the same cache dir reuses it.
    const again = new GitSource({ url: src.url, dir: src.dir, env: {} });
    expect(await again.sync()).toMatchObject({ commit: head, previous: head, cloned: false });
  });

  it('follows pushes: sync returns the new head and changedPaths lists exactly what changed under path', async () => {
    const repo = await newRepo();
    repo.writeAll({
      'fleet/machines/a.yaml': machine('a', '52:54:00:00:01:01'),
      'fleet/machines/b.yaml': machine('b', '52:54:00:00:01:02'),
      'fleet/machines/c.yaml': machine('c', '52:54:00:00:01:03'),
      'fleet/templates/t.yaml': 'kind: Template\n',
      'fleet/notes.md': 'not a fleet file\n',
      'other/x.yaml': 'outside the fleet path\n',
    });
    const first = await repo.commitAndPush('first');
    const src = source(repo, { path: 'fleet' });
    expect((await src.sync()).commit).toBe(first);

    repo.write('fleet/machines/new.yaml', machine('new', '52:54:00:00:01:04')); // add
    repo.write('fleet/machines/a.yaml', machine('a', '52:54:00:00:01:11')); // modify
    repo.remove('fleet/machines/b.yaml'); // delete
    repo.rename('fleet/machines/c.yaml', 'fleet/racks/c.yaml'); // rename = delete + add
    repo.write('other/x.yaml', 'changed outside the fleet path\n'); // not listed
    repo.write('fleet/notes.md', 'changed, but not a fleet file\n'); // not listed
    repo.write('fleet/.hidden.yaml', 'dotfile\n'); // not listed
    const second = await repo.commitAndPush('second', { name: 'Grace Hopper', email: 'grace@example.com' });

    const r = await src.sync();
    expect(r).toEqual({ commit: second, previous: first, changed: true, forced: false, cloned: false });
    expect(await src.changedPaths(first, second)).toEqual([
      { path: 'machines/a.yaml', change: 'modified' },
      { path: 'machines/b.yaml', change: 'deleted' },
      { path: 'machines/c.yaml', change: 'deleted' },
      { path: 'machines/new.yaml', change: 'added' },
      { path: 'racks/c.yaml', change: 'added' },
    ]);
    expect(await src.changedPaths(second, second)).toEqual([]);
    // Patching the first commit's files with only the changed blobs gives exactly the second commit's files.
    expect((await src.filesSince(await src.files(first), first, second)).files).toEqual(await src.files(second));
    // Reverse direction swaps additions and deletions.
    expect((await src.changedPaths(second, first)).filter((c) => c.change === 'added').map((c) => c.path)).toEqual(['machines/b.yaml', 'machines/c.yaml']);

    // A commit that only touches files outside the fleet path: no fleet change.
    repo.write('other/y.yaml', 'still outside\n');
    const third = await repo.commitAndPush('third');
    expect((await src.sync()).commit).toBe(third);
    expect(await src.changedPaths(second, third)).toEqual([]);

    // Several commits at once: the diff is between the two commits, not per commit.
    repo.write('fleet/templates/t.yaml', 'kind: Template # 2\n');
    await repo.commitAndPush('fourth');
    repo.write('fleet/templates/t.yaml', 'kind: Template\n'); // back to the original
    repo.write('fleet/templates/u.yaml', 'kind: Template\n');
    const fifth = await repo.commitAndPush('fifth');
    expect((await src.sync()).commit).toBe(fifth);
    expect(await src.changedPaths(third, fifth)).toEqual([{ path: 'templates/u.yaml', change: 'added' }]);

    // A directory replaced by a file of the same name, and back.
    repo.remove('fleet/racks');
    repo.write('fleet/racks', 'a file now\n');
    repo.write('fleet/x.yaml/inner.yaml', 'a folder named like a fleet file\n');
    const sixth = await repo.commitAndPush('sixth');
    await src.sync();
    expect(await src.changedPaths(fifth, sixth)).toEqual([
      { path: 'racks/c.yaml', change: 'deleted' },
      { path: 'x.yaml/inner.yaml', change: 'added' },
    ]);
  });

  it('reads the fleet from a subfolder, and names a missing or non-folder path', async () => {
    const repo = await newRepo();
    repo.writeAll({ 'clusters/prod/fleet/m.yaml': machine('m', '52:54:00:00:02:01'), 'clusters/prod/README.md': '#\n', 'top.yaml': 'x: 1\n' });
    const head = await repo.commitAndPush('subfolder');
    const src = source(repo, { path: '/clusters/prod/fleet/' });
    expect(src.path).toBe('clusters/prod/fleet');
    await src.sync();
    expect(await src.files(head)).toEqual([{ path: 'm.yaml', text: machine('m', '52:54:00:00:02:01') }]);

    const missing = source(repo, { path: 'clusters/staging' });
    await missing.sync();
    const e1 = await rejection(missing.files(head));
    expect(e1.code).toBe('DF_ERR_GIT_PATH');
    expect(e1.message).toContain('clusters/staging does not exist');
    expect(e1.message).toContain(missing.displayUrl);
    expect(e1.message).toContain('branch main');

    const file = source(repo, { path: 'top.yaml' });
    await file.sync();
    expect((await rejection(file.files(head))).message).toContain('is a file, not a folder');

    // changedPaths treats a missing fleet path as empty.
    repo.write('clusters/staging/s.yaml', machine('s', '52:54:00:00:02:02'));
    const next = await repo.commitAndPush('staging');
    await missing.sync();
    expect(await missing.changedPaths(head, next)).toEqual([{ path: 's.yaml', change: 'added' }]);

    expect(() => source(repo, { path: '../escape' })).toThrow(/inside the repository/);
  });

  it('gives the same SourceFile[] as readFleetDir of a checkout of the same commit', async () => {
    const repo = await newRepo();
    repo.copyDir(FLEET_EXAMPLE, 'fleet');
    repo.writeAll({
      'fleet/.hidden/x.yaml': 'x: 1\n',
      'fleet/node_modules/y.yaml': 'y: 1\n',
      'fleet/machines/.swp.yaml': 'z: 1\n',
      'fleet/unicode/é-ü.yaml': '# ünïcödé ✓\nx: "日本"\n',
      'fleet/bom.yaml': '\uFEFFx: 1\r\ny: 2\r\n',
      'fleet/B.yaml': 'upper\n',
      'fleet/a-b.yaml': 'dash\n',
      'fleet/a/b.yaml': 'slash sorts after dash\n',
      'fleet/a.b/c.yml': 'dot\n',
    });
    fs.symlinkSync('machines/rack1.yaml', path.join(repo.work, 'fleet/link.yaml'));
    fs.chmodSync(path.join(repo.work, 'fleet/B.yaml'), 0o755);
    const head = await repo.commitAndPush('example fleet');
    const src = source(repo, { path: 'fleet' });
    await src.sync();
    const checkout = await repo.checkout(head, path.join(tmp.dir, `checkout-${++n}`));
    const fromDisk = readFleetDir(path.join(checkout, 'fleet'));
    const fromGit = await src.files(head);
    expect(fromGit).toEqual(fromDisk);
    expect(fromGit.map((f) => f.path)).toContain('machines/rack1.yaml');
    expect(fromGit.length).toBeGreaterThanOrEqual(8);
  });
});

describe('GitSource: what isomorphic-git and git write', () => {
  it('follows a branch when the remote HEAD is dangling (git init --bare with HEAD -> master, only main pushed)', async () => {
    const repo = await newRepo();
    repo.write('m.yaml', machine('m', '52:54:00:00:0a:01'));
    const head = await repo.commitAndPush('one');
    fs.writeFileSync(path.join(repo.bare, 'HEAD'), 'ref: refs/heads/master\n');
    const src = source(repo);
    expect((await src.sync()).commit).toBe(head);
    repo.write('m.yaml', machine('m', '52:54:00:00:0a:02'));
    const next = await repo.commitAndPush('two');
    expect(await src.sync()).toMatchObject({ commit: next, previous: head, forced: false });
    expect(await src.resolve('main')).toBe(next);
  });

  it('reads loose objects, and packs with REF_DELTA and delta chains, like readFleetDir reads a checkout', async () => {
    const repo = await newRepo();
    const common = Array.from({ length: 40 }, (_, j) => `# line ${j} of a long comment that is the same in every file\n`).join('');
    for (let i = 0; i < 300; i++) {
      repo.write(`fleet/m${String(i).padStart(3, '0')}.yaml`, machine(`m${i}`, `52:54:00:00:0b:${(i % 256).toString(16).padStart(2, '0')}`) + common + `# ${i}\n`.repeat(i % 7));
    }
    const c1 = await repo.commitAndPush('many similar files');
    repo.write('fleet/m001.yaml', 'changed\n');
    const c2 = await repo.commitAndPush('small push: loose objects in the bare repo');
    const checkout = await repo.checkout(c2, path.join(tmp.dir, `checkout-${++n}`));
    const expected = readFleetDir(path.join(checkout, 'fleet'));

    // The served bare repository itself as the cache: the small push left loose objects (read by isomorphic-git).
    const loose = new GitSource({ url: server.url(repo.name), dir: repo.bare, path: 'fleet', env: {} });
    expect(await loose.files(c2)).toEqual(expected);
    expect(loose.blobReads.other).toBeGreaterThan(0);

    // A copy repacked by git with REF_DELTA (no offset deltas): read by our pack reader only.
    const copy = path.join(tmp.dir, `repacked-${++n}.git`);
    fs.cpSync(repo.bare, copy, { recursive: true });
    await repo.git(['--git-dir', copy, '-c', 'repack.useDeltaBaseOffset=false', 'repack', '-q', '-a', '-d', '-f', '--depth=250', '--window=250']);
    expect(packObjectTypes(copy)).toMatchObject({ 7: expect.any(Number) });
    const packed = new GitSource({ url: server.url(repo.name), dir: copy, path: 'fleet', env: {} });
    expect(await packed.files(c2)).toEqual(expected);
    const old = await repo.checkout(c1, path.join(tmp.dir, `checkout-${++n}`));
    expect(await packed.files(c1)).toEqual(readFleetDir(path.join(old, 'fleet')));
    expect(packed.blobReads).toEqual({ packed: 600, other: 0 });

    // The same through a fetch (the server sends offset deltas).
    const fetched = source(repo, { path: 'fleet' });
    await fetched.sync();
    expect(await fetched.files(c2)).toEqual(expected);
    expect(fetched.blobReads.other).toBe(0);
  });
});

/** Count the objects of each pack type (1 commit, 2 tree, 3 blob, 4 tag, 6 OFS_DELTA, 7 REF_DELTA) in a repository's packs. */
function packObjectTypes(gitdir: string): Record<number, number> {
  const dir = path.join(gitdir, 'objects/pack');
  const types: Record<number, number> = {};
  for (const f of fs.readdirSync(dir).filter((x) => x.endsWith('.pack'))) {
    const pack = fs.readFileSync(path.join(dir, f));
    const idx = fs.readFileSync(path.join(dir, f.replace(/\.pack$/, '.idx')));
    const count = idx.readUInt32BE(8 + 255 * 4);
    const offsetsAt = 8 + 256 * 4 + count * 24;
    for (let i = 0; i < count; i++) {
      const type = (pack[idx.readUInt32BE(offsetsAt + i * 4)]! >> 4) & 7;
      types[type] = (types[type] ?? 0) + 1;
    }
  }
  return types;
}

describe('GitSource: resolve and commitInfo', () => {
  it('resolves branches, tags (lightweight and annotated), full and abbreviated SHAs', async () => {
    const repo = await newRepo();
    repo.write('m.yaml', machine('m', '52:54:00:00:03:01'));
    const c1 = await repo.commitAndPush('one');
    await repo.tag('v1');
    await repo.tag('v1-annotated', 'release 1');
    repo.write('m.yaml', machine('m', '52:54:00:00:03:02'));
    const c2 = await repo.commitAndPush('two');
    // A feature branch that was never synced.
    await repo.git(['checkout', '-q', '-b', 'feature']);
    repo.write('f.yaml', machine('f', '52:54:00:00:03:03'));
    const c3 = await repo.commit('feature work');
    await repo.push({ ref: 'HEAD:refs/heads/feature' });
    // A tag on a commit that no branch contains.
    await repo.git(['checkout', '-q', '--detach', c1]);
    repo.write('t.yaml', machine('t', '52:54:00:00:03:04'));
    const c4 = await repo.commit('tagged only');
    await repo.tag('hotfix', 'tag on a detached commit');
    await repo.git(['checkout', '-q', 'main']);

    const src = source(repo);
    expect((await src.sync()).commit).toBe(c2);
    expect(await src.resolve('main')).toBe(c2);
    expect(await src.resolve('HEAD')).toBe(c2);
    expect(await src.resolve('origin/main')).toBe(c2);
    expect(await src.resolve('refs/heads/main')).toBe(c2);
    expect(await src.resolve('v1')).toBe(c1);
    expect(await src.resolve('v1-annotated')).toBe(c1);
    expect(await src.resolve('refs/tags/v1-annotated')).toBe(c1);
    expect(await src.resolve(c1)).toBe(c1);
    expect(await src.resolve(c1.slice(0, 7))).toBe(c1);
    expect(await src.resolve(c2.slice(0, 12).toUpperCase())).toBe(c2);
    // Not fetched yet: fetched on demand, then readable.
    expect(await src.resolve('feature')).toBe(c3);
    expect((await src.files(c3)).map((f) => f.path)).toEqual(['f.yaml', 'm.yaml']);
    expect(await src.changedPaths(c2, c3)).toEqual([{ path: 'f.yaml', change: 'added' }]);
    expect(await src.resolve('hotfix')).toBe(c4);
    expect(await src.changedPaths(c1, c4)).toEqual([{ path: 't.yaml', change: 'added' }]);

    const unknown = await rejection(src.resolve('nope'));
    expect(unknown.code).toBe('DF_ERR_GIT_REF');
    expect(unknown.message).toContain('branches: feature, main');
    expect(unknown.message).toContain('tags: hotfix, v1, v1-annotated');
    expect((await rejection(src.resolve('0'.repeat(40)))).code).toBe('DF_ERR_GIT_REF');
    expect((await rejection(src.resolve('deadbeef'))).code).toBe('DF_ERR_GIT_REF');
    expect((await rejection(src.files('0123456789abcdef0123456789abcdef01234567'))).code).toBe('DF_ERR_GIT_REF');
  });

  it('reports author, committer, subject and timestamps', async () => {
    const repo = await newRepo();
    repo.write('m.yaml', machine('m', '52:54:00:00:04:01'));
    await repo.commit('first');
    repo.write('m.yaml', machine('m', '52:54:00:00:04:02'));
    const sha = await repo.commit(
      'Reimage web racks\n\nBecause the image changed.\n',
      { name: 'Ada Lovelace', email: 'ada@example.com', date: '2024-03-01T10:00:00+02:00' },
      { name: 'CI Bot', email: 'ci@example.com', date: '2024-03-02T12:30:00Z' },
    );
    await repo.push();
    const src = source(repo);
    await src.sync();
    const info = await src.commitInfo(sha);
    expect(info.sha).toBe(sha);
    expect(info.parents).toHaveLength(1);
    expect(info.subject).toBe('Reimage web racks');
    expect(info.message).toContain('Because the image changed.');
    expect(info.author).toMatchObject({ name: 'Ada Lovelace', email: 'ada@example.com', date: '2024-03-01T08:00:00.000Z', timestamp: Date.parse('2024-03-01T08:00:00Z') / 1000 });
    expect(info.committer).toMatchObject({ name: 'CI Bot', email: 'ci@example.com', date: '2024-03-02T12:30:00.000Z' });
  });
});

describe('GitSource: force-push, failures and credentials', () => {
  it('follows a force-push and flags it', async () => {
    const repo = await newRepo();
    repo.write('m.yaml', machine('m', '52:54:00:00:05:01'));
    const c1 = await repo.commitAndPush('one');
    repo.write('m.yaml', machine('m', '52:54:00:00:05:02'));
    const c2 = await repo.commitAndPush('two');
    const src = source(repo);
    expect((await src.sync()).commit).toBe(c2);

    await repo.git(['reset', '-q', '--hard', c1]);
    repo.write('other.yaml', machine('o', '52:54:00:00:05:03'));
    const rewritten = await repo.commit('rewritten history');
    await repo.push({ force: true });

    const r = await src.sync();
    expect(r).toEqual({ commit: rewritten, previous: c2, changed: true, forced: true, cloned: false });
    expect((await src.files(r.commit)).map((f) => f.path)).toEqual(['m.yaml', 'other.yaml']);
    expect(await src.changedPaths(c2, rewritten)).toEqual([
      { path: 'm.yaml', change: 'modified' },
      { path: 'other.yaml', change: 'added' },
    ]);
    // The next ordinary push is a fast-forward again.
    repo.write('m.yaml', machine('m', '52:54:00:00:05:04'));
    const c4 = await repo.commitAndPush('after');
    expect(await src.sync()).toMatchObject({ commit: c4, previous: rewritten, forced: false });
  });

  it('rejects non-HTTP URLs with DF_ERR_GIT_URL and never shows credentials from the URL', async () => {
    for (const url of ['/srv/git/fleet.git', './fleet', 'file:///srv/git/fleet.git', 'git@github.com:org/fleet.git', 'ssh://git@host/fleet.git', 'not a url']) {
      let err: unknown;
      try {
        new GitSource({ url, dir: path.join(tmp.dir, 'never') });
      } catch (e) {
        err = e;
      }
      expect(err, url).toBeInstanceOf(DragonflyError);
      expect((err as DragonflyError).code).toBe('DF_ERR_GIT_URL');
      expect((err as DragonflyError).hint).toContain('--fleet DIR');
    }
    const e = (() => {
      try {
        new GitSource({ url: 'ftp://bob:hunter22@example.com/x.git', dir: path.join(tmp.dir, 'never') });
      } catch (err) {
        return err as DragonflyError;
      }
      throw new Error('expected DF_ERR_GIT_URL');
    })();
    expect(e.message).toContain('ftp://***@example.com/x.git');
    expect(JSON.stringify(e)).not.toContain('hunter22');
    expect(sanitizeUrl('see https://u:p@h/x and http://tok@h2/y')).toBe('see https://***@h/x and http://***@h2/y');
    expect(gitCacheDir('/state', 'https://u:p@h/x.git')).toBe(gitCacheDir('/state', 'https://h/x.git/'));
    expect(gitCacheDir('/state', 'https://h/x.git')).toMatch(/^\/state\/git\/[0-9a-f]{16}$/);
  });

  it('names a missing branch, a missing repository and an empty repository', async () => {
    const repo = await newRepo();
    repo.write('m.yaml', machine('m', '52:54:00:00:06:01'));
    await repo.commitAndPush('one');
    await repo.push({ ref: 'HEAD:refs/heads/develop' });
    const e = await rejection(source(repo, { branch: 'prod' }).sync());
    expect(e.code).toBe('DF_ERR_GIT_BRANCH');
    expect(e.message).toContain('branch prod does not exist');
    expect(e.message).toContain('branches: develop, main');

    const nothing = await rejection(new GitSource({ url: server.url('no-such.git'), dir: path.join(tmp.dir, 'cache', 'none'), env: {} }).sync());
    expect(nothing.code).toBe('DF_ERR_GIT_REPO');
    expect(nothing.message).toContain('no-such.git');

    const empty = await newRepo();
    const e2 = await rejection(source(empty).sync());
    expect(e2.code).toBe('DF_ERR_GIT_BRANCH');
    expect(e2.message).toContain('is empty');
  });

  it('survives an outage: 503, reset and truncated transfers fail with DF_ERR_GIT_UNREACHABLE, then sync recovers', async () => {
    const repo = await newRepo();
    repo.write('m.yaml', machine('m', '52:54:00:00:07:01'));
    const c1 = await repo.commitAndPush('one');
    const src = source(repo, { timeoutMs: 1000 });
    await src.sync();

    repo.write('m.yaml', machine('m', '52:54:00:00:07:02'));
    const c2 = await repo.commitAndPush('two');

    server.failNext(1, 'unavailable');
    const e503 = await rejection(src.sync());
    expect(e503.code).toBe('DF_ERR_GIT_UNREACHABLE');
    expect(e503.message).toContain('HTTP 503');
    expect(e503.message).toContain('branch main');

    server.failNext(1, 'reset');
    expect((await rejection(src.sync())).code).toBe('DF_ERR_GIT_UNREACHABLE');

    // The pack is cut off mid-transfer: isomorphic-git has already moved the remote-tracking ref,
    // but sync's own head (and so `previous`) only moves after a complete fetch.
    server.failNext(1, 'truncate');
    expect((await rejection(src.sync())).code).toBe('DF_ERR_GIT_UNREACHABLE');
    // (isomorphic-git did move its remote-tracking ref to the commit whose objects never arrived)
    expect(fs.readFileSync(path.join(src.dir, 'refs/remotes/origin/main'), 'utf8').trim()).toBe(c2);

    server.failNext(1, 'hang');
    const hung = await rejection(src.sync());
    expect(hung.code).toBe('DF_ERR_GIT_UNREACHABLE');
    expect(hung.message).toContain('no answer within 1s');

    server.failNext(1, 'unavailable');
    expect((await rejection(src.resolve('main'))).code).toBe('DF_ERR_GIT_UNREACHABLE');

    expect(await src.sync()).toEqual({ commit: c2, previous: c1, changed: true, forced: false, cloned: false });
    expect((await src.files(c2))[0]!.text).toContain('52:54:00:00:07:02');
  });

  it('reports a server that is down as DF_ERR_GIT_UNREACHABLE, naming URL and branch', async () => {
    const down = await startGitHttp({ root: server.root });
    const repo = await newRepo();
    repo.write('m.yaml', machine('m', '52:54:00:00:08:01'));
    await repo.commitAndPush('one');
    const src = source(repo, {}, down);
    await src.sync();
    await down.close();
    const e = await rejection(src.sync());
    expect(e.code).toBe('DF_ERR_GIT_UNREACHABLE');
    expect(e.message).toContain('connection refused');
    expect(e.message).toContain(src.displayUrl);
    expect(e.message).toContain('branch main');
    expect(e.data).toMatchObject({ url: src.displayUrl, branch: 'main' });
  });

  describe('basic auth', () => {
    let authServer: GitHttpServer;
    const password = 's3cret-Pa55word';
    beforeAll(async () => {
      authServer = await startGitHttp({ root: server.root, auth: { username: 'fleet-reader', password } });
    });
    afterAll(() => authServer?.close());

    it('uses DRAGONFLY_GIT_USERNAME / DRAGONFLY_GIT_PASSWORD, DRAGONFLY_GIT_TOKEN and a credentials file', async () => {
      const repo = await newRepo();
      repo.write('m.yaml', machine('m', '52:54:00:00:09:01'));
      const head = await repo.commitAndPush('one');

      const env = { DRAGONFLY_GIT_USERNAME: 'fleet-reader', DRAGONFLY_GIT_PASSWORD: password };
      const viaEnv = source(repo, { env }, authServer);
      expect((await viaEnv.sync()).commit).toBe(head);
      expect(await viaEnv.resolve('main')).toBe(head);
      expect(fs.readFileSync(path.join(viaEnv.dir, 'config'), 'utf8')).not.toContain(password);

      const viaUrl = source(repo, { url: authServer.url(repo.name).replace('http://', `http://fleet-reader:${password}@`) }, authServer);
      expect(viaUrl.url).not.toContain(password);
      expect(viaUrl.displayUrl).toContain('http://***@127.0.0.1');
      expect((await viaUrl.sync()).commit).toBe(head);
      expect(fs.readFileSync(path.join(viaUrl.dir, 'config'), 'utf8')).not.toContain(password);

      const viaToken = source(repo, { env: { DRAGONFLY_GIT_USERNAME: 'fleet-reader', DRAGONFLY_GIT_TOKEN: password } }, authServer);
      expect((await viaToken.sync()).commit).toBe(head);

      const file = path.join(tmp.dir, 'git-credentials');
      fs.writeFileSync(file, `fleet-reader:${password}\n# comment\n`);
      const viaFile = source(repo, { credentialsFile: file, env: { DRAGONFLY_GIT_PASSWORD: 'ignored-because-the-file-wins' } }, authServer);
      expect((await viaFile.sync()).commit).toBe(head);
    });

    it('fails with DF_ERR_GIT_AUTH, without the password anywhere, on wrong or missing credentials', async () => {
      const repo = await newRepo();
      repo.write('m.yaml', machine('m', '52:54:00:00:10:01'));
      await repo.commitAndPush('one');
      const wrong = 'wrong-Pa55word-xyz';
      const cases: { options: Partial<GitSourceOptions>; expect: RegExp }[] = [
        { options: { env: { DRAGONFLY_GIT_USERNAME: 'fleet-reader', DRAGONFLY_GIT_PASSWORD: wrong } }, expect: /refused the credentials from DRAGONFLY_GIT_USERNAME\/DRAGONFLY_GIT_PASSWORD/ },
        { options: { env: { DRAGONFLY_GIT_TOKEN: wrong } }, expect: /refused the credentials from DRAGONFLY_GIT_TOKEN/ },
        { options: { auth: { username: 'fleet-reader', password: wrong } }, expect: /refused the credentials from the auth option/ },
        { options: { url: authServer.url(repo.name).replace('http://', `http://fleet-reader:${wrong}@`) }, expect: /refused the credentials from the URL/ },
        { options: { env: {} }, expect: /requires credentials \(HTTP 401/ },
      ];
      for (const c of cases) {
        const src = source(repo, c.options, authServer);
        for (const op of [() => src.sync(), () => src.resolve('main')]) {
          const e = await rejection(op());
          expect(e.code).toBe('DF_ERR_GIT_AUTH');
          expect(e.message).toMatch(c.expect);
          expect(e.message).toContain('127.0.0.1');
          const everything = [e.message, e.hint, e.stack ?? '', JSON.stringify(e)].join('\n');
          expect(everything).not.toContain(wrong);
          expect(everything).not.toContain(password);
        }
      }
      const noFile = await rejection(source(repo, { credentialsFile: path.join(tmp.dir, 'missing-file') }, authServer).sync());
      expect(noFile.code).toBe('DF_ERR_GIT_AUTH');
      expect(noFile.message).toContain('cannot read the git credentials file');
    });
  });
});

describe('GitSource timing (10,000 files)', () => {
  it('lists and diffs a 10,000-file fleet', async () => {
    const repo = await newRepo();
    const N = 10_000;
    const expected: Record<string, string> = {};
    for (let i = 0; i < N; i++) {
      const mac = `52:54:00:${((i >> 16) & 255).toString(16).padStart(2, '0')}:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`;
      expected[`rack${String(Math.floor(i / 100)).padStart(3, '0')}/m${String(i).padStart(5, '0')}.yaml`] = machine(`m${i}`, mac);
    }
    const t0 = performance.now();
    const first = await repo.importFiles(Object.fromEntries(Object.entries(expected).map(([p, t]) => [`fleet/${p}`, t])), '10k machines', { updateWork: false });
    const tCommit = performance.now();

    const src = source(repo, { path: 'fleet' });
    await src.sync();
    const tClone = performance.now();
    const files = await src.files(first);
    const tFiles = performance.now();
    const again = await src.files(first);
    const tFiles2 = performance.now();
    expect(files).toEqual(Object.keys(expected).sort().map((p) => ({ path: p, text: expected[p] })));
    expect(again).toEqual(files);

    const second = await repo.importFiles(
      { 'fleet/rack050/m05000.yaml': machine('m5000', '52:54:00:aa:bb:cc'), 'fleet/rack099/new.yaml': machine('new', '52:54:00:aa:bb:cd') },
      'one change',
      { updateWork: false },
    );
    const tPush2 = performance.now();
    const r = await src.sync();
    const tFetch = performance.now();
    const changes = await src.changedPaths(first, second);
    const tDiff = performance.now();
    const files2 = await src.files(second);
    const tFiles3 = performance.now();
    expect(r.commit).toBe(second);
    expect(changes).toEqual([
      { path: 'rack050/m05000.yaml', change: 'modified' },
      { path: 'rack099/new.yaml', change: 'added' },
    ]);
    expect(files2).toHaveLength(N + 1);
    expect(files2.find((f) => f.path === 'rack050/m05000.yaml')!.text).toContain('52:54:00:aa:bb:cc');
    const checkout = await repo.checkout(second, path.join(tmp.dir, `checkout-${++n}`));
    const tCheckout = performance.now();
    const fromDisk = readFleetDir(path.join(checkout, 'fleet'));
    const tDisk = performance.now();
    expect(files2).toEqual(fromDisk);
    const ms = (a: number, b: number) => `${Math.round(b - a)} ms`;
    console.log(
      [
        `git source, ${N} files of ~${files[0]!.text.length} bytes in 100 folders:`,
        `  git fast-import:          ${ms(t0, tCommit)} (test setup)`,
        `  sync (first clone):       ${ms(tCommit, tClone)}`,
        `  files() first call:       ${ms(tClone, tFiles)}`,
        `  files() again:            ${ms(tFiles, tFiles2)}`,
        `  sync (fetch 1 commit):    ${ms(tPush2, tFetch)}`,
        `  changedPaths():           ${ms(tFetch, tDiff)}`,
        `  files() after the fetch:  ${ms(tDiff, tFiles3)}`,
        `  readFleetDir(checkout):   ${ms(tCheckout, tDisk)} (for comparison)`,
      ].join('\n'),
    );
  });
});
