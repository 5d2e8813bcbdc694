// Kernel naming of partition devices. A disk image file has no partition devices: the partition action
// addresses its partitions as byte ranges (offset, length) instead.

/**
 * The device node of partition `n` of `disk`: a 'p' goes between a name ending in a digit and the number
 * (nvme0n1p1, mmcblk0p1, loop0p1, md0p1), none otherwise (sda1, vda1). udev's by-id/by-path links use '-partN'.
 */
export function partitionDevice(disk: string, n: number): string {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`partition number must be a positive integer, got ${n}`);
  if (/^\/dev\/disk\/by-(?:id|path|diskseq)\//.test(disk)) return `${disk}-part${n}`;
  return /\d$/.test(disk) ? `${disk}p${n}` : `${disk}${n}`;
}
