// Where partition N of a disk lives: its device (/dev/sda2, /dev/nvme0n1p2) on a block device, or a byte
// range of a disk image file. The table is read with `sfdisk --json` (reading only; writing is native).
import fs from 'node:fs';
import { partitionDevice } from './actions/device-names.js';
import { runTool } from './actions/partition-tools.js';

export interface PartitionLocation {
  /** What to open: the partition device, or the image file itself. */
  path: string;
  /** Byte offset of the partition in `path` (0 for a partition device). */
  offset: number;
  /** Size in bytes. */
  size: number;
}

export class LayoutError extends Error {}

export function isBlockDevice(p: string): boolean {
  try {
    return fs.statSync(p).isBlockDevice();
  } catch {
    return false;
  }
}

export async function diskSize(disk: string): Promise<number> {
  if (!isBlockDevice(disk)) return fs.statSync(disk).size;
  return Number((await runTool({ command: 'blockdev', args: ['--getsize64', disk] })).trim());
}

export async function partitionLocation(disk: string, n: number): Promise<PartitionLocation> {
  let table: { partitiontable?: { sectorsize?: number; partitions?: { start: number; size: number }[] } };
  try {
    table = JSON.parse(await runTool({ command: 'sfdisk', args: ['--json', disk] }));
  } catch (e) {
    throw new LayoutError(`cannot read the partition table of ${disk}: ${(e as Error).message}`);
  }
  const pt = table.partitiontable;
  const p = pt?.partitions?.[n - 1];
  if (!pt || !p) throw new LayoutError(`${disk} has no partition ${n} (it has ${pt?.partitions?.length ?? 0})`);
  const sector = pt.sectorsize ?? 512;
  if (isBlockDevice(disk)) return { path: partitionDevice(disk, n), offset: 0, size: p.size * sector };
  return { path: disk, offset: p.start * sector, size: p.size * sector };
}
