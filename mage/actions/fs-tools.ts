// Reading and writing files inside a filesystem without mounting it, so actions work on a disk image
// as an unprivileged user: debugfs for ext2/3/4 (e2fsprogs opens "FILE?offset=N"), mtools for vfat
// ("-i FILE@@OFFSET"). Every tool runs through execFile (no shell) and a failure carries its stderr.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export class FsToolError extends Error {}

/** Where a filesystem lives: a device or image file, and the byte offset of the filesystem in it. */
export interface FsLocation {
  path: string;
  offset: number;
}

export function run(cmd: string, args: string[], input?: Buffer): Promise<{ stdout: Buffer; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, { encoding: 'buffer', maxBuffer: 256 * 2 ** 20 }, (err, stdout, stderr) => {
      const errText = stderr.toString().trim();
      if (err) return reject(new FsToolError(`${cmd} ${args.join(' ')} failed: ${errText || err.message}`));
      resolve({ stdout, stderr: errText });
    });
    if (input) child.stdin?.end(input);
  });
}

/** ext2/3/4, vfat or something else, from the superblock magic. */
export async function filesystemAt(loc: FsLocation): Promise<'ext4' | 'vfat' | 'unknown'> {
  const fh = await fs.promises.open(loc.path, 'r');
  try {
    const buf = Buffer.alloc(2048);
    await fh.read(buf, 0, 2048, loc.offset);
    if (buf.readUInt16LE(1080) === 0xef53) return 'ext4';
    if (buf.readUInt16LE(510) === 0xaa55 && (buf.toString('ascii', 82, 87) === 'FAT32' || buf.toString('ascii', 54, 59) === 'FAT16' || buf.toString('ascii', 54, 59) === 'FAT12')) return 'vfat';
    return 'unknown';
  } finally {
    await fh.close();
  }
}

const extSpec = (loc: FsLocation) => (loc.offset > 0 ? `${loc.path}?offset=${loc.offset}` : loc.path);
const fatSpec = (loc: FsLocation) => (loc.offset > 0 ? `${loc.path}@@${loc.offset}` : loc.path);

/** debugfs prints command errors on stderr but exits 0: treat its complaints as failures. */
async function debugfs(loc: FsLocation, commands: string[], write: boolean): Promise<Buffer> {
  const { stdout, stderr } = await run('debugfs', [...(write ? ['-w'] : []), '-f', '-', extSpec(loc)], Buffer.from(commands.join('\n') + '\n'));
  const problems = stderr.split('\n').filter((l) => l && !/^debugfs \d/.test(l) && !/directory already exists/.test(l));
  if (problems.length > 0) throw new FsToolError(`debugfs: ${problems.join('; ')}`);
  return stdout;
}

function parents(file: string): string[] {
  const parts = file.split('/').filter(Boolean);
  return parts.slice(0, -1).map((_, i) => '/' + parts.slice(0, i + 1).join('/'));
}

export async function writeFileInFs(
  loc: FsLocation,
  file: { path: string; content: Buffer; mode: number; uid: number; gid: number },
): Promise<void> {
  const kind = await filesystemAt(loc);
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
    } else if (kind === 'vfat') {
      // FAT has no modes or owners: the content is what matters (EFI files, configs).
      for (const d of parents(file.path)) await run('mmd', ['-D', 's', '-i', fatSpec(loc), `::${d}`]).catch(() => undefined);
      await run('mcopy', ['-o', '-i', fatSpec(loc), local, `::${file.path}`]);
    } else {
      throw new FsToolError(`no ext4 or vfat filesystem at ${loc.path}${loc.offset ? ` offset ${loc.offset}` : ''}; format the partition first`);
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

export async function readFileInFs(loc: FsLocation, file: string): Promise<Buffer> {
  const kind = await filesystemAt(loc);
  if (kind === 'ext4') {
    // -R runs one command without echoing it (with -f, debugfs echoes each command into stdout).
    const { stdout, stderr } = await run('debugfs', ['-R', `cat ${file}`, extSpec(loc)]);
    if (/File not found/.test(stderr)) throw new FsToolError(`${file} not found in ${loc.path}${loc.offset ? ` offset ${loc.offset}` : ''}`);
    return stdout;
  }
  if (kind === 'vfat') return (await run('mtype', ['-i', fatSpec(loc), `::${file}`])).stdout;
  throw new FsToolError(`no ext4 or vfat filesystem at ${loc.path}${loc.offset ? ` offset ${loc.offset}` : ''}`);
}
