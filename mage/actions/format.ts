// Making a filesystem on a new partition. A partition device gets the usual mkfs tools. A partition of a
// disk image file is a byte range, formatted in place without loop devices and without root:
// - ext4: mkfs.ext4 -E offset=BYTES FILE SIZEk (e2fsprogs >= 1.43);
// - vfat: mkfs.vfat --offset SECTORS (dosfstools >= 4.2), -S so SECTORS are logical sectors of the image,
//   and -h so the boot sector's hidden-sectors field holds the partition start as it would on a device;
// - swap: mkswap has no offset option before util-linux 2.39, and a swap area is one page of header, so it
//   is written here (swapHeader) rather than made in a temporary file and copied; a test checks that the
//   page equals mkswap's byte for byte.
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import type { Filesystem } from './partition-layout.js';
import { PartitionError } from './partition-errors.js';
import { runTool, type ToolCommand } from './partition-tools.js';

export type FormatTarget =
  | { kind: 'device'; device: string }
  | {
      kind: 'range';
      /** The disk image file. */
      file: string;
      /** Byte offset of the partition in the file (a multiple of sectorSize). */
      offset: number;
      /** Partition length in bytes. */
      size: number;
      /** Logical sector size of the image. */
      sectorSize: number;
    };

/**
 * FAT32 needs at least 65,525 clusters, or mtools and some firmware refuse it (mkfs.fat's default of
 * 4 KiB clusters gives a 128 MiB ESP only 32,699). Small clusters keep small ESPs FAT32; below 33 MiB,
 * FAT16 (which the UEFI specification also allows on removable and small media).
 */
export function fatLayout(size: number | undefined, sectorSize = 512): string[] {
  if (size === undefined) return ['-F', '32'];
  for (const perCluster of [8, 4, 2, 1]) {
    if (size / (perCluster * sectorSize) >= 66_000) return ['-F', '32', '-s', String(perCluster)];
  }
  return ['-F', '16'];
}

/** The command that formats `target`, or undefined when the filesystem is written natively (swap on a range). */
export function formatCommand(filesystem: Filesystem, target: FormatTarget, label?: string): ToolCommand | undefined {
  const kib = (bytes: number) => Math.floor(bytes / 1024);
  switch (filesystem) {
    case 'vfat': {
      const args = [...(target.kind === 'range' ? fatLayout(target.size, target.sectorSize) : ['-F', '32']), ...(label ? ['-n', label] : [])];
      if (target.kind === 'device') return { command: 'mkfs.vfat', args: [...args, target.device] };
      const sector = target.offset / target.sectorSize;
      return {
        command: 'mkfs.vfat',
        args: [...args, '-S', String(target.sectorSize), '-h', String(sector), '--offset', String(sector), target.file, String(kib(target.size))],
      };
    }
    case 'ext4': {
      const args = ['-F', ...(label ? ['-L', label] : [])];
      if (target.kind === 'device') return { command: 'mkfs.ext4', args: [...args, target.device] };
      // On a device mke2fs never picks blocks smaller than the logical sector; on an image it cannot see it.
      const block = target.sectorSize > 1024 ? ['-b', String(target.sectorSize)] : [];
      // A size with a unit suffix, so mke2fs never reads it as a count of its own blocks.
      return { command: 'mkfs.ext4', args: [...args, ...block, '-E', `offset=${target.offset}`, target.file, `${kib(target.size)}k`] };
    }
    case 'swap':
      if (target.kind === 'device') return { command: 'mkswap', args: [...(label ? ['-L', label] : []), target.device] };
      return undefined;
  }
}

/** mkswap refuses fewer than 10 usable pages (util-linux MIN_GOODPAGES). */
export const SWAP_MIN_PAGES = 10;

/**
 * The first page of a version-1 Linux swap area (include/linux/swap.h, union swap_header): 1024 bytes of
 * boot bits, then version, last_page, nr_badpages, uuid[16], volume[16]; "SWAPSPACE2" ends the page.
 * Fields are in the target's byte order: little-endian, as on x86-64 and arm64.
 */
export function swapHeader(opts: { size: number; pageSize?: number; uuid: string; label?: string }): Buffer {
  const pageSize = opts.pageSize ?? 4096;
  const pages = Math.floor(opts.size / pageSize);
  if (pages < SWAP_MIN_PAGES) {
    throw new PartitionError('DF_ERR_PARTITION_LAYOUT', `a swap partition of ${opts.size} bytes is too small: it needs at least ${SWAP_MIN_PAGES} pages of ${pageSize} bytes`);
  }
  const label = Buffer.from(opts.label ?? '', 'utf8');
  if (label.length > 16) throw new PartitionError('DF_ERR_PARTITION_LAYOUT', `swap label "${opts.label}" is longer than 16 bytes`);
  const uuid = Buffer.from(opts.uuid.replace(/-/g, ''), 'hex');
  if (uuid.length !== 16) throw new RangeError(`not a UUID: ${opts.uuid}`);
  const page = Buffer.alloc(pageSize);
  page.writeUInt32LE(1, 1024); // version
  page.writeUInt32LE(pages - 1, 1028); // last_page
  page.writeUInt32LE(0, 1032); // nr_badpages
  uuid.copy(page, 1036); // the UUID's bytes in text order (not GUID mixed-endian)
  label.copy(page, 1052);
  page.write('SWAPSPACE2', pageSize - 10, 'latin1');
  return page;
}

export interface FormatOptions {
  label?: string;
  /** UUID of a natively written swap area; default: a random one. */
  uuid?: string;
  /** Page size of a natively written swap area (the target kernel's; 4096 on x86-64 and most arm64). */
  pageSize?: number;
}

export async function formatPartition(filesystem: Filesystem, target: FormatTarget, opts: FormatOptions): Promise<void> {
  const command = formatCommand(filesystem, target, opts.label);
  if (command) {
    await runTool(command);
    return;
  }
  if (target.kind !== 'range') throw new Error('unreachable: only a swap range is written natively');
  const page = swapHeader({ size: target.size, uuid: opts.uuid ?? randomUUID(), ...(opts.label !== undefined ? { label: opts.label } : {}), ...(opts.pageSize ? { pageSize: opts.pageSize } : {}) });
  const fh = await fs.promises.open(target.file, 'r+');
  try {
    await fh.write(page, 0, page.length, target.offset);
    await fh.sync();
  } finally {
    await fh.close();
  }
}
