// I/O edge: read every *.yaml / *.yml under a fleet directory.
import fs from 'node:fs';
import path from 'node:path';
import { DragonflyError } from '../../schemas/errors.js';
import type { SourceFile } from '../parse.js';

const SKIP_DIRS = new Set(['.git', 'node_modules']);

/** A file or folder name a fleet never includes: dotfiles and dot-folders (editor swap files, .git), node_modules. */
export function isSkippedName(name: string): boolean {
  return name.startsWith('.') || SKIP_DIRS.has(name);
}

export function isFleetFile(name: string): boolean {
  return (name.endsWith('.yaml') || name.endsWith('.yml')) && !name.startsWith('.');
}

/**
 * The one rule for which paths are fleet files, whatever holds them (a directory, a git tree, a watcher's
 * event): relative, '/'-separated; no skipped segment (isSkippedName); a *.yaml / *.yml name.
 */
export function isFleetPath(rel: string): boolean {
  if (rel === '') return false;
  const segments = rel.split('/');
  if (segments.some(isSkippedName)) return false;
  return isFleetFile(segments[segments.length - 1]!);
}

/** Git tree entries that are regular files: symbolic links (120000) and submodules are never fleet files. */
export function isRegularGitFile(mode: string): boolean {
  return mode === '100644' || mode === '100755';
}

/** DF_ERR_FLEET_DIR unless `root` is a directory that can be read. */
export function checkFleetDir(root: string): void {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(root);
  } catch (e) {
    throw new DragonflyError('DF_ERR_FLEET_DIR', `cannot read fleet directory ${root}: ${(e as NodeJS.ErrnoException).code ?? e}`, { path: root });
  }
  if (!stat.isDirectory()) throw new DragonflyError('DF_ERR_FLEET_DIR', `${root} is not a directory`, { path: root });
}

/** Every fleet file under `root`, sorted by path; paths are relative to root with '/' separators. */
export function readFleetDir(root: string): SourceFile[] {
  checkFleetDir(root);
  const out: SourceFile[] = [];
  const walk = (dir: string, rel: string) => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(dir, { withFileTypes: true });
    } catch (e) {
      throw new DragonflyError('DF_ERR_FILE_READ', `cannot read ${rel || '.'}: ${(e as NodeJS.ErrnoException).code ?? e}`, { path: rel || '.' });
    }
    for (const entry of entries) {
      if (isSkippedName(entry.name)) continue;
      const abs = path.join(dir, entry.name);
      const relPath = rel ? `${rel}/${entry.name}` : entry.name;
      if (entry.isDirectory()) walk(abs, relPath);
      else if (entry.isFile() && isFleetFile(entry.name)) {
        try {
          out.push({ path: relPath, text: fs.readFileSync(abs, 'utf8') });
        } catch (e) {
          throw new DragonflyError('DF_ERR_FILE_READ', `cannot read ${relPath}: ${(e as NodeJS.ErrnoException).code ?? e}`, { path: relPath });
        }
      }
    }
  };
  walk(root, '');
  return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}
