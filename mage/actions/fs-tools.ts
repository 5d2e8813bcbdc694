// Reading and writing files inside a filesystem on a partition. ext2/3/4 and vfat without mounting, so
// actions work on a disk image as an unprivileged user: debugfs (e2fsprogs opens "FILE?offset=N") and
// mtools ("-i FILE@@OFFSET"). Any other filesystem Linux knows (xfs, btrfs, …) is mounted for the write:
// a partition device directly, a partition inside an image file through a loop device (offset, sizelimit).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DragonflyError } from '../../schemas/errors.js';
import { detectFilesystem, HEAD_BYTES } from '../inventory/filesystems.js';
import { execTool } from './partition-tools.js';

/** Where a filesystem lives: a device or image file, the byte offset of the filesystem in it, and its size. */
export interface FsLocation {
  path: string;
  offset: number;
  /** Bytes of the partition (bounds the loop device of a mount); undefined: to the end of `path`. */
  size?: number;
}

const where = (loc: FsLocation) => `${loc.path}${loc.offset ? ` offset ${loc.offset}` : ''}`;

/** blkid's name for the filesystem at `loc` (ext4, vfat, xfs, btrfs, …), or undefined when there is none. */
export async function filesystemAt(loc: FsLocation): Promise<string | undefined> {
  const fh = await fs.promises.open(loc.path, 'r');
  try {
    const head = Buffer.alloc(HEAD_BYTES);
    const { bytesRead } = await fh.read(head, 0, HEAD_BYTES, loc.offset);
    const fstype = detectFilesystem(head.subarray(0, bytesRead))?.fstype;
    // ext2/ext3/ext4 share the superblock debugfs reads; swap and RAID/LVM members are not filesystems to write into.
    return fstype === 'ext2' || fstype === 'ext3' ? 'ext4' : fstype === 'swap' || fstype?.endsWith('_member') ? undefined : fstype;
  } finally {
    await fh.close();
  }
}

const extSpec = (loc: FsLocation) => (loc.offset > 0 ? `${loc.path}?offset=${loc.offset}` : loc.path);
const fatSpec = (loc: FsLocation) => (loc.offset > 0 ? `${loc.path}@@${loc.offset}` : loc.path);

/** debugfs prints command errors on stderr but exits 0: treat its complaints as failures. */
async function debugfs(loc: FsLocation, commands: string[], write: boolean): Promise<Buffer> {
  const { stdout, stderr } = await execTool({ command: 'debugfs', args: [...(write ? ['-w'] : []), '-f', '-', extSpec(loc)] }, { input: Buffer.from(commands.join('\n') + '\n') });
  const problems = stderr.split('\n').filter((l) => l && !/^debugfs \d/.test(l) && !/directory already exists/.test(l));
  if (problems.length > 0) throw new DragonflyError('DF_ERR_TOOL_FAILED', `debugfs on ${where(loc)}: ${problems.join('; ')}`);
  return stdout;
}

function parents(file: string): string[] {
  const parts = file.split('/').filter(Boolean);
  return parts.slice(0, -1).map((_, i) => '/' + parts.slice(0, i + 1).join('/'));
}

/** Mount the filesystem at `loc` on a temporary directory for `fn`, then unmount it (also on failure). */
async function withMounted<T>(loc: FsLocation, fstype: string, fn: (root: string) => Promise<T>): Promise<T> {
  const mountpoint = fs.mkdtempSync(path.join(os.tmpdir(), 'dragonfly-mnt-'));
  const regular = fs.statSync(loc.path).isFile();
  const options = regular || loc.offset > 0 ? ['-o', `loop,offset=${loc.offset}${loc.size !== undefined ? `,sizelimit=${loc.size}` : ''}`] : [];
  try {
    await execTool({ command: 'mount', args: ['-t', fstype, ...options, loc.path, mountpoint] });
    try {
      return await fn(mountpoint);
    } finally {
      await execTool({ command: 'umount', args: [mountpoint] });
    }
  } finally {
    fs.rmdirSync(mountpoint);
  }
}

