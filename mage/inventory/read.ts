// The only file access of the inventory. Every reader returns undefined instead of throwing: sysfs refuses
// some reads (EINVAL for the speed of a down link, EACCES, ENOMEDIUM), and a missing file is normal.
import { open, readdir, readFile, readlink } from 'node:fs/promises';
import path from 'node:path';

/** ROOT joined with an absolute machine path, e.g. under('/tmp/fx', '/sys/block') → /tmp/fx/sys/block. */
export function under(root: string, machinePath: string): string {
  return path.join(root, machinePath);
}

export async function readText(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, 'utf8');
  } catch {
    return undefined;
  }
}

export async function readBinary(file: string): Promise<Buffer | undefined> {
  try {
    return await readFile(file);
  } catch {
    return undefined;
  }
}

/** The target of a symlink as written (sysfs links are relative), or undefined when it is not a link. */
export async function readLinkText(file: string): Promise<string | undefined> {
  try {
    return await readlink(file);
  } catch {
    return undefined;
  }
}

export async function listNames(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch {
    return [];
  }
}

/** Up to `length` bytes from the start of a file or block device; fewer when it is shorter. */
export async function readHead(file: string, length: number): Promise<Buffer | undefined> {
  let handle;
  try {
    handle = await open(file, 'r');
    const buf = Buffer.alloc(length);
    const { bytesRead } = await handle.read(buf, 0, length, 0);
    return buf.subarray(0, bytesRead);
  } catch {
    return undefined;
  } finally {
    await handle?.close().catch(() => undefined);
  }
}
