// A classic MBR (DOS) partition table with up to four primary partitions. Pure: a layout in, 512 bytes out.
import type { PartitionType } from './partition-layout.js';

/** System ID bytes. A BIOS boot partition is a GPT concept: on an MBR disk GRUB sits after the MBR, so it is plain Linux. */
export const MBR_TYPE_BYTES: Record<PartitionType, number> = {
  efi: 0xef,
  bios: 0x83,
  linux: 0x83,
  home: 0x83,
  swap: 0x82,
  lvm: 0x8e,
  raid: 0xfd,
};

/** CHS "cannot be represented" (head 254, sector 63, cylinder 1023): every reader then uses the LBA fields. */
const CHS_LBA_ONLY = [0xfe, 0xff, 0xff];

export interface MbrPartition {
  /** First sector (LBA). */
  start: number;
  /** Length in sectors. */
  size: number;
  typeByte: number;
  bootable?: boolean;
}

export interface MbrLayout {
  /** The 32-bit disk signature at byte 440 (Linux shows it as the disk identifier, e.g. PARTUUID=xxxxxxxx-01). */
  diskSignature: number;
  partitions: MbrPartition[];
}

/** Sector 0 of an MBR disk; the boot code area (bytes 0-439) is left zero for the bootloader to fill. */
export function buildMbr(layout: MbrLayout): Buffer {
  if (layout.partitions.length > 4) throw new RangeError('an MBR holds at most 4 primary partitions');
  const mbr = Buffer.alloc(512);
  mbr.writeUInt32LE(layout.diskSignature >>> 0, 440);
  layout.partitions.forEach((p, i) => {
    if (p.start > 0xffffffff || p.size > 0xffffffff) throw new RangeError(`MBR partition ${i + 1} does not fit 32-bit LBA fields`);
    const at = 446 + i * 16;
    mbr[at] = p.bootable ? 0x80 : 0x00;
    mbr.set(CHS_LBA_ONLY, at + 1);
    mbr[at + 4] = p.typeByte;
    mbr.set(CHS_LBA_ONLY, at + 5);
    mbr.writeUInt32LE(p.start, at + 8);
    mbr.writeUInt32LE(p.size, at + 12);
  });
  mbr[510] = 0x55;
  mbr[511] = 0xaa;
  return mbr;
}
