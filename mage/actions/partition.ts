// The `partition` action (issue #4): write a GPT or MBR partition table natively, then format the partitions.
// Works on a block device (the target machine's disk) or on a disk image file, where partitions are byte
// ranges and no loop device or root is needed.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import type { PartitionAction } from '../../schemas/types.js';
import { partitionDevice } from './device-names.js';
import { formatPartition, type FormatTarget } from './format.js';
import { buildGpt, GPT_TYPE_GUIDS, guidFromRandom, type DiskWrite } from './gpt.js';
import { buildMbr, MBR_TYPE_BYTES } from './mbr.js';
import { PartitionError } from './partition-errors.js';
import { isSectorSize, planLayout, usableSectors, type PlannedPartition, type TableKind } from './partition-layout.js';
import { runTool } from './partition-tools.js';

export interface PartitionProgress {
  percent: number;
  message: string;
}

export interface PartitionContext {
  /** The disk to partition: a block device, or a disk image file. Authoritative over `params.disk`. */
  disk: string;
  /** Logical sector size; default: what the block device reports, 512 for a file. */
  sectorSize?: number;
  /** 16 random bytes per call (GUIDs, MBR disk signature, swap UUIDs); injectable for tests. */
  random?: () => Buffer;
  /** Page size for swap areas written into an image file; default 4096. */
  swapPageSize?: number;
  onProgress?(p: PartitionProgress): void;
}

export interface PartitionedPartition {
  number: number;
  /** First sector (LBA), as `sfdisk --json` shows it. */
  start: number;
  /** Length in sectors, as `sfdisk --json` shows it. */
  size: number;
  /** Byte offset on the disk (start × sector size): where a partition of an image file begins. */
  offset: number;
  /** Length in bytes. */
  bytes: number;
  /** The partition's device node; only for a block device (an image file's partitions are byte ranges). */
  device?: string;
  /** What root=PARTUUID= matches: the GPT unique GUID, or SIGNATURE-NN on MBR; lower case as the kernel shows it. */
  partuuid: string;
}

export interface PartitionResult {
  table: TableKind;
  sectorSize: number;
  partitions: PartitionedPartition[];
}

const MiB = 2 ** 20;

interface Disk {
  path: string;
  isBlockDevice: boolean;
  bytes: number;
  sectorSize: number;
}

async function inspectDisk(disk: string, sectorSize: number | undefined): Promise<Disk> {
  let path: string;
  let stat: fs.Stats;
  try {
    path = await fs.promises.realpath(disk);
    stat = await fs.promises.stat(path);
  } catch (e) {
    throw new PartitionError('DF_ERR_DISK_OPEN', `cannot open ${disk}: ${(e as Error).message}`, { disk });
  }
  if (sectorSize !== undefined && !isSectorSize(sectorSize)) {
    throw new PartitionError('DF_ERR_PARTITION_LAYOUT', `unsupported sector size ${sectorSize}: expected 512 or 4096 bytes`, { sectorSize });
  }
  if (stat.isFile()) return { path, isBlockDevice: false, bytes: stat.size, sectorSize: sectorSize ?? 512 };
  if (!stat.isBlockDevice()) throw new PartitionError('DF_ERR_DISK_OPEN', `${disk} is neither a block device nor a disk image file`, { disk });
  const [size, logical] = (await runTool({ command: 'blockdev', args: ['--getsize64', '--getss', path] })).trim().split(/\s+/).map(Number);
  if (!size || !logical) throw new PartitionError('DF_ERR_DISK_OPEN', `blockdev could not read the size of ${disk}`, { disk });
  if (sectorSize !== undefined && sectorSize !== logical) {
    // A table written for other sector sizes puts every LBA in the wrong place.
    throw new PartitionError('DF_ERR_DISK_OPEN', `${disk} has ${logical}-byte logical sectors, not ${sectorSize}`, { disk, sectorSize: logical });
  }
  return { path, isBlockDevice: true, bytes: size, sectorSize: logical };
}

