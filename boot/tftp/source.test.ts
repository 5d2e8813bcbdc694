import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { combinedSource, directorySource, memorySource, refusedName, TftpAccessError, type TftpFile, type TftpSource } from './source.js';

let work: string;
let root: string;

beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'dragonfly-tftp-source-'));
  root = path.join(work, 'root');
  fs.mkdirSync(path.join(root, 'sub'), { recursive: true });
  fs.writeFileSync(path.join(root, 'boot.bin'), 'hello tftp');
  fs.writeFileSync(path.join(root, 'sub', 'inner.bin'), 'inner');
  fs.writeFileSync(path.join(work, 'secret'), 'outside the root');
  fs.symlinkSync(path.join(work, 'secret'), path.join(root, 'escape'));
  fs.symlinkSync('..', path.join(root, 'sub', 'up'));
  fs.symlinkSync('../..', path.join(root, 'sub', 'out'));
  fs.symlinkSync('sub/inner.bin', path.join(root, 'alias.bin'));
  execFileSync('mkfifo', [path.join(root, 'fifo')]);
});

afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

async function readAll(file: TftpFile): Promise<string> {
  const buf = Buffer.alloc(file.size);
  let at = 0;
  while (at < file.size) at += await file.read(buf.subarray(at), at);
  return buf.toString();
}

async function refusal(source: TftpSource, name: string): Promise<string | undefined> {
  try {
    const file = await source.open(name);
    await file?.close();
    return undefined;
  } catch (e) {
    if (e instanceof TftpAccessError) return e.reason;
    throw e;
  }
}

describe('refusedName', () => {
  it.each([
    ['/etc/passwd', 'absolute-path'],
    ['../etc/passwd', 'parent-segment'],
    ['sub/../../x', 'parent-segment'],
    ['..', 'parent-segment'],
    ['sub\\..\\x', 'backslash'],
    ['a\0b', 'nul'],
  ])('%j → %s', (name, reason) => expect(refusedName(name)).toBe(reason));

  it.each(['boot.ipxe', 'sub/inner.bin', 'a..b', '..hidden', 'sub/./x'])('%j is allowed', (name) => expect(refusedName(name)).toBeUndefined());
});

