import { describe, expect, it } from 'vitest';
import { buildMbr, MBR_TYPE_BYTES } from './mbr.js';
import { planLayout } from './partition-layout.js';

describe('buildMbr', () => {
  const disk = { sectorSize: 512, totalSectors: 4 * 2 ** 20 }; // 2 GiB
  const planned = planLayout(
    { table: 'mbr', partitions: [{ size: '256MiB', type: 'efi' }, { size: '1GiB', type: 'swap' }, { size: 'rest', type: 'bios' }] },
    disk,
  );
  const mbr = buildMbr({ diskSignature: 0xdeadbeef, partitions: planned.map((p) => ({ start: p.start, size: p.size, typeByte: MBR_TYPE_BYTES[p.type] })) });

  it('writes the disk signature, the boot signature and nothing in the boot code area', () => {
    expect(mbr.length).toBe(512);
    expect(mbr.readUInt32LE(440)).toBe(0xdeadbeef);
    expect(mbr.subarray(0, 440).every((b) => b === 0)).toBe(true);
    expect([mbr[510], mbr[511]]).toEqual([0x55, 0xaa]);
  });

  it('writes each entry with LBA-only CHS, the type byte, start and size', () => {
    const entry = (i: number) => mbr.subarray(446 + i * 16, 462 + i * 16);
    expect(entry(0).toString('hex')).toBe('00feffffeffeffff' + '00080000' + '00000800');
    expect(entry(1).toString('hex').slice(0, 16)).toBe('00feffff82feffff');
    expect(entry(1).readUInt32LE(8)).toBe(2048 + 524288);
    expect(entry(1).readUInt32LE(12)).toBe(2097152);
    // A BIOS boot partition has no MBR type of its own: it is Linux.
    expect(entry(2)[4]).toBe(0x83);
    expect(entry(2).readUInt32LE(8) + entry(2).readUInt32LE(12)).toBe(disk.totalSectors);
    expect(entry(3).every((b) => b === 0)).toBe(true);
  });

  it('maps every partition type to its MBR system ID', () => {
    expect(MBR_TYPE_BYTES).toEqual({ efi: 0xef, bios: 0x83, linux: 0x83, home: 0x83, swap: 0x82, lvm: 0x8e, raid: 0xfd });
  });

  it('refuses a fifth partition and sectors beyond 32 bits', () => {
    const p = { start: 2048, size: 2048, typeByte: 0x83 };
    expect(() => buildMbr({ diskSignature: 1, partitions: [p, p, p, p, p] })).toThrow(/at most 4/);
    expect(() => buildMbr({ diskSignature: 1, partitions: [{ ...p, size: 2 ** 32 }] })).toThrow(/32-bit/);
  });
});
