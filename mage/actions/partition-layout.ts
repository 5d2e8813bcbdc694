// Turns a template's partition list into sector ranges on a disk of a known geometry, or explains why it
// cannot. Pure: runPartition calls it before it writes a single byte, so a layout that does not fit fails
// with the disk untouched.
import { parseSize } from '../../schemas/formats.js';
import type { Partition, PartitionAction } from '../../schemas/types.js';
import { PartitionError } from './partition-errors.js';

export type PartitionType = NonNullable<Partition['type']>;
export type PartitionFormat = NonNullable<Partition['format']>;
export type Filesystem = Exclude<PartitionFormat, 'none'>;
export type TableKind = NonNullable<PartitionAction['table']>;

/** Every partition starts on a 1 MiB boundary: good for 4K-sector disks, SSD erase blocks and RAID stripes. */
export const ALIGNMENT_BYTES = 2 ** 20;
/** UEFI spec §5.3.2: at least 16 KiB of entries; 128 entries of 128 bytes is what every tool writes. */
export const GPT_ENTRY_COUNT = 128;
export const GPT_ENTRY_SIZE = 128;
/** GPT partition names are 36 UTF-16 code units (UEFI spec §5.3.3, PartitionName). */
export const GPT_NAME_UNITS = 36;
/** Filesystem label limits in bytes: FAT BPB volume label, ext4 s_volume_name, swap header sws_volume. */
export const LABEL_BYTES: Record<Filesystem, number> = { vfat: 11, ext4: 16, swap: 16 };
/** MBR start and size fields are 32-bit sector counts. */
export const MBR_MAX_SECTORS = 0xffffffff;

export interface DiskGeometry {
  /** Logical sector size in bytes: 512, or 4096 on 4Kn disks. */
  sectorSize: number;
  /** Whole sectors on the disk (a trailing partial sector of an image file is not counted). */
  totalSectors: number;
}

export interface PlannedPartition {
  /** 1-based partition number, in template order. */
  number: number;
  /** GPT partition name ('' when the template gives none); not stored in an MBR. */
  name: string;
  type: PartitionType;
  format: PartitionFormat;
  /** The filesystem label: `label`, or the partition's name when no label is given. */
  label?: string;
  /** First sector (LBA). */
  start: number;
  /** Length in sectors. */
  size: number;
}

export const isSectorSize = (n: number): boolean => Number.isInteger(n) && n >= 512 && n <= 4096 && (n & (n - 1)) === 0;

export const alignmentSectors = (sectorSize: number): number => ALIGNMENT_BYTES / sectorSize;

export const gptEntrySectors = (sectorSize: number): number => Math.ceil((GPT_ENTRY_COUNT * GPT_ENTRY_SIZE) / sectorSize);

