// The rule that picks the install disk when a Machine names none. It lives here, beside the hardware
// schema, because both the reconciler (to plan) and Mage (to act) must agree on it.
import type { Disk, HardwareReport } from './types.js';

const USB = /usb/i;

/** Disks that may receive an OS: never removable, never on USB, never empty (size 0, e.g. a card reader). */
export function installableDisks(hw: HardwareReport): Disk[] {
  return hw.disks.filter((d) => !d.removable && !USB.test(d.transport ?? '') && d.sizeBytes > 0);
}

/**
 * The install disk: among installable disks that can hold `minBytes`, prefer solid-state (NVMe/SSD) over
 * rotational, then the smallest (the boot disk of a server is usually its smallest), then the name.
 */
export function chooseInstallDisk(hw: HardwareReport, minBytes = 0): Disk | undefined {
  return installableDisks(hw)
    .filter((d) => d.sizeBytes >= minBytes)
    .sort(
      (a, b) =>
        Number(a.rotational ?? false) - Number(b.rotational ?? false) ||
        a.sizeBytes - b.sizeBytes ||
        (a.name < b.name ? -1 : a.name > b.name ? 1 : 0),
    )[0];
}

export function devicePath(d: Disk): string {
  return d.path ?? `/dev/${d.name}`;
}
