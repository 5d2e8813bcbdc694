// Walking git trees for the fleet: every fleet file under a tree, and the fleet files that differ between
// two trees (unchanged subtrees skipped by oid). Which entries count is the rule of readFleetDir (fleet-dir.ts).
import { isFleetFile, isRegularGitFile, isSkippedName } from './fleet-dir.js';
import type { TreeEntry } from './pack-reader.js';

export type ChangeKind = 'added' | 'modified' | 'deleted';

export interface FileChange {
  /** Relative to the fleet path, '/'-separated, like SourceFile.path. */
  path: string;
  change: ChangeKind;
}

/** The entries of the tree `oid` (from the packs, or through isomorphic-git). */
export type ReadTree = (oid: string) => Promise<TreeEntry[]>;

export function byPath(a: { path: string }, b: { path: string }): number {
  return a.path < b.path ? -1 : a.path > b.path ? 1 : 0;
}

/** 'dir' (walked), 'file' (a fleet file), or null (skipped) — the same rules as readFleetDir. */
function entryKind(e: { path: string; type: string; mode: string }): 'dir' | 'file' | null {
  if (isSkippedName(e.path)) return null;
  if (e.type === 'tree') return 'dir';
  if (e.type === 'blob' && isRegularGitFile(e.mode) && isFleetFile(e.path)) return 'file';
  return null;
}

/** Every fleet file under the tree `root`, with its blob; paths relative to root, in no particular order. */
export async function fleetFilesInTree(root: string, readTree: ReadTree): Promise<{ path: string; oid: string }[]> {
  const entries: { path: string; oid: string }[] = [];
  const collect = async (treeOid: string, prefix: string): Promise<void> => {
    const subdirs: Promise<void>[] = [];
    for (const e of await readTree(treeOid)) {
      const rel = prefix ? `${prefix}/${e.path}` : e.path;
      const kind = entryKind(e);
      if (kind === 'dir') subdirs.push(collect(e.oid, rel));
      else if (kind === 'file') entries.push({ path: rel, oid: e.oid });
    }
    await Promise.all(subdirs);
  };
  await collect(root, '');
  return entries;
}

/**
 * The fleet files added, modified or deleted from tree `a` to tree `b` (a rename is a deletion plus an
 * addition), sorted by path, with the blob in `b` of each added or modified file. A missing tree is empty.
 */
export async function diffFleetTrees(a: string | undefined, b: string | undefined, readTree: ReadTree): Promise<(FileChange & { oid?: string })[]> {
  const out: (FileChange & { oid?: string })[] = [];
  const diff = async (ta: string | undefined, tb: string | undefined, prefix: string): Promise<void> => {
    if (ta === tb) return;
    const [ea, eb] = await Promise.all([ta ? readTree(ta) : [], tb ? readTree(tb) : []]);
    const left = new Map(ea.map((e) => [e.path, e] as const));
    const right = new Map(eb.map((e) => [e.path, e] as const));
    const names = new Set([...left.keys(), ...right.keys()]);
    const subdirs: Promise<void>[] = [];
    for (const name of names) {
      const x = left.get(name);
      const y = right.get(name);
      const rel = prefix ? `${prefix}/${name}` : name;
      const kx = x ? entryKind(x) : null;
      const ky = y ? entryKind(y) : null;
      if (kx === 'dir' || ky === 'dir') subdirs.push(diff(kx === 'dir' ? x!.oid : undefined, ky === 'dir' ? y!.oid : undefined, rel));
      if (kx === 'file' && ky === 'file') {
        if (x!.oid !== y!.oid) out.push({ path: rel, change: 'modified', oid: y!.oid });
      } else if (kx === 'file') out.push({ path: rel, change: 'deleted' });
      else if (ky === 'file') out.push({ path: rel, change: 'added', oid: y!.oid });
    }
    await Promise.all(subdirs);
  };
  await diff(a, b, '');
  return out.sort(byPath);
}