/** The byte ranges to write for `table`, in write order (for GPT: protective MBR, primary, then backup). */
function tableWrites(table: TableKind, planned: PlannedPartition[], disk: Disk, next16: () => Buffer): { writes: DiskWrite[]; partuuids: string[] } {
  const totalSectors = Math.floor(disk.bytes / disk.sectorSize);
  if (table === 'gpt') {
    const { first, last } = usableSectors('gpt', { sectorSize: disk.sectorSize, totalSectors });
    const diskGuid = guidFromRandom(next16());
    const partitions = planned.map((p) => ({ start: p.start, size: p.size, typeGuid: GPT_TYPE_GUIDS[p.type], uniqueGuid: guidFromRandom(next16()), name: p.name }));
    const gpt = buildGpt({ sectorSize: disk.sectorSize, totalSectors, diskGuid, firstUsable: first, lastUsable: last, partitions });
    return { writes: [gpt.protectiveMbr, gpt.primary, gpt.backup], partuuids: partitions.map((p) => p.uniqueGuid.toLowerCase()) };
  }
  const diskSignature = next16().readUInt32LE(0);
  const mbr = buildMbr({ diskSignature, partitions: planned.map((p) => ({ start: p.start, size: p.size, typeByte: MBR_TYPE_BYTES[p.type] })) });
  const signature = diskSignature.toString(16).padStart(8, '0');
  return { writes: [{ offset: 0, bytes: mbr }], partuuids: planned.map((p) => `${signature}-${p.number.toString(16).padStart(2, '0')}`) };
}

/**
 * Ranges zeroed before the table is written. Stale signatures make the kernel, udev and blkid act on data
 * that no longer exists: an old backup GPT in the last sectors makes tools report a corrupt table (or
 * "restore" it), an old RAID/LVM/ZFS member in a partition at the same place is auto-assembled and keeps the
 * partition busy, and an old filesystem left in a `format: none` partition still answers to its label
 * (root=LABEL= then finds two). The disk's first and last MiB hold every partition table; a partition's
 * first MiB covers the superblocks that live there (ext*, xfs, LVM, md 1.1/1.2, btrfs at 64 KiB, ZFS L0/L1)
 * and its last MiB those at the end (md 0.90/1.0, ZFS L2/L3). 64 KiB would miss btrfs and ZFS.
 */
function wipeRanges(diskBytes: number, planned: PlannedPartition[], sectorSize: number): { offset: number; length: number }[] {
  const edges = (offset: number, length: number) => {
    const n = Math.min(MiB, length);
    return [{ offset, length: n }, { offset: offset + length - n, length: n }];
  };
  return [...edges(0, diskBytes), ...planned.flatMap((p) => edges(p.start * sectorSize, p.size * sectorSize))];
}

async function writeFully(fh: fs.promises.FileHandle, bytes: Uint8Array, offset: number): Promise<void> {
  let done = 0;
  while (done < bytes.length) done += (await fh.write(bytes, done, bytes.length - done, offset + done)).bytesWritten;
}

async function rereadPartitionTable(device: string): Promise<void> {
  try {
    await runTool({ command: 'blockdev', args: ['--rereadpt', device] });
  } catch (e) {
    // BLKRRPART is refused while any partition of the disk is open; partx updates partitions one by one.
    try {
      await runTool({ command: 'partx', args: ['-u', device] });
    } catch {
      throw e;
    }
  }
}

/**
 * After something other than this action wrote a partition table to a block device (image2disk of a whole
 * disk image): make the kernel read it, and wait for the partitions' device nodes, so that the following
 * actions (writefile, kexec, image2disk to a partition) find /dev/sda1 etc.
 */
export async function refreshPartitions(device: string): Promise<number> {
  await rereadPartitionTable(device);
  let count = 0;
  try {
    const table = JSON.parse(await runTool({ command: 'sfdisk', args: ['--json', device] })) as { partitiontable?: { partitions?: unknown[] } };
    count = table.partitiontable?.partitions?.length ?? 0;
  } catch {
    return 0; // no partition table in the image (a bare filesystem, say): nothing to wait for
  }
  await waitForDevices(Array.from({ length: count }, (_, i) => partitionDevice(device, i + 1)));
  return count;
}

