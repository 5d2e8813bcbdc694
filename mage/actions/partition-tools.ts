// Running the distribution's disk tools: execFile (no shell, arguments passed as they are), exit code
// checked, stderr kept for the error a user reads.
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
};

export const commandLine = (c: ToolCommand): string => [c.command, ...c.args].join(' ');

/** Run `c`; resolve with its stdout, or reject with a PartitionError that carries the exit code and stderr. */
export function runTool(c: ToolCommand, opts: { timeoutMs?: number } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(c.command, c.args, { encoding: 'utf8', maxBuffer: 16 * 2 ** 20, timeout: opts.timeoutMs ?? 10 * 60_000 }, (error, stdout, stderr) => {
      if (!error) return resolve(stdout);
      const data = { command: c.command, args: c.args, stderr: stderr.trim() };
      const errno = (error as NodeJS.ErrnoException).code;
      if (errno === 'ENOENT') {
        const pkg = PACKAGES[c.command];
        return reject(
          new PartitionError('DF_ERR_TOOL_FAILED', `${c.command} is not installed`, data, `add ${pkg ? `the Debian package ${pkg}` : c.command} to the Mage image`),
        );
      }
      const exitCode = typeof errno === 'number' ? errno : null;
      const how = exitCode !== null ? `exit ${exitCode}` : error.signal ? `killed by ${error.signal}` : error.message;
      reject(new PartitionError('DF_ERR_TOOL_FAILED', `${commandLine(c)} failed (${how}): ${stderr.trim() || stdout.trim() || 'no output'}`, { ...data, exitCode }));
    });
  });
}
