// Runs a workflow's actions in order on the install disk, reporting each action's progress. The first
// failure stops the workflow with a message that says what failed; nothing is swallowed. Before the first
// action, the install disk must be the one the workflow was planned for (disk-identity.ts).
import { isDragonflyError, type ErrorCode } from '../schemas/errors.js';
import type { ActionReport, Workflow } from '../schemas/types.js';
import { verifyInstallDisk } from './disk-identity.js';
import { diskSize, isBlockDevice, partitionLocation } from './disk-layout.js';
import { runImage2Disk, type Compression, type P2pSource } from './actions/image2disk.js';
import { runKexec, type KexecParams } from './actions/kexec.js';
import { refreshPartitions, runPartition } from './actions/partition.js';
import { runWriteFile, type WriteFileParams } from './actions/writefile.js';
import { parseSize } from '../schemas/formats.js';

export interface RunnerContext {
  /** The install disk (the workflow's, or --disk for local runs). */
  disk: string;
  /**
   * Where /sys and /dev are read to check the install disk's identity: '/' (the default) on a machine; in
   * tests a fixture tree whose dev/ holds disk images standing in for the block devices.
   */
  sysRoot?: string;
  /** kexec prints its commands instead of running them. */
  dryRunKexec: boolean;
  report(index: number, report: ActionReport): Promise<void>;
  log(line: string): void;
  /** image2disk fetches through the server's P2P swarm first (the claimant's workflow carried the token). */
  p2p?: P2pSource;
}

/** A peer still serving the image to the rest of the rollout after the workflow: wait for it, or stop it. */
export interface Linger {
  done: Promise<unknown>;
  stop(): void;
}

export type RunOutcome = { ok: true; kexec?: string[][]; linger?: Linger } | { ok: false; error: string; code?: ErrorCode };

/**
 * Whether this run may write its disk: with the workflow's own disk, only when it is the disk the workflow
 * was planned for. A disk that differs from the workflow's (--disk, a disk image in tests) is the operator's
 * explicit choice and is not checked.
 */
async function checkInstallDisk(wf: Pick<Workflow, 'disk' | 'diskIdentity'>, ctx: RunnerContext): Promise<void> {
  if (!wf.diskIdentity) {
    ctx.log(`install disk ${ctx.disk}: the workflow carries no disk identity to check it against`);
    return;
  }
  if (ctx.disk !== '' && ctx.disk !== wf.disk) {
    ctx.log(`install disk ${ctx.disk}: chosen by the operator instead of the workflow's ${wf.disk ?? '(none)'}; its identity is not checked`);
    return;
  }
  const found = await verifyInstallDisk(ctx.disk, wf.diskIdentity, ctx.sysRoot ?? '/');
  const { sizeBytes, serial, wwn } = found.identity;
  ctx.log(`install disk ${ctx.disk} is the planned disk: ${sizeBytes} bytes${serial ? `, serial ${serial}` : ''}${wwn ? `, wwn ${wwn}` : ''}`);
}

