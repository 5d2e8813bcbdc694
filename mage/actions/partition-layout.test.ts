import { describe, expect, it } from 'vitest';
import { PartitionError } from './partition-errors.js';
import { formatBytes, planLayout, usableSectors } from './partition-layout.js';

const GiB2 = { sectorSize: 512, totalSectors: 4 * 2 ** 20 };

function failure(fn: () => unknown): PartitionError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(PartitionError);
    return e as PartitionError;
  }
  throw new Error('expected a PartitionError');
}

describe('planLayout', () => {
  it('numbers partitions in order, defaults type linux and label to the name', () => {
    const planned = planLayout({ partitions: [{ name: 'efi', size: '512MiB', type: 'efi', format: 'vfat' }, { name: 'data', size: '1GiB' }] }, GiB2);
    expect(planned).toEqual([
      { number: 1, name: 'efi', type: 'efi', format: 'vfat', label: 'efi', start: 2048, size: 1048576 },
      { number: 2, name: 'data', type: 'linux', format: 'none', start: 1050624, size: 2097152 },
    ]);
  });

  it('rounds sizes up to whole sectors and the next start up to 1 MiB', () => {
    const planned = planLayout({ partitions: [{ size: '1000B' }, { size: '1.5MiB' }, { size: '1MB' }] }, GiB2);
    expect(planned.map((p) => [p.start, p.size])).toEqual([
      [2048, 2],
      [4096, 3072],
      [8192, 1954],
    ]);
  });

  it("gives 'rest' everything up to the last 1 MiB boundary of the usable area", () => {
    const gpt = planLayout({ table: 'gpt', partitions: [{ size: 'rest' }] }, GiB2);
    expect(gpt[0]).toMatchObject({ start: 2048, size: 4194304 - 2 * 2048 }); // the backup GPT needs 33 sectors of the last MiB
    const mbr = planLayout({ table: 'mbr', partitions: [{ size: 'rest' }] }, GiB2);
    expect(mbr[0]).toMatchObject({ start: 2048, size: 4194304 - 2048 });
    const k4 = planLayout({ table: 'gpt', partitions: [{ size: 'rest' }] }, { sectorSize: 4096, totalSectors: 2 ** 19 });
    expect(k4[0]).toMatchObject({ start: 256, size: 2 ** 19 - 2 * 256 });
  });

  it('keeps MBR partitions inside 32-bit LBAs on disks over 2 TiB', () => {
    const disk = { sectorSize: 512, totalSectors: (3 * 2 ** 41) / 512 };
    expect(usableSectors('mbr', disk).last).toBe(0xfffffffe);
    const [rest] = planLayout({ table: 'mbr', partitions: [{ size: 'rest' }] }, disk);
    expect(rest!.start + rest!.size).toBeLessThanOrEqual(0xffffffff);
    const e = failure(() => planLayout({ table: 'mbr', partitions: [{ size: '2.5TiB' }] }, disk));
    expect(e.code).toBe('DF_ERR_DISK_TOO_SMALL');
    expect(e.message).toContain('use table: gpt');
  });

  it('names the sizes when the layout does not fit', () => {
    const e = failure(() => planLayout({ partitions: [{ name: 'efi', size: '512MiB' }, { name: 'root', size: '2GiB' }] }, GiB2, '/dev/sda'));
    expect(e.code).toBe('DF_ERR_DISK_TOO_SMALL');
    expect(e.message).toBe(
      'the layout (efi 512MiB, root 2GiB) needs 2.5 GiB with 1 MiB alignment and the gpt table, but /dev/sda holds 2 GiB (2 GiB usable); nothing was written',
    );
    expect(e.data).toMatchObject({ diskBytes: 2 ** 31 });
    expect(JSON.parse(JSON.stringify(e))).toMatchObject({ code: 'DF_ERR_DISK_TOO_SMALL', hint: expect.stringContaining('larger disk') });
  });

  it("refuses a 'rest' left with no room", () => {
    const e = failure(() => planLayout({ partitions: [{ name: 'big', size: '2047MiB' }, { name: 'root', size: 'rest' }] }, GiB2));
    expect(e.code).toBe('DF_ERR_DISK_TOO_SMALL');
    expect(e.message).toMatch(/partition 2 \(root\) \('rest'\) would be empty/);
  });

  it.each([
    [{ partitions: [{ size: 'rest' }, { size: '1MiB' }] }, /only the last partition may use size 'rest'/],
    [{ table: 'mbr' as const, partitions: Array.from({ length: 5 }, () => ({ size: '1MiB' })) }, /mbr holds at most 4 partitions, the layout has 5 \(use table: gpt\)/],
    [{ partitions: Array.from({ length: 129 }, () => ({ size: '1MiB' })) }, /gpt holds at most 128 partitions/],
    [{ partitions: [{ size: '0MiB' }] }, /size must be more than 0 bytes/],
    [{ partitions: [{ size: 'lots' }] }, /"lots" is not a size/],
    [{ partitions: [{ name: 'x'.repeat(37), size: '1MiB' }] }, /at most 36 UTF-16 units/],
    [{ partitions: [{ name: 'EFI-System-1', size: '64MiB', format: 'vfat' as const }] }, /vfat label "EFI-System-1" \(taken from the name\) is longer than 11 bytes/],
    [{ partitions: [{ size: '64MiB', format: 'ext4' as const, label: 'a-label-of-17-byt' }] }, /ext4 label "a-label-of-17-byt" is longer than 16 bytes/],
  ])('refuses an inconsistent layout (%#)', (action, message) => {
    const e = failure(() => planLayout(action as Parameters<typeof planLayout>[0], GiB2));
    expect(e.code).toBe('DF_ERR_PARTITION_LAYOUT');
    expect(e.message).toMatch(message);
  });

  it('accepts an explicit label that fits where the name would not', () => {
    const [p] = planLayout({ partitions: [{ name: 'EFI-System-1', size: '64MiB', format: 'vfat', label: 'ESP' }] }, GiB2);
    expect(p!.label).toBe('ESP');
  });

  it('refuses sector sizes other than powers of two from 512 to 4096', () => {
    expect(failure(() => planLayout({ partitions: [{ size: '1MiB' }] }, { sectorSize: 520, totalSectors: 1e6 })).message).toMatch(/unsupported sector size 520/);
  });
});

describe('formatBytes', () => {
  it('uses binary units', () => {
    expect([0, 1023, 1024, 1536, 2 ** 29, 2.5 * 2 ** 30, 2 ** 41].map(formatBytes)).toEqual(['0 B', '1023 B', '1 KiB', '1.5 KiB', '512 MiB', '2.5 GiB', '2 TiB']);
  });
});
