// The agent as a program: what `dragonfly mage` runs, and the entry point esbuild bundles into Mage's
// initramfs (/usr/lib/mage/mage.mjs, started by /init). It imports only mage/ and schemas/, so the bundle
// carries no store, boot server, reconciler or native module (image.ts checks the bundle for that).
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { DragonflyError, isDragonflyError } from '../../schemas/errors.js';
import { normalizeMac } from '../../schemas/mac.js';
import { readCmdline, runAgent } from '../agent.js';
import { fastTrack, runningBoot } from '../fast-track.js';
import { collectInventory } from '../inventory/index.js';

export interface AgentMainOptions {
  server?: string;
  mac?: string;
  /** Read /proc and /sys under this directory (fixture trees in tests). */
  root?: string;
  disk?: string;
  noReboot?: boolean;
  /** Told to reboot from discovery, go on in this boot when the imaging script boots this very Mage (mage/fast-track.ts). */
  fastTrack?: boolean;
  /** Images from their URL only, never through the server's P2P swarm. */
  noP2p?: boolean;
  /** Progress and retries (stderr). */
  log: (line: string) => void;
  /** The final instruction (stdout). */
  out: (line: string) => void;
}

/** Run the agent until the server says reboot or localboot; then reboot unless noReboot. */
export async function runMageAgent(opts: AgentMainOptions): Promise<number> {
  const cmd = readCmdline(path.join(opts.root ?? '/', 'proc/cmdline'));
  const server = opts.server ?? cmd.url;
  const mac = normalizeMac(opts.mac ?? cmd.mac ?? '');
  if (!server) throw new DragonflyError('DF_ERR_USAGE', 'no server: pass --server URL or boot with dragonfly.url= on the kernel command line');
  if (!mac) throw new DragonflyError('DF_ERR_USAGE', 'no boot MAC: pass --mac MAC or boot with dragonfly.mac=');
  const result = await runAgent({
    server,
    mac,
    ...(cmd.workflow ? { workflow: cmd.workflow } : {}),
    ...(cmd.token ? { token: cmd.token } : {}),
    inventory: () => collectInventory(opts.root ?? '/'),
    // The bundle this process runs is the file node was started with (/usr/lib/mage/mage.mjs in the image).
    ...(opts.fastTrack ? { fastTrack: () => fastTrack(runningBoot(server, process.argv[1]!, path.join(opts.root ?? '/', 'proc/cmdline')), mac) } : {}),
    ...(opts.disk ? { disk: opts.disk } : {}),
    ...(opts.noP2p ? { noP2p: true } : {}),
    log: (line) => opts.log(line),
  });
  opts.out(result.instruction);
  if (!opts.noReboot) execFileSync('reboot', ['-f']);
  return result.outcome && !result.outcome.ok ? 1 : 0;
}

/** `node mage.mjs [--server URL] [--mac MAC] [--disk PATH] [--no-reboot] [--fast-track] [--no-p2p]`, inside the initramfs. */
export async function mageMain(argv: string[]): Promise<number> {
  const log = (line: string) => process.stderr.write(`mage: ${line}\n`);
  try {
    const { values: v } = parseArgs({
      args: argv,
      options: { server: { type: 'string' }, mac: { type: 'string' }, root: { type: 'string' }, disk: { type: 'string' }, 'no-reboot': { type: 'boolean' }, 'fast-track': { type: 'boolean' }, 'no-p2p': { type: 'boolean' } },
      strict: true,
    });
    return await runMageAgent({
      ...(v.server ? { server: v.server } : {}),
      ...(v.mac ? { mac: v.mac } : {}),
      ...(v.root ? { root: v.root } : {}),
      ...(v.disk ? { disk: v.disk } : {}),
      noReboot: v['no-reboot'] === true,
      fastTrack: v['fast-track'] === true,
      noP2p: v['no-p2p'] === true,
      log,
      out: (line) => process.stdout.write(`${line}\n`),
    });
  } catch (e) {
    if (isDragonflyError(e)) log(`error: ${e.code} ${e.message}; hint: ${e.hint}`);
    else log(`error: ${(e as Error)?.stack ?? String(e)}`);
    return 1;
  }
}
