// The initramfs being assembled: cpio entries by path. It is always /usr-merged: /bin, /sbin, /lib and
// /lib64 are links into /usr, and every file is placed at its /usr path (usrPath).
import path from 'node:path';
import type { CpioEntry } from './cpio.js';
import { MageBuildError } from './exec.js';

/** An absolute path as it sits in the /usr-merged initramfs, without the leading slash: /sbin/x → usr/sbin/x. */
export function usrPath(abs: string): string {
  const p = path.posix.normalize(abs).replace(/^\/+/, '');
  for (const top of ['lib64', 'lib', 'bin', 'sbin']) if (p === top || p.startsWith(`${top}/`)) return `usr/${p}`;
  return p;
}

export class Tree {
  readonly entries = new Map<string, CpioEntry>();

  dir(p: string, mode = 0o755): void {
    const parts = p.split('/').filter(Boolean);
    for (let i = 1; i <= parts.length; i++) {
      const sub = parts.slice(0, i).join('/');
      const existing = this.entries.get(sub);
      if (existing && existing.type !== 'dir') {
        if (existing.type === 'symlink') continue; // lib → usr/lib: the real folder is added separately
        throw new MageBuildError(`initramfs: ${sub} is both a file and a folder`, 'report this as a bug');
      }
      if (!existing) this.entries.set(sub, { path: sub, type: 'dir', mode: i === parts.length ? mode : 0o755 });
    }
  }

  private parent(p: string): void {
    const d = path.posix.dirname(p);
    if (d !== '.') this.dir(d);
  }

  file(p: string, data: Uint8Array | string, mode = 0o644): void {
    this.parent(p);
    this.entries.set(p, { path: p, type: 'file', mode, data: typeof data === 'string' ? Buffer.from(data) : data });
  }

  symlink(p: string, target: string): void {
    this.parent(p);
    this.entries.set(p, { path: p, type: 'symlink', target });
  }

  /** A link at `p` to the tree path `to`, relative (as packages make them), unless both are the same path. */
  link(p: string, to: string): void {
    if (p !== to) this.symlink(p, path.posix.relative(path.posix.dirname(p), to));
  }

  has(p: string): boolean {
    return this.entries.has(p);
  }
}
