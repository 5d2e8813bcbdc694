// System vendor, product, serial and UUID from the SMBIOS tables the kernel exports in /sys/class/dmi/id.
import type { HardwareReport } from '../../schemas/types.js';
import { readText, under } from './read.js';
import { cleanText, compact } from './text.js';

export type DmiInfo = NonNullable<HardwareReport['dmi']>;

export interface DmiFiles {
  sys_vendor?: string;
  product_name?: string;
  product_serial?: string;
  product_uuid?: string;
}

// Strings that board vendors leave in unprogrammed SMBIOS fields: they identify nothing, so they are dropped.
const PLACEHOLDERS = new Set(
  [
    'to be filled by o.e.m.',
    'default string',
    'not specified',
    'not applicable',
    'not available',
    'none',
    'n/a',
    'oem',
    'o.e.m.',
    'system manufacturer',
    'system product name',
    'system serial number',
    '0123456789',
    '0',
  ].map((s) => s.toLowerCase()),
);

// All-zero and all-F UUIDs are unset; 03000200-…-000700080009 is AMI's unprogrammed default, shared by many boards.
const PLACEHOLDER_UUIDS = new Set([
  '00000000-0000-0000-0000-000000000000',
  'ffffffff-ffff-ffff-ffff-ffffffffffff',
  '03000200-0400-0500-0006-000700080009',
]);

function meaningful(raw: string | undefined, max: number): string | undefined {
  const text = cleanText(raw, max);
  return text === undefined || PLACEHOLDERS.has(text.toLowerCase()) ? undefined : text;
}

export function parseDmi(files: DmiFiles): DmiInfo | undefined {
  const uuid = cleanText(files.product_uuid, 64)?.toLowerCase();
  const dmi = compact({
    vendor: meaningful(files.sys_vendor, 256),
    product: meaningful(files.product_name, 256),
    serial: meaningful(files.product_serial, 256),
    uuid: uuid === undefined || PLACEHOLDER_UUIDS.has(uuid) ? undefined : uuid,
  });
  return Object.keys(dmi).length > 0 ? dmi : undefined;
}

export async function collectDmi(root: string): Promise<DmiInfo | undefined> {
  const dir = under(root, '/sys/class/dmi/id');
  const [sys_vendor, product_name, product_serial, product_uuid] = await Promise.all(
    ['sys_vendor', 'product_name', 'product_serial', 'product_uuid'].map((f) => readText(`${dir}/${f}`)),
  );
  return parseDmi({ sys_vendor, product_name, product_serial, product_uuid });
}
