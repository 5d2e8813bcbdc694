// The links a TFTP root holds when the server starts, resolved once. Debian's ipxe package puts
// /usr/lib/ipxe/ipxe.efi -> /boot/ipxe.efi, and operators link firmware in from elsewhere: such links were
// placed by whoever controls the root, so their targets are served. A link that appears later, or any path
// a client sends, is never followed out of the root (source.ts).
import fs from 'node:fs';
import path from 'node:path';

/** Entries looked at when walking the root; a TFTP root holds a few dozen files, this only bounds a mistake. */
export const MAX_ROOT_ENTRIES = 10_000;

export interface RootLinks {
  /** The root's real path. */
  base: string;
  /**
   * Links under the root whose real target is a regular file outside it: path relative to `base` (through
   * real directories, `/`-separated) → the target's real path, as resolved now.
   */
  links: Map<string, string>;
}

/**
 * Walk `root` (not into linked directories: their contents are not pinned) and resolve every link to a file
 * outside it. Undefined when the root cannot be read now; then no link out of it is ever followed.
 */
export function resolveRootLinks(root: string): RootLinks | undefined {
  let base: string;
  try {
    base = fs.realpathSync(root);
  } catch {
    return undefined;
  }
  const links = new Map<string, string>();
  const pending = [''];
  let seen = 0;
  while (pending.length > 0 && seen < MAX_ROOT_ENTRIES) {
    const dir = pending.pop()!;
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(path.join(base, dir), { withFileTypes: true });
    } catch {
      continue; // unreadable: its files would be refused at open anyway
    }
    for (const entry of entries) {
      if (++seen > MAX_ROOT_ENTRIES) break;
      const rel = dir === '' ? entry.name : `${dir}/${entry.name}`;
      if (entry.isDirectory()) pending.push(rel); // false for a link to a directory: never descended
      else if (entry.isSymbolicLink()) {
        const target = realFile(path.join(base, rel));
        if (target !== undefined && !isInside(base, target)) links.set(rel, target);
      }
    }
  }
  return { base, links };
}

/** The real path of a regular file, or undefined (dangling, a directory, a device…). */
function realFile(p: string): string | undefined {
  try {
    const real = fs.realpathSync(p);
    return fs.statSync(real).isFile() ? real : undefined;
  } catch {
    return undefined;
  }
}

export function isInside(base: string, p: string): boolean {
  return p === base || p.startsWith(base.endsWith(path.sep) ? base : base + path.sep);
}
