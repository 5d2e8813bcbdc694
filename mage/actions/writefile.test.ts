// writefile into every kind of filesystem a template meets: ext4 and vfat written without mounting
// (debugfs, mtools: covered by test/mage-run), xfs and btrfs through a mount — here a loop device over a
// partition of a disk image (offset + sizelimit), on a real block device the partition device itself.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DragonflyError } from '../../schemas/errors.js';
import { partitionLocation } from '../disk-layout.js';
import { readFileInFs } from './fs-tools.js';
import { runWriteFile } from './writefile.js';

const MiB = 2 ** 20;
let dir: string;
let disk: string;

/** A disk image: p1 xfs (320 MiB, mkfs.xfs's minimum is 300), p2 btrfs (160 MiB), p3 left unformatted. */
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dragonfly-writefile-'));
  disk = path.join(dir, 'disk.img');
  fs.writeFileSync(disk, '');
  fs.truncateSync(disk, 600 * MiB);
  execFileSync('sfdisk', ['--quiet', disk], { input: 'label: gpt\n,320MiB\n,160MiB\n,32MiB\n' });
  const layout = JSON.parse(execFileSync('sfdisk', ['--json', disk], { encoding: 'utf8' })) as { partitiontable: { partitions: { start: number; size: number }[] } };
  const parts = layout.partitiontable.partitions;
  for (const [i, mkfs] of [[0, ['mkfs.xfs', '-q', '-f']], [1, ['mkfs.btrfs', '-q', '-f']]] as const) {
    const fsImage = path.join(dir, `p${i + 1}.img`);
    fs.writeFileSync(fsImage, '');
    fs.truncateSync(fsImage, parts[i]!.size * 512);
    execFileSync(mkfs[0], [...mkfs.slice(1), fsImage]);
    execFileSync('dd', [`if=${fsImage}`, `of=${disk}`, 'bs=1M', `seek=${parts[i]!.start * 512}`, 'oflag=seek_bytes', 'conv=notrunc,sparse', 'status=none']);
    fs.rmSync(fsImage);
  }
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Mode, owner and content of a file, as the mounted filesystem shows them. */
function statInPartition(n: number, file: string): { mode: string; uid: number; gid: number; content: string } {
  const { start, size } = (JSON.parse(execFileSync('sfdisk', ['--json', disk], { encoding: 'utf8' })) as { partitiontable: { partitions: { start: number; size: number }[] } }).partitiontable.partitions[n - 1]!;
  const mnt = fs.mkdtempSync(path.join(dir, 'mnt-'));
  execFileSync('mount', ['-o', `ro,loop,offset=${start * 512},sizelimit=${size * 512}`, disk, mnt]);
  try {
    const st = fs.statSync(path.join(mnt, file));
    return { mode: (st.mode & 0o7777).toString(8), uid: st.uid, gid: st.gid, content: fs.readFileSync(path.join(mnt, file), 'utf8') };
  } finally {
    execFileSync('umount', [mnt]);
    fs.rmdirSync(mnt);
  }
}

describe('writefile through a mount', () => {
  it.each([
    [1, 'xfs'],
    [2, 'btrfs'],
  ])('partition %i (%s): content, mode, owner; a second write replaces the file; nothing stays mounted', async (partition) => {
    await runWriteFile({ partition, path: '/etc/dragonfly/hostname', content: 'first\n', mode: '0600', uid: 1000, gid: 1001 }, disk);
    await runWriteFile({ partition, path: '/etc/dragonfly/hostname', content: 'web-01\n', mode: '0640', uid: 1000, gid: 1001 }, disk);
    expect(statInPartition(partition, 'etc/dragonfly/hostname')).toEqual({ mode: '640', uid: 1000, gid: 1001, content: 'web-01\n' });
    expect((await readFileInFs(await partitionLocation(disk, partition), '/etc/dragonfly/hostname')).toString()).toBe('web-01\n');
    expect(fs.readFileSync('/proc/mounts', 'utf8')).not.toContain('dragonfly-mnt-');
    expect(execFileSync('losetup', ['--list', '--noheadings', '--output', 'BACK-FILE'], { encoding: 'utf8' })).not.toContain(disk);
  });

  it('a partition without a filesystem: DF_ERR_NO_FILESYSTEM naming where', async () => {
    const err = await runWriteFile({ partition: 3, path: '/etc/hostname', content: 'x' }, disk).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DragonflyError);
    expect((err as DragonflyError).code).toBe('DF_ERR_NO_FILESYSTEM');
    expect((err as Error).message).toMatch(new RegExp(`no filesystem at ${disk} offset \\d+ to write /etc/hostname into`));
  });
});