export interface FileSpec {
  path: string;
  content: Buffer;
  mode: number;
  uid: number;
  gid: number;
}

export async function writeFileInFs(loc: FsLocation, file: FileSpec): Promise<void> {
  const kind = await filesystemAt(loc);
  if (kind === undefined) throw new DragonflyError('DF_ERR_NO_FILESYSTEM', `no filesystem at ${where(loc)} to write ${file.path} into`);
  if (kind === 'ext4' || kind === 'vfat') return writeWithoutMount(loc, kind, file);
  await withMounted(loc, kind, async (root) => {
    // Schema-validated absolute path without `..`; resolved under the mount point all the same.
    const target = path.join(root, path.resolve('/', file.path));
    fs.mkdirSync(path.dirname(target), { recursive: true });
    fs.writeFileSync(target, file.content);
    fs.chmodSync(target, file.mode);
    fs.chownSync(target, file.uid, file.gid);
    const fd = fs.openSync(target, 'r');
    fs.fsyncSync(fd);
    fs.closeSync(fd);
  });
}

async function writeWithoutMount(loc: FsLocation, kind: 'ext4' | 'vfat', file: FileSpec): Promise<void> {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dragonfly-writefile-'));
  const local = path.join(tmp, 'content');
  fs.writeFileSync(local, file.content);
  try {
    if (kind === 'ext4') {
      // Paths are validated absolute paths without spaces or quotes (schemas/formats.ts), safe in debugfs.
      const dirs = parents(file.path);
      if (dirs.length > 0) await debugfs(loc, dirs.map((d) => `mkdir ${d}`), true);
      // Replace an existing file; on a fresh filesystem there is none, which is the one error to ignore.
      await debugfs(loc, [`rm ${file.path}`], true).catch((e: unknown) => {
        if (!/File not found/.test((e as Error).message)) throw e;
      });
      const mode = `0${(0o100000 | file.mode).toString(8)}`;
      await debugfs(
        loc,
        [`write ${local} ${file.path}`, `set_inode_field ${file.path} mode ${mode}`, `set_inode_field ${file.path} uid ${file.uid}`, `set_inode_field ${file.path} gid ${file.gid}`],
        true,
      );
    } else {
      // FAT has no modes or owners: the content is what matters (EFI files, configs).
      for (const d of parents(file.path)) await execTool({ command: 'mmd', args: ['-D', 's', '-i', fatSpec(loc), `::${d}`] }).catch(() => undefined);
      await execTool({ command: 'mcopy', args: ['-o', '-i', fatSpec(loc), local, `::${file.path}`] });
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

export async function readFileInFs(loc: FsLocation, file: string): Promise<Buffer> {
  const kind = await filesystemAt(loc);
  const notFound = () => new DragonflyError('DF_ERR_FILE_NOT_FOUND', `${file} not found in ${where(loc)}`);
  if (kind === undefined) throw new DragonflyError('DF_ERR_NO_FILESYSTEM', `no filesystem at ${where(loc)} to read ${file} from`);
  if (kind === 'ext4') {
    // -R runs one command without echoing it (with -f, debugfs echoes each command into stdout).
    const { stdout, stderr } = await execTool({ command: 'debugfs', args: ['-R', `cat ${file}`, extSpec(loc)] });
    if (/File not found/.test(stderr)) throw notFound();
    return stdout;
  }
  if (kind === 'vfat') {
    return (await execTool({ command: 'mtype', args: ['-i', fatSpec(loc), `::${file}`] }).catch(() => Promise.reject(notFound()))).stdout;
  }
  return withMounted(loc, kind, async (root) => {
    const target = path.join(root, path.resolve('/', file));
    if (!fs.existsSync(target)) throw notFound();
    return fs.readFileSync(target);
  });
}
