// Mage's hardware inventory: what the machine has, read from /proc, /sys and the first sectors of its disks,
// as the HardwareReport the server validates (schemas/hardware.schema.json). Reads only; never throws on a
// missing or odd file (it records what is known). ROOT lets tests run it on a captured fixture tree.
import type { HardwareReport } from '../../schemas/types.js';
import { collectCpu } from './cpu.js';
import { collectDisks } from './disks.js';
import { collectDmi } from './dmi.js';
import { collectMemory } from './memory.js';
import { collectNics } from './nics.js';
import { compact } from './text.js';

export interface InventoryOptions {
  /** Also list loop, ram, zram, dm-*, md, nbd and optical (sr*) devices. Default false. */
  includeVirtualDisks?: boolean;
  /** Also list interfaces without a `device` link (bridges, bonds, veth, …; never lo). Default false. */
  includeVirtualNics?: boolean;
}

export async function collectInventory(root = '/', options: InventoryOptions = {}): Promise<HardwareReport> {
  const [cpu, memoryBytes, disks, nics, dmi] = await Promise.all([
    collectCpu(root),
    collectMemory(root),
    collectDisks(root, options.includeVirtualDisks ?? false),
    collectNics(root, options.includeVirtualNics ?? false),
    collectDmi(root),
  ]);
  return compact({ cpu, memoryBytes, disks, nics, dmi });
}
