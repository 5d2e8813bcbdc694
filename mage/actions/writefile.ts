// writefile: put a file with content, mode and owner into the filesystem on a partition. ext4 and vfat
// without mounting (debugfs / mtools), so it works on a disk image without root; others through a mount
// (fs-tools.ts).
import { partitionLocation } from '../disk-layout.js';
import { writeFileInFs } from './fs-tools.js';

import type { WriteFileAction } from '../../schemas/types.js';

export type WriteFileParams = WriteFileAction;

export async function runWriteFile(params: WriteFileParams, disk: string): Promise<{ bytes: number }> {
  const loc = await partitionLocation(disk, params.partition);
  const content = Buffer.from(params.content, 'utf8');
  await writeFileInFs(loc, { path: params.path, content, mode: parseInt(params.mode ?? '0644', 8), uid: params.uid ?? 0, gid: params.gid ?? 0 });
  return { bytes: content.length };
}