async function waitForDevices(devices: string[], timeoutMs = 10_000): Promise<void> {
  await runTool({ command: 'udevadm', args: ['settle', '--timeout=10'] }).catch(() => undefined);
  const deadline = Date.now() + timeoutMs;
  for (const device of devices) {
    while (!fs.existsSync(device)) {
      if (Date.now() > deadline) throw new PartitionError('DF_ERR_DISK_OPEN', `${device} did not appear after the partition table was re-read`, { device });
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

export async function runPartition(params: Pick<PartitionAction, 'table' | 'partitions'> & { disk?: string }, ctx: PartitionContext): Promise<PartitionResult> {
  const progress = (percent: number, message: string) => ctx.onProgress?.({ percent, message });
  const table = params.table ?? 'gpt';

  // 1. Everything that can be checked is checked before the first byte is written.
  progress(0, `checking ${ctx.disk}`);
  const disk = await inspectDisk(ctx.disk, ctx.sectorSize);
  const planned = planLayout({ table, partitions: params.partitions }, { sectorSize: disk.sectorSize, totalSectors: Math.floor(disk.bytes / disk.sectorSize) }, ctx.disk);
  const random = ctx.random ?? (() => randomBytes(16));
  const next16 = () => {
    const b = random();
    if (b.length < 16) throw new RangeError(`ctx.random must return 16 bytes, returned ${b.length}`);
    return b;
  };
  const { writes, partuuids } = tableWrites(table, planned, disk, next16);
  const swapUuids = planned.map((p) => (p.format === 'swap' ? guidFromRandom(next16()).toLowerCase() : ''));

  // 2. Wipe stale signatures, write the table, fsync. O_EXCL on a block device refuses a mounted or busy disk.
  let fh: fs.promises.FileHandle;
  try {
    fh = await fs.promises.open(disk.path, fs.constants.O_RDWR | (disk.isBlockDevice ? fs.constants.O_EXCL : 0));
  } catch (e) {
    const busy = (e as NodeJS.ErrnoException).code === 'EBUSY' ? ' (in use: mounted, active swap, or a RAID/LVM member?)' : '';
    throw new PartitionError('DF_ERR_DISK_OPEN', `cannot open ${ctx.disk} for writing${busy}: ${(e as Error).message}`, { disk: ctx.disk });
  }
  try {
    progress(5, 'wiping old partition tables and filesystem signatures');
    const zeros = Buffer.alloc(MiB);
    for (const r of wipeRanges(disk.bytes, planned, disk.sectorSize)) await writeFully(fh, zeros.subarray(0, r.length), r.offset);
    progress(15, `writing the ${table} partition table`);
    for (const w of writes) await writeFully(fh, w.bytes, w.offset);
    await fh.sync();
  } finally {
    await fh.close();
  }

  // 3. A block device: make the kernel see the new partitions before formatting them.
  const devices = planned.map((p) => (disk.isBlockDevice ? partitionDevice(disk.path, p.number) : undefined));
  if (disk.isBlockDevice) {
    progress(25, `re-reading the partition table of ${ctx.disk}`);
    await rereadPartitionTable(disk.path);
    await waitForDevices(devices.filter((d): d is string => d !== undefined));
  }

  // 4. Format what asks for it.
  const toFormat = planned.filter((p) => p.format !== 'none');
  for (const [i, p] of toFormat.entries()) {
    const format = p.format as Exclude<typeof p.format, 'none'>;
    progress(30 + Math.round((70 * i) / toFormat.length), `formatting partition ${p.number}${p.name ? ` (${p.name})` : ''} as ${format}`);
    const device = devices[p.number - 1];
    const target: FormatTarget = device
      ? { kind: 'device', device }
      : { kind: 'range', file: disk.path, offset: p.start * disk.sectorSize, size: p.size * disk.sectorSize, sectorSize: disk.sectorSize };
    await formatPartition(format, target, {
      ...(swapUuids[p.number - 1] ? { uuid: swapUuids[p.number - 1]! } : {}),
      ...(p.label !== undefined ? { label: p.label } : {}),
      ...(ctx.swapPageSize ? { pageSize: ctx.swapPageSize } : {}),
    });
  }
  progress(100, `partitioned ${ctx.disk}: ${planned.length} partition${planned.length === 1 ? '' : 's'}`);

  return {
    table,
    sectorSize: disk.sectorSize,
    partitions: planned.map((p, i) => ({
      number: p.number,
      start: p.start,
      size: p.size,
      offset: p.start * disk.sectorSize,
      bytes: p.size * disk.sectorSize,
      ...(devices[i] ? { device: devices[i] } : {}),
      partuuid: partuuids[i]!,
    })),
  };
}
