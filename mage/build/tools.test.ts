// The tools come from Debian packages: a tool its package does not hold, or a package apt does not know, is
// DF_ERR_MAGE_BUILD naming the package, before anything is built (uses apt and the .deb cache; no image).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { MageBuildError } from './exec.js';
import { resolveInRoot, stagePrograms } from './tools.js';
import { Tree, usrPath } from './tree.js';

const CACHE = process.env.DRAGONFLY_DEB_CACHE ?? '/var/tmp/dragonfly-debs';
const dirs: string[] = [];
const work = () => {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'dragonfly-tools-'));
  dirs.push(d);
  return d;
};
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

async function failure(p: Promise<unknown>): Promise<MageBuildError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(MageBuildError);
  return e as MageBuildError;
}

describe('the tools of the Mage image', () => {
  it('a tool missing from its package is an error naming the package, not a warning', async () => {
    const e = await failure(stagePrograms(new Tree(), { toolPackages: [{ package: 'bzip2', tools: ['bzip2', 'no-such-tool'] }], cache: CACHE, work: work(), log: () => {} }));
    expect(e.code).toBe('DF_ERR_MAGE_BUILD');
    expect(e.message).toMatch(/^Debian package bzip2 \S+ has no no-such-tool \(looked in \/usr\/sbin, \/usr\/bin, \/sbin, \/bin\)/);
    expect(e.hint).toContain('MAGE_TOOL_PACKAGES');
  }, 60_000);

  it('a package apt does not know is an error naming it', async () => {
    const e = await failure(stagePrograms(new Tree(), { toolPackages: [{ package: 'dragonfly-no-such-package', tools: ['x'] }], cache: CACHE, work: work(), log: () => {} }));
    expect(e.message).toBe('Debian package dragonfly-no-such-package is not known to apt');
  }, 60_000);

  it('stages a tool with the libraries its DT_NEEDED names, from the packages, and the links that lead to them', async () => {
    const tree = new Tree();
    const staged = await stagePrograms(tree, { toolPackages: [{ package: 'bzip2', tools: ['bzip2'] }], cache: CACHE, work: work(), log: () => {} });
    expect(staged.tools).toEqual([{ name: 'bzip2', path: expect.stringMatching(/^\/usr\/bin\/bzip2$|^\/bin\/bzip2$/), package: 'bzip2', version: expect.any(String) }]);
    expect(staged.libraries.map((l) => `${path.posix.basename(l.path)} ${l.package}`)).toEqual(expect.arrayContaining(['libbz2.so.1.0 libbz2-1.0', 'libc.so.6 libc6']));
    expect(staged.packages.map((p) => p.package)).toEqual(expect.arrayContaining(['bzip2', 'libbz2-1.0', 'libc6']));
    expect(tree.has('usr/bin/bzip2')).toBe(true);
    // libbz2.so.1.0 is a link to the versioned file, as in the package
    const soname = tree.entries.get(usrPath(staged.libraries.find((l) => l.path.endsWith('/libbz2.so.1.0'))!.path));
    expect(soname).toMatchObject({ type: 'symlink', target: expect.stringMatching(/^libbz2\.so\.1\.0\.\d+$/) });
  }, 60_000);
});

describe('resolveInRoot', () => {
  it('follows links as the package meant them, across the /usr merge, never out of the root', () => {
    const root = work();
    fs.mkdirSync(path.join(root, 'usr/lib/x86_64-linux-gnu'), { recursive: true });
    fs.mkdirSync(path.join(root, 'lib64'));
    fs.writeFileSync(path.join(root, 'usr/lib/x86_64-linux-gnu/ld.so'), 'ld');
    fs.symlinkSync('/lib/x86_64-linux-gnu/ld.so', path.join(root, 'lib64/ld-linux.so.2')); // absolute: inside the root
    fs.symlinkSync('/etc/passwd', path.join(root, 'lib64/escape'));
    expect(resolveInRoot(root, '/lib64/ld-linux.so.2')).toEqual({ real: '/usr/lib/x86_64-linux-gnu/ld.so', links: ['/lib64/ld-linux.so.2'] });
    expect(resolveInRoot(root, '/lib64/escape')).toBeUndefined();
    expect(resolveInRoot(root, '/usr/lib64/ld-linux.so.2')?.real).toBe('/usr/lib/x86_64-linux-gnu/ld.so');
  });
});
