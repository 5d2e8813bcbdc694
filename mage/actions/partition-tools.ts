// Running the distribution's disk and filesystem tools, for every action: execFile (no shell, arguments
// passed as they are), exit code checked, stderr kept for the error a user reads, a missing tool named with
// the Debian package that provides it.
import { execFile } from 'node:child_process';
import { PartitionError } from './partition-errors.js';

export interface ToolCommand {
  command: string;
  args: string[];
}

/** Debian package of each tool, named when a tool is missing. */
const PACKAGES: Record<string, string> = {
  'mkfs.vfat': 'dosfstools',
  'mkfs.ext4': 'e2fsprogs',
  mkswap: 'util-linux',
  blockdev: 'util-linux',
  partx: 'util-linux',
  udevadm: 'udev',
  debugfs: 'e2fsprogs',
  mcopy: 'mtools',
  mmd: 'mtools',
  mtype: 'mtools',
  blkid: 'util-linux',
  mount: 'mount',
  umount: 'mount',
  kexec: 'kexec-tools',
};

export const commandLine = (c: ToolCommand): string => [c.command, ...c.args].join(' ');

/** Run `c` (with `input` on its stdin); resolve with its raw stdout and its stderr, or reject with a
 * DF_ERR_TOOL_FAILED error that carries the exit code and stderr. */
export function execTool(c: ToolCommand, opts: { timeoutMs?: number; input?: Buffer } = {}): Promise<{ stdout: Buffer; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = execFile(c.command, c.args, { encoding: 'buffer', maxBuffer: 256 * 2 ** 20, timeout: opts.timeoutMs ?? 10 * 60_000 }, (error, out, err) => {
      const stdout = out as Buffer;
      const stderr = (err as Buffer).toString('utf8').trim();
      if (!error) return resolve({ stdout, stderr });
      const data = { command: c.command, args: c.args, stderr };
      const errno = (error as NodeJS.ErrnoException).code;
      if (errno === 'ENOENT') {
        const pkg = PACKAGES[c.command];
        return reject(
          new PartitionError('DF_ERR_TOOL_FAILED', `${c.command} is not installed`, data, `add ${pkg ? `the Debian package ${pkg}` : c.command} to the Mage image`),
        );
      }
      const exitCode = typeof errno === 'number' ? errno : null;
      const how = exitCode !== null ? `exit ${exitCode}` : error.signal ? `killed by ${error.signal}` : error.message;
      reject(new PartitionError('DF_ERR_TOOL_FAILED', `${commandLine(c)} failed (${how}): ${stderr || stdout.toString('utf8').trim() || 'no output'}`, { ...data, exitCode }));
    });
    child.stdin?.end(opts.input);
  });
}

/** Run `c`; resolve with its stdout as text. */
export async function runTool(c: ToolCommand, opts: { timeoutMs?: number } = {}): Promise<string> {
  return (await execTool(c, opts)).stdout.toString('utf8');
}
