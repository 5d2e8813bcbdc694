import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { normalizeCpioPath, writeNewc, type CpioEntry } from './cpio.js';

function archive(entries: CpioEntry[], mtime = 0): Buffer {
  const chunks: Uint8Array[] = [];
  writeNewc(entries, mtime, (c) => chunks.push(c));
  return Buffer.concat(chunks);
}

const ENTRIES: CpioEntry[] = [
  { path: 'usr/bin/busybox', type: 'file', mode: 0o755, data: Buffer.from('#!/bin/true\n') },
  { path: 'init', type: 'file', mode: 0o755, data: Buffer.from('#!/bin/sh\necho hi\n') },
  { path: 'usr', type: 'dir', mode: 0o755 },
  { path: 'usr/bin', type: 'dir', mode: 0o755 },
  { path: 'usr/bin/sh', type: 'symlink', target: 'busybox' },
  { path: 'bin', type: 'symlink', target: 'usr/bin' },
  { path: 'tmp', type: 'dir', mode: 0o1777 },
  { path: 'dev', type: 'dir', mode: 0o755 },
  { path: 'dev/console', type: 'char', mode: 0o600, major: 5, minor: 1 },
  { path: 'etc/empty', type: 'file', mode: 0o644, data: Buffer.alloc(0) },
  { path: 'etc', type: 'dir', mode: 0o755 },
];

describe('newc cpio writer', () => {
  it('writes what GNU cpio reads back: names in byte order, modes, symlinks, a device node, one mtime', () => {
    const bytes = archive(ENTRIES, 1_700_000_000);
    expect(bytes.length % 4).toBe(0);
    const list = spawnSync('cpio', ['-itv', '--quiet'], { input: bytes, encoding: 'utf8', env: { ...process.env, TZ: 'UTC', LC_ALL: 'C' } });
    expect(list.status, list.stderr).toBe(0);
    const lines = list.stdout.trim().split('\n');
    expect(lines.map((l) => l.replace(/^.*? \d{4} /, ''))).toEqual([
      'bin -> usr/bin',
      'dev',
      'dev/console',
      'etc',
      'etc/empty',
      'init',
      'tmp',
      'usr',
      'usr/bin',
      'usr/bin/busybox',
      'usr/bin/sh -> busybox',
    ]);
    expect(lines.find((l) => l.endsWith(' init'))).toMatch(/^-rwxr-xr-x\s+1 root\s+root\s+18 Nov 14\s+2023 init$/);
    expect(lines.find((l) => l.endsWith(' tmp'))).toMatch(/^drwxrwxrwt /);
    expect(lines.find((l) => l.endsWith('dev/console'))).toMatch(/^crw-------\s+1 root\s+root\s+5,\s+1 /);

    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dragonfly-cpio-'));
    try {
      const files = ENTRIES.filter((e) => e.type !== 'char');
      const x = spawnSync('cpio', ['-idm', '--quiet', '--no-absolute-filenames'], { cwd: dir, input: archive(files) });
      expect(x.status, x.stderr?.toString()).toBe(0);
      expect(fs.readFileSync(path.join(dir, 'init'), 'utf8')).toBe('#!/bin/sh\necho hi\n');
      expect(fs.readlinkSync(path.join(dir, 'usr/bin/sh'))).toBe('busybox');
      expect(fs.readFileSync(path.join(dir, 'bin/busybox'), 'utf8')).toBe('#!/bin/true\n');
      expect(fs.statSync(path.join(dir, 'etc/empty')).size).toBe(0);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('is byte-for-byte the same whatever order the entries come in', () => {
    expect(archive([...ENTRIES].reverse()).equals(archive(ENTRIES))).toBe(true);
    expect(archive(ENTRIES, 1).equals(archive(ENTRIES, 0))).toBe(false);
  });

  it('refuses duplicate and escaping paths', () => {
    expect(() => archive([...ENTRIES, { path: '/init', type: 'dir', mode: 0o755 }])).toThrow(/init appears twice/);
    expect(() => normalizeCpioPath('../etc/passwd')).toThrow(/bad initramfs path/);
    expect(normalizeCpioPath('/./usr//bin/')).toBe('usr/bin');
  });
});
