import { describe, expect, test } from 'vitest';
import { isVirtualBlockDevice, parseDisk, serialFromVpdPg80, transportFromDevicePath } from './disks.js';

describe('transportFromDevicePath', () => {
  test.each([
    ['../devices/pci0000:00/0000:00:14.0/usb2/2-3/2-3:1.0/host6/target6:0:0/6:0:0:0/block/sdb', 'usb'],
    ['../devices/pci0000:00/0000:00:01.1/0000:01:00.0/nvme/nvme0/nvme0n1', 'nvme'],
    ['../devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sda', 'sata'],
    ['../devices/pci0000:00/0000:00:01.0/0000:02:00.0/host0/port-0:0/end_device-0:0/target0:0:0/0:0:0:0/block/sda', 'sas'],
    ['../devices/platform/fe340000.mmc/mmc_host/mmc0/mmc0:0001/block/mmcblk0', 'mmc'],
    ['../devices/pci0000:00/0000:00:05.0/virtio3/host0/target0:0:0/0:0:0:0/block/sda', 'scsi'],
    ['../devices/pci0000:00/0000:00:02.0/virtio1/block/vda', 'virtio'],
  ])('%s → %s', (devicePath, transport) => {
    expect(transportFromDevicePath(devicePath)).toBe(transport);
  });

  test('a USB disk that says it is not removable is still on USB', () => {
    expect(transportFromDevicePath('../devices/pci0000:00/0000:00:14.0/usb4/4-1/4-1:1.0/host8/target8:0:0/8:0:0:0/block/sdd')).toBe('usb');
  });

  test('an unknown or missing path gives no transport', () => {
    expect(transportFromDevicePath('')).toBeUndefined();
    expect(transportFromDevicePath('../devices/platform/something/block/xyz0')).toBeUndefined();
  });
});

test('loop, ram, zram, device-mapper and optical devices are virtual; disks are not', () => {
  expect(['loop0', 'ram15', 'zram0', 'dm-3', 'sr0', 'md127', 'nbd0'].filter(isVirtualBlockDevice)).toHaveLength(7);
  expect(['sda', 'vda', 'nvme0n1', 'mmcblk0', 'xvda', 'srv1', 'mdisk'].filter(isVirtualBlockDevice)).toEqual([]);
});

test('serialFromVpdPg80 reads SPC-4 page 0x80 and ignores anything else', () => {
  expect(serialFromVpdPg80(Buffer.from('\x00\x80\x00\x0c  WD-WX12345\0', 'latin1'))).toBe('WD-WX12345');
  expect(serialFromVpdPg80(Buffer.from('\x00\x83\x00\x04abcd', 'latin1'))).toBeUndefined();
  expect(serialFromVpdPg80(Buffer.from([0, 0x80]))).toBeUndefined();
  expect(serialFromVpdPg80(undefined)).toBeUndefined();
  // A length beyond the page is clipped to what is there.
  expect(serialFromVpdPg80(Buffer.from('\x00\x80\xff\xffABC', 'latin1'))).toBe('ABC');
});

describe('parseDisk', () => {
  test('sizes are 512-byte sectors, text attributes are trimmed, partitions sorted by number', () => {
    expect(
      parseDisk({
        name: 'sda',
        blockLink: '../devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sda',
        size: '1000\n',
        removable: '0\n',
        rotational: '1\n',
        model: 'WDC WD10EZEX-08W\n',
        vpdPg80: Buffer.from('\x00\x80\x00\x08WX12345 ', 'latin1'),
        partitions: [
          { name: 'sda10', number: '10\n', size: '8\n' },
          { name: 'sda2', number: '2\n', size: '16\n' },
        ],
      }),
    ).toEqual({
      name: 'sda',
      path: '/dev/sda',
      sizeBytes: 512000,
      model: 'WDC WD10EZEX-08W',
      serial: 'WX12345',
      rotational: true,
      removable: false,
      transport: 'sata',
      partitions: [
        { name: 'sda2', sizeBytes: 8192 },
        { name: 'sda10', sizeBytes: 4096 },
      ],
    });
  });

  test('a device serial beats the VPD page', () => {
    expect(parseDisk({ name: 'nvme0n1', serial: 'S4EV  ', vpdPg80: Buffer.from('\x00\x80\x00\x01X', 'latin1'), partitions: [] }).serial).toBe('S4EV');
  });

  test('the wwid (NVMe on the block device, SCSI on its device) is the WWN, cleaned like the serial', () => {
    expect(parseDisk({ name: 'sda', size: '8', wwid: 'naa.5000c500b1a2c3d4\n', partitions: [] })).toEqual({
      name: 'sda',
      path: '/dev/sda',
      sizeBytes: 4096,
      wwn: 'naa.5000c500b1a2c3d4',
    });
    // A T10 vendor id keeps its inner padding; the kernel's trailing newline and NULs go.
    expect(parseDisk({ name: 'sdb', wwid: 't10.ATA     QEMU HARDDISK   QM00001\0\n', partitions: [] }).wwn).toBe('t10.ATA     QEMU HARDDISK   QM00001');
    expect(parseDisk({ name: 'vda', wwid: ' \n', partitions: [] })).not.toHaveProperty('wwn');
  });

  test('nothing readable but the name: a disk of size 0 with nothing else claimed', () => {
    expect(parseDisk({ name: 'sdz', size: 'garbage', partitions: [] })).toEqual({ name: 'sdz', path: '/dev/sdz', sizeBytes: 0 });
  });

  test("sysfs's '!' for '/' (cciss!c0d0) gives a schema-valid name and the real device path", () => {
    expect(parseDisk({ name: 'cciss!c0d0', size: '8', partitions: [] })).toEqual({ name: 'cciss_c0d0', path: '/dev/cciss/c0d0', sizeBytes: 4096 });
  });

  test('the GPT partition name stands in for a missing filesystem label', () => {
    const head = Buffer.alloc(2048 + 128);
    head.write('EFI PART', 512, 'latin1');
    head.writeBigUInt64LE(2n, 512 + 72);
    head.writeUInt32LE(1, 512 + 80);
    head.writeUInt32LE(128, 512 + 84);
    head.fill(1, 1024, 1040);
    head.write('data', 1024 + 56, 'utf16le');
    const disk = parseDisk({ name: 'sdb', size: '100', head, partitions: [{ name: 'sdb1', number: '1', size: '50', head: Buffer.alloc(4096) }] });
    expect(disk).toMatchObject({ table: 'gpt', partitions: [{ name: 'sdb1', sizeBytes: 25600, label: 'data' }] });
    expect(disk.partitions?.[0]).not.toHaveProperty('fstype');
  });
});
