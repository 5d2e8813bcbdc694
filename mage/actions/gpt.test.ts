import { describe, expect, it } from 'vitest';
import { buildGpt, decodeGuid, encodeGuid, GPT_TYPE_GUIDS, guidFromRandom, protectiveMbr, type GptBytes } from './gpt.js';
import { planLayout, usableSectors, type DiskGeometry } from './partition-layout.js';

/** Bit-at-a-time CRC-32 (IEEE), independent of crc32.ts, to check the checksums on disk. */
function referenceCrc32(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (const byte of bytes) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0xedb88320 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

const DISK_GUID = '11111111-2222-4333-8444-555555555555';

function build(disk: DiskGeometry, partitions = [
  { name: 'efi', size: '512MiB', type: 'efi' as const },
  { name: 'root', size: '1GiB', type: 'linux' as const },
  { name: 'swap', size: 'rest', type: 'swap' as const },
]): { gpt: GptBytes; planned: ReturnType<typeof planLayout> } {
  const planned = planLayout({ table: 'gpt', partitions: partitions as Parameters<typeof planLayout>[0]['partitions'] }, disk);
  const { first, last } = usableSectors('gpt', disk);
  const gpt = buildGpt({
    sectorSize: disk.sectorSize,
    totalSectors: disk.totalSectors,
    diskGuid: DISK_GUID,
    firstUsable: first,
    lastUsable: last,
    partitions: planned.map((p) => ({
      start: p.start,
      size: p.size,
      typeGuid: GPT_TYPE_GUIDS[p.type],
      uniqueGuid: `AAAAAAAA-BBBB-4CCC-8DDD-00000000000${p.number}`,
      name: p.name,
    })),
  });
  return { gpt, planned };
}

const u64 = (b: Buffer, at: number) => Number(b.readBigUInt64LE(at));

describe('GUID encoding', () => {
  it('stores the first three fields little-endian and the rest as written (EFI System GUID)', () => {
    expect(encodeGuid(GPT_TYPE_GUIDS.efi).toString('hex')).toBe('28732ac11ff8d211ba4b00a0c93ec93b');
    expect(encodeGuid('0FC63DAF-8483-4772-8E79-3D69D8477DE4').toString('hex')).toBe('af3dc60f838472478e793d69d8477de4');
  });

  it('round-trips every type GUID', () => {
    for (const guid of Object.values(GPT_TYPE_GUIDS)) expect(decodeGuid(encodeGuid(guid))).toBe(guid);
  });

  it('makes version 4, RFC variant GUIDs from random bytes', () => {
    expect(guidFromRandom(Buffer.alloc(16, 0xff))).toBe('FFFFFFFF-FFFF-4FFF-BFFF-FFFFFFFFFFFF');
    expect(guidFromRandom(Buffer.alloc(16, 0x00))).toBe('00000000-0000-4000-8000-000000000000');
    expect(() => guidFromRandom(Buffer.alloc(8))).toThrow(RangeError);
  });
});

describe('buildGpt, 2 GiB disk of 512-byte sectors', () => {
  const disk = { sectorSize: 512, totalSectors: 4 * 2 ** 20 };
  const last = disk.totalSectors - 1;
  const { gpt, planned } = build(disk);
  const header = gpt.primary.bytes.subarray(0, 512);
  const entries = gpt.primary.bytes.subarray(512);

  it('writes a protective MBR: one 0xEE partition from LBA 1 over the whole disk', () => {
    const mbr = gpt.protectiveMbr.bytes;
    expect(gpt.protectiveMbr.offset).toBe(0);
    expect(mbr.subarray(446, 454).toString('hex')).toBe('00000200eeffffff');
    expect(mbr.readUInt32LE(454)).toBe(1);
    expect(mbr.readUInt32LE(458)).toBe(last);
    expect(mbr.subarray(462, 510).every((b) => b === 0)).toBe(true);
    expect([mbr[510], mbr[511]]).toEqual([0x55, 0xaa]);
  });

  it('writes the primary header at LBA 1 with every field', () => {
    expect(gpt.primary.offset).toBe(512);
    expect(header.subarray(0, 8).toString('latin1')).toBe('EFI PART');
    expect(header.readUInt32LE(8)).toBe(0x00010000);
    expect(header.readUInt32LE(12)).toBe(92);
    expect(header.readUInt32LE(20)).toBe(0);
    expect(u64(header, 24)).toBe(1);
    expect(u64(header, 32)).toBe(last);
    expect(u64(header, 40)).toBe(34);
    expect(u64(header, 48)).toBe(last - 33);
    expect(decodeGuid(header.subarray(56, 72))).toBe(DISK_GUID);
    expect(u64(header, 72)).toBe(2);
    expect(header.readUInt32LE(80)).toBe(128);
    expect(header.readUInt32LE(84)).toBe(128);
    expect(header.subarray(92).every((b) => b === 0)).toBe(true);
    expect(entries.length).toBe(128 * 128);
  });

  it('has a header CRC over the 92 header bytes with the CRC field zero, and an entry-array CRC', () => {
    const zeroed = Buffer.from(header.subarray(0, 92));
    zeroed.writeUInt32LE(0, 16);
    expect(header.readUInt32LE(16)).toBe(referenceCrc32(zeroed));
    expect(header.readUInt32LE(88)).toBe(referenceCrc32(entries));
  });

  it('writes entries with type and unique GUIDs, inclusive ends and UTF-16LE names', () => {
    const e = (i: number) => entries.subarray(i * 128, (i + 1) * 128);
    expect(e(0).subarray(0, 16).toString('hex')).toBe('28732ac11ff8d211ba4b00a0c93ec93b');
    expect(decodeGuid(e(0).subarray(16, 32))).toBe('AAAAAAAA-BBBB-4CCC-8DDD-000000000001');
    expect(u64(e(0), 32)).toBe(2048);
    expect(u64(e(0), 40)).toBe(2048 + 1048576 - 1);
    expect(u64(e(0), 48)).toBe(0);
    expect(e(0).subarray(56, 62).toString('hex')).toBe('650066006900'); // "efi"
    expect(e(0).subarray(62).every((b) => b === 0)).toBe(true);
    expect(decodeGuid(e(1).subarray(0, 16))).toBe(GPT_TYPE_GUIDS.linux);
    expect(decodeGuid(e(2).subarray(0, 16))).toBe(GPT_TYPE_GUIDS.swap);
    expect(e(3).every((b) => b === 0)).toBe(true);
  });

  it('aligns every start to 1 MiB and ends "rest" on the last 1 MiB boundary before the backup', () => {
    expect(planned.map((p) => p.start)).toEqual([2048, 2048 + 1048576, 2048 + 1048576 + 2097152]);
    for (const p of planned) expect(p.start % 2048).toBe(0);
    const rest = planned[2]!;
    const end = rest.start + rest.size - 1;
    expect((end + 1) % 2048).toBe(0);
    expect(end).toBeLessThanOrEqual(last - 33);
    expect(last - 33 - end).toBeLessThan(2048);
  });

  it('mirrors the entries and the header at the end of the disk', () => {
    const backupEntriesLba = last - 32;
    expect(gpt.backup.offset).toBe(backupEntriesLba * 512);
    expect(gpt.backup.bytes.length).toBe(33 * 512);
    expect(gpt.backup.bytes.subarray(0, 128 * 128).equals(entries)).toBe(true);
    const backup = gpt.backup.bytes.subarray(32 * 512);
    expect(u64(backup, 24)).toBe(last);
    expect(u64(backup, 32)).toBe(1);
    expect(u64(backup, 72)).toBe(backupEntriesLba);
    expect(backup.readUInt32LE(88)).toBe(header.readUInt32LE(88));
    const zeroed = Buffer.from(backup.subarray(0, 92));
    zeroed.writeUInt32LE(0, 16);
    expect(backup.readUInt32LE(16)).toBe(referenceCrc32(zeroed));
    // Only MyLBA, AlternateLBA, PartitionEntryLBA and the CRC differ from the primary header.
    for (const [from, to] of [[0, 16], [20, 24], [40, 72], [80, 88]] as const) expect(backup.subarray(from, to).equals(header.subarray(from, to))).toBe(true);
  });

  it('stores a 36-unit name with non-ASCII characters as UTF-16LE', () => {
    const name = 'hömé-' + 'x'.repeat(31);
    const { gpt: g } = build(disk, [{ name, size: '1MiB', type: 'linux' }]);
    expect(g.primary.bytes.subarray(512 + 56, 512 + 128).toString('utf16le')).toBe(name);
  });
});

describe('buildGpt, other geometries', () => {
  it('uses 4096-byte sectors: entries in 4 sectors, 1 MiB = 256 sectors', () => {
    const disk = { sectorSize: 4096, totalSectors: 2 ** 19 }; // 2 GiB
    const { gpt, planned } = build(disk);
    const last = disk.totalSectors - 1;
    const header = gpt.primary.bytes.subarray(0, 4096);
    expect(gpt.protectiveMbr.bytes.length).toBe(4096);
    expect(gpt.protectiveMbr.bytes.readUInt32LE(458)).toBe(last);
    expect(gpt.primary.offset).toBe(4096);
    expect(u64(header, 40)).toBe(6);
    expect(u64(header, 48)).toBe(last - 5);
    expect(u64(header, 72)).toBe(2);
    expect(planned.map((p) => p.start)).toEqual([256, 256 + 131072, 256 + 131072 + 262144]);
    expect(gpt.backup.offset).toBe((last - 4) * 4096);
    expect(u64(gpt.backup.bytes.subarray(4 * 4096), 72)).toBe(last - 4);
    expect(header.readUInt32LE(88)).toBe(referenceCrc32(gpt.primary.bytes.subarray(4096, 4096 + 16384)));
  });

  it('caps the protective partition at 0xFFFFFFFF sectors on disks over 2 TiB', () => {
    expect(protectiveMbr(3 * 2 ** 41 / 512).readUInt32LE(458)).toBe(0xffffffff);
    const { gpt } = build({ sectorSize: 512, totalSectors: (3 * 2 ** 41) / 512 });
    expect(gpt.protectiveMbr.bytes.readUInt32LE(458)).toBe(0xffffffff);
    expect(u64(gpt.primary.bytes, 32)).toBe((3 * 2 ** 41) / 512 - 1);
  });
});
