// A newc ("SVR4 with no CRC") cpio writer for Mage's initramfs. Written here rather than run through GNU
// cpio so that every header field is ours to fix: entries in byte order of their paths, inode numbers
// counted from 1, uid/gid 0, one mtime for everything, and device nodes (/dev/console) without root.
// The same entries always give the same bytes.

export type CpioEntry =
  | { path: string; type: 'dir'; mode: number }
  | { path: string; type: 'file'; mode: number; data: Uint8Array }
  | { path: string; type: 'symlink'; target: string }
  | { path: string; type: 'char'; mode: number; major: number; minor: number };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

/** Relative, '/'-separated, no '.' or '..' components: what the kernel's unpacker expects. */
export function normalizeCpioPath(p: string): string {
  const parts = p.split('/').filter((s) => s !== '' && s !== '.');
  if (parts.length === 0 || parts.some((s) => s === '..')) throw new Error(`bad initramfs path ${JSON.stringify(p)}`);
  return parts.join('/');
}

function hex8(n: number): string {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new Error(`cpio field out of range: ${n}`);
  return n.toString(16).padStart(8, '0');
}

const pad4 = (n: number) => (4 - (n % 4)) % 4;

function header(fields: { ino: number; mode: number; nlink: number; mtime: number; size: number; rmajor?: number; rminor?: number; nameLength: number }): Buffer {
  return Buffer.from(
    '070701' +
      hex8(fields.ino) +
      hex8(fields.mode) +
      hex8(0) + // uid
      hex8(0) + // gid
      hex8(fields.nlink) +
      hex8(fields.mtime) +
      hex8(fields.size) +
      hex8(0) + // devmajor
      hex8(0) + // devminor
      hex8(fields.rmajor ?? 0) +
      hex8(fields.rminor ?? 0) +
      hex8(fields.nameLength) +
      hex8(0), // check
    'ascii',
  );
}

function record(out: (chunk: Uint8Array) => void, name: string, fields: Parameters<typeof header>[0], data: Uint8Array): void {
  const nameBytes = Buffer.from(name + '\0', 'utf8');
  const h = header({ ...fields, nameLength: nameBytes.length });
  out(h);
  out(nameBytes);
  out(Buffer.alloc(pad4(h.length + nameBytes.length)));
  if (data.length > 0) {
    out(data);
    out(Buffer.alloc(pad4(data.length)));
  }
}

/**
 * Write `entries` as one newc archive through `out`, sorted by path (byte order, so every directory comes
 * before what it holds), with `mtime` (seconds) on every entry. Duplicate paths are an error.
 */
export function writeNewc(entries: CpioEntry[], mtime: number, out: (chunk: Uint8Array) => void): void {
  const sorted = entries.map((e) => ({ ...e, path: normalizeCpioPath(e.path) })).sort((a, b) => Buffer.compare(Buffer.from(a.path), Buffer.from(b.path)));
  for (let i = 1; i < sorted.length; i++) if (sorted[i]!.path === sorted[i - 1]!.path) throw new Error(`initramfs path ${sorted[i]!.path} appears twice`);
  let ino = 1;
  for (const e of sorted) {
    switch (e.type) {
      case 'dir':
        record(out, e.path, { ino: ino++, mode: S_IFDIR | (e.mode & 0o7777), nlink: 2, mtime, size: 0, nameLength: 0 }, new Uint8Array(0));
        break;
      case 'file':
        record(out, e.path, { ino: ino++, mode: S_IFREG | (e.mode & 0o7777), nlink: 1, mtime, size: e.data.length, nameLength: 0 }, e.data);
        break;
      case 'symlink': {
        const target = Buffer.from(e.target, 'utf8');
        record(out, e.path, { ino: ino++, mode: S_IFLNK | 0o777, nlink: 1, mtime, size: target.length, nameLength: 0 }, target);
        break;
      }
      case 'char':
        record(out, e.path, { ino: ino++, mode: S_IFCHR | (e.mode & 0o7777), nlink: 1, mtime, size: 0, rmajor: e.major, rminor: e.minor, nameLength: 0 }, new Uint8Array(0));
        break;
    }
  }
  record(out, 'TRAILER!!!', { ino: 0, mode: 0, nlink: 1, mtime: 0, size: 0, nameLength: 0 }, new Uint8Array(0));
}
