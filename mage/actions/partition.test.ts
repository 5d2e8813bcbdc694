// The partition action on sparse 2 GiB disk image files, checked with the tools an operator would use:
// sfdisk (table), fdisk -b 4096 (4Kn table), blkid and debugfs (filesystems at their offsets).
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { GPT_TYPE_GUIDS, guidFromRandom } from './gpt.js';
import { runPartition, type PartitionProgress } from './partition.js';
import { PartitionError } from './partition-errors.js';
import { countingRandom, probeAt, sfdiskJson, sfdiskVerify, sha256File, sparseDisk, tempDir } from './partition-test-disks.js';

const tmp = tempDir();
afterAll(tmp.cleanup);

const MiB = 2 ** 20;
const GiB = 2 ** 30;

const guidOf = (n: number) => guidFromRandom(Buffer.alloc(16, n));

describe('runPartition on a GPT disk image', () => {
  it('writes efi (vfat) + root (ext4) + swap exactly as sfdisk, blkid and debugfs read them', async () => {
    const disk = sparseDisk(tmp.dir, 'gpt.img', '2G');
    const progress: PartitionProgress[] = [];
    const result = await runPartition(
      {
        disk: '${disk}',
        table: 'gpt',
        partitions: [
          { name: 'efi', size: '512MiB', type: 'efi', format: 'vfat', label: 'EFI' },
          { name: 'root', size: '1GiB', type: 'linux', format: 'ext4' },
          { name: 'swap', size: 'rest', type: 'swap', format: 'swap' },
        ],
      },
      { disk, random: countingRandom(), onProgress: (p) => progress.push(p) },
    );

    const swapStart = 2048 + 1048576 + 2097152;
    const swapSize = 4192256 - swapStart; // up to the last 1 MiB boundary before the backup GPT
    expect(result).toEqual({
      table: 'gpt',
      sectorSize: 512,
      partitions: [
        { number: 1, start: 2048, size: 1048576, offset: MiB, bytes: 512 * MiB, partuuid: guidOf(2).toLowerCase() },
        { number: 2, start: 1050624, size: 2097152, offset: 513 * MiB, bytes: GiB, partuuid: guidOf(3).toLowerCase() },
        { number: 3, start: swapStart, size: swapSize, offset: swapStart * 512, bytes: swapSize * 512, partuuid: guidOf(4).toLowerCase() },
      ],
    });

    expect(sfdiskJson(disk)).toEqual({
      label: 'gpt',
      id: guidOf(1),
      device: disk,
      unit: 'sectors',
      firstlba: 34,
      lastlba: 4194270,
      sectorsize: 512,
      partitions: [
        { node: `${disk}1`, start: 2048, size: 1048576, type: GPT_TYPE_GUIDS.efi, uuid: guidOf(2), name: 'efi' },
        { node: `${disk}2`, start: 1050624, size: 2097152, type: GPT_TYPE_GUIDS.linux, uuid: guidOf(3), name: 'root' },
        { node: `${disk}3`, start: swapStart, size: swapSize, type: GPT_TYPE_GUIDS.swap, uuid: guidOf(4), name: 'swap' },
      ],
    });
    const verify = sfdiskVerify(disk);
    expect(verify.status).toBe(0);
    expect(verify.output).toContain('No errors detected.');
    expect(verify.output).not.toMatch(/warn|mismatch|corrupt|overlap|misaligned/i);

    expect(probeAt(disk, MiB)).toMatchObject({ TYPE: 'vfat', VERSION: 'FAT32', LABEL: 'EFI' });
    expect(probeAt(disk, 513 * MiB)).toMatchObject({ TYPE: 'ext4', LABEL: 'root' });
    expect(probeAt(disk, swapStart * 512)).toMatchObject({ TYPE: 'swap', LABEL: 'swap', UUID: guidOf(5).toLowerCase() });
    const stats = execFileSync('debugfs', ['-R', 'stats', `${disk}?offset=${513 * MiB}`], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    expect(stats).toMatch(/Filesystem volume name:\s+root\n/);
    expect(stats).toMatch(/Block count:\s+262144\n/); // 1 GiB of 4 KiB blocks: the filesystem fills its partition
    expect(fs.statSync(disk).size).toBe(2 * GiB);

    expect(progress[0]).toEqual({ percent: 0, message: `checking ${disk}` });
    expect(progress.at(-1)).toEqual({ percent: 100, message: `partitioned ${disk}: 3 partitions` });
    expect(progress.map((p) => p.percent)).toEqual([...progress.map((p) => p.percent)].sort((a, b) => a - b));
    expect(progress.map((p) => p.message)).toContain('formatting partition 2 (root) as ext4');
  });

  it('writes a 4096-byte-sector GPT that fdisk -b 4096 reads back, with filesystems at 4 KiB offsets', async () => {
    const disk = sparseDisk(tmp.dir, 'gpt4k.img', '2G');
    const result = await runPartition(
      {
        table: 'gpt',
        partitions: [
          { name: 'efi', size: '512MiB', type: 'efi', format: 'vfat', label: 'EFI' },
          { name: 'boot', size: '256MiB', format: 'ext4' },
          { name: 'root', size: 'rest', format: 'ext4' },
        ],
      },
      { disk, sectorSize: 4096, random: countingRandom() },
    );
    expect(result.sectorSize).toBe(4096);
    expect(result.partitions.map((p) => [p.start, p.size, p.offset])).toEqual([
      [256, 131072, MiB],
      [131328, 65536, 513 * MiB],
      [196864, 327168, 769 * MiB], // ends at 524031: the last 1 MiB boundary before the 5-sector backup
    ]);

    const fdisk = spawnSync('fdisk', ['-b', '4096', '-l', '-o', 'Device,Start,End,Sectors,Type-UUID,Name,UUID', disk], { encoding: 'utf8' });
    expect(fdisk.status).toBe(0);
    expect(fdisk.stderr).toBe('');
    expect(fdisk.stdout).toContain('Sector size (logical/physical): 4096 bytes / 4096 bytes');
    expect(fdisk.stdout).toContain('Disklabel type: gpt');
    expect(fdisk.stdout).toContain(`Disk identifier: ${guidOf(1)}`);
    const rows = fdisk.stdout.split('\n').filter((l) => l.startsWith(disk)).map((l) => l.trim().split(/\s+/));
    expect(rows).toEqual([
      [`${disk}1`, '256', '131327', '131072', GPT_TYPE_GUIDS.efi, 'efi', guidOf(2)],
      [`${disk}2`, '131328', '196863', '65536', GPT_TYPE_GUIDS.linux, 'boot', guidOf(3)],
      [`${disk}3`, '196864', '524031', '327168', GPT_TYPE_GUIDS.linux, 'root', guidOf(4)],
    ]);

    expect(probeAt(disk, MiB)).toMatchObject({ TYPE: 'vfat', LABEL: 'EFI', BLOCK_SIZE: '4096' });
    // Small ext4 gets 1 KiB blocks by default, which a 4Kn disk could not mount.
    expect(probeAt(disk, 513 * MiB)).toMatchObject({ TYPE: 'ext4', LABEL: 'boot', BLOCK_SIZE: '4096' });
    expect(probeAt(disk, 769 * MiB)).toMatchObject({ TYPE: 'ext4', LABEL: 'root', BLOCK_SIZE: '4096' });
  });
});

describe('runPartition on an MBR disk image', () => {
  it('writes a DOS table with type bytes and formats the partitions', async () => {
    const disk = sparseDisk(tmp.dir, 'mbr.img', '2G');
    const result = await runPartition(
      {
        table: 'mbr',
        partitions: [
          { name: 'boot', size: '256MiB', type: 'efi', format: 'vfat', label: 'BOOT' },
          { name: 'swap', size: '256MiB', type: 'swap', format: 'swap' },
          { name: 'data', size: '128MiB', type: 'lvm' },
          { name: 'root', size: 'rest', type: 'linux', format: 'ext4' },
        ],
      },
      { disk, random: () => Buffer.from('78563412' + '00'.repeat(12), 'hex') },
    );
    expect(result.partitions.map((p) => p.partuuid)).toEqual(['12345678-01', '12345678-02', '12345678-03', '12345678-04']);

    const table = sfdiskJson(disk);
    expect(table).toMatchObject({ label: 'dos', id: '0x12345678', sectorsize: 512 });
    expect(table.partitions.map(({ start, size, type }) => ({ start, size, type }))).toEqual([
      { start: 2048, size: 524288, type: 'ef' },
      { start: 526336, size: 524288, type: '82' },
      { start: 1050624, size: 262144, type: '8e' },
      { start: 1312768, size: 4194304 - 1312768, type: '83' },
    ]);
    const verify = sfdiskVerify(disk);
    expect(verify.status).toBe(0);
    expect(verify.output).not.toMatch(/warn|mismatch|overlap|misaligned/i);

    expect(probeAt(disk, MiB)).toMatchObject({ TYPE: 'vfat', LABEL: 'BOOT' });
    expect(probeAt(disk, 526336 * 512)).toMatchObject({ TYPE: 'swap', LABEL: 'swap' });
    expect(probeAt(disk, 1050624 * 512)).toEqual({}); // format: none
    expect(probeAt(disk, 1312768 * 512)).toMatchObject({ TYPE: 'ext4', LABEL: 'root' });
  });
});

describe('runPartition safety', () => {
  it('fails before writing a byte when the layout is larger than the disk', async () => {
    const disk = sparseDisk(tmp.dir, 'small.img', '64M');
    const fd = fs.openSync(disk, 'r+');
    fs.writeSync(fd, Buffer.alloc(MiB, 0x5a), 0, MiB, 0);
    fs.writeSync(fd, Buffer.alloc(MiB, 0xa5), 0, MiB, 63 * MiB);
    fs.closeSync(fd);
    const before = sha256File(disk);
    const progress: PartitionProgress[] = [];

    const error = await runPartition(
      { table: 'gpt', partitions: [{ name: 'efi', size: '32MiB', format: 'vfat' }, { name: 'root', size: '100MiB', format: 'ext4' }] },
      { disk, onProgress: (p) => progress.push(p) },
    ).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(PartitionError);
    expect((error as PartitionError).code).toBe('DF_ERR_DISK_TOO_SMALL');
    expect((error as PartitionError).message).toBe(
      `the layout (efi 32MiB, root 100MiB) needs 133 MiB with 1 MiB alignment and the gpt table, but ${disk} holds 64 MiB (63.98 MiB usable); nothing was written`,
    );
    expect(sha256File(disk)).toBe(before);
    expect(progress.map((p) => p.percent)).toEqual([0]);
  });

  it('fails before writing for more than 4 MBR partitions, and for a disk that is not there', async () => {
    const disk = sparseDisk(tmp.dir, 'five.img', '64M');
    const before = sha256File(disk);
    const five = { table: 'mbr' as const, partitions: Array.from({ length: 5 }, () => ({ size: '1MiB' })) as [{ size: string }] };
    await expect(runPartition(five, { disk })).rejects.toMatchObject({ code: 'DF_ERR_PARTITION_LAYOUT', message: expect.stringContaining('at most 4') });
    expect(sha256File(disk)).toBe(before);
    await expect(runPartition(five, { disk: `${tmp.dir}/missing.img` })).rejects.toMatchObject({ code: 'DF_ERR_DISK_OPEN' });
  });

  it('wipes what a previous install left: old filesystems, and the backup GPT when switching to MBR', async () => {
    const disk = sparseDisk(tmp.dir, 'reuse.img', '2G');
    await runPartition(
      { table: 'gpt', partitions: [{ name: 'efi', size: '512MiB', type: 'efi', format: 'vfat', label: 'EFI' }, { name: 'root', size: 'rest', format: 'ext4' }] },
      { disk },
    );
    expect(probeAt(disk, 513 * MiB)).toMatchObject({ TYPE: 'ext4', LABEL: 'root' });

    // Same starts, nothing formatted: no stale ext4 may answer to LABEL=root, no stale GPT may linger.
    await runPartition({ table: 'mbr', partitions: [{ size: '512MiB', type: 'efi' }, { size: 'rest', type: 'lvm' }] }, { disk });
    expect(probeAt(disk, MiB)).toEqual({});
    expect(probeAt(disk, 513 * MiB)).toEqual({});
    expect(sfdiskJson(disk).label).toBe('dos');
    const verify = sfdiskVerify(disk);
    expect(verify.status).toBe(0);
    expect(verify.output).not.toMatch(/gpt|warn|mismatch/i);
    const whole = spawnSync('blkid', ['-p', '-o', 'export', disk], { encoding: 'utf8' });
    expect(whole.stdout).toContain('PTTYPE=dos');
    expect(whole.stdout).not.toContain('gpt');
    // The last MiB, where the old backup GPT header was, is zero.
    const fd = fs.openSync(disk, 'r');
    const tail = Buffer.alloc(MiB);
    fs.readSync(fd, tail, 0, MiB, 2 * GiB - MiB);
    fs.closeSync(fd);
    expect(tail.every((b) => b === 0)).toBe(true);
  });
});
