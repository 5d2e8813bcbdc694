// Test fixtures for the partition action: sparse disk image files, and the real tools that read them back.
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** A temporary directory removed by the returned cleanup. */
export function tempDir(): { dir: string; cleanup: () => void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'df-partition-'));
  return { dir, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

/** A sparse file of `size` (truncate(1) syntax, e.g. 2G), as a disk image. */
export function sparseDisk(dir: string, name: string, size: string): string {
  const file = path.join(dir, name);
  execFileSync('truncate', ['-s', size, file]);
  return file;
}

/** blkid's low-level probe of the filesystem at byte `offset`: {} when there is none. */
export function probeAt(file: string, offset: number): Record<string, string> {
  const r = spawnSync('blkid', ['-p', '-o', 'export', '-O', String(offset), file], { encoding: 'utf8' });
  if (r.status === 2) return {}; // nothing found
  if (r.status !== 0) throw new Error(`blkid failed (${r.status}): ${r.stderr}`);
  return Object.fromEntries(
    r.stdout
      .trim()
      .split('\n')
      .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]),
  );
}

export interface SfdiskTable {
  label: 'gpt' | 'dos';
  id: string;
  firstlba?: number;
  lastlba?: number;
  sectorsize: number;
  partitions: { start: number; size: number; type: string; uuid?: string; name?: string }[];
}

export function sfdiskJson(file: string): SfdiskTable {
  return (JSON.parse(execFileSync('sfdisk', ['--json', file], { encoding: 'utf8' })) as { partitiontable: SfdiskTable }).partitiontable;
}

/** `sfdisk --verify`: its exit code and everything it printed. */
export function sfdiskVerify(file: string): { status: number | null; output: string } {
  const r = spawnSync('sfdisk', ['--verify', file], { encoding: 'utf8' });
  return { status: r.status, output: r.stdout + r.stderr };
}

export function sha256File(file: string): string {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

/** A deterministic `random` for runPartition: call n returns 16 bytes all equal to n. */
export function countingRandom(): () => Buffer {
  let n = 0;
  return () => Buffer.alloc(16, ++n);
}
