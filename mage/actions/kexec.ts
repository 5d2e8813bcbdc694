// kexec: boot the installed kernel without a reboot. Kernel, initrd and command line come from the
// action, or from the default entry of the installed GRUB config. Files are read out of the filesystem
// without mounting it; `dryRun` returns the exact commands instead of running them.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { partitionLocation } from '../disk-layout.js';
import { readFileInFs } from './fs-tools.js';
import { execTool } from './partition-tools.js';

export interface KexecParams {
  partition: number;
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  grub?: true;
}

export interface BootEntry {
  kernel: string;
  initrd?: string;
  cmdline: string;
}

/** The default entry of a grub.cfg: `set default=N` (a number) or the first menuentry. */
export function defaultGrubEntry(cfg: string): BootEntry | undefined {
  const entries: BootEntry[] = [];
  const re = /menuentry\s[^{]*\{([\s\S]*?)\n\s*\}/g;
  for (const m of cfg.matchAll(re)) {
    const body = m[1]!;
    const linux = /^\s*linux(?:efi|16)?\s+(\S+)\s*(.*)$/m.exec(body);
    if (!linux) continue;
    const initrd = /^\s*initrd(?:efi|16)?\s+(\S+)/m.exec(body);
    entries.push({ kernel: linux[1]!, cmdline: linux[2]!.trim(), ...(initrd ? { initrd: initrd[1]! } : {}) });
  }
  const def = /^\s*set\s+default=["']?(\d+)["']?\s*$/m.exec(cfg);
  return entries[def ? Number(def[1]) : 0] ?? entries[0];
}

/** GRUB paths are relative to the filesystem GRUB reads them from; a separate /boot has no /boot prefix. */
async function resolveInFs(read: (p: string) => Promise<Buffer>, p: string): Promise<Buffer> {
  try {
    return await read(p);
  } catch (e) {
    if (p.startsWith('/boot/')) throw e;
    return read(`/boot${p}`);
  }
}

export async function runKexec(params: KexecParams, disk: string, opts: { dryRun: boolean }): Promise<{ commands: string[][] }> {
  const loc = await partitionLocation(disk, params.partition);
  const read = (p: string) => readFileInFs(loc, p);
  let entry: BootEntry;
  if (params.grub) {
    const cfgPath = ['/boot/grub/grub.cfg', '/grub/grub.cfg', '/boot/grub2/grub.cfg'];
    let cfg: string | undefined;
    for (const p of cfgPath) {
      cfg = await read(p).then((b) => b.toString('utf8'), () => undefined);
      if (cfg) break;
    }
    const found = cfg ? defaultGrubEntry(cfg) : undefined;
    if (!found) throw new Error(`no bootable GRUB entry in ${cfgPath.join(' or ')} on partition ${params.partition}`);
    entry = found;
  } else {
    entry = { kernel: params.kernel!, cmdline: params.cmdline ?? '', ...(params.initrd ? { initrd: params.initrd } : {}) };
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dragonfly-kexec-'));
  const kernel = path.join(dir, 'vmlinuz');
  fs.writeFileSync(kernel, await resolveInFs(read, entry.kernel));
  const load = ['kexec', '-l', kernel];
  if (entry.initrd) {
    const initrd = path.join(dir, 'initrd');
    fs.writeFileSync(initrd, await resolveInFs(read, entry.initrd));
    load.push(`--initrd=${initrd}`);
  }
  load.push(`--command-line=${entry.cmdline}`);
  const commands = [load, ['kexec', '-e']];
  if (!opts.dryRun) {
    await execTool({ command: load[0]!, args: load.slice(1) });
    await execTool({ command: 'kexec', args: ['-e'] }); // does not return on success
  }
  return { commands };
}
