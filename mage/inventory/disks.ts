// Disks from /sys/block: size, model, serial, WWN, rotational, removable, transport, partitions; the partition
// table and filesystems come from the first sectors of /dev/NAME (see partitions.ts, filesystems.ts).
import type { Disk } from '../../schemas/types.js';
import { detectFilesystem, HEAD_BYTES } from './filesystems.js';
import { describeDiskHead, type TableEntry } from './partitions.js';
import { listNames, readBinary, readHead, readLinkText, readText, under } from './read.js';
import { byDeviceName, cleanText, compact, parseFlag, parseInteger } from './text.js';

type DiskPartition = NonNullable<Disk['partitions']>[number];

/** Kernel block devices that are not disks a machine can be installed on: loop, RAM, zram, device-mapper, optical. */
export function isVirtualBlockDevice(name: string): boolean {
  return /^(loop|ram|zram|dm-|sr|md|nbd|fd)\d/.test(name);
}

/**
 * The bus a disk hangs on, from its sysfs device path (…/usb2/2-3/…/block/sdb). USB is tested first: a USB
 * stick is also a SCSI disk, and it is the USB part that matters (never install on it).
 */
export function transportFromDevicePath(devicePath: string): string | undefined {
  if (/\/usb\d*[/-]/.test(devicePath)) return 'usb';
  if (/\/nvme/.test(devicePath)) return 'nvme';
  if (/\/ata\d+\//.test(devicePath)) return 'sata';
  if (/\/(end_device-|port-\d)/.test(devicePath)) return 'sas';
  if (/\/mmc_host\/|\/mmc\d+:/.test(devicePath)) return 'mmc';
  if (/\/host\d+\//.test(devicePath)) return 'scsi';
  if (/\/virtio\d+\//.test(devicePath)) return 'virtio';
  return undefined;
}

/** The unit serial number from SCSI VPD page 0x80 (SPC-4 §7.8.15): a 4-byte header, then ASCII. */
export function serialFromVpdPg80(page: Uint8Array | undefined): string | undefined {
  if (!page || page.length < 4 || page[1] !== 0x80) return undefined;
  const length = ((page[2] ?? 0) << 8) | (page[3] ?? 0);
  return cleanText(Buffer.from(page.subarray(4, 4 + length)).toString('latin1'), 256);
}

/** What was read for one partition: /sys/block/DISK/PART/{partition,size} and the first bytes of /dev/PART. */
export interface PartitionFiles {
  name: string;
  number?: string;
  size?: string;
  head?: Uint8Array;
}

/**
 * The files that identify a disk, in its sysfs directory (/sys/block/NAME, or /sys/class/block/NAME which
 * also lists partitions). The report and Mage's check before writing (mage/disk-identity.ts) read them the
 * same way, so the identity a workflow was planned from compares equal to the one read on the disk.
 */
export interface IdentityFiles {
  size?: string;
  /** device/serial (NVMe, some SCSI), else NAME/serial (virtio-blk). */
  serial?: string;
  vpdPg80?: Uint8Array;
  /** NAME/wwid (NVMe namespaces: eui., uuid. or nvme. ids), else device/wwid (SCSI: the best id of VPD page 0x83). */
  wwid?: string;
}

/** What was read for one disk under /sys/block/NAME and /dev/NAME; undefined where the read failed. */
export interface DiskFiles extends IdentityFiles {
  name: string;
  /** Target of the /sys/block/NAME link and of its `device` link: the device path, for the transport. */
  blockLink?: string;
  deviceLink?: string;
  removable?: string;
  rotational?: string;
  model?: string;
  head?: Uint8Array;
  partitions: PartitionFiles[];
}

/** What identifies a disk: its size, and its serial and World Wide Name when it has them. */
export type DiskIdentity = Pick<Disk, 'sizeBytes' | 'serial' | 'wwn'>;

const NAME = /^[A-Za-z0-9_.:-]{1,64}$/;

function describePartitions(parts: PartitionFiles[], entries: TableEntry[]): DiskPartition[] {
  const numbered = parts.map((p) => ({ ...p, n: parseInteger(p.number) ?? Number.MAX_SAFE_INTEGER }));
  numbered.sort((a, b) => a.n - b.n || byDeviceName(a.name, b.name));
  return numbered.slice(0, 256).map((p) => {
    const fs = p.head && p.head.length > 0 ? detectFilesystem(p.head) : undefined;
    const sectors = parseInteger(p.size);
    // The filesystem label is what people see; the GPT partition name stands in when there is none.
    const partName = entries.find((e) => e.number === p.n)?.name;
    return compact({
      name: cleanText(p.name, 64) ?? '?',
      sizeBytes: sectors !== undefined && sectors >= 0 ? sectors * 512 : undefined,
      fstype: fs?.fstype,
      label: fs?.label ?? cleanText(partName, 128),
    });
  });
}

/** A disk's identity. Sizes in sysfs are in 512-byte sectors whatever the disk's logical sector size. */
export function parseIdentity(files: IdentityFiles): DiskIdentity {
  const sectors = parseInteger(files.size);
  return compact({
    sizeBytes: sectors !== undefined && sectors > 0 ? sectors * 512 : 0,
    serial: cleanText(files.serial, 256) ?? serialFromVpdPg80(files.vpdPg80),
    wwn: cleanText(files.wwid, 256),
  });
}

/** One disk for the report. */
export function parseDisk(files: DiskFiles): Disk {
  const { sizeBytes, serial, wwn } = parseIdentity(files);
  // sysfs writes '/' in a device name as '!' (cciss!c0d0 is /dev/cciss/c0d0); the schema's name has neither.
  const devName = files.name.replaceAll('!', '/');
  const name = NAME.test(files.name) ? files.name : files.name.replace(/[^A-Za-z0-9_.:-]/g, '_').slice(0, 64) || 'disk';
  const head = files.head && files.head.length > 0 ? describeDiskHead(files.head) : undefined;
  const partitions = describePartitions(files.partitions, head?.table.entries ?? []);
  return compact({
    name,
    path: cleanText(`/dev/${devName}`, 256),
    sizeBytes,
    model: cleanText(files.model, 256),
    serial,
    wwn,
    rotational: parseFlag(files.rotational),
    removable: parseFlag(files.removable),
    transport: transportFromDevicePath(`${files.blockLink ?? ''} ${files.deviceLink ?? ''}`),
    table: head?.table.table,
    partitions: partitions.length > 0 ? partitions : undefined,
    fstype: head?.fstype,
  });
}

/** The identity files of the disk (or partition) whose sysfs directory is `dir`. */
export async function readIdentityFiles(dir: string): Promise<IdentityFiles> {
  const [size, deviceSerial, blockSerial, vpdPg80, blockWwid, deviceWwid] = await Promise.all([
    readText(`${dir}/size`),
    readText(`${dir}/device/serial`),
    readText(`${dir}/serial`),
    readBinary(`${dir}/device/vpd_pg80`),
    readText(`${dir}/wwid`),
    readText(`${dir}/device/wwid`),
  ]);
  return compact({ size, serial: deviceSerial ?? blockSerial, vpdPg80, wwid: blockWwid ?? deviceWwid });
}

async function readDiskFiles(root: string, name: string): Promise<DiskFiles> {
  const base = under(root, `/sys/block/${name}`);
  const [identity, blockLink, deviceLink, removable, rotational, model] = await Promise.all([
    readIdentityFiles(base),
    readLinkText(base),
    readLinkText(`${base}/device`),
    readText(`${base}/removable`),
    readText(`${base}/queue/rotational`),
    readText(`${base}/device/model`),
  ]);
  const { size } = identity;
  // Partitions are the subdirectories NAMEp1 / NAME1 that hold a `partition` file.
  const children = (await listNames(base)).filter((c) => c.startsWith(name) && c !== name);
  const partitions = (
    await Promise.all(
      children.map(async (child): Promise<PartitionFiles | undefined> => {
        const number = await readText(`${base}/${child}/partition`);
        if (number === undefined) return undefined;
        const [partSize, head] = await Promise.all([
          readText(`${base}/${child}/size`),
          readHead(under(root, `/dev/${child.replaceAll('!', '/')}`), HEAD_BYTES),
        ]);
        return { name: child, number, size: partSize, head };
      }),
    )
  ).filter((p): p is PartitionFiles => p !== undefined);
  // An empty card reader or a drive without media has size 0: opening it would only fail (ENOMEDIUM).
  const head = parseInteger(size) ? await readHead(under(root, `/dev/${name.replaceAll('!', '/')}`), HEAD_BYTES) : undefined;
  return { name, ...identity, blockLink, deviceLink, removable, rotational, model, head, partitions };
}

export async function collectDisks(root: string, includeVirtual = false): Promise<Disk[]> {
  const names = (await listNames(under(root, '/sys/block'))).filter((n) => includeVirtual || !isVirtualBlockDevice(n)).sort(byDeviceName);
  // Schema limit: at most 256 disks.
  return Promise.all(names.slice(0, 256).map(async (name) => parseDisk(await readDiskFiles(root, name))));
}
