// Partition tables from the first sectors of a disk: GPT (UEFI spec §5.3) or MBR. Pure, never throws.
import { detectFilesystem, isBootSectorFilesystem } from './filesystems.js';

export interface TableEntry {
  /** 1-based, as Linux numbers partitions (GPT: entry index + 1; MBR: primary slot + 1). */
  number: number;
  firstLba: number;
  sectors: number;
  /** GPT partition name (PARTLABEL). */
  name?: string;
  /** MBR type byte, e.g. 0x83 Linux, 0xef EFI. */
  mbrType?: number;
}

export interface TableInfo {
  table: 'gpt' | 'mbr' | 'none';
  entries: TableEntry[];
}

const MAX_ENTRIES = 256;

function u64(buf: Buffer, offset: number): number {
  return Number(buf.readBigUInt64LE(offset));
}

/** GPT header at LBA 1, for 512-byte and 4096-byte logical sectors. */
function parseGpt(buf: Buffer): TableInfo | undefined {
  for (const sector of [512, 4096]) {
    if (buf.length < sector + 92 || buf.toString('latin1', sector, sector + 8) !== 'EFI PART') continue;
    const entriesLba = u64(buf, sector + 72);
    const count = Math.min(buf.readUInt32LE(sector + 80), MAX_ENTRIES);
    const size = buf.readUInt32LE(sector + 84);
    const entries: TableEntry[] = [];
    // Entries past what was read are left out (the header alone still says "gpt").
    if (size >= 128 && entriesLba < 1024) {
      for (let i = 0; i < count; i++) {
        const at = entriesLba * sector + i * size;
        if (at + 128 > buf.length) break;
        if (buf.subarray(at, at + 16).every((b) => b === 0)) continue; // unused entry: zero type GUID
        const firstLba = u64(buf, at + 32);
        const lastLba = u64(buf, at + 40);
        const raw = buf.toString('utf16le', at + 56, at + 128);
        const nul = raw.indexOf('\0');
        const name = (nul === -1 ? raw : raw.slice(0, nul)).trim();
        entries.push({
          number: i + 1,
          firstLba,
          sectors: lastLba >= firstLba ? lastLba - firstLba + 1 : 0,
          ...(name !== '' && { name }),
        });
      }
    }
    return { table: 'gpt', entries };
  }
  return undefined;
}

/** The classic MBR: four 16-byte entries at 446 and 0x55AA at 510; every status byte must be 0x00 or 0x80. */
function parseMbr(buf: Buffer): TableInfo | undefined {
  if (buf.length < 512 || buf.readUInt16LE(510) !== 0xaa55) return undefined;
  const entries: TableEntry[] = [];
  for (let i = 0; i < 4; i++) {
    const at = 446 + i * 16;
    const status = buf[at];
    if (status !== 0x00 && status !== 0x80) return undefined;
    const type = buf[at + 4] ?? 0;
    if (type === 0) continue;
    // A protective MBR whose GPT header was not found (e.g. unusual sector size): still a GPT disk.
    if (type === 0xee) return { table: 'gpt', entries: [] };
    entries.push({ number: i + 1, firstLba: buf.readUInt32LE(at + 8), sectors: buf.readUInt32LE(at + 12), mbrType: type });
  }
  return { table: 'mbr', entries };
}

/**
 * The partition table at the start of a disk. A FAT/NTFS boot sector also ends in 0x55AA, so a disk
 * formatted whole ("superfloppy", common on USB sticks) is 'none', not an MBR.
 */
export function detectPartitionTable(head: Uint8Array): TableInfo {
  const buf = Buffer.from(head.buffer, head.byteOffset, head.length);
  const gpt = parseGpt(buf);
  if (gpt) return gpt;
  if (isBootSectorFilesystem(buf)) return { table: 'none', entries: [] };
  return parseMbr(buf) ?? { table: 'none', entries: [] };
}

/** Table and whole-disk filesystem of a disk, from its first sectors. */
export function describeDiskHead(head: Uint8Array): { table: TableInfo; fstype?: string } {
  const table = detectPartitionTable(head);
  if (table.table !== 'none') return { table };
  const fs = detectFilesystem(head);
  return fs ? { table, fstype: fs.fstype } : { table };
}
