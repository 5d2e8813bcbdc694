// Memory size from /proc/meminfo.
import { readText, under } from './read.js';

/**
 * MemTotal in bytes. It is the RAM the kernel manages, a little below what is installed (firmware and the
 * kernel image keep the rest): good enough to tell 16 GiB from 64 GiB, not to audit DIMMs.
 */
export function parseMeminfo(text: string): number | undefined {
  const m = /^MemTotal:\s+(\d+)\s*kB\s*$/m.exec(text);
  if (!m?.[1]) return undefined;
  const bytes = Number(m[1]) * 1024;
  return Number.isSafeInteger(bytes) ? bytes : undefined;
}

export async function collectMemory(root: string): Promise<number | undefined> {
  const text = await readText(under(root, '/proc/meminfo'));
  return text === undefined ? undefined : parseMeminfo(text);
}