/** First and last sector a partition may occupy (inclusive). */
export function usableSectors(table: TableKind, disk: DiskGeometry): { first: number; last: number } {
  if (table === 'gpt') {
    // LBA 0 protective MBR, LBA 1 header, then the entries; mirrored at the end (UEFI spec §5.3.1).
    const entries = gptEntrySectors(disk.sectorSize);
    return { first: 2 + entries, last: disk.totalSectors - 2 - entries };
  }
  // Keep every partition's end inside the 32-bit LBA range, so start and size both fit their fields.
  return { first: 1, last: Math.min(disk.totalSectors - 1, MBR_MAX_SECTORS - 1) };
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${Number.isInteger(v) ? v : v.toFixed(2).replace(/\.?0+$/, '')} ${units[i]}`;
}

const layoutError = (message: string, data: Record<string, unknown> = {}) => new PartitionError('DF_ERR_PARTITION_LAYOUT', message, data);

function describe(p: Partition, i: number): string {
  return `partition ${i + 1}${p.name ? ` (${p.name})` : ''}`;
}

/** Sector ranges of `action.partitions` on `disk`, or a PartitionError naming what does not fit. */
export function planLayout(action: Pick<PartitionAction, 'table' | 'partitions'>, disk: DiskGeometry, diskName = 'the disk'): PlannedPartition[] {
  const table = action.table ?? 'gpt';
  const { sectorSize, totalSectors } = disk;
  if (!isSectorSize(sectorSize)) throw layoutError(`unsupported sector size ${sectorSize}: expected 512 or 4096 bytes`, { sectorSize });
  const max = table === 'gpt' ? GPT_ENTRY_COUNT : 4;
  if (action.partitions.length === 0) throw layoutError('the partition list is empty');
  if (action.partitions.length > max) {
    throw layoutError(`${table} holds at most ${max} partitions, the layout has ${action.partitions.length}${table === 'mbr' ? ' (use table: gpt)' : ''}`);
  }

  const align = alignmentSectors(sectorSize);
  const { first, last } = usableSectors(table, disk);
  const alignUp = (lba: number) => Math.ceil(lba / align) * align;
  const planned: PlannedPartition[] = [];
  let next = alignUp(first);

  action.partitions.forEach((p, i) => {
    const what = describe(p, i);
    const name = p.name ?? '';
    if (table === 'gpt' && name.length > GPT_NAME_UNITS) throw layoutError(`${what}: a GPT name holds at most ${GPT_NAME_UNITS} UTF-16 units, "${name}" has ${name.length}`);
    const format = p.format ?? 'none';
    const label = format === 'none' ? undefined : (p.label ?? p.name);
    if (label !== undefined && format !== 'none' && Buffer.byteLength(label, 'utf8') > LABEL_BYTES[format]) {
      throw layoutError(
        `${what}: the ${format} label "${label}"${p.label === undefined ? ' (taken from the name)' : ''} is longer than ${LABEL_BYTES[format]} bytes`,
        { label },
      );
    }

    let size: number;
    if (p.size === 'rest') {
      if (i !== action.partitions.length - 1) throw layoutError(`${what}: only the last partition may use size 'rest'`);
      // End on an alignment boundary too, so the free tail is less than 1 MiB and the size is a whole number of MiB.
      const end = Math.floor((last + 1) / align) * align;
      size = end - next;
      if (size <= 0) {
        throw new PartitionError(
          'DF_ERR_DISK_TOO_SMALL',
          `${what} ('rest') would be empty: the partitions before it end at ${formatBytes(next * sectorSize)} and ${diskName} has ${formatBytes((last + 1) * sectorSize)} usable (${formatBytes(totalSectors * sectorSize)} in all)`,
          { diskBytes: totalSectors * sectorSize },
        );
      }
    } else {
      let bytes: number;
      try {
        bytes = parseSize(p.size);
      } catch {
        throw new PartitionError('DF_ERR_PARTITION_LAYOUT', `${what}: "${p.size}" is not a size`, {}, "write a number and a unit, e.g. 512MiB, or 'rest'");
      }
      if (!(bytes > 0)) throw layoutError(`${what}: size must be more than 0 bytes, got "${p.size}"`);
      size = Math.ceil(bytes / sectorSize);
    }
    planned.push({ number: i + 1, name, type: p.type ?? 'linux', format, ...(label !== undefined ? { label } : {}), start: next, size });
    next = alignUp(next + size);
  });

  const lastPlanned = planned[planned.length - 1]!;
  const end = lastPlanned.start + lastPlanned.size - 1;
  if (end > last) {
    const sizes = action.partitions.map((p, i) => `${p.name ?? `#${i + 1}`} ${p.size}`).join(', ');
    const mbrLimit = table === 'mbr' && totalSectors - 1 > last ? ` (an MBR table addresses at most ${formatBytes(MBR_MAX_SECTORS * sectorSize)}: use table: gpt)` : '';
    throw new PartitionError(
      'DF_ERR_DISK_TOO_SMALL',
      `the layout (${sizes}) needs ${formatBytes((end + 1) * sectorSize)} with 1 MiB alignment and the ${table} table, but ${diskName} holds ${formatBytes(totalSectors * sectorSize)} (${formatBytes((last + 1) * sectorSize)} usable)${mbrLimit}; nothing was written`,
      { neededBytes: (end + 1) * sectorSize, diskBytes: totalSectors * sectorSize, usableBytes: (last + 1) * sectorSize },
    );
  }
  return planned;
}
