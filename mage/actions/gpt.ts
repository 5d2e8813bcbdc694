// GUID Partition Table bytes (UEFI spec 2.10 §5.2.3 protective MBR, §5.3 GPT). Pure: a layout in, the
// byte ranges to write out; partition.ts does the I/O.
import { crc32 } from './crc32.js';
import { GPT_ENTRY_COUNT, GPT_ENTRY_SIZE, GPT_NAME_UNITS, gptEntrySectors, type PartitionType } from './partition-layout.js';

/** Partition type GUIDs (UEFI spec Table 5.7; Discoverable Partitions Specification for the Linux ones). */
export const GPT_TYPE_GUIDS: Record<PartitionType, string> = {
  efi: 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B',
  bios: '21686148-6449-6E6F-744E-656564454649',
  linux: '0FC63DAF-8483-4772-8E79-3D69D8477DE4',
  swap: '0657FD6D-A4AB-43C4-84E5-0933C84B4F4F',
  lvm: 'E6D6D379-F507-44C2-A23C-238F2A3DF928',
  raid: 'A19D880F-05FC-4D3B-A006-743F0F84911E',
  home: '933AC7E1-2EB4-4F13-B844-0E14E2AEF915',
};

const GUID = /^([0-9a-f]{8})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{12})$/i;

/** On-disk GUID (UEFI spec Appendix A): the first three fields little-endian, the last eight bytes as written. */
export function encodeGuid(guid: string): Buffer {
  const m = GUID.exec(guid);
  if (!m) throw new RangeError(`not a GUID: ${guid}`);
  const out = Buffer.alloc(16);
  out.writeUInt32LE(parseInt(m[1]!, 16), 0);
  out.writeUInt16LE(parseInt(m[2]!, 16), 4);
  out.writeUInt16LE(parseInt(m[3]!, 16), 6);
  Buffer.from(m[4]! + m[5]!, 'hex').copy(out, 8);
  return out;
}

export function decodeGuid(bytes: Uint8Array): string {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, 16);
  const hex = (n: number, width: number) => n.toString(16).padStart(width, '0');
  return [hex(b.readUInt32LE(0), 8), hex(b.readUInt16LE(4), 4), hex(b.readUInt16LE(6), 4), b.subarray(8, 10).toString('hex'), b.subarray(10, 16).toString('hex')]
    .join('-')
    .toUpperCase();
}

