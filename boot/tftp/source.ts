// Where the TFTP server's files come from: a directory on disk, generated files held in memory, or a
// combination. The server only sees `TftpSource`; it never touches the file system itself.
import { constants as fsc } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { isInside, resolveRootLinks } from './root-links.js';

export interface TftpFile {
  /** Size in bytes, fixed when the file is opened (it is the RFC 2349 tsize). */
  size: number;
  /** Read up to `buffer.length` bytes at `position`; resolves to the number of bytes read (0 at the end). */
  read(buffer: Buffer, position: number): Promise<number>;
  close(): Promise<void>;
}

export interface TftpSource {
  /** The file, or undefined when there is no such file. Throws TftpAccessError for names that are refused. */
  open(name: string): Promise<TftpFile | undefined>;
}

export type TftpAccessReason = 'absolute-path' | 'parent-segment' | 'backslash' | 'nul' | 'outside-root' | 'not-a-file' | 'permission';

const REASON_TEXT: Record<TftpAccessReason, string> = {
  'absolute-path': 'absolute paths are refused; ask for a path relative to the TFTP root',
  'parent-segment': "'..' segments are refused",
  backslash: 'backslashes are refused; use / as the separator',
  nul: 'NUL bytes are refused',
  'outside-root': 'the path leads outside the TFTP root',
  'not-a-file': 'not a regular file',
  permission: 'permission denied',
};

/** A name the server refuses to serve (TFTP error 2, access violation). Serialisable, with a reason. */
export class TftpAccessError extends Error {
  readonly reason: TftpAccessReason;
  readonly filename: string;

  constructor(reason: TftpAccessReason, filename: string) {
    super(`${JSON.stringify(filename)}: ${REASON_TEXT[reason]}`);
    this.name = 'TftpAccessError';
    this.reason = reason;
    this.filename = filename;
  }

  toJSON() {
    return { name: this.name, reason: this.reason, filename: this.filename, message: this.message };
  }
}

/** Why a requested name is refused before any file-system access, or undefined when it may be looked up. */
export function refusedName(name: string): TftpAccessReason | undefined {
  if (name.includes('\0')) return 'nul';
  if (name.includes('\\')) return 'backslash';
  if (name.startsWith('/')) return 'absolute-path';
  if (name.split('/').includes('..')) return 'parent-segment';
  return undefined;
}

/** A directory source; `links` are the links out of the root it serves, pinned when it was created. */
export interface DirectorySource extends TftpSource {
  /** Path relative to the root → real target, for each link under the root to a file outside it (root-links.ts). */
  readonly links: ReadonlyMap<string, string>;
}

/**
 * Files under `root`. Refuses absolute names, `..` segments, backslashes, NUL, anything that is not a regular
 * file, and anything whose real path (symlinks resolved) is outside the real root — except the links to files
 * outside it that the root held at creation: those are resolved once, now, and their targets served.
 */
export function directorySource(root: string): DirectorySource {
  const pinned = resolveRootLinks(root);
  const links: ReadonlyMap<string, string> = pinned?.links ?? new Map();
  return {
    links,
    async open(name) {
      const refused = refusedName(name);
      if (refused) throw new TftpAccessError(refused, name);
      const base = pinned?.base ?? (await fs.realpath(root));
      const requested = path.join(base, name);
      let real: string;
      try {
        real = await fs.realpath(requested);
      } catch (e) {
        return missingOrThrow(e, name);
      }
      if (isInside(base, real)) return openRegular(real, name, (opened) => isInside(base, opened));

      // Outside the root: only a link pinned at creation, and then its target as resolved then, whatever the
      // link says now. The key names the link through real directories, as the walk did.
      let parent: string;
      try {
        parent = await fs.realpath(path.dirname(requested));
      } catch (e) {
        return missingOrThrow(e, name);
      }
      const key = path.relative(base, path.join(parent, path.basename(requested))).split(path.sep).join('/');
      const target = isInside(base, parent) ? links.get(key) : undefined;
      if (target === undefined) throw new TftpAccessError('outside-root', name);
      return openRegular(target, name, (opened) => opened === target);
    },
  };
}

/**
 * Open `real` if it is a regular file and what was really opened passes `allowed`. O_NOFOLLOW: the last
 * component cannot have become a symlink since it was resolved; O_NONBLOCK: opening a FIFO does not wait for
 * a writer (it is then refused as not a regular file).
 */
async function openRegular(real: string, name: string, allowed: (opened: string) => boolean): Promise<TftpFile | undefined> {
  let handle: fs.FileHandle;
  try {
    handle = await fs.open(real, fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK);
  } catch (e) {
    return missingOrThrow(e, name);
  }
  try {
    const st = await handle.stat();
    if (!st.isFile()) throw new TftpAccessError('not-a-file', name);
    // A directory on the way may have been swapped for a symlink since it was resolved: check what was
    // really opened (Linux /proc; skipped where it does not exist).
    const opened = await fs.readlink(`/proc/self/fd/${handle.fd}`).catch(() => real);
    if (!allowed(opened)) throw new TftpAccessError('outside-root', name);
    return fileOfHandle(handle, st.size);
  } catch (e) {
    await handle.close();
    throw e;
  }
}

function fileOfHandle(handle: fs.FileHandle, size: number): TftpFile {
  let closing: Promise<void> | undefined;
  return {
    size,
    read: async (buffer, position) => (await handle.read(buffer, 0, buffer.length, position)).bytesRead,
    close: () => (closing ??= handle.close()),
  };
}

function missingOrThrow(e: unknown, name: string): undefined {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'ENAMETOOLONG') return undefined;
  if (code === 'EACCES' || code === 'EPERM') throw new TftpAccessError('permission', name);
  if (code === 'ELOOP') throw new TftpAccessError('outside-root', name);
  throw e;
}

/** Content of a generated file; a function is called at each open, so every transfer sees one snapshot. */
export type MemoryContent = string | Uint8Array | (() => string | Uint8Array | undefined | Promise<string | Uint8Array | undefined>);

/** Files held in memory (boot.ipxe, autoexec.ipxe…), looked up by exact name. */
export function memorySource(entries: ReadonlyMap<string, MemoryContent> | Readonly<Record<string, MemoryContent>>): TftpSource {
  const lookup = (name: string): MemoryContent | undefined =>
    entries instanceof Map ? entries.get(name) : Object.hasOwn(entries, name) ? (entries as Record<string, MemoryContent>)[name] : undefined;
  return {
    async open(name) {
      const entry = lookup(name);
      const content = typeof entry === 'function' ? await entry() : entry;
      if (content === undefined) return undefined;
      const bytes = typeof content === 'string' ? Buffer.from(content, 'utf8') : Buffer.from(content.buffer, content.byteOffset, content.byteLength);
      return {
        size: bytes.length,
        read: async (buffer, position) => (position >= bytes.length ? 0 : bytes.copy(buffer, 0, position)),
        close: async () => {},
      };
    },
  };
}

/** The first source that has the name wins; a refusal (TftpAccessError) from any source is final. */
export function combinedSource(...sources: TftpSource[]): TftpSource {
  return {
    async open(name) {
      for (const source of sources) {
        const file = await source.open(name);
        if (file) return file;
      }
      return undefined;
    },
  };
}
