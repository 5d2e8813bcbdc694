// Before a workflow writes anything, Mage checks that its install disk is the disk the server planned it
// for: the size, serial and WWN the workflow carries (Workflow.diskIdentity, taken from the hardware report)
// must be what this machine's sysfs says about the device. A forged hardware report could otherwise steer a
// routine reimage onto another disk (the 4 TB data disk) by lying about which disk is which.
import { realpath } from 'node:fs/promises';
import path from 'node:path';
import { DragonflyError } from '../schemas/errors.js';
import type { Workflow } from '../schemas/types.js';
import { isBlockDevice } from './disk-layout.js';
import { formatBytes } from './actions/partition-layout.js';
import { parseIdentity, readIdentityFiles, type DiskIdentity } from './inventory/disks.js';
import { under } from './inventory/read.js';

export type PlannedIdentity = NonNullable<Workflow['diskIdentity']>;

/** The device a disk path names on this machine, and what its sysfs says about it. */
export interface FoundDisk {
  /** The device node after /dev/disk/by-* links: /dev/sda (under the root in tests). */
  device: string;
  /** Its sysfs directory: /sys/class/block/NAME (which, unlike /sys/block, also lists partitions). */
  sysfs: string;
  identity: DiskIdentity;
}

const planned = (p: PlannedIdentity): string =>
  [`a disk of ${p.sizeBytes} bytes`, ...(p.serial !== undefined ? [p.serial === null ? 'no serial' : `serial ${p.serial}`] : []), ...(p.wwn !== undefined ? [p.wwn === null ? 'no wwn' : `wwn ${p.wwn}`] : [])].join(', ');

const refusal = (disk: string, why: string, expected: PlannedIdentity, data: Record<string, unknown> = {}) =>
  new DragonflyError('DF_ERR_DISK_MISMATCH', `refusing to write ${disk}: ${why}, but the workflow was planned for ${planned(expected)}`, { disk, expected, ...data });

/**
 * Where `disk` leads on the machine whose /dev and /sys are under `root`, and its identity, read the way the
 * inventory reads it. On the machine itself (root '/') the node must be a block device: a regular file at
 * /dev/sda is what a write to a missing disk leaves behind. Under a fixture root, dev/ holds disk images that
 * stand in for the devices, as in the inventory's fixtures. Throws DF_ERR_DISK_MISMATCH when `disk` is not a
 * device of this machine.
 */
export async function readInstallDiskIdentity(disk: string, expected: PlannedIdentity, root = '/'): Promise<FoundDisk> {
  if (disk === '') throw new DragonflyError('DF_ERR_DISK_MISMATCH', `refusing to write: the workflow names no install disk, but was planned for ${planned(expected)}`, { expected });
  let device: string;
  try {
    device = await realpath(disk);
  } catch (e) {
    throw refusal(disk, `it cannot be opened (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, expected);
  }
  const devDir = await realpath(under(root, '/dev')).catch(() => under(root, '/dev'));
  const rel = path.relative(devDir, device);
  if (rel === '' || rel.startsWith('..') || path.isAbsolute(rel)) {
    throw refusal(disk, `it is ${device}, not a device under ${devDir}`, expected, { device });
  }
  if (path.resolve(root) === '/' && !isBlockDevice(device)) {
    throw refusal(disk, `${device === disk ? 'it' : `it leads to ${device}, which`} is not a block device`, expected, { device });
  }
  // sysfs names /dev/cciss/c0d0 cciss!c0d0.
  const sysfs = under(root, `/sys/class/block/${rel.split(path.sep).join('!')}`);
  return { device, sysfs, identity: parseIdentity(await readIdentityFiles(sysfs)) };
}

/** What differs between the planned identity and the one found, each as a phrase; [] when it is the same disk. */
export function identityDifferences(expected: PlannedIdentity, found: DiskIdentity): string[] {
  const out: string[] = [];
  if (found.sizeBytes !== expected.sizeBytes) {
    const size = (n: number) => `${n} bytes (${formatBytes(n)})`;
    out.push(`its size is ${size(found.sizeBytes)} but the workflow was planned for ${size(expected.sizeBytes)}`);
  }
  // Not every disk has a serial or a WWN (virtio-blk has no WWN): null in the plan means the report showed
  // none, so a disk that has one is another disk (a forged report must not get a size-only check by leaving
  // them out). Absent (workflows planned before identities carried null) compares only what is there.
  for (const key of ['serial', 'wwn'] as const) {
    const want = expected[key];
    if (want === undefined) continue;
    if (want === null) {
      if (found[key] !== undefined) out.push(`its ${key} is ${found[key]} but the workflow was planned for a disk without one`);
    } else if (found[key] !== want) out.push(`its ${key} is ${found[key] ?? '(none)'} but the workflow was planned for ${key} ${want}`);
  }
  return out;
}

/** Resolves to what was found when `disk` is the planned disk; otherwise throws DF_ERR_DISK_MISMATCH naming every difference. */
export async function verifyInstallDisk(disk: string, expected: PlannedIdentity, root = '/'): Promise<FoundDisk> {
  const found = await readInstallDiskIdentity(disk, expected, root);
  const differences = identityDifferences(expected, found.identity);
  if (differences.length > 0) {
    const name = found.device === disk ? disk : `${disk} (${found.device})`;
    throw new DragonflyError(
      'DF_ERR_DISK_MISMATCH',
      `refusing to write ${name}: ${differences.join('; ')} (a different disk, or a forged hardware report)`,
      { disk, device: found.device, expected, found: found.identity, differences },
    );
  }
  return found;
}
