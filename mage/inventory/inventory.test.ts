// The whole inventory on fixture trees: each must produce exactly its expected.json, which the server's
// schema accepts, and the install-disk rule must never land on a USB stick.
import { mkdtempSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, test } from 'vitest';
import { chooseInstallDisk, installableDisks } from '../../schemas/install-disk.js';
import type { HardwareReport } from '../../schemas/types.js';
import { validateAgainst } from '../../schemas/validate.js';
import { collectInventory } from './index.js';

const FIXTURES = fileURLToPath(new URL('../fixtures/', import.meta.url));
const fixtures = readdirSync(FIXTURES, { withFileTypes: true })
  .filter((d) => d.isDirectory())
  .map((d) => d.name)
  .sort();

async function inventoryOf(name: string): Promise<HardwareReport> {
  return collectInventory(path.join(FIXTURES, name));
}

test('the fixture machines are there', () => {
  expect(fixtures).toEqual(expect.arrayContaining(['firecracker-vm', 'qemu-vm', 'server-nvme-sata', 'workstation-multi-nic-usb']));
});

test('the machine running the tests gets a report the server accepts', async () => {
  const report = await collectInventory();
  expect(validateAgainst('hardware', report)).toEqual([]);
  expect(Array.isArray(report.disks) && Array.isArray(report.nics)).toBe(true);
});

describe.each(fixtures)('fixture %s', (name) => {
  test('produces exactly expected.json, which passes the hardware schema', async () => {
    const expected = JSON.parse(readFileSync(path.join(FIXTURES, name, 'expected.json'), 'utf8')) as HardwareReport;
    const report = await inventoryOf(name);
    expect(report).toStrictEqual(expected);
    expect(validateAgainst('hardware', report)).toEqual([]);
    // What goes over the wire is the same.
    expect(JSON.parse(JSON.stringify(report))).toStrictEqual(expected);
  });

  test('the install disk is never removable or on USB', async () => {
    const report = await inventoryOf(name);
    const disk = chooseInstallDisk(report);
    expect(disk).toBeDefined();
    expect(disk?.removable).not.toBe(true);
    expect(disk?.transport).not.toBe('usb');
  });
});

test('server: the NVMe is the install disk; larger images fall to the SATA SSD, then to the HDD', async () => {
  const report = await inventoryOf('server-nvme-sata');
  expect(chooseInstallDisk(report)?.name).toBe('nvme0n1');
  // An image too large for the NVMe goes to the next solid-state disk, then to the rotational one.
  expect(chooseInstallDisk(report, 600e9)?.name).toBe('sda');
  expect(chooseInstallDisk(report, 2e12)?.name).toBe('sdb');
  expect(chooseInstallDisk(report, 5e12)).toBeUndefined();
});

test("server: every disk reports its WWN, the NVMe namespace's from its block device, the SATA disks' from their SCSI device", async () => {
  const { disks } = await inventoryOf('server-nvme-sata');
  expect(disks.map((d) => [d.name, d.serial, d.wwn])).toEqual([
    ['nvme0n1', 'S4EVNX0N912345A', 'eui.002538591150a1b2'],
    ['sda', 'PHYF912300AB960CGN', 'naa.55cd2e414f1a2b3c'],
    ['sdb', 'ZC1A2B3C', 'naa.5000c500b1a2c3d4'],
  ]);
  // A disk without a wwid (virtio-blk has none) reports none.
  expect((await inventoryOf('qemu-vm')).disks.find((d) => d.name === 'vda')).not.toHaveProperty('wwn');
});

test('workstation: the USB stick is the smallest solid-state disk, and still never chosen', async () => {
  const report = await inventoryOf('workstation-multi-nic-usb');
  const stick = report.disks.find((d) => d.name === 'sdb');
  expect(stick).toMatchObject({ removable: true, transport: 'usb', rotational: false });
  expect(installableDisks(report).map((d) => d.name)).toEqual(['nvme0n1', 'sda']);
  expect(chooseInstallDisk(report)?.name).toBe('nvme0n1');
  // Even when nothing else fits, the stick is not a fallback.
  expect(chooseInstallDisk(report, 3e12)).toBeUndefined();
});

test('workstation: four physical NICs with their drivers; bridges and lo left out', async () => {
  const { nics } = await inventoryOf('workstation-multi-nic-usb');
  expect(nics.map((n) => [n.name, n.driver, n.link])).toEqual([
    ['eno1', 'e1000e', true],
    ['enp4s0', 'igb', false],
    ['enp101s0f0', 'ixgbe', true],
    ['enp101s0f1', 'ixgbe', false],
  ]);
});

test('qemu: virtio disk with GPT (BIOS boot, ESP, ext4) is the install disk; the blank SATA disk only fits a larger image', async () => {
  const report = await inventoryOf('qemu-vm');
  expect(report.disks.map((d) => [d.name, d.transport, d.table])).toEqual([
    ['sda', 'sata', 'none'],
    ['vda', 'virtio', 'gpt'],
  ]);
  // The BIOS boot partition has no filesystem: its GPT partition name stands in for the label.
  expect(report.disks.find((d) => d.name === 'vda')?.partitions?.map((p) => [p.name, p.fstype, p.label])).toEqual([
    ['vda1', undefined, 'bios'],
    ['vda2', 'vfat', 'EFI'],
    ['vda3', 'ext4', 'rootfs'],
  ]);
  // Both say they are rotational (QEMU's defaults), so the smaller one wins.
  expect(chooseInstallDisk(report)?.name).toBe('vda');
  expect(chooseInstallDisk(report, 3e9)?.name).toBe('sda');
  expect(chooseInstallDisk(report, 5e9)).toBeUndefined();
});

