import { readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import { detectFilesystem, HEAD_BYTES } from './filesystems.js';

const dev = (fixture: string, name: string) => readFileSync(new URL(`../fixtures/${fixture}/dev/${name}`, import.meta.url));

/** A zeroed device head with byte strings written at offsets. */
function head(writes: Array<[number, string | number[]]>, size = HEAD_BYTES): Buffer {
  const buf = Buffer.alloc(size);
  for (const [at, bytes] of writes) {
    if (typeof bytes === 'string') buf.write(bytes, at, 'latin1');
    else Buffer.from(bytes).copy(buf, at);
  }
  return buf;
}

describe('detectFilesystem on images made by mkfs (fixtures)', () => {
  test('ext4 with its label (mkfs.ext4 -L root)', () => {
    expect(detectFilesystem(dev('server-nvme-sata', 'nvme0n1p2'))).toEqual({ fstype: 'ext4', label: 'root' });
  });
  test('FAT32 with its boot-sector label (mkfs.vfat -n EFI)', () => {
    expect(detectFilesystem(dev('server-nvme-sata', 'nvme0n1p1'))).toEqual({ fstype: 'vfat', label: 'EFI' });
  });
  test('FAT32 without a label: "NO NAME" is no label', () => {
    expect(detectFilesystem(dev('workstation-multi-nic-usb', 'nvme0n1p1'))).toEqual({ fstype: 'vfat' });
  });
  test('swap with its label (mkswap -L swap)', () => {
    expect(detectFilesystem(dev('server-nvme-sata', 'sda1'))).toEqual({ fstype: 'swap', label: 'swap' });
  });
  test('an NTFS boot sector', () => {
    expect(detectFilesystem(dev('workstation-multi-nic-usb', 'nvme0n1p3'))).toEqual({ fstype: 'ntfs' });
  });
  test('a disk formatted whole', () => {
    expect(detectFilesystem(dev('workstation-multi-nic-usb', 'sda'))).toEqual({ fstype: 'ext4', label: 'scratch' });
  });
});

describe('detectFilesystem on hand-made superblocks', () => {
  const EXT_MAGIC: [number, number[]] = [1080, [0x53, 0xef]];
  test('ext2 and ext3 are told apart from ext4 by their feature flags', () => {
    expect(detectFilesystem(head([EXT_MAGIC]))).toEqual({ fstype: 'ext2' });
    expect(detectFilesystem(head([EXT_MAGIC, [1024 + 92, [0x04]]]))).toEqual({ fstype: 'ext3' });
    expect(detectFilesystem(head([EXT_MAGIC, [1024 + 92, [0x04]], [1024 + 96, [0x40]], [1144, 'data']]))).toEqual({ fstype: 'ext4', label: 'data' });
  });
  test('xfs, btrfs, LVM, md RAID, ISO 9660, exFAT', () => {
    expect(detectFilesystem(head([[0, 'XFSB'], [108, 'home']]))).toEqual({ fstype: 'xfs', label: 'home' });
    expect(detectFilesystem(head([[65536 + 64, '_BHRfS_M'], [65536 + 299, 'pool']]))).toEqual({ fstype: 'btrfs', label: 'pool' });
    expect(detectFilesystem(head([[512, 'LABELONE'], [512 + 24, 'LVM2 001']]))).toEqual({ fstype: 'LVM2_member' });
    expect(detectFilesystem(head([[4096, [0xfc, 0x4e, 0x2b, 0xa9]]]))).toEqual({ fstype: 'linux_raid_member' });
    expect(detectFilesystem(head([[32769, 'CD001'], [32808, 'Ubuntu 24.04 LTS amd64          ']]))).toEqual({ fstype: 'iso9660', label: 'Ubuntu 24.04 LTS amd64' });
    expect(detectFilesystem(head([[3, 'EXFAT   '], [510, [0x55, 0xaa]]]))).toEqual({ fstype: 'exfat' });
  });
  test('swap made on a 64 KiB-page machine', () => {
    expect(detectFilesystem(head([[65536 - 10, 'SWAPSPACE2']]))).toEqual({ fstype: 'swap' });
  });
  test('an MBR (0x55AA without a FAT boot sector) is not a filesystem', () => {
    expect(detectFilesystem(head([[0, [0xfa, 0x33, 0xc0]], [510, [0x55, 0xaa]]]))).toBeUndefined();
  });
});

describe('detectFilesystem on odd input', () => {
  test('empty, zeroed and short heads give undefined', () => {
    expect(detectFilesystem(Buffer.alloc(0))).toBeUndefined();
    expect(detectFilesystem(Buffer.alloc(HEAD_BYTES))).toBeUndefined();
    expect(detectFilesystem(Buffer.alloc(1081, 0xff))).toBeUndefined();
  });
  test('a label that is not UTF-8 or holds control characters still yields a clean string', () => {
    const fs = detectFilesystem(head([[1080, [0x53, 0xef]], [1144, [0x72, 0x01, 0xff, 0x74]]]));
    expect(fs?.fstype).toBe('ext2');
    expect(fs?.label).toMatch(/^r .t$/u);
  });
  test('random bytes never throw', () => {
    let seed = 42;
    const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 16) & 0xff;
    for (let i = 0; i < 200; i++) {
      const buf = Buffer.from(Array.from({ length: (i * 997) % HEAD_BYTES }, rand));
      expect(() => detectFilesystem(buf)).not.toThrow();
    }
  });
});