describe('directorySource', () => {
  it('serves a regular file with its size, and reads at any position', async () => {
    const file = await directorySource(root).open('boot.bin');
    expect(file?.size).toBe(10);
    expect(await readAll(file!)).toBe('hello tftp');
    const tail = Buffer.alloc(4);
    expect(await file!.read(tail, 6)).toBe(4);
    expect(tail.toString()).toBe('tftp');
    expect(await file!.read(tail, 10)).toBe(0);
    await file!.close();
    await file!.close(); // closing twice is harmless
  });

  it('serves files in subdirectories and symlinks that stay inside the root', async () => {
    const source = directorySource(root);
    for (const name of ['sub/inner.bin', 'alias.bin', 'sub/up/boot.bin']) {
      const file = await source.open(name);
      expect(file, name).toBeDefined();
      await file!.close();
    }
  });

  it('returns undefined for a missing file', async () => {
    expect(await directorySource(root).open('nosuch.bin')).toBeUndefined();
    expect(await directorySource(root).open('boot.bin/x')).toBeUndefined();
  });

  it('refuses traversal, links to directories outside the root, directories and FIFOs', async () => {
    const source = directorySource(root);
    expect(await refusal(source, '../secret')).toBe('parent-segment');
    expect(await refusal(source, '/etc/passwd')).toBe('absolute-path');
    expect(await refusal(source, 'sub\\inner.bin')).toBe('backslash');
    expect(await refusal(source, 'sub\\..\\..\\secret')).toBe('backslash');
    expect(await refusal(source, 'boot.bin\0')).toBe('nul');
    expect(await refusal(source, 'sub/out/secret')).toBe('outside-root'); // a linked directory is never pinned
    expect(await refusal(source, 'sub')).toBe('not-a-file');
    expect(await refusal(source, 'fifo')).toBe('not-a-file');
  });

  it('serves the target of a link out of the root that was there at creation, under any in-root path to it', async () => {
    const source = directorySource(root);
    expect(source.links).toEqual(new Map([['escape', fs.realpathSync(path.join(work, 'secret'))]]));
    for (const name of ['escape', 'sub/up/escape', './escape']) {
      const file = await source.open(name);
      expect(file, name).toBeDefined();
      expect(await readAll(file!)).toBe('outside the root');
      await file!.close();
    }
  });

  it('never follows a link out of the root made after creation; a pinned link keeps its target', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dragonfly-tftp-late-'));
    try {
      fs.mkdirSync(path.join(dir, 'root'));
      fs.writeFileSync(path.join(dir, 'firmware.efi'), 'firmware');
      fs.writeFileSync(path.join(dir, 'other'), 'not for clients');
      fs.symlinkSync(path.join(dir, 'firmware.efi'), path.join(dir, 'root', 'ipxe.efi'));
      fs.symlinkSync('ipxe.efi', path.join(dir, 'root', 'chain.efi')); // a link to the link: same target
      const source = directorySource(path.join(dir, 'root'));
      expect([...source.links.keys()].sort()).toEqual(['chain.efi', 'ipxe.efi']);

      fs.symlinkSync(path.join(dir, 'other'), path.join(dir, 'root', 'late'));
      fs.symlinkSync(dir, path.join(dir, 'root', 'late-dir'));
      expect(await refusal(source, 'late')).toBe('outside-root');
      expect(await refusal(source, 'late-dir/other')).toBe('outside-root');

      // Re-pointed after creation: the target resolved at creation is still what is served.
      fs.rmSync(path.join(dir, 'root', 'ipxe.efi'));
      fs.symlinkSync(path.join(dir, 'other'), path.join(dir, 'root', 'ipxe.efi'));
      const file = await source.open('ipxe.efi');
      expect(await readAll(file!)).toBe('firmware');
      await file!.close();

      // The target replaced by a link to elsewhere: O_NOFOLLOW refuses it.
      fs.rmSync(path.join(dir, 'firmware.efi'));
      fs.symlinkSync(path.join(dir, 'other'), path.join(dir, 'firmware.efi'));
      expect(await refusal(source, 'chain.efi')).toBe('outside-root');

      // Removed: no longer there.
      fs.rmSync(path.join(dir, 'root', 'ipxe.efi'));
      expect(await source.open('ipxe.efi')).toBeUndefined();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('pins nothing for a root that does not exist at creation, and follows no link out of it later', async () => {
    const late = path.join(work, 'late-root');
    const source = directorySource(late);
    expect(source.links.size).toBe(0);
    fs.mkdirSync(late);
    fs.writeFileSync(path.join(late, 'in.bin'), 'in');
    fs.symlinkSync(path.join(work, 'secret'), path.join(late, 'escape'));
    const file = await source.open('in.bin');
    expect(await readAll(file!)).toBe('in');
    await file!.close();
    expect(await refusal(source, 'escape')).toBe('outside-root');
  });

  it('serialises refusals with a reason', () => {
    expect(JSON.parse(JSON.stringify(new TftpAccessError('parent-segment', '../x')))).toEqual({
      name: 'TftpAccessError',
      reason: 'parent-segment',
      filename: '../x',
      message: expect.stringContaining('..'),
    });
  });
});

describe('memorySource and combinedSource', () => {
  it('serves strings, bytes and generated content, and nothing from the object prototype', async () => {
    let generation = 0;
    const source = memorySource({ 'boot.ipxe': '#!ipxe\n', 'raw.bin': new Uint8Array([1, 2, 3]), 'gen.ipxe': () => `gen ${++generation}` });
    expect(await readAll((await source.open('boot.ipxe'))!)).toBe('#!ipxe\n');
    expect((await source.open('raw.bin'))?.size).toBe(3);
    expect(await readAll((await source.open('gen.ipxe'))!)).toBe('gen 1');
    expect(await readAll((await source.open('gen.ipxe'))!)).toBe('gen 2');
    expect(await source.open('constructor')).toBeUndefined();
    expect(await source.open('__proto__')).toBeUndefined();
    expect(await source.open('missing')).toBeUndefined();
  });

  it('accepts a Map, whose later changes are seen', async () => {
    const files = new Map<string, string>();
    const source = memorySource(files);
    expect(await source.open('autoexec.ipxe')).toBeUndefined();
    files.set('autoexec.ipxe', 'chain http://x/boot.ipxe');
    expect((await source.open('autoexec.ipxe'))?.size).toBe(24);
  });

  it('takes the first source that has the file; a refusal is final', async () => {
    const source = combinedSource(memorySource({ 'boot.bin': 'generated' }), directorySource(root));
    expect(await readAll((await source.open('boot.bin'))!)).toBe('generated');
    expect(await readAll((await source.open('sub/inner.bin'))!)).toBe('inner');
    expect(await source.open('nosuch')).toBeUndefined();
    expect(await refusal(source, '../secret')).toBe('parent-segment');
  });
});