test('qemu: virtio-net reports no speed, e1000 its 1000 Mb/s; lo left out', async () => {
  const { nics, dmi } = await inventoryOf('qemu-vm');
  expect(nics.map((n) => [n.name, n.mac, n.driver, n.link, n.speedMbps])).toEqual([
    ['eth0', '52:54:00:12:34:56', 'virtio_net', true, undefined],
    ['eth1', '52:54:00:12:34:57', 'e1000', true, 1000],
  ]);
  expect(dmi?.uuid).toBe('8e1d5c2a-3b4f-4e6a-9d7c-1a2b3c4d5e6f');
});

test('virtual devices are listed only when asked for', async () => {
  const root = path.join(FIXTURES, 'firecracker-vm');
  const all = await collectInventory(root, { includeVirtualDisks: true, includeVirtualNics: true });
  expect(all.disks.map((d) => d.name)).toEqual(['loop0', 'loop1', 'loop2', 'loop3', 'loop4', 'loop5', 'loop6', 'loop7', 'vda', 'zram0']);
  expect(all.nics.map((n) => n.name)).toEqual(['eth0', 'ifb0', 'ifb1']);
  expect(validateAgainst('hardware', all)).toEqual([]);
});

describe('odd trees', () => {
  const scratch = mkdtempSync(path.join(tmpdir(), 'mage-inventory-'));
  afterAll(() => rmSync(scratch, { recursive: true, force: true }));

  test('an empty root gives an empty but valid report', async () => {
    const report = await collectInventory(path.join(scratch, 'does-not-exist'));
    expect(report).toEqual({ disks: [], nics: [] });
    expect(validateAgainst('hardware', report)).toEqual([]);
  });

  test('garbage in every file is recorded as unknown, never thrown, and stays within the schema', async () => {
    const root = path.join(scratch, 'garbage');
    const put = (p: string, content: string | Buffer) => {
      mkdirSync(path.dirname(path.join(root, p)), { recursive: true });
      writeFileSync(path.join(root, p), content);
    };
    put('proc/cpuinfo', Buffer.from([0xff, 0xfe, 0, 1, 2]));
    put('proc/meminfo', 'MemTotal: -5 kB\n');
    put('sys/block/sda/size', 'NaN\n');
    put('sys/block/sda/removable', '2\n');
    put('sys/block/sda/queue/rotational', '\n');
    put('sys/block/sda/device/model', `\u0000${'M'.repeat(400)}\u0007`);
    put('sys/block/sda/device/vpd_pg80', Buffer.from([1, 2, 3]));
    put('sys/block/sda/sda1/partition', 'one\n');
    put('sys/block/sda/sda1/size', '-7\n');
    put('dev/sda', Buffer.alloc(10, 0xff)); // size is NaN, so this is never read
    put('dev/sda1', Buffer.alloc(100, 0xee));
    mkdirSync(path.join(root, 'sys/block/sda/sda9')); // a directory without a partition file: not a partition
    put('sys/class/net/eth0/address', 'not a mac\n');
    put('sys/class/net/eth1/address', '00:11:22:33:44:55\n');
    put('sys/class/net/eth1/speed', 'fast\n');
    symlinkSync('../../../x/0000:00:00.0', path.join(root, 'sys/class/net/eth1/device')); // dangling
    put('sys/class/dmi/id/product_uuid', 'x'.repeat(500));
    const report = await collectInventory(root);
    expect(validateAgainst('hardware', report)).toEqual([]);
    expect(report.disks).toEqual([{ name: 'sda', path: '/dev/sda', sizeBytes: 0, model: 'M'.repeat(256), partitions: [{ name: 'sda1' }] }]);
    expect(report.nics).toEqual([{ name: 'eth1', mac: '00:11:22:33:44:55' }]);
    expect(report.memoryBytes).toBeUndefined();
    expect(report.dmi?.uuid).toHaveLength(64);
  });

  test("a disk's own wwid is read before its device's, and an overlong one is clipped to the schema's 256", async () => {
    const root = path.join(scratch, 'wwid');
    const put = (p: string, content: string) => {
      mkdirSync(path.dirname(path.join(root, p)), { recursive: true });
      writeFileSync(path.join(root, p), content);
    };
    put('sys/block/nvme0n1/size', '8\n');
    put('sys/block/nvme0n1/wwid', 'eui.0025385891b04f3c\n');
    put('sys/block/nvme0n1/device/wwid', 'ignored\n');
    put('sys/block/sdb/size', '8\n');
    put('sys/block/sdb/device/wwid', `t10.${'X'.repeat(300)}\n`);
    const { disks } = await collectInventory(root);
    expect(disks.map((d) => d.wwn)).toEqual(['eui.0025385891b04f3c', `t10.${'X'.repeat(252)}`]);
    expect(validateAgainst('hardware', { disks, nics: [] })).toEqual([]);
  });
});