export async function runWorkflow(wf: Pick<Workflow, 'actions' | 'image' | 'disk' | 'diskIdentity'>, outer: RunnerContext): Promise<RunOutcome> {
  let kexec: string[][] | undefined;
  // Reports go out one at a time, in order: a late progress report must never land after "succeeded".
  let chain: Promise<void> = Promise.resolve();
  const ctx: RunnerContext = {
    ...outer,
    report: (index, report) => (chain = chain.catch(() => undefined).then(() => outer.report(index, report))),
  };
  // Every action targets the workflow's install disk; with an override (local runs, tests) that disk is
  // replaced by the override, and an action naming any other disk is refused rather than written.
  const diskFor = (named: unknown): string => {
    if (named === undefined || named === wf.disk || named === outer.disk) return outer.disk;
    throw new Error(`the action names ${String(named)}, but this run writes only to ${outer.disk}${wf.disk ? ` (the workflow's disk ${wf.disk})` : ''}`);
  };
  // Progress is best effort: a lost progress report is logged, never fatal.
  const progress = (index: number, report: ActionReport) => void ctx.report(index, report).catch((e: unknown) => ctx.log(`progress report lost: ${(e as Error).message}`));
  // Before the first action starts: a disk that is not the planned one is never touched.
  try {
    await checkInstallDisk(wf, ctx);
  } catch (e) {
    return { ok: false, error: (e as Error).message, ...(isDragonflyError(e) ? { code: e.code } : {}) };
  }
  let linger: Linger | undefined;
  const failed = (outcome: Extract<RunOutcome, { ok: false }>): RunOutcome => {
    linger?.stop(); // a failed workflow's machine serves nobody: it is not what the rollout installs
    return outcome;
  };
  for (const [index, step] of wf.actions.entries()) {
    const label = `${step.action} (action ${index + 1} of ${wf.actions.length})`;
    await ctx.report(index, { state: 'running', percent: 0, message: `${label} started` });
    try {
      const params = step.params as Record<string, unknown>;
      switch (step.action) {
        case 'partition': {
          const result = await runPartition(params as unknown as Parameters<typeof runPartition>[0], {
            disk: diskFor(params.disk),
            onProgress: (p) => progress(index, { state: 'running', percent: p.percent, message: p.message }),
          });
          ctx.log(`partition: ${result.partitions.length} partitions written on ${diskFor(params.disk)}`);
          break;
        }
        case 'image2disk': {
          if (!wf.image) throw new Error('the workflow has no image to write');
          const target =
            params.partition !== undefined
              ? await partitionLocation(ctx.disk, Number(params.partition)).then((l) => ({ path: l.path, offset: l.offset, capacity: l.size }))
              : { path: diskFor(params.disk), offset: 0, capacity: await diskSize(diskFor(params.disk)) };
          const r = await runImage2Disk(
            {
              url: wf.image.url,
              sha256: wf.image.sha256,
              ...(wf.image.compression ? { compression: wf.image.compression as Compression } : {}),
              ...(wf.image.size ? { size: parseSize(wf.image.size) } : {}),
            },
            target,
            {
              onProgress: (p) => progress(index, { state: 'running', percent: p.percent, bytes: p.bytes, rate: p.rate, message: p.message }),
              onLog: ctx.log,
              ...(ctx.p2p ? { p2p: ctx.p2p } : {}),
            },
          );
          ctx.log(`image2disk: ${r.bytes} bytes written to ${target.path}${target.offset ? ` at offset ${target.offset}` : ''}, sha256 ${r.sha256} verified`);
          if (r.p2p) {
            const mib = (n: number) => (n / 2 ** 20).toFixed(1);
            ctx.log(`image2disk: over P2P: ${mib(r.p2p.fromPeers)} MiB from peers, ${mib(r.p2p.fromSeed)} MiB from the server's seed, ${mib(r.p2p.fromOrigin)} MiB from the image URL`);
          }
          if (r.lingering && r.stopLingering) {
            linger?.stop();
            linger = { done: r.lingering, stop: r.stopLingering };
          }
          // A whole-disk image brings its own partition table: the kernel must read it before the next
          // actions look for the partitions' devices (/dev/vda1 did not exist for writefile otherwise).
          if (params.partition === undefined && isBlockDevice(target.path)) {
            const n = await refreshPartitions(target.path);
            ctx.log(`image2disk: ${target.path} has ${n} partition${n === 1 ? '' : 's'} now`);
          }
          break;
        }
        case 'writefile': {
          const r = await runWriteFile(params as unknown as WriteFileParams, ctx.disk);
          ctx.log(`writefile: ${String(params.path)} (${r.bytes} bytes) on partition ${String(params.partition)}`);
          break;
        }
        case 'kexec': {
          const r = await runKexec(params as unknown as KexecParams, ctx.disk, { dryRun: ctx.dryRunKexec });
          kexec = r.commands;
          ctx.log(`kexec${ctx.dryRunKexec ? ' (dry run)' : ''}: ${r.commands.map((c) => c.join(' ')).join(' && ')}`);
          break;
        }
      }
      await ctx.report(index, { state: 'succeeded', percent: 100, message: `${label} done` });
    } catch (e) {
      const error = `${label} failed: ${(e as Error).message}`;
      await ctx.report(index, { state: 'failed', message: error }).catch(() => undefined);
      return failed({ ok: false, error, ...(isDragonflyError(e) ? { code: e.code } : {}) });
    }
  }
  return { ok: true, ...(kexec ? { kexec } : {}), ...(linger ? { linger } : {}) };
}
