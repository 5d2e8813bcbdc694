import { readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import { describeDiskHead, detectPartitionTable } from './partitions.js';

const dev = (fixture: string, name: string) => readFileSync(new URL(`../fixtures/${fixture}/dev/${name}`, import.meta.url));
const sysStart = (fixture: string, disk: string, part: string) =>
  Number(readFileSync(new URL(`../fixtures/${fixture}/sys/block/${disk}/${part}/start`, import.meta.url), 'utf8'));

/** A GPT disk head by hand: protective MBR, header at LBA 1, entries at LBA 2, for a given sector size. */
function gpt(sector: number, entries: Array<{ first: number; last: number; name: string }>): Buffer {
  const buf = Buffer.alloc(sector * 2 + 128 * 128);
  buf[446 + 4] = 0xee;
  buf.writeUInt16LE(0xaa55, 510);
  buf.write('EFI PART', sector, 'latin1');
  buf.writeBigUInt64LE(2n, sector + 72);
  buf.writeUInt32LE(128, sector + 80);
  buf.writeUInt32LE(128, sector + 84);
  entries.forEach((e, i) => {
    const at = sector * 2 + i * 128;
    buf.fill(0xaf, at, at + 16); // any non-zero type GUID
    buf.writeBigUInt64LE(BigInt(e.first), at + 32);
    buf.writeBigUInt64LE(BigInt(e.last), at + 40);
    buf.write(e.name, at + 56, 'utf16le');
  });
  return buf;
}

describe('detectPartitionTable on tables written by sfdisk (fixtures)', () => {
  test('GPT: entries with names, starting where the kernel says the partitions start', () => {
    const t = detectPartitionTable(dev('server-nvme-sata', 'nvme0n1'));
    expect(t.table).toBe('gpt');
    expect(t.entries.map((e) => [e.number, e.name, e.firstLba])).toEqual([
      [1, 'EFI System Partition', sysStart('server-nvme-sata', 'nvme0n1', 'nvme0n1p1')],
      [2, 'root', sysStart('server-nvme-sata', 'nvme0n1', 'nvme0n1p2')],
    ]);
    expect(t.entries[0]?.sectors).toBe(1048576);
  });

  test('MBR: primary entries with their type bytes', () => {
    const t = detectPartitionTable(dev('server-nvme-sata', 'sda'));
    expect(t.table).toBe('mbr');
    expect(t.entries.map((e) => [e.number, e.mbrType, e.firstLba])).toEqual([
      [1, 0x82, sysStart('server-nvme-sata', 'sda', 'sda1')],
      [2, 0x83, sysStart('server-nvme-sata', 'sda', 'sda2')],
    ]);
  });

  test('MBR with a bootable FAT32 partition (the USB stick)', () => {
    expect(detectPartitionTable(dev('workstation-multi-nic-usb', 'sdb'))).toMatchObject({ table: 'mbr', entries: [{ number: 1, mbrType: 0x0c, firstLba: 2048 }] });
  });

  test('a blank disk has no table; a disk formatted whole has none either, but a filesystem', () => {
    expect(describeDiskHead(dev('server-nvme-sata', 'sdb'))).toEqual({ table: { table: 'none', entries: [] } });
    expect(describeDiskHead(dev('workstation-multi-nic-usb', 'sda'))).toEqual({ table: { table: 'none', entries: [] }, fstype: 'ext4' });
  });
});

describe('detectPartitionTable on hand-made heads', () => {
  test('GPT on a 4Kn disk: header at byte 4096', () => {
    const t = detectPartitionTable(gpt(4096, [{ first: 256, last: 511, name: 'esp' }]));
    expect(t).toEqual({ table: 'gpt', entries: [{ number: 1, firstLba: 256, sectors: 256, name: 'esp' }] });
  });

  test('unused GPT entries are skipped, numbering follows the entry index', () => {
    const buf = gpt(512, [
      { first: 2048, last: 4095, name: 'a' },
      { first: 0, last: 0, name: '' },
      { first: 4096, last: 8191, name: 'c' },
    ]);
    buf.fill(0, 1024 + 128, 1024 + 144); // entry 2: zero type GUID
    expect(detectPartitionTable(buf).entries.map((e) => e.number)).toEqual([1, 3]);
  });

  test('a GPT header whose entries were not read still says gpt', () => {
    expect(detectPartitionTable(gpt(512, [{ first: 34, last: 99, name: 'x' }]).subarray(0, 1024))).toEqual({ table: 'gpt', entries: [] });
  });

  test('a protective MBR without a readable GPT header is still a GPT disk', () => {
    expect(detectPartitionTable(gpt(512, []).subarray(0, 512)).table).toBe('gpt');
  });

  test('a FAT boot sector written to the whole disk is not an MBR', () => {
    const stick = Buffer.from(dev('server-nvme-sata', 'nvme0n1p1'));
    expect(describeDiskHead(stick)).toEqual({ table: { table: 'none', entries: [] }, fstype: 'vfat' });
  });

  test('0x55AA with impossible status bytes is not an MBR', () => {
    const buf = Buffer.alloc(512, 0x11);
    buf.writeUInt16LE(0xaa55, 510);
    expect(detectPartitionTable(buf).table).toBe('none');
  });

  test('empty, short and random heads never throw', () => {
    expect(detectPartitionTable(Buffer.alloc(0))).toEqual({ table: 'none', entries: [] });
    let seed = 7;
    const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 16) & 0xff;
    for (let i = 0; i < 200; i++) {
      const buf = Buffer.from(Array.from({ length: (i * 331) % 20000 }, rand));
      if (i % 3 === 0 && buf.length >= 600) buf.write('EFI PART', 512, 'latin1');
      expect(() => describeDiskHead(buf)).not.toThrow();
    }
  });
});
