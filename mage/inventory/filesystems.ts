// Filesystem type and label from superblock magic numbers, the way blkid recognises them, for the few
// formats a provisioner meets. Pure: takes the first bytes of a device (see HEAD_BYTES), never throws.
import { cleanText } from './text.js';

/** Bytes to read from the start of a device to see every signature below (btrfs sits at 64 KiB). */
export const HEAD_BYTES = 69632;

export interface FilesystemInfo {
  /** blkid's TYPE names: ext4, vfat, swap, xfs, btrfs, ntfs, exfat, iso9660, LVM2_member, linux_raid_member. */
  fstype: string;
  label?: string;
}

function ascii(buf: Uint8Array, offset: number, length: number): string {
  if (offset + length > buf.length) return '';
  return Buffer.from(buf.buffer, buf.byteOffset + offset, length).toString('latin1');
}

function u16(buf: Uint8Array, offset: number): number {
  return offset + 2 <= buf.length ? (buf[offset] ?? 0) | ((buf[offset + 1] ?? 0) << 8) : -1;
}

function u32(buf: Uint8Array, offset: number): number {
  return offset + 4 <= buf.length ? Buffer.from(buf.buffer, buf.byteOffset, buf.length).readUInt32LE(offset) : -1;
}

/** A fixed-size label field: up to the first NUL, UTF-8, trailing padding removed; undefined when blank. */
function label(buf: Uint8Array, offset: number, length: number): string | undefined {
  if (offset + length > buf.length) return undefined;
  const field = buf.subarray(offset, offset + length);
  const nul = field.indexOf(0);
  const text = Buffer.from(nul === -1 ? field : field.subarray(0, nul))
    .toString('utf8')
    .trim();
  return text === '' ? undefined : text;
}

function ext(buf: Uint8Array): FilesystemInfo | undefined {
  // ext2/3/4 superblock at 1024: s_magic 0xEF53 at +56, s_volume_name[16] at +120.
  if (u16(buf, 1080) !== 0xef53) return undefined;
  const compat = u32(buf, 1024 + 92);
  const incompat = u32(buf, 1024 + 96);
  // INCOMPAT_EXTENTS | INCOMPAT_64BIT | INCOMPAT_FLEX_BG mark ext4; COMPAT_HAS_JOURNAL alone marks ext3.
  const fstype = incompat & (0x40 | 0x80 | 0x200) ? 'ext4' : compat & 0x4 ? 'ext3' : 'ext2';
  return { fstype, label: label(buf, 1144, 16) };
}

function bootSector(buf: Uint8Array): FilesystemInfo | undefined {
  // FAT, NTFS and exFAT boot sectors: x86 jump, OEM/type strings, 0x55AA at 510.
  if (u16(buf, 510) !== 0xaa55) return undefined;
  if (ascii(buf, 3, 8) === 'NTFS    ') return { fstype: 'ntfs' };
  if (ascii(buf, 3, 8) === 'EXFAT   ') return { fstype: 'exfat' };
  const jump = buf[0];
  if (jump !== 0xeb && jump !== 0xe9) return undefined;
  const sectorSize = u16(buf, 11);
  if (![512, 1024, 2048, 4096].includes(sectorSize)) return undefined;
  // FAT32 keeps its type string and 11-byte volume label at 82/71, FAT12/16 at 54/43.
  let labelAt: number | undefined;
  if (ascii(buf, 82, 8) === 'FAT32   ') labelAt = 71;
  else if (/^FAT(12|16|)\s*$/.test(ascii(buf, 54, 8))) labelAt = 43;
  if (labelAt === undefined) return undefined;
  const name = label(buf, labelAt, 11);
  return { fstype: 'vfat', label: name === 'NO NAME' ? undefined : name };
}

function swap(buf: Uint8Array): FilesystemInfo | undefined {
  // The signature ends the first page, whose size is the kernel's page size when mkswap ran.
  for (const page of [4096, 8192, 16384, 65536]) {
    const sig = ascii(buf, page - 10, 10);
    if (sig === 'SWAPSPACE2') return { fstype: 'swap', label: label(buf, 1024 + 28, 16) };
    if (sig === 'SWAP-SPACE') return { fstype: 'swap' };
  }
  return undefined;
}

function other(buf: Uint8Array): FilesystemInfo | undefined {
  if (ascii(buf, 0, 4) === 'XFSB') return { fstype: 'xfs', label: label(buf, 108, 12) };
  if (ascii(buf, 65536 + 64, 8) === '_BHRfS_M') return { fstype: 'btrfs', label: label(buf, 65536 + 299, 256) };
  if (ascii(buf, 512, 8) === 'LABELONE' && ascii(buf, 512 + 24, 8) === 'LVM2 001') return { fstype: 'LVM2_member' };
  // md superblock 1.1 at 0, 1.2 at 4 KiB (0.90 and 1.0 sit at the end of the device, out of reach here).
  if (u32(buf, 0) === 0xa92b4efc || u32(buf, 4096) === 0xa92b4efc) return { fstype: 'linux_raid_member' };
  if (ascii(buf, 32769, 5) === 'CD001') return { fstype: 'iso9660', label: label(buf, 32808, 32) };
  return undefined;
}

/** The filesystem whose signature starts `head` (the first HEAD_BYTES of a partition or disk), if any. */
export function detectFilesystem(head: Uint8Array): FilesystemInfo | undefined {
  const found = ext(head) ?? swap(head) ?? other(head) ?? bootSector(head);
  if (!found) return undefined;
  const text = cleanText(found.label, 128);
  return text === undefined ? { fstype: found.fstype } : { fstype: found.fstype, label: text };
}

/** True when `head` starts with a FAT/NTFS/exFAT boot sector, whose 0x55AA must not be read as an MBR. */
export function isBootSectorFilesystem(head: Uint8Array): boolean {
  return bootSector(head) !== undefined;
}
