// What every step of `dragonfly mage build` shares: its error (DF_ERR_MAGE_BUILD, with a hint for the step
// that failed) and how it runs the host's programs (apt, dpkg-deb, depmod, zstd).
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { DragonflyError } from '../../schemas/errors.js';

const execFileP = promisify(execFile);

/** A build that cannot go on: DF_ERR_MAGE_BUILD, with a hint specific to the step that failed. */
export class MageBuildError extends DragonflyError {
  constructor(message: string, hint: string) {
    super('DF_ERR_MAGE_BUILD', message, {}, hint);
    this.name = 'MageBuildError';
  }
}

export interface RunOptions {
  cwd?: string;
  allowFail?: boolean;
  signal?: AbortSignal;
}

/** Run a host program (LC_ALL=C); a failure is a MageBuildError naming the command, unless allowFail. */
export async function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<{ stdout: string; stderr: string; code: number }> {
  try {
    const { stdout, stderr } = await execFileP(cmd, args, {
      cwd: opts.cwd,
      maxBuffer: 64 * 1024 * 1024,
      encoding: 'utf8',
      env: { ...process.env, LC_ALL: 'C' },
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    return { stdout, stderr, code: 0 };
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stdout?: string; stderr?: string; code?: number | string };
    if (err.name === 'AbortError') throw new MageBuildError('the build was cancelled', 'start it again');
    if (err.code === 'ENOENT') throw new MageBuildError(`${cmd} is not installed`, `install the Debian package that provides ${cmd} (scripts/install-deps.sh installs what the build needs)`);
    if (opts.allowFail) return { stdout: err.stdout ?? '', stderr: err.stderr ?? '', code: typeof err.code === 'number' ? err.code : 1 };
    throw new MageBuildError(`${cmd} ${args.join(' ')} failed: ${(err.stderr || err.message).trim().split('\n').slice(-5).join('; ')}`, `run the command by hand to see why`);
  }
}

/** A program on this host's PATH directories, or undefined. */
export function which(name: string): string | undefined {
  for (const dir of ['/usr/sbin', '/usr/bin', '/sbin', '/bin']) {
    const p = path.join(dir, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      /* next */
    }
  }
  return undefined;
}

export function fileSha256(file: string): string {
  const h = createHash('sha256');
  const fd = fs.openSync(file, 'r');
  try {
    const buf = Buffer.alloc(4 * 1024 * 1024);
    for (let n; (n = fs.readSync(fd, buf, 0, buf.length, null)) > 0; ) h.update(buf.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
  return h.digest('hex');
}