/** A version 4 (random) GUID from 16 random bytes (RFC 9562 §5.4), in the usual text form. */
export function guidFromRandom(random: Uint8Array): string {
  if (random.length < 16) throw new RangeError(`a GUID needs 16 random bytes, got ${random.length}`);
  const b = Buffer.from(random.subarray(0, 16));
  b[6] = (b[6]! & 0x0f) | 0x40;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const h = b.toString('hex').toUpperCase();
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export interface GptPartition {
  /** First sector (LBA). */
  start: number;
  /** Length in sectors. */
  size: number;
  typeGuid: string;
  uniqueGuid: string;
  name: string;
}

export interface GptLayout {
  sectorSize: number;
  totalSectors: number;
  diskGuid: string;
  firstUsable: number;
  lastUsable: number;
  partitions: GptPartition[];
}

export interface DiskWrite {
  /** Byte offset on the disk. */
  offset: number;
  bytes: Buffer;
}

export interface GptBytes {
  /** LBA 0. */
  protectiveMbr: DiskWrite;
  /** Primary header (LBA 1) followed by the entry array (LBA 2). */
  primary: DiskWrite;
  /** Backup entry array followed by the backup header in the last sector. */
  backup: DiskWrite;
}

/** UEFI spec §5.2.3: one 0xEE partition from LBA 1 to the end of the disk, its size capped at 0xFFFFFFFF. */
export function protectiveMbr(totalSectors: number): Buffer {
  const mbr = Buffer.alloc(512);
  const entry = 446;
  mbr[entry] = 0x00; // not bootable
  mbr.set([0x00, 0x02, 0x00], entry + 1); // CHS of LBA 1
  mbr[entry + 4] = 0xee;
  mbr.set([0xff, 0xff, 0xff], entry + 5); // CHS past the end of what CHS can address
  mbr.writeUInt32LE(1, entry + 8);
  mbr.writeUInt32LE(Math.min(totalSectors - 1, 0xffffffff), entry + 12);
  mbr[510] = 0x55;
  mbr[511] = 0xaa;
  return mbr;
}

/** The 128-byte entry of UEFI spec Table 5.6. */
function entryBytes(p: GptPartition): Buffer {
  if (p.name.length > GPT_NAME_UNITS) throw new RangeError(`GPT name longer than ${GPT_NAME_UNITS} UTF-16 units: ${p.name}`);
  const e = Buffer.alloc(GPT_ENTRY_SIZE);
  encodeGuid(p.typeGuid).copy(e, 0);
  encodeGuid(p.uniqueGuid).copy(e, 16);
  e.writeBigUInt64LE(BigInt(p.start), 32);
  e.writeBigUInt64LE(BigInt(p.start + p.size - 1), 40); // EndingLBA is inclusive
  e.writeBigUInt64LE(0n, 48); // attributes
  Buffer.from(p.name, 'utf16le').copy(e, 56);
  return e;
}

/** The 92-byte header of UEFI spec Table 5.5, padded to a sector, with its CRC filled in. */
function headerBytes(layout: GptLayout, at: { my: number; alternate: number; entries: number }, entriesCrc: number): Buffer {
  const h = Buffer.alloc(layout.sectorSize);
  h.write('EFI PART', 0, 'latin1');
  h.writeUInt32LE(0x00010000, 8); // revision 1.0
  h.writeUInt32LE(92, 12); // header size
  // 16: HeaderCRC32, computed below over the 92 header bytes with this field zero; 20: reserved.
  h.writeBigUInt64LE(BigInt(at.my), 24);
  h.writeBigUInt64LE(BigInt(at.alternate), 32);
  h.writeBigUInt64LE(BigInt(layout.firstUsable), 40);
  h.writeBigUInt64LE(BigInt(layout.lastUsable), 48);
  encodeGuid(layout.diskGuid).copy(h, 56);
  h.writeBigUInt64LE(BigInt(at.entries), 72);
  h.writeUInt32LE(GPT_ENTRY_COUNT, 80);
  h.writeUInt32LE(GPT_ENTRY_SIZE, 84);
  h.writeUInt32LE(entriesCrc, 88);
  h.writeUInt32LE(crc32(h.subarray(0, 92)), 16);
  return h;
}

/** All the bytes of a GPT-partitioned disk's metadata, at their offsets. */
export function buildGpt(layout: GptLayout): GptBytes {
  const { sectorSize, totalSectors } = layout;
  if (layout.partitions.length > GPT_ENTRY_COUNT) throw new RangeError(`more than ${GPT_ENTRY_COUNT} GPT partitions`);
  const entrySectors = gptEntrySectors(sectorSize);
  const entries = Buffer.alloc(entrySectors * sectorSize);
  layout.partitions.forEach((p, i) => entryBytes(p).copy(entries, i * GPT_ENTRY_SIZE));
  const entriesCrc = crc32(entries.subarray(0, GPT_ENTRY_COUNT * GPT_ENTRY_SIZE));

  const lastLba = totalSectors - 1;
  const backupEntriesLba = lastLba - entrySectors;
  const primaryHeader = headerBytes(layout, { my: 1, alternate: lastLba, entries: 2 }, entriesCrc);
  const backupHeader = headerBytes(layout, { my: lastLba, alternate: 1, entries: backupEntriesLba }, entriesCrc);

  const pmbr = Buffer.alloc(sectorSize);
  protectiveMbr(totalSectors).copy(pmbr, 0);
  return {
    protectiveMbr: { offset: 0, bytes: pmbr },
    primary: { offset: sectorSize, bytes: Buffer.concat([primaryHeader, entries]) },
    backup: { offset: backupEntriesLba * sectorSize, bytes: Buffer.concat([entries, backupHeader]) },
  };
}
