// Network interfaces from /sys/class/net: MAC, link, speed, driver.
import path from 'node:path';
import { normalizeMac } from '../../schemas/mac.js';
import type { Nic } from '../../schemas/types.js';
import { listNames, readLinkText, readText, under } from './read.js';
import { byDeviceName, cleanText, compact, parseFlag, parseInteger } from './text.js';

/** The attributes of /sys/class/net/NAME that the report uses, as read (undefined when unreadable). */
export interface NicFiles {
  name: string;
  address?: string;
  carrier?: string;
  operstate?: string;
  speed?: string;
  /** Target of the `device` link; absent for virtual interfaces (lo, bridges, bonds, veth, ifb). */
  deviceLink?: string;
  /** Target of `device/driver`, e.g. ../../../bus/pci/drivers/ixgbe. */
  driverLink?: string;
}

const DOWN_STATES = new Set(['down', 'lowerlayerdown', 'notpresent', 'dormant']);

/**
 * One NIC, or undefined when it is not a physical interface with an Ethernet MAC (the report's `mac` is
 * required, and a virtual interface is not something the machine can PXE boot from).
 */
export function parseNic(files: NicFiles, includeVirtual = false): Nic | undefined {
  if (files.deviceLink === undefined && !includeVirtual) return undefined;
  if (files.name === 'lo') return undefined;
  const mac = normalizeMac(files.address?.trim() ?? '');
  if (mac === undefined) return undefined;

  // `carrier` cannot be read while the interface is administratively down (EINVAL): then operstate tells.
  const state = files.operstate?.trim();
  const link = parseFlag(files.carrier) ?? (state === 'up' ? true : state && DOWN_STATES.has(state) ? false : undefined);
  // -1 (and its unsigned twin 4294967295) means unknown, as with virtio or a link that is down.
  const speed = parseInteger(files.speed);
  return compact({
    name: cleanText(files.name, 64),
    mac,
    link,
    speedMbps: speed !== undefined && speed > 0 && speed < 0xffffffff ? speed : undefined,
    driver: files.driverLink === undefined ? undefined : cleanText(path.posix.basename(files.driverLink), 64),
  });
}

export async function collectNics(root: string, includeVirtual = false): Promise<Nic[]> {
  const dir = under(root, '/sys/class/net');
  const names = (await listNames(dir)).sort(byDeviceName);
  const nics = await Promise.all(
    names.map(async (name) => {
      const base = `${dir}/${name}`;
      const [address, carrier, operstate, speed, deviceLink, driverLink] = await Promise.all([
        readText(`${base}/address`),
        readText(`${base}/carrier`),
        readText(`${base}/operstate`),
        readText(`${base}/speed`),
        readLinkText(`${base}/device`),
        readLinkText(`${base}/device/driver`),
      ]);
      return parseNic({ name, address, carrier, operstate, speed, deviceLink, driverLink }, includeVirtual);
    }),
  );
  // Schema limit: at most 64 NICs.
  return nics.filter((n): n is Nic => n !== undefined).slice(0, 64);
}
