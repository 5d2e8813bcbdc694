import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { formatCommand, formatPartition, swapHeader } from './format.js';
import { PartitionError } from './partition-errors.js';
import { probeAt, sparseDisk, tempDir } from './partition-test-disks.js';
import { runTool } from './partition-tools.js';

const tmp = tempDir();
afterAll(tmp.cleanup);

const MiB = 2 ** 20;
const range = (file: string, offset: number, size: number, sectorSize = 512) => ({ kind: 'range' as const, file, offset, size, sectorSize });

describe('formatCommand', () => {
  it('formats partition devices with the usual tools', () => {
    const dev = { kind: 'device' as const, device: '/dev/sda1' };
    expect(formatCommand('vfat', dev, 'EFI')).toEqual({ command: 'mkfs.vfat', args: ['-F', '32', '-n', 'EFI', '/dev/sda1'] });
    expect(formatCommand('ext4', dev, 'root')).toEqual({ command: 'mkfs.ext4', args: ['-F', '-L', 'root', '/dev/sda1'] });
    expect(formatCommand('swap', dev, 'swap')).toEqual({ command: 'mkswap', args: ['-L', 'swap', '/dev/sda1'] });
    expect(formatCommand('ext4', dev)).toEqual({ command: 'mkfs.ext4', args: ['-F', '/dev/sda1'] });
  });

  it('formats byte ranges of an image: offsets in bytes for ext4, in logical sectors for vfat, sizes in KiB', () => {
    expect(formatCommand('ext4', range('/d.img', 537919488, 1024 * MiB), 'root')).toEqual({
      command: 'mkfs.ext4',
      args: ['-F', '-L', 'root', '-E', 'offset=537919488', '/d.img', '1048576k'],
    });
    expect(formatCommand('vfat', range('/d.img', MiB, 512 * MiB), 'EFI')).toEqual({
      command: 'mkfs.vfat',
      args: ['-F', '32', '-s', '8', '-n', 'EFI', '-S', '512', '-h', '2048', '--offset', '2048', '/d.img', '524288'],
    });
    // A 4Kn image gets 4 KiB ext4 blocks even when small: 1 KiB blocks would not mount from 4096-byte sectors.
    expect(formatCommand('ext4', range('/d.img', MiB, 64 * MiB, 4096))?.args).toEqual(['-F', '-b', '4096', '-E', 'offset=1048576', '/d.img', '65536k']);
    expect(formatCommand('vfat', range('/d.img', MiB, 512 * MiB, 4096))?.args).toEqual(['-F', '32', '-s', '1', '-S', '4096', '-h', '256', '--offset', '256', '/d.img', '524288']);
    // Small ESPs stay FAT32 with small clusters (>= 65,525 clusters, or mtools refuses them); tiny ones are FAT16.
    expect(formatCommand('vfat', range('/d.img', MiB, 128 * MiB))?.args.slice(0, 4)).toEqual(['-F', '32', '-s', '2']);
    expect(formatCommand('vfat', range('/d.img', MiB, 16 * MiB))?.args.slice(0, 2)).toEqual(['-F', '16']);
    // No tool takes an offset for swap (mkswap gains --offset in util-linux 2.39): written natively.
    expect(formatCommand('swap', range('/d.img', MiB, 64 * MiB), 'swap')).toBeUndefined();
  });
});

describe('swapHeader', () => {
  const uuid = '0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0ff';

  it.each([4096, 65536])('equals the first page mkswap writes (page size %i)', (pageSize) => {
    const file = sparseDisk(tmp.dir, `swap-${pageSize}.img`, '64M');
    execFileSync('mkswap', ['-q', '-p', String(pageSize), '-L', 'swap', '-U', uuid, file]);
    const fromMkswap = fs.readFileSync(file).subarray(0, pageSize);
    expect(swapHeader({ size: 64 * MiB, pageSize, uuid, label: 'swap' }).equals(fromMkswap)).toBe(true);
  });

  it('counts the last page, and refuses fewer than 10 pages', () => {
    expect(swapHeader({ size: 10 * 4096 + 100, uuid }).readUInt32LE(1028)).toBe(9);
    expect(() => swapHeader({ size: 9 * 4096, uuid })).toThrow(/at least 10 pages/);
  });
});

describe('formatPartition', () => {
  it('formats a byte range of an image file and leaves the bytes around it alone', async () => {
    const file = sparseDisk(tmp.dir, 'ranges.img', '192M');
    const fd = fs.openSync(file, 'r+');
    fs.writeSync(fd, Buffer.alloc(MiB, 0xab), 0, MiB, 0);
    fs.writeSync(fd, Buffer.alloc(MiB, 0xcd), 0, MiB, 191 * MiB);
    fs.closeSync(fd);

    await formatPartition('vfat', range(file, MiB, 64 * MiB), { label: 'EFI' });
    await formatPartition('ext4', range(file, 65 * MiB, 64 * MiB), { label: 'root' });
    await formatPartition('swap', range(file, 129 * MiB, 62 * MiB), { label: 'swap', uuid: '0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0ff' });

    expect(probeAt(file, MiB)).toMatchObject({ TYPE: 'vfat', LABEL: 'EFI', VERSION: 'FAT32' });
    expect(probeAt(file, 65 * MiB)).toMatchObject({ TYPE: 'ext4', LABEL: 'root' });
    expect(probeAt(file, 129 * MiB)).toMatchObject({ TYPE: 'swap', LABEL: 'swap', UUID: '0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0ff' });
    const image = fs.readFileSync(file);
    expect(image.subarray(0, MiB).every((b) => b === 0xab)).toBe(true);
    expect(image.subarray(191 * MiB).every((b) => b === 0xcd)).toBe(true);
    expect(image.length).toBe(192 * MiB);
    // The FAT boot sector records where its partition starts, as on a partition device.
    expect(image.readUInt32LE(MiB + 0x1c)).toBe(2048);
    // debugfs reads the ext4 superblock at the same offset.
    expect(execFileSync('debugfs', ['-R', 'stats', `${file}?offset=${65 * MiB}`], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })).toMatch(/Filesystem volume name:\s+root\n[\s\S]*Block count:\s+65536\n/);
  });

  it('reports a failing tool with its exit code and stderr in a typed error', async () => {
    const error = await formatPartition('ext4', { kind: 'device', device: `${tmp.dir}/no-such-device` }, {}).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PartitionError);
    const e = error as PartitionError;
    expect(e.code).toBe('DF_ERR_TOOL_FAILED');
    expect(e.data).toMatchObject({ command: 'mkfs.ext4', exitCode: 1, stderr: expect.stringContaining('no-such-device') });
    expect(e.message).toMatch(/^mkfs\.ext4 -F .*no-such-device failed \(exit 1\): /);
  });

  it('names the Debian package of a missing tool', async () => {
    const error = await runTool({ command: 'mkfs.vfat-missing', args: [] }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'DF_ERR_TOOL_FAILED', message: 'mkfs.vfat-missing is not installed' });
  });
});
