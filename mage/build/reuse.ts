// A Mage image kept in a folder (serve's STATE/mage) and built only when it is missing or stale: its
// manifest records the inputs of its build (MageInputs), and a build with other inputs — another dragonfly,
// another Mage bundle or /init, another kernel, node or zstd level — replaces it. A new build goes into a
// sibling folder and replaces the old one only when whole, so a failed or cancelled build leaves no half image.
import fs from 'node:fs';
import path from 'node:path';
import { buildMageImage, resolveMageInputs, type BuildOptions, type MageInputs, type MageManifest } from './image.js';
import { fileSha256 } from './exec.js';

/** Why the image in `dir` cannot serve a build with `inputs`, or undefined when it can (its files checked against its manifest). */
export function staleReason(dir: string, inputs: MageInputs): string | undefined {
  let manifest: Partial<MageManifest>;
  try {
    manifest = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as Partial<MageManifest>;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no image yet' : 'its manifest.json cannot be read';
  }
  const had = manifest.inputs;
  if (manifest.format !== 2 || !had) return 'it was built by an older dragonfly';
  if (had.dragonfly !== inputs.dragonfly) return `dragonfly ${had.dragonfly} built it, this is ${inputs.dragonfly}`;
  if (had.bundle !== inputs.bundle) return 'the Mage agent changed (bundle sha256)';
  if (had.init !== inputs.init) return '/init or the udhcpc script changed';
  if (had.kernel?.package !== inputs.kernel.package || had.kernel.version !== inputs.kernel.version) {
    return `the kernel is now ${inputs.kernel.package} ${inputs.kernel.version} (was ${had.kernel?.package} ${had.kernel?.version})`;
  }
  if (had.node?.version !== inputs.node.version || had.node.sha256 !== inputs.node.sha256) return `node is now ${inputs.node.version} (was ${had.node?.version}, or another binary)`;
  if (had.zstdLevel !== inputs.zstdLevel) return `the zstd level is now ${inputs.zstdLevel} (was ${had.zstdLevel})`;
  if (had.tools !== inputs.tools) return 'the tool list changed';
  if (had.sourceDateEpoch !== inputs.sourceDateEpoch) return 'SOURCE_DATE_EPOCH changed';
  for (const f of ['vmlinuz', 'initrd'] as const) {
    const want = manifest[f];
    const file = path.join(dir, f);
    if (!want || !fs.existsSync(file) || fs.statSync(file).size !== want.bytes || fileSha256(file) !== want.sha256) return `${f} does not match its manifest`;
  }
  return undefined;
}

export interface EnsureOptions extends Omit<BuildOptions, 'out' | 'resolved'> {
  dir: string;
  /** Told before a build starts, with the reason. */
  onBuild?: (why: string) => void;
}

export type EnsureResult = { reused: true; manifest: MageManifest } | { reused: false; manifest: MageManifest; why: string };

/** The image in `opts.dir`: reused when its manifest matches this build's inputs, built (and swapped in whole) otherwise. */
export async function ensureMageImage(opts: EnsureOptions): Promise<EnsureResult> {
  const dir = path.resolve(opts.dir);
  const { dir: _dir, onBuild, ...buildOpts } = opts;
  const resolved = await resolveMageInputs(buildOpts);
  const why = staleReason(dir, resolved.inputs);
  if (!why) return { reused: true, manifest: JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as MageManifest };
  onBuild?.(why);
  const staging = `${dir}.building`;
  const old = `${dir}.old`;
  fs.rmSync(staging, { recursive: true, force: true });
  try {
    const manifest = await buildMageImage({ ...buildOpts, resolved, out: staging });
    fs.rmSync(old, { recursive: true, force: true });
    if (fs.existsSync(dir)) fs.renameSync(dir, old);
    fs.renameSync(staging, dir);
    fs.rmSync(old, { recursive: true, force: true });
    return { reused: false, manifest, why };
  } finally {
    fs.rmSync(staging, { recursive: true, force: true });
  }
}
