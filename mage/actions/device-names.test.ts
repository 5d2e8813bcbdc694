import { describe, expect, it } from 'vitest';
import { partitionDevice } from './device-names.js';

describe('partitionDevice', () => {
  it.each([
    ['/dev/sda', 1, '/dev/sda1'],
    ['/dev/vdb', 12, '/dev/vdb12'],
    ['/dev/nvme0n1', 1, '/dev/nvme0n1p1'],
    ['/dev/mmcblk0', 2, '/dev/mmcblk0p2'],
    ['/dev/loop0', 1, '/dev/loop0p1'],
    ['/dev/md0', 1, '/dev/md0p1'],
    ['/dev/disk/by-id/ata-Samsung_SSD_860_S3Z1', 3, '/dev/disk/by-id/ata-Samsung_SSD_860_S3Z1-part3'],
    ['/dev/disk/by-path/pci-0000:00:1f.2-ata-1', 1, '/dev/disk/by-path/pci-0000:00:1f.2-ata-1-part1'],
  ])('%s partition %i is %s', (disk, n, device) => {
    expect(partitionDevice(disk, n)).toBe(device);
  });

  it('rejects partition numbers below 1', () => {
    expect(() => partitionDevice('/dev/sda', 0)).toThrow(RangeError);
  });
});
